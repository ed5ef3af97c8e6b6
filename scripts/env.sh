# shellcheck shell=bash
# Source this file to work in the project's environment: `source scripts/env.sh` (with
# ROS_WHEELS=jazzy for the Jazzy wheels' environment; scripts/workspace.sh says where each is).
# Activates the environment, makes the ROS 2 wheels visible to CMake/ament when no distribution
# is sourced (with the launch and ros2 tools of <env>/ros2-tools where set-up installed them, and
# ROS_DISTRO set to the wheels' distribution, as a distribution's setup.bash sets it), and
# overlays the built workspace (install/). `--no-workspace` skips the workspace overlay.
_endoarss_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC1091
source "$_endoarss_root/scripts/workspace.sh" || return
# shellcheck disable=SC1091
source "$ENDOARSS_VENV/bin/activate"
# The repository root holds the source package `endoarss_ros`, which lacks the generated
# messages: never let the current directory shadow the installed package.
export PYTHONSAFEPATH=1
if [ "$ENDOARSS_ROS" != system ]; then
  export ENDOARSS_ROS_WHEELS=$ENDOARSS_ROS ROS_DISTRO=$ENDOARSS_ROS ROS_VERSION=2
  export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
fi
# colcon's setup files read unset variables: relax `set -u` while sourcing them.
case $- in *u*) _endoarss_nounset=1; set +u ;; *) _endoarss_nounset= ;; esac
# The ROS 2 launch and command-line tools that set-up installs when no distribution is
# sourced (composition_interfaces; the Python packages are in the environment), below the
# workspace.
if [ "$ENDOARSS_ROS" != system ] && [ -f "$VIRTUAL_ENV/ros2-tools/install/local_setup.bash" ]; then
  # shellcheck disable=SC1091
  source "$VIRTUAL_ENV/ros2-tools/install/local_setup.bash"
fi
if [ "${1:-}" != "--no-workspace" ] && [ -f "$ENDOARSS_INSTALL_BASE/local_setup.bash" ]; then
  # shellcheck disable=SC1091
  source "$ENDOARSS_INSTALL_BASE/local_setup.bash"
fi
if [ -n "$_endoarss_nounset" ]; then set -u; fi
unset _endoarss_nounset
mkdir -p "$_endoarss_root/log"
unset _endoarss_root
