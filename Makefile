# Two entry points: `make demo` (set up, then run the main job on built-in defaults) and
# `make test` (set up, then lint and run the test suite). Both start from nothing.
.PHONY: setup build test test-all colcon-test lint demo demo-train demo-checkpoint clean

PYTEST_ARGS ?=
# Also read by scripts/colcon-test.sh.
export PYTEST_ARGS

setup:
	@scripts/setup.sh

lint: setup
	@scripts/run.sh ruff check .
	@scripts/run.sh ruff format --check .

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

clean:
	rm -rf build install log
