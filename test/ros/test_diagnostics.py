"""Diagnostics: rates over the period, drops by cause, and the status level that results."""

from __future__ import annotations

import dataclasses

import pytest
from diagnostic_msgs.msg import DiagnosticStatus

from endoarss_ros.inference.statistics import DROP_CAUSES, PerceptionStatistics
from endoarss_ros.ros.diagnostics import DiagnosticsReporter, NodeContext

CONTEXT = NodeContext(
    name="/endoarss/perception: perception",
    hardware_id="cpu",
    device="cpu",
    precision="fp32",
    model="vit_tiny_patch14",
    model_hash="0123456789abcdef",
    input_mode="mono",
    input_topics=("/endoarss/image",),
)


def values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def test_rates_latency_and_drops_are_reported():
    statistics = PerceptionStatistics()
    first = statistics.snapshot()
    reporter = DiagnosticsReporter(CONTEXT, first)
    for index in range(10):
        statistics.frame_received()
        statistics.frame_published(latency_s=0.010 + index * 0.001, inference_s=0.005)
    statistics.drop("stale", 3)
    second = dataclasses.replace(statistics.snapshot(), time=first.time + 2.0)
    status = reporter.status(second, enabled=True)
    report = values(status)
    assert status.level == DiagnosticStatus.OK
    assert report["input_rate_hz"] == "5.00"
    assert report["output_rate_hz"] == "5.00"
    assert float(report["latency_p50_ms"]) == pytest.approx(14.5)
    assert float(report["latency_p95_ms"]) == pytest.approx(18.55)
    assert report["dropped.stale"] == "3"
    assert {f"dropped.{cause}" for cause in DROP_CAUSES} <= set(report)
    assert report["device"] == "cpu" and report["model_hash"] == "0123456789abcdef"
    assert status.name == CONTEXT.name and status.hardware_id == "cpu"


def test_levels_follow_what_happened_in_the_period():
    statistics = PerceptionStatistics()
    reporter = DiagnosticsReporter(CONTEXT, statistics.snapshot())
    assert reporter.status(statistics.snapshot(), enabled=True).level == DiagnosticStatus.WARN
    statistics.frame_received()
    statistics.drop("bad_input", error="unknown image encoding 'rgb9'")
    status = reporter.status(statistics.snapshot(), enabled=True)
    assert status.level == DiagnosticStatus.WARN and "rgb9" in status.message
    statistics.frame_received()
    statistics.drop("out_of_memory", error="CUDA out of memory")
    status = reporter.status(statistics.snapshot(), enabled=True)
    assert status.level == DiagnosticStatus.ERROR and "out of memory" in status.message
    status = reporter.status(statistics.snapshot(), enabled=False)
    assert status.level == DiagnosticStatus.OK and "inactive" in status.message
    status = reporter.status(statistics.snapshot(), enabled=True, input_warning="no publisher")
    assert status.level == DiagnosticStatus.WARN and status.message == "no publisher"


def test_unknown_drop_cause_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown drop cause"):
        PerceptionStatistics().drop("gremlins")


def test_every_drop_cause_keeps_its_own_last_reason_and_stamp():
    statistics = PerceptionStatistics()
    reporter = DiagnosticsReporter(CONTEXT, statistics.snapshot())
    statistics.drop("bad_input", error="unknown image encoding 'rgb9'", stamp_ns=1_700_000_000_5)
    statistics.drop("too_old", error="frame 900 ms old", stamp_ns=1_700_000_001_000_000_001)
    report = values(reporter.status(statistics.snapshot(), enabled=True))
    assert report["dropped.bad_input.last_reason"] == "unknown image encoding 'rgb9'"
    assert report["dropped.bad_input.last_stamp"] == "17.000000005"
    assert report["dropped.too_old.last_reason"] == "frame 900 ms old"
    assert report["dropped.too_old.last_stamp"] == "1700000001.000000001"
    assert "dropped.stale.last_reason" not in report
