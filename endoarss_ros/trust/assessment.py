"""One trust level per frame, with its reasons, and the hysteresis that diagnostics latch on.

:func:`assess` combines the image checks (:mod:`.image_checks`), the out-of-distribution score
(:mod:`.ood`), the calibrated confidence the caller passes in and the checks of the predicted
mask (:mod:`.output_checks`); the level is the worst of
them and every signal at WARN or ERROR is a :class:`Reason` (name, value, threshold). A missing
signal (no feature statistics or no calibration in the checkpoint) is left out, not guessed: the
image checks alone then decide. A non-finite OOD score or confidence is an ERROR, since it
means the numbers behind the answer are broken.

:class:`LevelHysteresis` turns the per-frame levels into the level a ``/diagnostics`` status
reports: ERROR after ``error_frames`` of the last ``window`` frames were ERROR (3 of 5 by
default), WARN likewise, and down again only after ``clear_frames`` consecutive frames
below the reported level; so one bad frame does not page anyone and one good frame in a smoke
cloud does not clear the alarm. Pure state, no clock: STALE (frames stopped) is the publisher's.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from endoarss_ros.validation import Integer, Number, Section, setting

from .image_checks import CheckResult, ImageQuality, ImageQualityChecker, ImageQualityConfig, Level
from .ood import FeatureStatistics
from .output_checks import OutputCheckConfig, instrument_class_ids, instrument_fraction

OOD: str = "ood"
CONFIDENCE: str = "confidence"


@dataclass(frozen=True)
class TrustConfig(Section):
    """Thresholds of the combined trust level and of its hysteresis."""

    SECTION: ClassVar[str] = "trust"
    NESTED: ClassVar = {"image": ImageQualityConfig, "output": OutputCheckConfig}

    ood_warn: float = setting(
        1.0,
        Number(0, 1e6, low_open=True),
        doc="OOD score for WARN (1 = the held-out 99th percentile of training frames)",
        runtime=True,
    )
    ood_error: float = setting(
        2.0, Number(0, 1e6, low_open=True), doc="OOD score for ERROR", runtime=True
    )
    confidence_warn: float = setting(
        0.5,
        Number(0, 1),
        doc="calibrated top probability below which: WARN (0.5: more likely wrong than right)",
        runtime=True,
    )
    confidence_error: float = setting(
        0.0,
        Number(0, 1),
        doc="calibrated top probability below which: ERROR (0 = never)",
        runtime=True,
    )
    hysteresis_window: int = setting(
        5, Integer(1, 1000), doc="frames the hysteresis counts over", runtime=True
    )
    hysteresis_error_frames: int = setting(
        3, Integer(1, 1000), doc="ERROR frames in the window that latch ERROR", runtime=True
    )
    hysteresis_warn_frames: int = setting(
        3,
        Integer(1, 1000),
        doc="WARN-or-worse frames in the window that latch WARN",
        runtime=True,
    )
    hysteresis_clear_frames: int = setting(
        5,
        Integer(1, 10000),
        doc="consecutive frames below the latched level before it is lowered",
        runtime=True,
    )
    image: ImageQualityConfig = field(default_factory=ImageQualityConfig)
    output: OutputCheckConfig = field(default_factory=OutputCheckConfig)

    def validate(self) -> None:
        if self.ood_error < self.ood_warn:
            self.fail(
                "ood_error",
                f"must be at least ood_warn ({self.ood_warn:g}), got {self.ood_error:g}",
            )
        if self.confidence_error > self.confidence_warn:
            self.fail(
                "confidence_error",
                f"must be at most confidence_warn ({self.confidence_warn:g}): confidence fires "
                f"as it falls, ERROR after WARN; got {self.confidence_error:g}",
            )
        for name in ("hysteresis_error_frames", "hysteresis_warn_frames"):
            if getattr(self, name) > self.hysteresis_window:
                self.fail(
                    name,
                    f"must be at most hysteresis_window ({self.hysteresis_window}), "
                    f"got {getattr(self, name)}",
                )


@dataclass(frozen=True)
class Reason:
    """Why a frame is not OK: a signal, its value, the threshold it crossed, the level."""

    check: str
    value: float
    threshold: float
    level: Level
    fires_below: bool = False

    def describe(self) -> str:
        sign = "<=" if self.fires_below else ">="
        if self.check == CONFIDENCE:
            sign = "<"
        return f"{self.check} {self.value:.3g} {sign} {self.threshold:.3g}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "value": _json_number(self.value),
            "threshold": float(self.threshold),
            "level": self.level.name,
        }


@dataclass(frozen=True)
class TrustAssessment:
    """The trust of one frame: the worst level of its signals and the reasons for it (worst
    first). ``ood_score``/``confidence`` are None where the checkpoint had no statistics or no
    calibration, ``image`` None where the caller skipped the image checks."""

    level: Level
    reasons: tuple[Reason, ...]
    image: ImageQuality | None = None
    ood_score: float | None = None
    confidence: float | None = None
    outputs: tuple[CheckResult, ...] = ()
    """The checks on the model's output (:mod:`.output_checks`), fired or not."""

    @property
    def checks(self) -> tuple[CheckResult, ...]:
        """Every image and output check computed on this frame, fired or not."""
        return (() if self.image is None else self.image.checks) + self.outputs

    @property
    def ok(self) -> bool:
        return self.level == Level.OK

    def summary(self) -> str:
        """``OK`` or ``ERROR: blur 0.004 <= 0.02; ood 3.1 >= 2``."""
        if not self.reasons:
            return self.level.name
        return f"{self.level.name}: " + "; ".join(r.describe() for r in self.reasons)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (for recorded results); NaN becomes null."""
        return {
            "level": self.level.name,
            "reasons": [r.to_dict() for r in self.reasons],
            "ood_score": None if self.ood_score is None else _json_number(self.ood_score),
            "confidence": None if self.confidence is None else _json_number(self.confidence),
            "checks": {c.name: _json_number(c.value) for c in self.checks},
        }


def trust_signals(feature_statistics: bool, calibrated: bool) -> str:
    """Which trust signals a checkpoint allows, in words (the node's log and ``/diagnostics``,
    the trust benchmark)."""
    used = ["image checks"]
    missing = []
    if feature_statistics:
        used.append("OOD score")
    else:
        missing.append("no feature statistics: no out-of-distribution score")
    if calibrated:
        used.append("calibrated confidence")
    else:
        missing.append("not calibrated: no confidence check")
    text = " + ".join(used)
    if missing:
        text += f" (the checkpoint has {'; '.join(missing)}; see `endoarss calibrate`)"
    return text


def message_fields(assessment: TrustAssessment, latched: Level) -> dict[str, Any]:
    """The fields of an ``endoarss_ros/FrameTrust`` message but its header, as plain Python
    and numpy values: the one mapping the node (rclpy) and the bag writer (rosbags) share."""
    nan = float("nan")
    checks = assessment.checks
    return {
        "level": int(assessment.level),
        "latched_level": int(latched),
        "summary": assessment.summary(),
        "reasons": [r.check for r in assessment.reasons],
        "reason_values": np.array([r.value for r in assessment.reasons], np.float32),
        "reason_thresholds": np.array([r.threshold for r in assessment.reasons], np.float32),
        "reason_levels": np.array([int(r.level) for r in assessment.reasons], np.uint8),
        "ood_score": nan if assessment.ood_score is None else float(assessment.ood_score),
        "confidence": nan if assessment.confidence is None else float(assessment.confidence),
        "check_names": [c.name for c in checks],
        "check_values": np.array([c.value for c in checks], np.float32),
    }


def _json_number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _high(name: str, value: float, warn: float, error: float) -> Reason | None:
    if not math.isfinite(value):
        return Reason(name, value, error, Level.ERROR)
    if value >= error:
        return Reason(name, value, error, Level.ERROR)
    if value >= warn:
        return Reason(name, value, warn, Level.WARN)
    return None


def _low(name: str, value: float, warn: float, error: float) -> Reason | None:
    if not math.isfinite(value):
        return Reason(name, value, error, Level.ERROR, fires_below=True)
    if value < error:
        return Reason(name, value, error, Level.ERROR, fires_below=True)
    if value < warn:
        return Reason(name, value, warn, Level.WARN, fires_below=True)
    return None


def assess(
    config: TrustConfig,
    image: ImageQuality | None = None,
    ood_score: float | None = None,
    confidence: float | None = None,
    outputs: tuple[CheckResult, ...] = (),
) -> TrustAssessment:
    """Combine whatever signals there are into one :class:`TrustAssessment`."""
    reasons: list[Reason] = []
    fired = [*(image.fired if image is not None else ()), *(c for c in outputs if c.level)]
    reasons += [Reason(c.name, c.value, c.threshold, c.level, c.fires_below) for c in fired]
    if ood_score is not None:
        reason = _high(OOD, float(ood_score), config.ood_warn, config.ood_error)
        if reason is not None:
            reasons.append(reason)
    if confidence is not None:
        reason = _low(
            CONFIDENCE, float(confidence), config.confidence_warn, config.confidence_error
        )
        if reason is not None:
            reasons.append(reason)
    reasons.sort(key=lambda r: -r.level)
    level = max((r.level for r in reasons), default=Level.OK)
    return TrustAssessment(
        level,
        tuple(reasons),
        image,
        None if ood_score is None else float(ood_score),
        None if confidence is None else float(confidence),
        tuple(outputs),
    )


class TrustEvaluator:
    """Per-frame trust for a loaded model: image checks on the source frame, the OOD score of
    the features the Predictor's :class:`~.feature_tap.FeatureTap` kept, and the calibrated
    confidence, and the checks of the predicted mask. ``statistics`` None (a checkpoint without
    them): no OOD score. ``segmentation_names`` (the checkpoint's classes) say which mask ids
    are instruments; empty, no output checks. :attr:`config` may be replaced between frames
    (runtime parameters; the instrument classes are read here, once)."""

    def __init__(
        self,
        config: TrustConfig | None = None,
        statistics: FeatureStatistics | None = None,
        segmentation_names: tuple[str, ...] = (),
    ) -> None:
        self._config = config or TrustConfig()
        self.statistics = statistics
        self._checker = ImageQualityChecker(self._config.image)
        self._instruments = instrument_class_ids(segmentation_names, self._config.output)

    @property
    def config(self) -> TrustConfig:
        return self._config

    @config.setter
    def config(self, config: TrustConfig) -> None:
        self._config = config
        self._checker.config = config.image

    def __call__(
        self,
        frame: np.ndarray | None,
        features: np.ndarray | None = None,
        confidence: float | None = None,
        mask: np.ndarray | None = None,
    ) -> TrustAssessment:
        """``frame``: the source uint8 RGB frame (None skips the image checks); ``features``:
        its pooled features (D or 1 x D); ``confidence``: the calibrated top probability;
        ``mask``: the predicted class-id mask (None skips the output checks)."""
        image = None if frame is None else self.check_image(frame)
        return self.combine(image, features, confidence, mask)

    def check_image(self, frame: np.ndarray) -> ImageQuality:
        """The image checks alone: they need nothing from the model, so a caller may run them
        while the model runs, then :meth:`combine`."""
        return self._checker(frame)

    def combine(
        self,
        image: ImageQuality | None,
        features: np.ndarray | None = None,
        confidence: float | None = None,
        mask: np.ndarray | None = None,
    ) -> TrustAssessment:
        """The assessment from image checks already made and the model's outputs."""
        score = None
        if self.statistics is not None and features is not None:
            score = self.statistics.score(features)
        outputs: tuple[CheckResult, ...] = ()
        if mask is not None and self._instruments:
            view = None if image is None else image.field_of_view
            outputs = (
                instrument_fraction(
                    mask, self._instruments, self._config.output, field_of_view=view
                ),
            )
        return assess(self._config, image, score, confidence, outputs)


class LevelHysteresis:
    """The latched level of a stream of per-frame levels (see the module docstring).

    Raised at once when the last ``window`` frames hold ``error_frames`` ERRORs (or
    ``warn_frames`` WARN-or-worse); lowered, to what the window then supports, only after
    ``clear_frames`` consecutive frames below the latched level.
    """

    def __init__(
        self, window: int = 5, error_frames: int = 3, warn_frames: int = 3, clear_frames: int = 5
    ) -> None:
        for name, value in (
            ("window", window),
            ("error_frames", error_frames),
            ("warn_frames", warn_frames),
            ("clear_frames", clear_frames),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if error_frames > window or warn_frames > window:
            raise ValueError(
                f"error_frames ({error_frames}) and warn_frames ({warn_frames}) must be at "
                f"most window ({window})"
            )
        self.window = window
        self.error_frames = error_frames
        self.warn_frames = warn_frames
        self.clear_frames = clear_frames
        self._recent: deque[Level] = deque(maxlen=window)
        self._level = Level.OK
        self._below = 0

    @classmethod
    def from_config(cls, config: TrustConfig) -> LevelHysteresis:
        return cls(
            config.hysteresis_window,
            config.hysteresis_error_frames,
            config.hysteresis_warn_frames,
            config.hysteresis_clear_frames,
        )

    @property
    def level(self) -> Level:
        return self._level

    def reset(self) -> None:
        self._recent.clear()
        self._level = Level.OK
        self._below = 0

    def _supported(self) -> Level:
        errors = sum(1 for level in self._recent if level >= Level.ERROR)
        warnings = sum(1 for level in self._recent if level >= Level.WARN)
        if errors >= self.error_frames:
            return Level.ERROR
        if warnings >= self.warn_frames:
            return Level.WARN
        return Level.OK

    def update(self, level: Level | int) -> Level:
        """Add one frame's level; returns the latched level."""
        level = Level(level)
        self._recent.append(level)
        supported = self._supported()
        if supported > self._level:
            self._level = supported
            self._below = 0
        elif level < self._level:
            self._below += 1
            if self._below >= self.clear_frames and supported < self._level:
                self._level = supported
                self._below = 0
        else:
            self._below = 0
        return self._level

    def state(self) -> Mapping[str, int]:
        """Counts for a diagnostics key-value list."""
        return {
            "latched": int(self._level),
            "frames_in_window": len(self._recent),
            "frames_below_latched": self._below,
        }
