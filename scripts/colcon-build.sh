#!/usr/bin/env bash
# `colcon build` of this package with the CMake arguments its Python environment needs; set-up
# and `make colcon-test` both build through it. Run it inside the environment without the
# workspace overlay (`source scripts/env.sh --no-workspace`), from anywhere:
#
#   scripts/colcon-build.sh [COLCON BUILD OPTIONS] [-- CMAKE ARGUMENTS]
#
# The CMake arguments follow the defaults (-DBUILD_TESTING=OFF ...), so they override them.
# COLCON names the colcon to use (default: the one on PATH).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
python=${VIRTUAL_ENV:?source scripts/env.sh first}/bin/python

colcon_args=()
cmake_args=()
while [ $# -gt 0 ]; do
  if [ "$1" = -- ]; then
    shift
    cmake_args=("$@")
    break
  fi
  colcon_args+=("$1")
  shift
done

# CMake refuses to export an include directory that lies inside the source tree, and the NumPy
# headers of .venv do; the generated message library is given them through a link outside it.
numpy_link=${XDG_CACHE_HOME:-$HOME/.cache}/endoarss_ros/$(echo "$root" | sha256sum | cut -c1-16)/numpy-include
mkdir -p "$(dirname "$numpy_link")"
ln -sfn "$("$python" -c 'import numpy; print(numpy.get_include())')" "$numpy_link"

mkdir -p log
# The environment's own build and install folders (scripts/workspace.sh) unless the options name
# others; a later --build-base/--install-base wins.
exec "${COLCON:-colcon}" --log-base log build --paths . --symlink-install \
  --build-base "${ENDOARSS_BUILD_BASE:-build}" --install-base "${ENDOARSS_INSTALL_BASE:-install}" \
  --event-handlers console_direct- console_cohesion+ "${colcon_args[@]}" \
  --cmake-args -DPython3_EXECUTABLE="$python" -DBUILD_TESTING=OFF \
    -DPython3_NumPy_INCLUDE_DIR="$numpy_link" "${cmake_args[@]}"
