"""The per-frame work around the Predictor, written once for the perception node and for
`endoarss bag infer`, so a recorded surgery scored offline gets exactly what the node would
have published.

A frame is one image (mono, or one side-by-side left|right image) or a stereo pair of two
images. :class:`FramePipeline` splits side-by-side frames into their eyes, runs the eyes as
one batch, averages the eyes' activity probabilities, smooths them over time and keeps what
an overlay needs, and judges how far each frame's answer can be trusted
(:mod:`endoarss_ros.trust`: image checks on each eye, run while the model runs, the
out-of-distribution score of its features, the calibrated confidence, checks of its mask; the
worst eye decides) with the hysteresis diagnostics latch on. What is ROS-specific (decoding
messages, headers, publishing, dropping old frames) stays with the caller: the results say
which input image each stream came from, so the caller can give each output its frame's header.

Threads: :meth:`FramePipeline.pair` is called from subscription callbacks while
:meth:`FramePipeline.run` runs on the inference thread; smoothing changes and resets may come
from any thread. The smoother and the pairer lock themselves, and the configuration is
replaced, never changed in place, so :meth:`run` works on one consistent configuration. The
image checks of a frame run on the pipeline's own thread while :meth:`run` waits for the
model; :meth:`close` stops it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic

import numpy as np

from endoarss_ros.trust.assessment import LevelHysteresis, TrustAssessment, TrustEvaluator
from endoarss_ros.trust.image_checks import ImageQuality, Level

from .errors import CheckpointLoadError, FrameError
from .options import PipelineConfig, PredictorOptions
from .overlay import palette, render_overlay
from .smoothing import ActivitySmoother, SmoothedActivity
from .stereo import Item, StereoPair, StereoPairer

if TYPE_CHECKING:
    from .predictor import Prediction, Predictor

__all__ = ["FramePipeline", "FrameResult", "load_predictor"]

_SOURCES = {"mono": (0,), "stereo": (0, 1), "side_by_side": (0, 0)}
"""Per input mode, the input image each output stream comes from."""


def load_predictor(options: PredictorOptions, config: PipelineConfig) -> Predictor:
    """The Predictor ``options`` describe, warmed up for the batch ``config`` will run (two
    eyes in stereo), so the first frame is not the slow one. Raises PredictorError subclasses.
    """
    if not options.checkpoint:
        raise CheckpointLoadError(
            "'checkpoint' is empty: name the EndoARSS checkpoint (.safetensors) to load"
        )
    # Imported only now: PyTorch takes seconds to load, and a caller that checks its
    # configuration first should report a mistake without that wait.
    from .predictor import Predictor

    return Predictor(
        options.checkpoint,
        device=options.device,
        precision=options.precision,
        compile=options.compile,
        threads=options.cpu_threads,
        mask_min_confidence=options.mask_min_confidence,
        warmup_batch_sizes=(2,) if config.stereo else (1,),
    )


@dataclass(frozen=True)
class FrameResult:
    """What one frame gave: the activity of the frame and, per output stream (one mono, left
    and right in stereo), its mask and the image it was computed from."""

    activity: SmoothedActivity
    """The eyes' probabilities averaged, then smoothed."""
    masks: tuple[np.ndarray, ...]
    """uint8 class ids (255 unlabeled) at the size of the stream's image."""
    images: tuple[np.ndarray, ...]
    """The RGB image of each stream (views into the input for side-by-side), for overlays."""
    sources: tuple[int, ...]
    """Index of the input image each stream came from: mono (0,), stereo (0, 1),
    side_by_side (0, 0); the caller gives a stream's output that image's header."""
    inference_s: float
    """Seconds the Predictor took."""
    trust: TrustAssessment
    """How far this frame's answer can be trusted (the worst eye's assessment)."""
    trust_latched: Level
    """The trust level after hysteresis, what ``/diagnostics`` reports."""
    trust_s: float = 0.0
    """Seconds the trust assessment added after the Predictor returned: what was left of the
    image checks (they run while the model does), the OOD score, the mask checks, combining."""
    image_checks_s: float = 0.0
    """Seconds the image checks of all eyes took on their own thread."""


