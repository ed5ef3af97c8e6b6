"""Far out-of-distribution images for benchmarking the trust signal: pictures that are no
endoscopic scene at all, so a model's answer for them means nothing and the trust signal
should say so.

- :func:`natural_images`: the photographs and scans scikit-image ships inside its wheel
  (``skimage.data``; none is downloaded): people, a cat, objects, a street, coins, the moon, a
  printed page, microscopy, and a retina photographed through a fundus camera, the one real
  medical camera image (reddish and round-framed, the nearest to an endoscopic frame).
- :func:`procedural_textures`: what no camera sees, drawn from a seed: white noise, blobs,
  checkerboards, stripes, gradients and flat colours.

Each comes as H x W x 3 uint8 RGB at the size asked for (photographs: centre-cropped to its
aspect, then resized; grey ones repeated into three channels), under a stable name.
scikit-image is a development requirement (requirements/dev.txt), needed only here, for the
benchmark: it is loaded when :func:`natural_image` is first called, so importing this module
(or the textures) does not need it.
"""

from __future__ import annotations

import importlib
import math
import zlib
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Final

import cv2
import numpy as np

from endoarss_ros.data.procedural import fractal_noise

Size = tuple[int, int]

_NATURAL_SOURCES: Final[dict[str, tuple[str, int | None]]] = {
    # name: (skimage.data function, index into the tuple it returns or None)
    "astronaut": ("astronaut", None),
    "camera": ("camera", None),
    "coffee": ("coffee", None),
    "chelsea": ("chelsea", None),
    "rocket": ("rocket", None),
    "motorcycle_left": ("stereo_motorcycle", 0),
    "retina": ("retina", None),
    "coins": ("coins", None),
    "moon": ("moon", None),
    "page": ("page", None),
    "clock": ("clock", None),
    "hubble_deep_field": ("hubble_deep_field", None),
    "immunohistochemistry": ("immunohistochemistry", None),
    "cell": ("cell", None),
    "grass": ("grass", None),
    "gravel": ("gravel", None),
    "brick": ("brick", None),
}
NATURAL_IMAGES: Final = tuple(_NATURAL_SOURCES)
"""Names of :func:`natural_image`, all bundled in the scikit-image wheel."""


def natural_image(name: str, size: Size) -> np.ndarray:
    """The bundled picture ``name`` (one of :data:`NATURAL_IMAGES`) as ``size`` (height,
    width) uint8 RGB."""
    if name not in _NATURAL_SOURCES:
        raise KeyError(f"unknown natural image {name!r}; known: {', '.join(NATURAL_IMAGES)}")
    return fit(_load_natural(name), size)


def natural_images(
    size: Size, names: Iterable[str] = NATURAL_IMAGES
) -> list[tuple[str, np.ndarray]]:
    """``(name, image)`` for each of ``names`` at ``size``."""
    return [(name, natural_image(name, size)) for name in names]


@lru_cache(maxsize=len(_NATURAL_SOURCES))
def _load_natural(name: str) -> np.ndarray:
    function, index = _NATURAL_SOURCES[name]
    try:
        data = importlib.import_module("skimage.data")
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "the natural images come from scikit-image, a development requirement: "
            "pip install -r requirements/dev.txt (with the constraints of your environment)"
        ) from exc
    image = getattr(data, function)()
    image = image if index is None else image[index]
    image.flags.writeable = False
    return image


