"""The node's log never floods and never hides a kind of problem."""

from __future__ import annotations

from endoarss_ros.ros.throttled_log import ThrottledLog, reason_signature


class Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def error(self, message: str) -> None:
        self.lines.append(("error", message))

    def warning(self, message: str) -> None:
        self.lines.append(("warning", message))

    def info(self, message: str) -> None:
        self.lines.append(("info", message))


def test_the_same_reason_is_throttled_and_counted():
    logger = Recorder()
    log = ThrottledLog(logger, period_s=60.0)
    for age in (510, 620, 730):
        log("warning", "too_old", f"dropped a frame {age} ms old")
    assert logger.lines == [("warning", "dropped a frame 510 ms old")]


def test_the_first_line_of_each_distinct_reason_is_always_written():
    logger = Recorder()
    log = ThrottledLog(logger, period_s=60.0)
    log("warning", "bad_input", "dropped an input frame: unknown encoding 'rgb9'")
    log("warning", "bad_input", "dropped an input frame: unknown encoding 'rgb9'")
    log("warning", "bad_input", "dropped an input frame: data shorter than height * step")
    assert [line for _, line in logger.lines] == [
        "dropped an input frame: unknown encoding 'rgb9'",
        "dropped an input frame: data shorter than height * step",
    ]


def test_held_lines_are_counted_when_the_period_ends():
    logger = Recorder()
    log = ThrottledLog(logger, period_s=0.0)
    log("error", "oom", "out of memory on a batch of 2")
    log("error", "oom", "out of memory on a batch of 2")
    assert len(logger.lines) == 2


def test_reasons_that_differ_only_in_numbers_are_one_reason():
    assert reason_signature("frame 641 wide, 480 high") == reason_signature("frame 3 wide, 2 high")
    assert reason_signature("encoding 'rgb9'") != reason_signature("encoding 'bgr9'")


def test_a_lasting_condition_is_written_at_doubling_intervals_and_again_when_it_changes():
    from endoarss_ros.ros.throttled_log import BackoffLog

    logger, now = Recorder(), [0.0]
    log = BackoffLog(logger, first_interval_s=10.0, max_interval_s=40.0, clock=lambda: now[0])
    written = []
    for second in range(0, 301):  # the node's watchdog: once a second, for five minutes
        now[0] = float(second)
        if log.warning(f"no publisher on /endoarss/image yet ({second} s)"):
            written.append(second)
    assert written == [0, 10, 30, 70, 110, 150, 190, 230, 270]  # 10, 20, 40, 40, ...
    assert logger.lines[1] == (
        "warning",
        "no publisher on /endoarss/image yet (10 s) (next reminder in 20 s if it lasts)",
    )
    assert log.warning("no frames on /endoarss/image: incompatible QoS")  # a new reason: at once
    log.clear()
    assert log.warning("no publisher on /endoarss/image yet (0 s)")  # a new episode: at once
