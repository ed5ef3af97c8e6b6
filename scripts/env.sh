# Source this file to work in the project's environment: `source scripts/env.sh`.
# Activates .venv, makes the ROS 2 wheels visible to CMake/ament when no distribution is
# sourced, and overlays the built workspace (install/). `--no-workspace` skips the overlay.
_endoarss_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC1091
source "$_endoarss_root/.venv/bin/activate"
# The repository root holds the source package `endoarss_ros`, which lacks the generated
# messages: never let the current directory shadow the installed package.
export PYTHONSAFEPATH=1
if [ -z "${ROS_DISTRO:-}" ]; then
  export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
fi
if [ "${1:-}" != "--no-workspace" ] && [ -f "$_endoarss_root/install/local_setup.bash" ]; then
  # colcon's setup files read unset variables: relax `set -u` while sourcing them.
  case $- in *u*) _endoarss_nounset=1; set +u ;; *) _endoarss_nounset= ;; esac
  # shellcheck disable=SC1091
  source "$_endoarss_root/install/local_setup.bash"
  [ -n "$_endoarss_nounset" ] && set -u
  unset _endoarss_nounset
fi
mkdir -p "$_endoarss_root/log"
unset _endoarss_root
