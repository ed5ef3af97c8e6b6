"""Image corruptions at five severities, for robustness tests in the manner of ImageNet-C.

The set follows the EndoARSS robustness material (ImageNet-C noises, blurs, JPEG, pixelation,
contrast, brightness) plus surgical ones: smoke, bleeding (blood droplets on the lens, after the
semi-synthetic bleeding used for MTLESD), over-exposure and specular glare. Severity parameters
mostly follow Hendrycks & Dietterich (ICLR 2019); pixel-sized ones (blur radii, droplet sizes)
are defined for a 256-pixel shorter side and scale with the image, so a corruption means the
same at any resolution. Each corruption changes the image more with each severity step, only
the image changes (labels stay valid), and all randomness comes from the `rng` argument.

    corrupt(image, "smoke", 3, numpy.random.default_rng(0)) -> corrupted copy (uint8 RGB)
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from typing import Final

import cv2
import numpy as np

from endoarss_ros.data.dataset import ActivitySegmentationDataset, Sample
from endoarss_ros.data.procedural import fractal_noise

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
"""(H x W x 3 uint8 RGB image, severity 1..5, generator) -> corrupted uint8 image."""

SEVERITIES: Final = (1, 2, 3, 4, 5)
REFERENCE_SIDE: Final = 256


def _level(values: tuple[float, ...], severity: int) -> float:
    return values[severity - 1]


def _pixels(image: np.ndarray, length: float) -> float:
    """A length given for a 256-px shorter side, at this image's size."""
    return length * min(image.shape[:2]) / REFERENCE_SIDE


def _to_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) * np.float32(1.0 / 255.0)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def gaussian_noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    sigma = _level((0.08, 0.12, 0.18, 0.26, 0.38), severity)
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    return _to_uint8(_to_float(image) + noise * np.float32(sigma))


def shot_noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    photons = _level((60.0, 25.0, 12.0, 5.0, 3.0), severity)
    return _to_uint8(rng.poisson(_to_float(image) * photons) / photons)


def impulse_noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    amount = _level((0.03, 0.06, 0.09, 0.17, 0.27), severity)
    draw = rng.random(image.shape, dtype=np.float32)
    out = image.copy()
    out[draw < amount / 2] = 0
    out[(draw >= amount / 2) & (draw < amount)] = 255
    return out


def speckle_noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    sigma = _level((0.15, 0.2, 0.35, 0.45, 0.6), severity)
    pixels = _to_float(image)
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    return _to_uint8(pixels + pixels * noise * np.float32(sigma))


def gaussian_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    sigma = _pixels(image, _level((1.0, 2.0, 3.0, 4.0, 6.0), severity))
    return cv2.GaussianBlur(image, (0, 0), sigma)


def defocus_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """A disk (lens aperture) kernel, smoothed a little against aliasing."""
    radius = _pixels(image, _level((3.0, 4.0, 6.0, 8.0, 10.0), severity))
    size = 2 * math.ceil(radius) + 1
    kernel = np.zeros((size * 4, size * 4), dtype=np.uint8)
    cv2.circle(kernel, (size * 2, size * 2), round(radius * 4), 255, -1, cv2.LINE_AA)
    kernel = cv2.resize(kernel, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    kernel /= kernel.sum()
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)


def motion_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Camera shake: a line kernel at a random angle."""
    length = _pixels(image, _level((6.0, 10.0, 14.0, 18.0, 24.0), severity))
    angle = rng.uniform(-math.pi / 4, math.pi / 4)
    size = 2 * math.ceil(length / 2) + 1
    kernel = np.zeros((size * 4, size * 4), dtype=np.uint8)
    half = length * 2
    center = size * 2
    start = (round(center - half * math.cos(angle)), round(center - half * math.sin(angle)))
    end = (round(center + half * math.cos(angle)), round(center + half * math.sin(angle)))
    cv2.line(kernel, start, end, 255, 4, cv2.LINE_AA)
    kernel = cv2.resize(kernel, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    kernel /= kernel.sum()
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)


def pixelate(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Blocks of 2..6 pixels (at a 256-px shorter side, never fewer than severity + 1)."""
    block = max(severity + 1, round(_pixels(image, _level((2.0, 3.0, 4.0, 5.0, 6.0), severity))))
    height, width = image.shape[:2]
    small = cv2.resize(
        image,
        (max(1, math.ceil(width / block)), max(1, math.ceil(height / block))),
        interpolation=cv2.INTER_AREA,
    )
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)


