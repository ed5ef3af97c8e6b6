"""Cheap image-quality checks on the source frame: is there anything in it the model can read?

After Autoware's ``image_diagnostics``: the frame is shrunk to a fixed height (240 px by default,
a quarter of the work of Autoware's 480 and still 48 x 60 px per block), split into a grid of
5 x 5 blocks, and each block is judged in Autoware's order: **dark** (mean luminance < 10),
**over-exposed** (backlit, > 230), **blocked** (featureless: luminance standard deviation < 2
grey levels, what is left of an 8-bit picture covered by tissue, blood or a uniform glare), or
**low-visibility** (band-limited contrast, Peli 1990, below 1 %, about the human detection
threshold). WARN and ERROR come from the number of such blocks, with Autoware's counts.

Whole-frame checks measured inside the lit field of view (the black border of an endoscope's
field stop is neither dark tissue nor an edge to measure sharpness on):

- **blur**: variance of the Laplacian over the variance of the luminance, a contrast-free
  sharpness. Detail blurred by a Gaussian of ``s`` px has a ratio of about ``2 / s**4`` (white
  noise; natural images lower), so the defaults 0.05 and 0.02 mean all detail finer than
  ``s`` = 2.5 and 3.2 px of the 240-px analysis frame (about 1 % of the height) is gone.
  Variance of the Laplacian has no universal threshold (Pech-Pacheco et al. 2000): calibrate per
  camera.
- **contrast**: RMS contrast (luminance standard deviation over mean; natural scenes 0.2-0.4,
  Frazor & Geisler 2006): a veil, smoke or a washed-out exposure lowers it.
- **saturated**: fraction of lit pixels with a clipped channel (>= 250): what is lost there is
  lost to the model too.
- **specular**: fraction of near-white, unsaturated pixels (max >= 230, HSV saturation
  <= 0.25), the specular highlights of the EAD artefact classes; a few per mille in ordinary
  frames.
- **haze**: the median over the field of view of each pixel's darkest over brightest channel
  (1 - HSV saturation: the dark channel of He et al. 2009 made independent of brightness). A
  grey veil of airlight ``A`` at transmission ``t`` desaturates every pixel: a red tissue pixel
  of value 0.7 and saturation 0.5 (clear view) keeps 0.28 at ``t`` = 0.6 and 0.2 at ``t`` =
  0.45 under ``A`` = 0.85, hence the defaults 0.70 and 0.80 (saturation 0.30 and 0.20). Smoke
  detectors on such saturation statistics reach AUC 0.75-0.78 on real Cholec80 frames: a weak
  cue alone, which the feature-space score complements.
- **noise**: the standard deviation of the noise, estimated in grey levels at the analysis
  size by Immerkaer's method (a 3 x 3 difference of Laplacians cancels smooth image content
  and leaves the noise; edges and fine texture leak in, so it reads a few grey levels even on
  clean frames). Shrinking to 240 rows averages a 1280 x 1024 frame's noise by about 4 x,
  which is also what happens on the way to the network; WARN at 8, ERROR at 16 grey levels.
- **flat_neighbours** and **blockiness**: what compression and pixelation leave. Exactly
  equal luminance in horizontally neighbouring lit pixels is rare where a camera's noise or
  real texture is (15-27 % of clean synthetic frames' pairs at any size), common in the flat
  blocks of pixelation (55-85 %) and of heavy JPEG (50-60 % at the strongest corruption
  severity): WARN at 35 %, ERROR at 50 %. Blockiness is the mean luminance step between
  columns 8k-1 and 8k over the mean step elsewhere: 1.0-1.1 on clean frames, 1.8 and more
  under JPEG at the corruption suite's mildest severity; measured only on frames checked at
  their own size (a shrunk frame's grid is gone, and with it most of the harm). H.264 streams
  at a low bit rate show both too: measure a camera's clean frames before trusting the
  defaults.
- **blood** and **blood_drops**: blood on the lens. A blood-coloured pixel is red with green
  and blue both at most ``blood_chroma`` (0.25) of it, between a floor where noise decides the
  hue and clipping (a clipped red says nothing of the hue). Blood keeps about a tenth of its
  red in green and blue, while lit mucosa keeps a third or more (calibrate per camera: a warm
  white balance lowers it); what else passes is thin vessels and noise, which an opening by a
  disc of radius 2 px of the 240-px frame removes while keeping anything a droplet wide (2 %
  of the height across and up). ``blood`` is the share of the lit pixels left: a smear or a
  flood that hides the view, on the lens or on the tissue alike (a large one is a trust
  problem either way). ``blood_drops`` counts the separate blobs, pieces closer than 6 px
  (2.5 % of the height) joined: a pool on the tissue is one blob even where an instrument,
  ripples or noise cut it, and a view holds a few pools, while spatter on the lens lands as
  many droplets all over it, hence WARN at 8 blobs and ERROR at 20. Colour cannot tell a drop
  on the lens from a pool of the same blood on the tissue, nor can texture (both are flat);
  the count and the coverage can, and neither depends on how sharp the drops' edges are.

Every check returns its value and its level; a value that cannot be measured (no lit pixels, a
featureless frame) is NaN with level OK, and the block checks say why instead. The whole check
costs about 2 ms for a 1280 x 1024 frame on a CPU (shrinking it is a third of that, the blood
checks a tenth), 8 ms at Autoware's 480 rows. Pixel lengths (band-pass scales, the margin at
the edge of the field of view, the droplet sizes) are fractions of the analysis height, but the
blur ratio is not scale-free: keep 240 or re-derive its thresholds. A frame shorter than the
analysis height is checked at its own size, never enlarged: an enlarged 112-px frame reads as
blurred (the blur check fired on half of the clean 112 x 112 synthetic frames that way, on 1 %
at their own size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Final

import cv2
import numpy as np

from endoarss_ros.validation import Integer, Number, Pattern, Section, setting

# OpenCV's stubs type both operands of compare() and absdiff() (and, in OpenCV 4.10 of the Jazzy
# environment, the bounds of inRange()) as arrays, but OpenCV takes a scalar there too, applied
# to every element: such calls carry a `type: ignore[call-overload]`.


class Level(IntEnum):
    """Severity, with ``diagnostic_msgs/DiagnosticStatus`` byte values (STALE is the
    publisher's business: it means no frame, not a bad one)."""

    OK = 0
    WARN = 1
    ERROR = 2


class BlockState(IntEnum):
    """What a block of the grid shows (Autoware's states, the same order of precedence)."""

    NORMAL = 0
    DARK = 1
    OVEREXPOSED = 2
    BLOCKED = 3
    LOW_VISIBILITY = 4


BLOCK_CHECKS: Final = (
    "dark_blocks",
    "overexposed_blocks",
    "blocked_blocks",
    "low_visibility_blocks",
)
FRAME_CHECKS: Final = (
    "blur",
    "contrast",
    "saturated",
    "specular",
    "haze",
    "blood",
    "blood_drops",
    "noise",
    "flat_neighbours",
    "blockiness",
)
CHECK_NAMES: Final = BLOCK_CHECKS + FRAME_CHECKS
FIRES_BELOW: Final = frozenset({"blur", "contrast", "instrument_fraction"})
"""Checks that fire when their value falls to or below the thresholds (the others: rises),
the output checks of :mod:`.output_checks` included, which share :func:`judge`."""


def _check_names(text: str) -> str | None:
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if any(name not in CHECK_NAMES for name in names) or len(set(names)) != len(names):
        return None
    return ",".join(names)


_FRACTION = Number(0, 1)
_COUNT = Integer(1, 256)


@dataclass(frozen=True)
class ImageQualityConfig(Section):
    """Thresholds of the image checks (defaults: Autoware's image_diagnostics and the physics in
    the module docstring, not fitted to any data set)."""

    SECTION: ClassVar[str] = "trust.image"

    analysis_height: int = setting(
        240,
        Integer(48, 2160),
        doc="height (px) a taller frame is shrunk to before the checks; a shorter one is "
        "checked as it is (the defaults are for 240)",
    )
    grid: int = setting(
        5,
        Integer(1, 16),
        doc="blocks per side of the block grid (block counts above grid * grid never fire)",
    )
    disabled: str = setting(
        "",
        Pattern(
            f"a comma-separated list of check names from {', '.join(CHECK_NAMES)}", _check_names
        ),
        doc="checks to skip, comma-separated (e.g. 'specular,haze'); empty: none",
        runtime=True,
    )
    dark_intensity: float = setting(
        10.0, Number(0, 255), doc="mean luminance below which a block is dark", runtime=True
    )
    overexposed_intensity: float = setting(
        230.0,
        Number(0, 255),
        doc="mean luminance above which a block is over-exposed",
        runtime=True,
    )
    blocked_std: float = setting(
        2.0,
        Number(0, 255),
        doc="luminance standard deviation below which a block is blocked",
        runtime=True,
    )
    low_visibility_contrast: float = setting(
        0.01,
        _FRACTION,
        doc="band-limited contrast below which a block has low visibility",
        runtime=True,
    )
    dark_blocks_warn: int = setting(11, _COUNT, doc="dark blocks for WARN", runtime=True)
    dark_blocks_error: int = setting(21, _COUNT, doc="dark blocks for ERROR", runtime=True)
    overexposed_blocks_warn: int = setting(
        3, _COUNT, doc="over-exposed blocks for WARN", runtime=True
    )
    overexposed_blocks_error: int = setting(
        4, _COUNT, doc="over-exposed blocks for ERROR", runtime=True
    )
    blocked_blocks_warn: int = setting(4, _COUNT, doc="blocked blocks for WARN", runtime=True)
    blocked_blocks_error: int = setting(6, _COUNT, doc="blocked blocks for ERROR", runtime=True)
    low_visibility_blocks_warn: int = setting(
        3, _COUNT, doc="low-visibility blocks for WARN", runtime=True
    )
    low_visibility_blocks_error: int = setting(
        5, _COUNT, doc="low-visibility blocks for ERROR", runtime=True
    )
    blur_warn: float = setting(
        0.05,
        Number(0, 10),
        doc="Laplacian/luminance variance ratio at or below which: WARN",
        runtime=True,
    )
    blur_error: float = setting(
        0.02,
        Number(0, 10),
        doc="Laplacian/luminance variance ratio at or below which: ERROR",
        runtime=True,
    )
    contrast_warn: float = setting(
        0.10, Number(0, 10), doc="RMS contrast at or below which: WARN", runtime=True
    )
    contrast_error: float = setting(
        0.05, Number(0, 10), doc="RMS contrast at or below which: ERROR", runtime=True
    )
    saturated_warn: float = setting(
        0.10,
        _FRACTION,
        doc="fraction of lit pixels with a clipped channel for WARN",
        runtime=True,
    )
    saturated_error: float = setting(
        0.25,
        _FRACTION,
        doc="fraction of lit pixels with a clipped channel for ERROR",
        runtime=True,
    )
    specular_warn: float = setting(
        0.05,
        _FRACTION,
        doc="fraction of lit pixels that are specular highlights for WARN",
        runtime=True,
    )
    specular_error: float = setting(
        0.15,
        _FRACTION,
        doc="fraction of lit pixels that are specular highlights for ERROR",
        runtime=True,
    )
    haze_warn: float = setting(
        0.70, _FRACTION, doc="median darkest/brightest channel ratio for WARN", runtime=True
    )
    haze_error: float = setting(
        0.80, _FRACTION, doc="median darkest/brightest channel ratio for ERROR", runtime=True
    )
    noise_warn: float = setting(
        8.0,
        Number(0, 255, unit="grey levels"),
        doc="estimated noise standard deviation (grey levels, at the analysis size) for WARN",
        runtime=True,
    )
    noise_error: float = setting(
        16.0,
        Number(0, 255, unit="grey levels"),
        doc="estimated noise standard deviation (grey levels, at the analysis size) for ERROR",
        runtime=True,
    )
    flat_neighbours_warn: float = setting(
        0.35,
        _FRACTION,
        doc="share of neighbouring lit pixels of exactly equal luminance (pixelation, heavy "
        "compression) for WARN",
        runtime=True,
    )
    flat_neighbours_error: float = setting(
        0.5,
        _FRACTION,
        doc="share of neighbouring lit pixels of exactly equal luminance for ERROR",
        runtime=True,
    )
    blockiness_warn: float = setting(
        1.6,
        Number(1, 100),
        doc="luminance steps across the 8-px JPEG/MPEG block grid over steps elsewhere, for "
        "WARN (measured on frames not shrunk for the checks)",
        runtime=True,
    )
    blockiness_error: float = setting(
        2.5,
        Number(1, 100),
        doc="luminance steps across the 8-px block grid over steps elsewhere, for ERROR",
        runtime=True,
    )
    blood_chroma: float = setting(
        0.25,
        Number(0, 1, low_open=True),
        doc="largest of green and blue over red at or below which a pixel is blood-coloured",
        runtime=True,
    )
    blood_warn: float = setting(
        0.15,
        _FRACTION,
        doc="fraction of lit pixels in blood-coloured blobs for WARN",
        runtime=True,
    )
    blood_error: float = setting(
        0.30,
        _FRACTION,
        doc="fraction of lit pixels in blood-coloured blobs for ERROR",
        runtime=True,
    )
    blood_drops_warn: int = setting(
        8, _COUNT, doc="separate blood-coloured blobs (drops on the lens) for WARN", runtime=True
    )
    blood_drops_error: int = setting(
        20, _COUNT, doc="separate blood-coloured blobs (drops on the lens) for ERROR", runtime=True
    )

    def validate(self) -> None:
        if self.dark_intensity >= self.overexposed_intensity:
            self.fail(
                "dark_intensity",
                f"must be below overexposed_intensity ({self.overexposed_intensity:g}), "
                f"got {self.dark_intensity:g}",
            )
        for name in CHECK_NAMES:
            warn, error = self.thresholds(name)
            if name in FIRES_BELOW and error > warn:
                self.fail(
                    f"{name}_error",
                    f"must be at most {name}_warn ({warn:g}): {name} fires as its value falls, "
                    f"ERROR after WARN; got {error:g}",
                )
            if name not in FIRES_BELOW and error < warn:
                self.fail(
                    f"{name}_error",
                    f"must be at least {name}_warn ({warn:g}): {name} fires as its value rises, "
                    f"ERROR after WARN; got {error:g}",
                )

    def thresholds(self, name: str) -> tuple[float, float]:
        """``(warn, error)`` of check ``name``."""
        return getattr(self, f"{name}_warn"), getattr(self, f"{name}_error")

    @property
    def disabled_checks(self) -> frozenset[str]:
        return frozenset(name for name in self.disabled.split(",") if name)


@dataclass(frozen=True)
class CheckResult:
    """One check on one frame: its measured value, the thresholds it was judged by, its level."""

    name: str
    value: float
    level: Level
    warn: float
    error: float

    @property
    def fires_below(self) -> bool:
        return self.name in FIRES_BELOW

    @property
    def threshold(self) -> float:
        """The threshold the level was decided by (ERROR's when ERROR, else WARN's)."""
        return self.error if self.level == Level.ERROR else self.warn

    def describe(self) -> str:
        """``blur 0.012 <= 0.02`` (the value against the threshold it crossed)."""
        sign = "<=" if self.fires_below else ">="
        if self.level == Level.OK:
            sign = ">" if self.fires_below else "<"
        return f"{self.name} {self.value:.3g} {sign} {self.threshold:.3g}"


def judge(name: str, value: float, warn: float, error: float) -> CheckResult:
    """The level of ``value`` against ``warn``/``error`` (NaN: not measurable, OK)."""
    level = Level.OK
    if not math.isnan(value):
        if name in FIRES_BELOW:
            level = Level.ERROR if value <= error else Level.WARN if value <= warn else Level.OK
        else:
            level = Level.ERROR if value >= error else Level.WARN if value >= warn else Level.OK
    return CheckResult(name, float(value), level, float(warn), float(error))


@dataclass(frozen=True)
class ImageQuality:
    """The checks of one frame; ``blocks`` holds each grid block's :class:`BlockState`.

    ``field_of_view`` is the lit part of the analysis frame (uint8, 255 where the brightest
    channel reaches ``dark_intensity``, at the analysis size): where the endoscope's light
    falls. The output checks measure the model's mask there (:mod:`.output_checks`), since
    outside it the mask answers a question that training never asked (those pixels are
    ignored there)."""

    checks: tuple[CheckResult, ...]
    blocks: np.ndarray
    field_of_view: np.ndarray | None = None

    @property
    def level(self) -> Level:
        return max((c.level for c in self.checks), default=Level.OK)

    @property
    def fired(self) -> tuple[CheckResult, ...]:
        """The checks at WARN or ERROR, worst first."""
        return tuple(sorted((c for c in self.checks if c.level), key=lambda c: -c.level))

    def __getitem__(self, name: str) -> CheckResult:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"no check {name!r} in this result (disabled?)")


