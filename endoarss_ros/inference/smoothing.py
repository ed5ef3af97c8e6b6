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

import math
import threading
from dataclasses import dataclass
from typing import Final

import numpy as np

SMOOTHING_METHODS: Final = ("none", "ema", "hysteresis", "ema_hysteresis")


@dataclass(frozen=True)
class SmoothingConfig:
    method: str = "ema"
    ema_alpha: float = 0.3
    hysteresis_frames: int = 3
    hysteresis_margin: float = 0.1

    def __post_init__(self) -> None:
        if self.method not in SMOOTHING_METHODS:
            raise ValueError(
                f"smoothing.method must be one of {', '.join(SMOOTHING_METHODS)}, "
                f"got {self.method!r}"
            )
        alpha = self.ema_alpha
        if not isinstance(alpha, float | int) or not math.isfinite(alpha) or not 0 < alpha <= 1:
            raise ValueError(f"smoothing.ema_alpha must be in (0, 1], got {alpha!r}")
        frames = self.hysteresis_frames
        if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= 1000:
            raise ValueError(f"smoothing.hysteresis_frames must be in [1, 1000], got {frames!r}")
        margin = self.hysteresis_margin
        if not isinstance(margin, float | int) or not math.isfinite(margin) or not 0 <= margin < 1:
            raise ValueError(f"smoothing.hysteresis_margin must be in [0, 1), got {margin!r}")

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
