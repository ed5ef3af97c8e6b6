#!/usr/bin/env bash
# `colcon test` of the package, as a ROS 2 build farm runs it: builds it with BUILD_TESTING=ON,
# which registers the pytest suite with CTest (CMakeLists.txt), runs it through `colcon test`
# and prints `colcon test-result --verbose`; the exit status is the result's. Run it inside the
# project's environment (`make colcon-test`, or `scripts/run.sh scripts/colcon-test.sh`).
#
# PYTEST_ARGS: pytest options after the default -m "not slow", e.g. `-k frame_publisher`
#   for a subset (a later -m replaces the marker filter).
# BUILD_BASE, INSTALL_BASE: build elsewhere than the environment's build/ and install/; colcon test puts that
#   install first, so the tests then run the package installed there.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build_base=${BUILD_BASE:-${ENDOARSS_BUILD_BASE:-build}}
install_base=${INSTALL_BASE:-${ENDOARSS_INSTALL_BASE:-install}}
colcon=${COLCON:-colcon}

echo "[colcon-test] building with BUILD_TESTING=ON into $build_base"
"$root/scripts/colcon-build.sh" --build-base "$build_base" --install-base "$install_base" -- \
  -DBUILD_TESTING=ON "-DENDOARSS_PYTEST_ARGS=-m \"not slow\" ${PYTEST_ARGS:-}" \
  > log/colcon-test-build.txt 2>&1 || {
  tail -n 60 log/colcon-test-build.txt
  echo "[colcon-test] colcon build failed (log/colcon-test-build.txt)"
  exit 1
}
results=$build_base/endoarss_ros/test_results
rm -rf "$results"
echo "[colcon-test] colcon test: pytest -m \"not slow\" ${PYTEST_ARGS:-}"
# Failing tests show in test-result below; colcon test itself fails only when it cannot run them.
"$colcon" --log-base log test --paths . --build-base "$build_base" --install-base "$install_base" \
  --event-handlers console_direct- console_cohesion+ \
  || { echo "[colcon-test] colcon test could not run the tests"; exit 1; }
[ -n "$(find "$results" -name '*.xml' 2>/dev/null)" ] \
  || { echo "[colcon-test] no test results under $results"; exit 1; }
"$colcon" test-result --test-result-base "$build_base" --verbose