def shrink(frame: np.ndarray, height: int, min_width: int = 1) -> np.ndarray:
    """``frame`` at ``height`` rows, aspect kept: halved by pixel averaging (OpenCV's fast 2:1
    area path) while at least twice too tall, then bilinear for the last step of less than 2:1,
    a third of the cost of one area resize at the odd ratio, without its aliasing. The width is
    at least ``min_width`` (a grid needs a pixel per block, even for a sliver of a frame)."""
    source_height, source_width = frame.shape[:2]
    width = max(min_width, round(source_width * height / source_height))
    while frame.shape[0] >= 2 * height and frame.shape[1] >= 2:
        frame = cv2.resize(
            frame, (frame.shape[1] // 2, frame.shape[0] // 2), interpolation=cv2.INTER_AREA
        )
    if frame.shape[:2] == (height, width):
        return frame
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)


_BAND_FINE: Final = 1.0 / 240
_BAND_COARSE: Final = 4.0 / 240
_EDGE_MARGIN: Final = 5.0 / 240
_SPECULAR_VALUE: Final = 230
_SPECULAR_SATURATION: Final = 0.25
_CLIPPED: Final = 250
_BLOOD_RED: Final = 30
"""Least red of a blood-coloured pixel: below it sensor noise decides the hue."""
_DROP_RADIUS: Final = 2.0 / 240
"""Radius of the opening that keeps blood blobs: thin vessels and noise specks fall out."""
_DROP_GAP: Final = 3.0 / 240
"""Blobs closer than twice this are one blob: the pieces of a pool that an instrument, its
ripples, a highlight or noise cut apart are not drops."""


