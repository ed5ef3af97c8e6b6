"""Temporal smoothing of per-frame activity probabilities.

A surgical activity lasts seconds to minutes while the model answers every frame, so a raw
stream flickers whenever a frame is ambiguous (smoke, a tool leaving the view). Two remedies,
usable alone or together:

- ``ema``: exponential moving average of the probability vectors; ``ema_alpha`` is the weight
  of the newest frame (1 gives the raw stream).
- ``hysteresis``: the reported class changes only after another class has led by at least
  ``hysteresis_margin`` for ``hysteresis_frames`` consecutive frames.

``none`` reports every frame as the model answered it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import ClassVar, Final

import numpy as np

from endoarss_ros.validation import Choice, Integer, Number, Section, setting

SMOOTHING_METHODS: Final = ("none", "ema", "hysteresis", "ema_hysteresis")


@dataclass(frozen=True)
class SmoothingConfig(Section):
    SECTION: ClassVar[str] = "smoothing"

    method: str = setting(
        "ema",
        Choice(SMOOTHING_METHODS, fold_case=True),
        doc=" | ".join(SMOOTHING_METHODS),
        runtime=True,
    )
    ema_alpha: float = setting(
        0.3,
        Number(0, 1, low_open=True),
        doc="weight of the newest frame in the moving average, (0, 1]",
        runtime=True,
    )
    hysteresis_frames: int = setting(
        3,
        Integer(1, 1000),
        doc="frames a new class must lead before it is reported",
        runtime=True,
    )
    hysteresis_margin: float = setting(
        0.1,
        Number(0, 1, high_open=True),
        doc="probability lead a new class needs to count as leading, [0, 1)",
        runtime=True,
    )

    @property
    def uses_ema(self) -> bool:
        return self.method in ("ema", "ema_hysteresis")

    @property
    def uses_hysteresis(self) -> bool:
        return self.method in ("hysteresis", "ema_hysteresis")


@dataclass(frozen=True)
class SmoothedActivity:
    """The reported activity (class, its probability, the distribution it comes from) next to
    the frame's own answer."""

    class_id: int
    confidence: float
    probabilities: np.ndarray
    raw_class_id: int
    raw_confidence: float


class ActivitySmoother:
    """Stateful smoother; safe to reconfigure or reset from another thread than the one that
    feeds it."""

    def __init__(self, config: SmoothingConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._config = config or SmoothingConfig()
        self._average: np.ndarray | None = None
        self._reported: int | None = None
        self._challenger: int | None = None
        self._streak = 0

    @property
    def config(self) -> SmoothingConfig:
        return self._config

    def configure(self, config: SmoothingConfig) -> None:
        """Apply new settings; a change of method starts from a clean state."""
        with self._lock:
            if config.method != self._config.method:
                self._clear()
            self._config = config

    def reset(self) -> None:
        """Forget the past, e.g. at the start of a procedure or after a camera switch."""
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        self._average = None
        self._reported = None
        self._challenger = None
        self._streak = 0

    def update(self, probabilities: np.ndarray) -> SmoothedActivity:
        frame = np.asarray(probabilities, dtype=np.float32)
        raw_id = int(np.argmax(frame))
        with self._lock:
            config = self._config
            if self._average is not None and self._average.shape != frame.shape:
                self._clear()
            distribution = frame
            if config.uses_ema:
                if self._average is None:
                    self._average = frame.copy()
                else:
                    self._average = (
                        config.ema_alpha * frame + (1.0 - config.ema_alpha) * self._average
                    ).astype(np.float32)
                distribution = self._average
            leader = int(np.argmax(distribution))
            reported = (
                self._hysteresis(distribution, leader, config) if config.uses_hysteresis else leader
            )
        return SmoothedActivity(
            class_id=reported,
            confidence=float(distribution[reported]),
            probabilities=distribution.copy(),
            raw_class_id=raw_id,
            raw_confidence=float(frame[raw_id]),
        )

    def _hysteresis(self, distribution: np.ndarray, leader: int, config: SmoothingConfig) -> int:
        if self._reported is None or self._reported >= distribution.size:
            self._reported, self._challenger, self._streak = leader, None, 0
            return leader
        lead = distribution[leader] - distribution[self._reported]
        if leader == self._reported or lead < config.hysteresis_margin:
            self._challenger, self._streak = None, 0
            return self._reported
        if leader != self._challenger:
            self._challenger, self._streak = leader, 0
        self._streak += 1
        if self._streak >= config.hysteresis_frames:
            self._reported, self._challenger, self._streak = leader, None, 0
        return self._reported
