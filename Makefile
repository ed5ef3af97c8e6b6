# Two entry points: `make demo` (set up, then run the main job on built-in defaults) and
# `make test` (set up, then lint and run the test suite). Both start from nothing.
.PHONY: setup build test test-all colcon-test lint demo clean

PYTEST_ARGS ?=
# Also read by scripts/colcon-test.sh.
export PYTEST_ARGS

setup:
	@scripts/setup.sh

lint: setup
	@scripts/run.sh ruff check .
	@scripts/run.sh ruff format --check .

# Trains a tiny model on synthetic scenes (12-15 minutes on a CPU), evaluates it on held-out
# frames, then runs the perception node on those frames published by a camera process.
demo: setup
	@scripts/demo_train.sh
	@scripts/run.sh python -m endoarss_ros.ros.live_demo \
		--checkpoint demo/endoarss_demo.safetensors --images demo/data/images --output demo/live

test: lint
	@scripts/run.sh python -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: lint
	@scripts/run.sh python -m pytest $(PYTEST_ARGS)

# The suite as `colcon test` runs it (BUILD_TESTING=ON build, CTest, `colcon test-result`);
# PYTEST_ARGS narrows it, e.g. `make colcon-test PYTEST_ARGS="-k frame_publisher"`.
colcon-test: setup
	@scripts/run.sh scripts/colcon-test.sh

clean:
	rm -rf build install log