class ImageQualityChecker:
    """Runs the checks of :class:`ImageQualityConfig` on uint8 RGB frames of any size.

    Stateless between frames; :attr:`config` may be replaced at any time (runtime parameters).
    """

    def __init__(self, config: ImageQualityConfig | None = None) -> None:
        self.config = config or ImageQualityConfig()

    def __call__(self, frame: np.ndarray) -> ImageQuality:
        return self.check(frame)

    def check(self, frame: np.ndarray) -> ImageQuality:
        if (
            not isinstance(frame, np.ndarray)
            or frame.dtype != np.uint8
            or frame.ndim != 3
            or (frame.shape[2] != 3 or frame.shape[0] == 0 or frame.shape[1] == 0)
        ):
            shape = getattr(frame, "shape", None)
            raise ValueError(f"expected an H x W x 3 uint8 RGB frame, got {shape}")
        cfg = self.config
        disabled = cfg.disabled_checks
        # Never enlarged: an upscaled small frame would look blurred to the blur check.
        height = min(cfg.analysis_height, frame.shape[0])
        small = shrink(frame, height, cfg.grid)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        values: dict[str, float] = {}
        blocks = self._blocks(gray, cfg)
        for name, state in zip(BLOCK_CHECKS, (1, 2, 3, 4), strict=True):
            values[name] = float(np.count_nonzero(blocks == state))
        channels = cv2.split(small)
        lit = cv2.compare(  # type: ignore[call-overload]
            cv2.max(cv2.max(channels[0], channels[1]), channels[2]),
            cfg.dark_intensity,
            cv2.CMP_GE,
        )
        if not disabled >= set(FRAME_CHECKS):
            native = small.shape[0] == frame.shape[0]
            values.update(self._frame_values(channels, gray, lit, cfg, disabled, native))
        checks = tuple(
            judge(name, values[name], *cfg.thresholds(name))
            for name in CHECK_NAMES
            if name not in disabled
        )
        return ImageQuality(checks, blocks, lit)

    @staticmethod
    def _blocks(gray: np.ndarray, cfg: ImageQualityConfig) -> np.ndarray:
        n = cfg.grid
        rows, cols = gray.shape[0] // n, gray.shape[1] // n
        if rows == 0 or cols == 0:
            raise ValueError(
                f"a {gray.shape[1]}x{gray.shape[0]} analysis frame has no room for a {n} x {n} grid"
            )
        pixels = gray[: n * rows, : n * cols].astype(np.float32)

        def block_mean_std(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            # An area resize by whole blocks is the exact block average, in one C pass.
            mean = cv2.resize(values, (n, n), interpolation=cv2.INTER_AREA)
            square = cv2.resize(values * values, (n, n), interpolation=cv2.INTER_AREA)
            return mean, np.sqrt(np.maximum(square - mean * mean, 0.0))

        mean, std = block_mean_std(pixels)
        # Peli's band-limited contrast: a difference-of-Gaussians band over the local mean.
        height = gray.shape[0]
        fine = cv2.GaussianBlur(pixels, (0, 0), max(0.5, _BAND_FINE * height))
        coarse_sigma = max(1.0, _BAND_COARSE * height)
        size = 2 * math.ceil(2.5 * coarse_sigma) + 1  # 2.5 sigma: OpenCV's default is 4
        coarse = cv2.GaussianBlur(pixels, (size, size), coarse_sigma)
        _, band = block_mean_std(fine - coarse)
        contrast = band / np.maximum(mean, 1.0)
        state = np.full((n, n), BlockState.NORMAL, dtype=np.uint8)
        state[contrast < cfg.low_visibility_contrast] = BlockState.LOW_VISIBILITY
        state[std < cfg.blocked_std] = BlockState.BLOCKED
        state[mean > cfg.overexposed_intensity] = BlockState.OVEREXPOSED
        state[mean < cfg.dark_intensity] = BlockState.DARK
        return state

    @staticmethod
    def _frame_values(
        channels: Sequence[np.ndarray],
        gray: np.ndarray,
        lit: np.ndarray,
        cfg: ImageQualityConfig,
        disabled: frozenset[str],
        native: bool = True,
    ) -> dict[str, float]:
        """``native``: the frame is checked at its own size (its block grid is where it was)."""
        # OpenCV primitives throughout: numpy's reductions over a 3-wide last axis and its
        # boolean indexing cost several times more at this size (the budget is a few ms).
        out = dict.fromkeys(FRAME_CHECKS, math.nan)
        red, green, blue = channels
        tint = cv2.max(green, blue)
        brightest = cv2.max(red, tint)
        lit_count = cv2.countNonZero(lit)
        if lit_count == 0:
            return out
        if not {"blood", "blood_drops"} <= disabled:
            coverage, drops = _blood(red, tint, lit, cfg.blood_chroma)
            if "blood" not in disabled:
                out["blood"] = coverage / lit_count
            if "blood_drops" not in disabled:
                out["blood_drops"] = float(drops)
        darkest = cv2.min(cv2.min(red, green), blue)
        # darkest / brightest = 1 - HSV saturation, in 0..255 (0 where nothing is lit).
        whiteness = cv2.divide(darkest, brightest, scale=255.0)
        clipped = cv2.compare(brightest, _CLIPPED, cv2.CMP_GE)  # type: ignore[call-overload]
        if "saturated" not in disabled:
            out["saturated"] = cv2.countNonZero(clipped) / lit_count
        if "specular" not in disabled:
            white = cv2.bitwise_and(
                cv2.compare(brightest, _SPECULAR_VALUE, cv2.CMP_GE),  # type: ignore[call-overload]
                cv2.compare(whiteness, 255.0 * (1.0 - _SPECULAR_SATURATION), cv2.CMP_GE),  # type: ignore[call-overload]
            )
            out["specular"] = cv2.countNonZero(white) / lit_count
        margin = max(1, round(_EDGE_MARGIN * gray.shape[0]))
        inner = cv2.erode(lit, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * margin + 1,) * 2))
        inner_count = cv2.countNonZero(inner)
        if inner_count == 0:
            return out
        if "haze" not in disabled:
            histogram = cv2.calcHist([whiteness], [0], inner, [256], [0, 256]).ravel()
            median = int(np.searchsorted(np.cumsum(histogram), 0.5 * inner_count))
            out["haze"] = median / 255.0
        if {"blur", "contrast"} <= disabled:
            return out
        # Clipped pixels carry no detail: a flat glare patch would read as blur.
        measured = cv2.bitwise_and(inner, cv2.bitwise_not(clipped))
        if cv2.countNonZero(measured) == 0:
            return out
        mean, std = (float(v[0, 0]) for v in cv2.meanStdDev(gray, mask=measured))
        if "contrast" not in disabled:
            out["contrast"] = std / max(mean, 1.0)
        if "blur" not in disabled and std >= cfg.blocked_std:
            laplacian = cv2.Laplacian(gray, cv2.CV_32F)
            _, spread = cv2.meanStdDev(laplacian, mask=measured)
            out["blur"] = float(spread[0, 0]) ** 2 / std**2
        if not {"flat_neighbours", "blockiness"} <= disabled:
            flat, blockiness = _flatness(gray, measured)
            if "flat_neighbours" not in disabled:
                out["flat_neighbours"] = flat
            if "blockiness" not in disabled and native:
                out["blockiness"] = blockiness
        if "noise" not in disabled:
            # Immerkaer (1996): the difference of two Laplacians cancels any locally planar
            # (smooth) signal and leaves noise; its mean magnitude is 6 sigma / sqrt(pi / 2).
            residual = cv2.filter2D(gray, cv2.CV_32F, _NOISE_KERNEL)
            magnitude = float(cv2.mean(cv2.absdiff(residual, 0.0), mask=measured)[0])  # type: ignore[call-overload]
            out["noise"] = magnitude * math.sqrt(math.pi / 2.0) / 6.0
        return out


