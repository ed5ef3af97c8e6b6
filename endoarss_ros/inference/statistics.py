"""What the perception pipeline counts: frames in, outputs out, and every frame that does not
become an output under exactly one cause, so a rate shortfall always has an explanation.

ROS-free; the node's /diagnostics status (:mod:`endoarss_ros.ros.diagnostics`) and the offline
tools read the same counters.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Final

import numpy as np

DROP_CAUSES: Final = (
    "stale",  # replaced in the latest-frame slot by a newer frame before inference took it
    "too_old",  # older than max_frame_age_ms when inference was about to start
    "unpaired",  # a stereo eye that found no partner within the slop
    "bad_input",  # undecodable, truncated, empty, unknown encoding, odd side-by-side width
    "inference_error",  # the model raised
    "out_of_memory",  # the device ran out of memory on this frame
)


_DEFAULT_REASONS: Final = {
    "stale": "replaced by a newer frame before inference took it",
    "too_old": "older than max_frame_age_ms when inference was about to start",
    "unpaired": "no frame of the other eye within stereo_slop_ms",
    "bad_input": "could not be decoded",
    "inference_error": "the model raised",
    "out_of_memory": "the device ran out of memory",
}


@dataclass(frozen=True)
class DropRecord:
    """Why the last frame of one cause was dropped, and which frame it was."""

    reason: str
    stamp_ns: int | None
    """Source stamp of the dropped frame (nanoseconds), when it is known."""


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
    last_drops: dict[str, DropRecord] = field(default_factory=dict)
    """Per cause, the reason and stamp of the newest drop (causes never seen are absent)."""


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
        self.last_drops: dict[str, DropRecord] = {}
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

    def drop(
        self,
        cause: str,
        count: int = 1,
        error: str | None = None,
        stamp_ns: int | None = None,
    ) -> None:
        """Count ``count`` frames dropped for ``cause``; ``error`` is the reason (kept per
        cause, so one cause never hides another's) and ``stamp_ns`` the dropped frame's stamp."""
        if cause not in self.drops:
            raise ValueError(f"unknown drop cause {cause!r}")
        with self._lock:
            self.drops[cause] += count
            if error:
                self.last_error = f"{cause}: {error}"
            self.last_drops[cause] = DropRecord(error or _DEFAULT_REASONS[cause], stamp_ns)

    def set_unpaired(self, total: int) -> None:
        """The stereo pairer keeps its own running count."""
        with self._lock:
            if total > self.drops["unpaired"]:
                self.last_drops["unpaired"] = DropRecord(_DEFAULT_REASONS["unpaired"], None)
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
                last_drops=dict(self.last_drops),
            )


def percentile(values: tuple[float, ...], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")
