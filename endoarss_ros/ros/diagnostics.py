"""The diagnostic_msgs statuses the node reports once per period: its running state, from the
pipeline's counters (:mod:`endoarss_ros.inference.statistics`), and the trust of its answers."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from endoarss_ros.inference.statistics import (
    DROP_CAUSES,
    StatisticsSnapshot,
    percentile,
)
from endoarss_ros.trust.image_checks import Level

if TYPE_CHECKING:
    from endoarss_ros.inference.pipeline import FrameResult


def _drop_details(snapshot: StatisticsSnapshot) -> dict[str, str]:
    """``dropped.<cause>.last_reason`` and ``.last_stamp`` (``sec.nanosec`` of the dropped
    frame's header) for every cause that dropped something."""
    values: dict[str, str] = {}
    for cause in DROP_CAUSES:
        record = snapshot.last_drops.get(cause)
        if record is None:
            continue
        values[f"dropped.{cause}.last_reason"] = record.reason
        if record.stamp_ns is not None:
            seconds, nanoseconds = divmod(record.stamp_ns, 1_000_000_000)
            values[f"dropped.{cause}.last_stamp"] = f"{seconds}.{nanoseconds:09d}"
    return values


@dataclass(frozen=True)
class NodeContext:
    """Static facts reported next to the counters."""

    name: str
    hardware_id: str
    device: str
    precision: str
    model: str
    model_hash: str
    input_mode: str
    input_topics: tuple[str, ...]


class DiagnosticsReporter:
    """Turns successive snapshots into one DiagnosticStatus per period (rates over the period,
    latency percentiles over the last ``window`` frames)."""

    def __init__(self, context: NodeContext, first: StatisticsSnapshot) -> None:
        self.context = context
        self._previous = first

    def status(
        self, current: StatisticsSnapshot, enabled: bool, input_warning: str = ""
    ) -> DiagnosticStatus:
        previous, self._previous = self._previous, current
        elapsed = max(current.time - previous.time, 1e-9)
        input_rate = (current.received - previous.received) / elapsed
        output_rate = (current.published - previous.published) / elapsed
        new_drops = {
            cause: current.drops[cause] - previous.drops.get(cause, 0) for cause in DROP_CAUSES
        }
        level, message = DiagnosticStatus.OK, "running"
        if not enabled:
            message = "inactive: lifecycle state inactive, frames are not processed"
        elif new_drops["inference_error"] or new_drops["out_of_memory"]:
            level, message = DiagnosticStatus.ERROR, f"inference failed: {current.last_error}"
        elif input_warning:
            level, message = DiagnosticStatus.WARN, input_warning
        elif current.received == previous.received:
            level, message = DiagnosticStatus.WARN, "no input frames in the last period"
        elif new_drops["bad_input"]:
            level, message = DiagnosticStatus.WARN, f"bad input: {current.last_error}"
        if level == DiagnosticStatus.OK and enabled:
            message = (
                f"{input_rate:.1f} Hz in, {output_rate:.1f} Hz out, latency p95 "
                f"{percentile(current.latencies_ms, 95):.1f} ms"
            )
        c = self.context
        values = {
            "enabled": str(enabled).lower(),
            "input_mode": c.input_mode,
            "input_topics": " ".join(c.input_topics),
            "input_rate_hz": f"{input_rate:.2f}",
            "output_rate_hz": f"{output_rate:.2f}",
            "latency_p50_ms": f"{percentile(current.latencies_ms, 50):.2f}",
            "latency_p95_ms": f"{percentile(current.latencies_ms, 95):.2f}",
            "inference_p50_ms": f"{percentile(current.inference_ms, 50):.2f}",
            "inference_p95_ms": f"{percentile(current.inference_ms, 95):.2f}",
            "frames_received": str(current.received),
            "frames_published": str(current.published),
            **{f"dropped.{cause}": str(current.drops[cause]) for cause in DROP_CAUSES},
            **_drop_details(current),
            "size_changes": str(current.size_changes),
            "overlays_rendered": str(current.overlays_rendered),
            "qos_incompatible_events": str(current.qos_incompatible_events),
            "device": c.device,
            "precision": c.precision,
            "model": c.model,
            "model_hash": c.model_hash,
            "last_error": current.last_error,
        }
        return DiagnosticStatus(
            level=level,
            name=c.name,
            message=message,
            hardware_id=c.hardware_id,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )


_LEVEL_BYTES: Final = {Level.OK: DiagnosticStatus.OK, Level.WARN: DiagnosticStatus.WARN}


class TrustDiagnostics:
    """The ``<node>: trust`` status: the latched trust level of the last frame (hysteresis in
    :class:`~endoarss_ros.trust.assessment.LevelHysteresis`), STALE when no frame was judged
    during the period, and which signals the checkpoint allows (image checks always; the OOD
    score with feature statistics; the confidence with calibration).

    :meth:`frame` is called by the inference thread, :meth:`status` by the diagnostics timer.
    """

    def __init__(self, name: str, hardware_id: str, signals: str) -> None:
        self.name = name
        self.hardware_id = hardware_id
        self.signals = signals
        self._lock = threading.Lock()
        self._last: FrameResult | None = None
        self._counts = dict.fromkeys(Level, 0)
        self._frames = 0
        self._period_frames = 0

    def frame(self, result: FrameResult) -> None:
        with self._lock:
            self._last = result
            self._counts[result.trust.level] += 1
            self._frames += 1
            self._period_frames += 1

    def status(self, active: bool) -> DiagnosticStatus:
        with self._lock:
            last, fresh = self._last, self._period_frames
            self._period_frames = 0
            counts, frames = dict(self._counts), self._frames
        values = {
            "signals": self.signals,
            "frames_judged": str(frames),
            **{f"frames_{level.name.lower()}": str(counts[level]) for level in Level},
        }
        if last is None or not fresh or not active:
            level = DiagnosticStatus.STALE
            if not active:
                message = "stale: not active, no frames are judged"
            elif last is None:
                message = "stale: no frame judged yet"
            else:
                message = "stale: no frame judged in the last period"
        else:
            latched = last.trust_latched
            level = _LEVEL_BYTES.get(latched, DiagnosticStatus.ERROR)
            message = (
                f"{latched.name} (latched); last frame {last.trust.summary()}"
                if latched != Level.OK
                else f"OK; last frame {last.trust.summary()}"
            )
        if last is not None:
            trust = last.trust
            values.update(
                {
                    "latched_level": last.trust_latched.name,
                    "last_frame_level": trust.level.name,
                    "last_frame_summary": trust.summary(),
                    "last_ood_score": "" if trust.ood_score is None else f"{trust.ood_score:.3f}",
                    "last_confidence": ""
                    if trust.confidence is None
                    else f"{trust.confidence:.3f}",
                    "trust_ms": f"{last.trust_s * 1e3:.2f}",
                }
            )
        return DiagnosticStatus(
            level=level,
            name=self.name,
            message=message,
            hardware_id=self.hardware_id,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