def _blood(red: np.ndarray, tint: np.ndarray, lit: np.ndarray, chroma: float) -> tuple[int, int]:
    """``(pixels, blobs)`` of blood colour in the lit analysis frame (``tint``: max of green
    and blue): the pixels left after an opening by a disc narrower than a droplet, and the
    blobs they make once near neighbours are joined."""
    # tint / red in 0..255; 0 where red is 0, which the red floor refuses anyway.
    ratio = cv2.divide(tint, red, scale=255.0)
    blood = cv2.bitwise_and(
        cv2.compare(ratio, 255.0 * chroma, cv2.CMP_LE),  # type: ignore[call-overload]
        # unused-ignore: OpenCV 5's stubs (Kilted's environment) take the scalar bounds.
        cv2.inRange(red, _BLOOD_RED, _CLIPPED - 1),  # type: ignore[call-overload, unused-ignore]
    )
    blood = cv2.bitwise_and(blood, lit)
    height = red.shape[0]
    blood = cv2.morphologyEx(blood, cv2.MORPH_OPEN, _disc(_DROP_RADIUS * height))
    pixels = cv2.countNonZero(blood)
    if pixels == 0:
        return 0, 0
    joined = cv2.dilate(blood, _disc(_DROP_GAP * height))
    blobs = cv2.connectedComponents(joined, connectivity=8, ltype=cv2.CV_16U)[0] - 1
    return pixels, blobs