def jpeg_compression(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    quality = int(_level((25, 18, 15, 10, 7), severity))
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV failed to encode JPEG")
    return cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)


def contrast(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    keep = _level((0.4, 0.3, 0.2, 0.1, 0.05), severity)
    pixels = _to_float(image)
    mean = pixels.mean(axis=(0, 1), keepdims=True)
    return _to_uint8((pixels - mean) * np.float32(keep) + mean)


def brightness(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Overexposure: value (HSV) raised."""
    shift = _level((0.1, 0.2, 0.3, 0.4, 0.5), severity)
    hsv = cv2.cvtColor(_to_float(image), cv2.COLOR_RGB2HSV)
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + shift, 0.0, 1.0)
    return _to_uint8(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))


def smoke(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Surgical smoke: a wispy grey veil that also washes out contrast."""
    density = _level((0.2, 0.35, 0.5, 0.65, 0.8), severity)
    height, width = image.shape[:2]
    wisps = np.clip(0.65 + 0.35 * fractal_noise(rng, height, width, 3.0, 4, 0.55), 0.0, 1.0)
    alpha = (np.float32(density) * wisps)[:, :, None]
    veil = np.array([0.85, 0.84, 0.82], dtype=np.float32)
    return _to_uint8(_to_float(image) * (1.0 - alpha) + veil * alpha)


BLOOD_DROPS: Final = (6, 12, 20, 28, 36)


def bleeding(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Blood droplets on the lens: irregular dark-red blobs with a glossy highlight.

    All 36 droplets are drawn from `rng` first and severity keeps the first 6..36, so a higher
    severity adds droplets to the same ones.
    """
    height, width = image.shape[:2]
    count = BLOOD_DROPS[-1]
    centers = rng.uniform(0, 1, (count, 2)) * np.array([width, height])
    radii = rng.uniform(4.0, 12.5, count) * min(height, width) / REFERENCE_SIDE
    harmonics = rng.uniform(0, 0.15, (count, 3))
    phases = rng.uniform(0, 2 * np.pi, (count, 3))
    shades = rng.uniform(0.75, 1.0, count)
    theta = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    pixels = _to_float(image)
    cover = np.zeros((height, width), dtype=np.uint8)
    shine = np.zeros((height, width), dtype=np.uint8)
    tone = np.zeros((height, width), dtype=np.float32)
    for k in range(BLOOD_DROPS[severity - 1]):
        r = radii[k] * (1 + (harmonics[k] * np.cos(np.outer(theta, [2, 3, 4]) + phases[k])).sum(1))
        outline = centers[k] + np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
        cv2.fillPoly(cover, [np.round(outline * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
        cv2.fillPoly(tone, [np.round(outline).astype(np.int32)], float(shades[k]))
        spot = centers[k] - radii[k] * 0.35
        cv2.circle(
            shine,
            (round(spot[0] * 16), round(spot[1] * 16)),
            max(16, round(radii[k] * 0.22 * 16)),
            255,
            -1,
            cv2.LINE_AA,
            4,
        )
    alpha = (cover.astype(np.float32) * np.float32(0.95 / 255.0))[:, :, None]
    blood = np.array([0.45, 0.03, 0.04], dtype=np.float32) * np.maximum(tone, 0.75)[:, :, None]
    out = pixels * (1.0 - alpha) + blood * alpha
    gloss = (cv2.GaussianBlur(shine, (0, 0), 1.0).astype(np.float32) / 255.0)[:, :, None]
    out += gloss * alpha * np.float32(0.6)
    return _to_uint8(out)


EXPOSURE_STOPS: Final = (1.0, 1.5, 2.0, 2.5, 3.0)


def _srgb_to_linear(values: np.ndarray) -> np.ndarray:
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(values: np.ndarray) -> np.ndarray:
    return np.where(values <= 0.0031308, values * 12.92, 1.055 * values ** (1 / 2.4) - 0.055)


def over_exposure(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """An exposure 1-3 stops too long: auto-exposure lagging as the scope nears tissue (light
    on the tissue grows with the inverse square of the distance, so halving it is 2 stops).
    The light is scaled in linear sRGB and each channel clips at full scale, so highlights turn
    flat and colours drift towards yellow-white, unlike `brightness`'s shift in value."""
    gain = 2.0 ** _level(EXPOSURE_STOPS, severity)
    levels = np.arange(256, dtype=np.float64) / 255.0
    exposed = _linear_to_srgb(np.clip(_srgb_to_linear(levels) * gain, 0.0, 1.0))
    table = (exposed * 255.0 + 0.5).astype(np.uint8)
    return cv2.LUT(image, table)


GLARE_COVER: Final = (0.01, 0.03, 0.06, 0.10, 0.15)


def specular_glare(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Specular highlights of wet tissue: white, unsaturated patches with soft rims covering
    1-15 % of the lit view (pixels outside the light, such as an endoscope's black border,
    reflect nothing). One random field is thresholded at each severity's coverage, so a higher
    severity grows the same patches."""
    height, width = image.shape[:2]
    field = fractal_noise(rng, height, width, 6.0, 4, 0.6)
    lit = image.max(axis=2) > 20
    if not lit.any():
        return image.copy()
    cover = _level(GLARE_COVER, severity)
    level = float(np.quantile(field[lit], 1.0 - cover))
    rim = 0.5  # field units over which a patch fades from white into the tissue
    alpha = np.clip((field - level) / rim + 1.0, 0.0, 1.0)
    alpha = alpha * alpha * (3.0 - 2.0 * alpha) * lit
    pixels = _to_float(image)
    return _to_uint8(pixels + (1.0 - pixels) * alpha[:, :, None])


CORRUPTIONS: Final[dict[str, Corruption]] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise,
    "gaussian_blur": gaussian_blur,
    "defocus_blur": defocus_blur,
    "motion_blur": motion_blur,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
    "contrast": contrast,
    "brightness": brightness,
    "smoke": smoke,
    "bleeding": bleeding,
    "over_exposure": over_exposure,
    "specular_glare": specular_glare,
}
"""Name -> corruption; iterate it for a full robustness sweep."""


def corrupt(image: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """`image` (H x W x 3 uint8 RGB) corrupted by `name` at `severity` 1..5; a new array."""
    if name not in CORRUPTIONS:
        raise KeyError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1..5, got {severity}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image.shape} {image.dtype}")
    return CORRUPTIONS[name](image, severity, rng)


class CorruptedDataset(ActivitySegmentationDataset):
    """Another dataset with every image corrupted; masks and activities unchanged.

    Sample `i` is corrupted with a generator seeded by (seed, i, corruption, severity), so the
    corrupted test set is the same on every run and in every worker.
    """

    def __init__(
        self,
        dataset: ActivitySegmentationDataset,
        name: str,
        severity: int,
        seed: int = 0,
        transform: Callable[[Sample], object] | None = None,
    ) -> None:
        if name not in CORRUPTIONS:
            raise KeyError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be 1..5, got {severity}")
        super().__init__(dataset.class_info, transform)
        self.dataset = dataset
        self.name = name
        self.severity = severity
        self.seed = seed
        self._name_key = zlib.crc32(name.encode())

    def __len__(self) -> int:
        return len(self.dataset)

    def activity_of(self, index: int) -> int:
        return self.dataset.activity_of(index)

    def load(self, index: int) -> Sample:
        sample = self.dataset.load(index)
        rng = np.random.default_rng([self.seed, index, self._name_key, self.severity])
        image = corrupt(sample.image, self.name, self.severity, rng)
        return Sample(image, sample.mask, sample.activity, sample.sample_id, sample.path)
