# shellcheck shell=bash
# Where the environment and the build of the selected ROS 2 source live; sourced by setup.sh
# and env.sh, so both agree. Sets ENDOARSS_ROS (system | kilted | jazzy), ENDOARSS_VENV,
# ENDOARSS_BUILD_BASE and ENDOARSS_INSTALL_BASE (absolute paths).
#
# - A sourced ROS 2 distribution (apt: /opt/ros/<distro>/setup.bash sets ROS_DISTRO) is used as
#   it is: "system", in .venv (made with --system-site-packages), build/ and install/.
# - Otherwise ROS 2 comes from PyPI wheels, the distribution chosen by ROS_WHEELS:
#   kilted (default): .venv, build/, install/; jazzy: .venv-jazzy, build-jazzy/, install-jazzy/.
#   env.sh marks such an environment with ENDOARSS_ROS_WHEELS, so that a ROS_DISTRO it sets
#   itself is not taken for a sourced distribution.
_endoarss_ws_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${ROS_DISTRO:-}" ] && [ -z "${ENDOARSS_ROS_WHEELS:-}" ]; then
  ENDOARSS_ROS=system
  _endoarss_ws_suffix=
else
  ENDOARSS_ROS=${ENDOARSS_ROS_WHEELS:-${ROS_WHEELS:-kilted}}
  case $ENDOARSS_ROS in
    kilted) _endoarss_ws_suffix= ;;
    jazzy) _endoarss_ws_suffix=-jazzy ;;
    *)
      echo "ROS_WHEELS must be kilted or jazzy (the ROS 2 wheels on PyPI), got '$ENDOARSS_ROS'" >&2
      return 2
      ;;
  esac
fi
ENDOARSS_VENV=$_endoarss_ws_root/.venv$_endoarss_ws_suffix
ENDOARSS_BUILD_BASE=$_endoarss_ws_root/build$_endoarss_ws_suffix
ENDOARSS_INSTALL_BASE=$_endoarss_ws_root/install$_endoarss_ws_suffix
export ENDOARSS_ROS ENDOARSS_VENV ENDOARSS_BUILD_BASE ENDOARSS_INSTALL_BASE
unset _endoarss_ws_root _endoarss_ws_suffix