def fit(image: np.ndarray, size: Size) -> np.ndarray:
    """``image`` (grey, RGB or RGBA; uint8, bool or float in [0, 1]) as ``size`` (height,
    width) uint8 RGB: centre-cropped to that aspect, then resized (area when shrinking,
    bilinear when enlarging), so nothing is stretched."""
    height, width = _check_size(size)
    pixels = np.asarray(image)
    if pixels.dtype == np.bool_:
        pixels = pixels.astype(np.uint8) * 255
    elif pixels.dtype != np.uint8:
        pixels = (np.clip(pixels.astype(np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    elif pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = pixels[:, :, :3]
    if pixels.ndim != 3 or pixels.shape[2] != 3 or 0 in pixels.shape[:2]:
        raise ValueError(f"expected a grey, RGB or RGBA image, got shape {np.shape(image)}")
    rows, cols = pixels.shape[:2]
    keep_rows = min(rows, round(cols * height / width))
    keep_cols = min(cols, round(rows * width / height))
    top, left = (rows - keep_rows) // 2, (cols - keep_cols) // 2
    pixels = pixels[top : top + keep_rows, left : left + keep_cols]
    shrinking = keep_rows >= height and keep_cols >= width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(pixels, (width, height), interpolation=interpolation))


def _check_size(size: Size) -> Size:
    height, width = (int(side) for side in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be (height, width) of at least 1 px, got {size}")
    return height, width


# --- procedural textures ----------------------------------------------------------------


def _colors(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` random, clearly different RGB colours in 0..1."""
    hues = (rng.uniform() + np.arange(count) / count) % 1.0
    hsv = np.stack([hues * 360.0, rng.uniform(0.4, 1.0, count), rng.uniform(0.3, 1.0, count)])
    return cv2.cvtColor(hsv.T[None].astype(np.float32), cv2.COLOR_HSV2RGB)[0]


def _blend(weight: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Per pixel, ``colors[0]`` where ``weight`` is 0 to ``colors[1]`` where it is 1."""
    weight = weight[:, :, None].astype(np.float32)
    return colors[0] * (1.0 - weight) + colors[1] * weight


def _coordinates(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in units of the shorter side."""
    scale = min(height, width)
    ys = (np.arange(height, dtype=np.float32)[:, None] + 0.5) / scale
    xs = (np.arange(width, dtype=np.float32)[None, :] + 0.5) / scale
    return ys, xs


def _white_noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.random((height, width, 3), dtype=np.float32)


def _grey_noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    grey = np.clip(0.5 + 0.2 * rng.standard_normal((height, width), dtype=np.float32), 0, 1)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _blobs(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    field = fractal_noise(rng, height, width, float(rng.uniform(2.0, 5.0)), 4, 0.5)
    return _blend(np.clip(0.5 + 0.3 * field, 0.0, 1.0), _colors(rng, 2))


def _colour_blobs(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    channels = [fractal_noise(rng, height, width, 3.0, 3, 0.5) for _ in range(3)]
    return np.clip(0.5 + 0.25 * np.stack(channels, axis=2), 0.0, 1.0)


def _checkerboard(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    ys, xs = _coordinates(height, width)
    cell = float(rng.uniform(0.06, 0.2))
    squares = (np.floor(ys / cell) + np.floor(xs / cell)) % 2
    return _blend(squares, _colors(rng, 2))


def _stripes(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    ys, xs = _coordinates(height, width)
    angle = float(rng.uniform(0, math.pi))
    period = float(rng.uniform(0.04, 0.15))
    phase = (xs * math.cos(angle) + ys * math.sin(angle)) / period
    return _blend(0.5 + 0.5 * np.sin(2 * math.pi * phase), _colors(rng, 2))


def _linear_gradient(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    ys, xs = _coordinates(height, width)
    angle = float(rng.uniform(0, 2 * math.pi))
    along = xs * math.cos(angle) + ys * math.sin(angle)
    return _blend((along - along.min()) / max(float(np.ptp(along)), 1e-6), _colors(rng, 2))


def _radial_gradient(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    ys, xs = _coordinates(height, width)
    centre_y, centre_x = rng.uniform(0.3, 0.7, 2) * (float(ys.max()), float(xs.max()))
    distance = np.sqrt((ys - centre_y) ** 2 + (xs - centre_x) ** 2)
    return _blend(distance / max(float(distance.max()), 1e-6), _colors(rng, 2))


def _flat(color: tuple[float, float, float]) -> Callable[..., np.ndarray]:
    def draw(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        return np.broadcast_to(np.asarray(color, np.float32), (height, width, 3))

    return draw


def _flat_random(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return np.broadcast_to(_colors(rng, 1)[0], (height, width, 3))


_TEXTURES: Final[dict[str, Callable[[np.random.Generator, int, int], np.ndarray]]] = {
    "white_noise": _white_noise,
    "grey_noise": _grey_noise,
    "blobs": _blobs,
    "colour_blobs": _colour_blobs,
    "checkerboard": _checkerboard,
    "stripes": _stripes,
    "linear_gradient": _linear_gradient,
    "radial_gradient": _radial_gradient,
    "flat_black": _flat((0.0, 0.0, 0.0)),
    "flat_white": _flat((1.0, 1.0, 1.0)),
    "flat_grey": _flat((0.5, 0.5, 0.5)),
    "flat_red": _flat((0.6, 0.05, 0.05)),
    "flat_colour": _flat_random,
}
PROCEDURAL_TEXTURES: Final = tuple(_TEXTURES)
"""Names of :func:`procedural_texture`."""


def procedural_texture(name: str, size: Size, seed: int = 0) -> np.ndarray:
    """Texture ``name`` (one of :data:`PROCEDURAL_TEXTURES`) as ``size`` (height, width) uint8
    RGB; the same name, size and seed give the same bytes, whatever else is drawn."""
    if name not in _TEXTURES:
        raise KeyError(f"unknown texture {name!r}; known: {', '.join(PROCEDURAL_TEXTURES)}")
    height, width = _check_size(size)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    pixels = _TEXTURES[name](rng, height, width)
    return (np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def procedural_textures(
    size: Size, seed: int = 0, names: Iterable[str] = PROCEDURAL_TEXTURES
) -> list[tuple[str, np.ndarray]]:
    """``(name, texture)`` for each of ``names`` at ``size``, drawn from ``seed``."""
    return [(name, procedural_texture(name, size, seed)) for name in names]