_NOISE_KERNEL: Final = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
_BLOCK: Final = 8
"""The block size of JPEG and of MPEG/H.264 macroblock transforms."""


def _flatness(gray: np.ndarray, measured: np.ndarray) -> tuple[float, float]:
    """``(flat, blockiness)`` over the measured pixels: the share of horizontal neighbours of
    exactly equal luminance (what pixelation and heavy compression leave; a camera's noise and
    a rendered texture almost never do), and the mean step between columns 8k-1 and 8k over the
    mean step between other neighbours (JPEG's block edges)."""
    steps = cv2.absdiff(gray[:, 1:], gray[:, :-1])
    pairs = cv2.bitwise_and(measured[:, 1:], measured[:, :-1])
    count = cv2.countNonZero(pairs)
    if count == 0:
        return math.nan, math.nan
    flat = cv2.countNonZero(cv2.bitwise_and(cv2.compare(steps, 0, cv2.CMP_EQ), pairs)) / count  # type: ignore[call-overload]
    weighted = np.where(pairs > 0, steps, 0).astype(np.float32).sum(axis=0)
    pairs_per_column = np.count_nonzero(pairs, axis=0).astype(np.float32)
    edges = np.zeros(steps.shape[1], bool)
    edges[_BLOCK - 1 :: _BLOCK] = True  # the step from column 8k-1 to 8k
    across = weighted[edges].sum() / max(pairs_per_column[edges].sum(), 1.0)
    within = weighted[~edges].sum() / max(pairs_per_column[~edges].sum(), 1.0)
    return flat, (across / within if within > 0 else math.nan)


def _disc(radius: float) -> np.ndarray:
    size = 2 * max(1, round(radius)) + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def check_image(frame: np.ndarray, config: ImageQualityConfig | None = None) -> ImageQuality:
    """The image checks of one frame (a convenience over :class:`ImageQualityChecker`)."""
    return ImageQualityChecker(config).check(frame)
