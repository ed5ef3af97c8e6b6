"""What the node counts, and the diagnostic_msgs status it reports once per period.

No anchor node counts what it drops; here every frame that does not become an output is
counted under one cause, so a rate shortfall on /diagnostics always has an explanation.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

DROP_CAUSES: Final = (
    "stale",  # replaced in the latest-frame slot by a newer frame before inference took it
    "too_old",  # older than max_frame_age_ms when inference was about to start
    "unpaired",  # a stereo eye that found no partner within the slop
    "bad_input",  # undecodable, truncated, empty, unknown encoding, odd side-by-side width
    "inference_error",  # the model raised
    "out_of_memory",  # the device ran out of memory on this frame
)


@dataclass(frozen=True)
class StatisticsSnapshot:
    time: float
    received: int
    published: int
    drops: dict[str, int]
    size_changes: int
    overlays_rendered: int
    qos_incompatible_events: int
    latencies_ms: tuple[float, ...]
    inference_ms: tuple[float, ...]
    last_error: str


@dataclass
class PerceptionStatistics:
    """Thread-safe counters, fed by the callbacks and the inference thread."""

    window: int = 300
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.received = 0
        self.published = 0
        self.drops = dict.fromkeys(DROP_CAUSES, 0)
        self.size_changes = 0
        self.overlays_rendered = 0
        self.qos_incompatible_events = 0
        self.last_error = ""
        self._latencies: deque[float] = deque(maxlen=self.window)
        self._inference: deque[float] = deque(maxlen=self.window)

    def frame_received(self) -> None:
        with self._lock:
            self.received += 1

    def frame_published(self, latency_s: float, inference_s: float) -> None:
        with self._lock:
            self.published += 1
            self._latencies.append(latency_s * 1e3)
            self._inference.append(inference_s * 1e3)

    def drop(self, cause: str, count: int = 1, error: str | None = None) -> None:
        if cause not in self.drops:
            raise ValueError(f"unknown drop cause {cause!r}")
        with self._lock:
            self.drops[cause] += count
            if error:
                self.last_error = f"{cause}: {error}"

    def set_unpaired(self, total: int) -> None:
        """The stereo pairer keeps its own running count."""
        with self._lock:
            self.drops["unpaired"] = total

    def size_changed(self) -> None:
        with self._lock:
            self.size_changes += 1

    def overlay_rendered(self, count: int = 1) -> None:
        with self._lock:
            self.overlays_rendered += count

    def qos_incompatible(self) -> None:
        with self._lock:
            self.qos_incompatible_events += 1

    def snapshot(self) -> StatisticsSnapshot:
        with self._lock:
            return StatisticsSnapshot(
                time=time.monotonic(),
                received=self.received,
                published=self.published,
                drops=dict(self.drops),
                size_changes=self.size_changes,
                overlays_rendered=self.overlays_rendered,
                qos_incompatible_events=self.qos_incompatible_events,
                latencies_ms=tuple(self._latencies),
                inference_ms=tuple(self._inference),
                last_error=self.last_error,
            )


def percentile(values: tuple[float, ...], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


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
            message = "disabled by the enable service"
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