class FramePipeline(Generic[Item]):
    """Frames in, smoothed activity and per-eye masks out, as :mod:`options` configures it.

    ``Item`` is what the caller pairs in stereo mode (a message, or a decoded frame).
    """

    def __init__(self, predictor: Predictor, config: PipelineConfig) -> None:
        self._predictor = predictor
        self._config = config
        self._configure_lock = threading.Lock()
        self._palette = palette(predictor.info.segmentation_colors)
        self._smoother = ActivitySmoother(config.smoothing)
        self._trust = TrustEvaluator(
            config.trust, predictor.feature_statistics, predictor.info.segmentation_names
        )
        self._hysteresis = LevelHysteresis.from_config(config.trust)
        self._trust_lock = threading.Lock()
        # The image checks need only the frame: they run on this thread while the model runs
        # (on a GPU, or on the CPU cores PyTorch leaves), so they add little to a frame's time.
        self._image_checks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="image-checks")
        self._pairer: StereoPairer[Item] | None = (
            StereoPairer(round(config.stereo_slop_ms * 1e6))
            if config.input_mode == "stereo"
            else None
        )

    @property
    def predictor(self) -> Predictor:
        return self._predictor

    @property
    def config(self) -> PipelineConfig:
        return self._config

    @property
    def palette(self) -> np.ndarray:
        """The 256 x 3 RGB colour table of the checkpoint's segmentation classes."""
        return self._palette

    # -- stereo pairing -----------------------------------------------------------------

    def pair(self, side: str, stamp_ns: int, item: Item) -> StereoPair[Item] | None:
        """Offer one eye's frame (``side`` is LEFT or RIGHT); returns a pair when it completes
        one, whose left and right images then go to :meth:`run` in that order."""
        if self._pairer is None:
            raise ValueError(
                f"frames are paired only in stereo input mode, this pipeline is "
                f"{self._config.input_mode}"
            )
        return self._pairer.add(side, stamp_ns, item)

    @property
    def unpaired(self) -> int:
        """Frames the pairer gave up on (no partner within the slop); 0 unless stereo."""
        return self._pairer.unpaired if self._pairer is not None else 0

    def clear_pairing(self) -> None:
        """Forget waiting eyes without counting them (the input was switched off)."""
        if self._pairer is not None:
            self._pairer.clear()

    # -- frames -------------------------------------------------------------------------

    def run(self, images: Sequence[np.ndarray]) -> FrameResult:
        """Process one frame: one H x W x 3 uint8 RGB image (mono, side_by_side) or the left
        and right images of a stereo pair. Raises FrameError for a frame that cannot be used;
        the Predictor's own exceptions (e.g. out of device memory) pass through unchanged."""
        config = self._config
        mode = config.input_mode
        expected = 2 if mode == "stereo" else 1
        if len(images) != expected:
            raise FrameError(
                f"{mode} input takes {expected} image{'s' if expected > 1 else ''} per frame, "
                f"got {len(images)}"
            )
        eyes = split_side_by_side(images[0]) if mode == "side_by_side" else tuple(images)
        checks = self._image_checks.submit(self._check_images, eyes)
        try:
            started = time.perf_counter()
            predictions = self._predictor.predict(eyes)
            inference_s = time.perf_counter() - started
        except BaseException:
            wait([checks])  # never two frames' checks at once; the model's error is the news
            raise
        probabilities = np.mean([p.activity for p in predictions], axis=0)
        started = time.perf_counter()
        qualities, image_checks_s = checks.result()
        trust, latched = self._assess(qualities, predictions, probabilities)
        trust_s = time.perf_counter() - started
        return FrameResult(
            activity=self._smoother.update(probabilities),
            masks=tuple(p.mask for p in predictions),
            images=tuple(eyes),
            sources=_SOURCES[mode],
            inference_s=inference_s,
            trust=trust,
            trust_latched=latched,
            trust_s=trust_s,
            image_checks_s=image_checks_s,
        )

    def _check_images(self, eyes: Sequence[np.ndarray]) -> tuple[list[ImageQuality], float]:
        started = time.perf_counter()
        evaluator = self._trust
        return [evaluator.check_image(eye) for eye in eyes], time.perf_counter() - started

    def _assess(
        self,
        qualities: Sequence[ImageQuality],
        predictions: Sequence[Prediction],
        probabilities: np.ndarray,
    ) -> tuple[TrustAssessment, Level]:
        """Each eye judged on its own image and features, with the frame's calibrated
        confidence (left out for an uncalibrated checkpoint); the worst eye is the frame's (a
        NaN OOD score is already an ERROR there)."""
        confidence = float(np.max(probabilities)) if self._predictor.info.calibrated else None
        with self._trust_lock:
            assessments = [
                self._trust.combine(quality, prediction.features, confidence, prediction.mask)
                for quality, prediction in zip(qualities, predictions, strict=True)
            ]
            worst = max(assessments, key=_severity)
            return worst, self._hysteresis.update(worst.level)

    def overlay(self, result: FrameResult, stream: int) -> np.ndarray:
        """The class colours of a stream's mask over its image (BGR, the overlay topic's
        layout), at the current ``overlay_alpha``."""
        return render_overlay(
            result.images[stream], result.masks[stream], self._palette, self._config.overlay_alpha
        )

    # -- run-time changes ---------------------------------------------------------------

    def configure(self, config: PipelineConfig) -> None:
        """Apply run-time settings (smoothing, overlay_alpha). The input mode and the stereo
        slop decide the streams and the pairer, so they cannot change here."""
        with self._configure_lock:
            current = self._config
            fixed = [
                name
                for name in ("input_mode", "stereo_slop_ms")
                if getattr(config, name) != getattr(current, name)
            ]
            if fixed:
                raise ValueError(
                    f"{' and '.join(fixed)} cannot change while the pipeline runs (build a new one)"
                )
            if config.smoothing != current.smoothing:
                self._smoother.configure(config.smoothing)
            if config.trust != current.trust:
                with self._trust_lock:
                    self._trust.config = config.trust
                    if _hysteresis_settings(config) != _hysteresis_settings(current):
                        self._hysteresis = LevelHysteresis.from_config(config.trust)
            self._config = config

    def reset_smoothing(self) -> None:
        """Forget the activity history, e.g. at the start of a procedure."""
        self._smoother.reset()

    def close(self) -> None:
        """Stop the image-check thread (the Predictor is the caller's to close)."""
        self._image_checks.shutdown(wait=True)

    def reset_trust(self) -> None:
        """Forget the latched trust level, e.g. when frames resume after a pause."""
        with self._trust_lock:
            self._hysteresis.reset()

    @property
    def trust_latched(self) -> Level:
        """The trust level after hysteresis, as of the last frame."""
        return self._hysteresis.level


def _severity(assessment: TrustAssessment) -> tuple[int, float]:
    """Orders eyes: by level, then (equal levels) by how far out of distribution."""
    score = assessment.ood_score
    return int(assessment.level), -math.inf if score is None or score != score else score


def _hysteresis_settings(config: PipelineConfig) -> tuple[int, ...]:
    trust = config.trust
    return (
        trust.hysteresis_window,
        trust.hysteresis_error_frames,
        trust.hysteresis_warn_frames,
        trust.hysteresis_clear_frames,
    )


def split_side_by_side(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The left and right halves (views) of a side-by-side stereo frame."""
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise FrameError(f"side-by-side stereo frame must be H x W x 3 uint8 RGB, got {shape}")
    width = image.shape[1]
    if width % 2:
        raise FrameError(
            f"side-by-side stereo frame has an odd width {width}; it cannot be split into two eyes"
        )
    return image[:, : width // 2], image[:, width // 2 :]
