"""Anti-aliased drawing of shapes into an RGB frame and its label mask at the same time.

Each paint call rasterises its shapes once into a coverage map of the shapes' bounding box; the
same coverage blends the colour into the image and, above a threshold, writes the class id into
the mask. Image and mask therefore agree to the pixel by construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

_SHIFT = 4
_ONE = 1 << _SHIFT

Shader = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(x: 1 x w, y: h x 1 pixel coordinates) -> h x w x 3 colour."""


@dataclass(frozen=True)
class Polygon:
    points: np.ndarray  # N x 2 pixels

    def bounds(self) -> tuple[float, float, float, float]:
        return (*self.points.min(axis=0), *self.points.max(axis=0))

    def draw(self, coverage: np.ndarray, origin: tuple[int, int]) -> None:
        fixed = np.round((self.points - origin) * _ONE).astype(np.int32)
        cv2.fillPoly(coverage, [fixed], 255, cv2.LINE_AA, _SHIFT)


@dataclass(frozen=True)
class Polyline:
    points: np.ndarray  # N x 2 pixels
    thickness: float

    def bounds(self) -> tuple[float, float, float, float]:
        pad = self.thickness / 2 + 1
        low, high = self.points.min(axis=0) - pad, self.points.max(axis=0) + pad
        return (*low, *high)

    def draw(self, coverage: np.ndarray, origin: tuple[int, int]) -> None:
        fixed = np.round((self.points - origin) * _ONE).astype(np.int32)
        cv2.polylines(
            coverage, [fixed], False, 255, max(1, round(self.thickness)), cv2.LINE_AA, _SHIFT
        )


@dataclass(frozen=True)
class Disk:
    center: tuple[float, float]
    radius: float

    def bounds(self) -> tuple[float, float, float, float]:
        x, y, r = self.center[0], self.center[1], self.radius + 1
        return (x - r, y - r, x + r, y + r)

    def draw(self, coverage: np.ndarray, origin: tuple[int, int]) -> None:
        center = (
            round((self.center[0] - origin[0]) * _ONE),
            round((self.center[1] - origin[1]) * _ONE),
        )
        cv2.circle(
            coverage, center, max(1, round(self.radius * _ONE)), 255, -1, cv2.LINE_AA, _SHIFT
        )


Shape = Polygon | Polyline | Disk


class Painter:
    """Draws into `rgb` (H x W x 3 float32) and `label` (H x W uint8) in place."""

    def __init__(self, rgb: np.ndarray, label: np.ndarray) -> None:
        self.rgb = rgb
        self.label = label
        self.height, self.width = label.shape

    def _region(self, shapes: Sequence[Shape]) -> tuple[int, int, int, int] | None:
        boxes = np.array([shape.bounds() for shape in shapes])
        x0 = max(0, math.floor(boxes[:, 0].min()) - 1)
        y0 = max(0, math.floor(boxes[:, 1].min()) - 1)
        x1 = min(self.width, math.ceil(boxes[:, 2].max()) + 2)
        y1 = min(self.height, math.ceil(boxes[:, 3].max()) + 2)
        if x0 >= x1 or y0 >= y1:
            return None
        return x0, y0, x1, y1

    def coverage(
        self, shapes: Sequence[Shape]
    ) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
        """uint8 coverage of the shapes' union within their clipped bounding box."""
        region = self._region(shapes)
        if region is None:
            return None
        x0, y0, x1, y1 = region
        cover = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        for shape in shapes:
            shape.draw(cover, (x0, y0))
        return cover, region

    def paint(
        self,
        shapes: Sequence[Shape],
        color: Sequence[float] | Shader,
        class_id: int | None = None,
        opacity: float = 1.0,
        label_threshold: float = 0.5,
    ) -> None:
        """Blend `color` (RGB or shader) over the shapes; label covered pixels with `class_id`."""
        found = self.coverage(shapes)
        if found is None:
            return
        cover, (x0, y0, x1, y1) = found
        alpha = cover.astype(np.float32) * np.float32(opacity / 255.0)
        roi = self.rgb[y0:y1, x0:x1]
        if callable(color):
            xs = np.arange(x0, x1, dtype=np.float32)[None, :]
            ys = np.arange(y0, y1, dtype=np.float32)[:, None]
            fill = color(xs, ys)
        else:
            fill = np.asarray(color, dtype=np.float32)
        roi += (fill - roi) * alpha[:, :, None]
        if class_id is not None:
            self.label[y0:y1, x0:x1][cover >= round(255 * label_threshold)] = class_id

    def scale(self, shapes: Sequence[Shape], factor: float, opacity: float = 1.0) -> None:
        """Multiply the image under the shapes by `factor` (shading, folds); labels unchanged."""
        found = self.coverage(shapes)
        if found is None:
            return
        cover, (x0, y0, x1, y1) = found
        gain = 1.0 + cover.astype(np.float32) * np.float32(opacity * (factor - 1.0) / 255.0)
        self.rgb[y0:y1, x0:x1] *= gain[:, :, None]


def cylinder_shader(
    origin: tuple[float, float],
    direction: tuple[float, float],
    length: float,
    half_width_start: float,
    half_width_end: float,
    color: Sequence[float],
    shine: float,
) -> Shader:
    """Shading of a metal or plastic cylinder seen from the side: dark rims, a specular line."""
    base = np.asarray(color, dtype=np.float32)
    dx, dy = direction
    nx, ny = -dy, dx

    def shade(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        rx, ry = xs - origin[0], ys - origin[1]
        along = np.clip((rx * dx + ry * dy) / max(length, 1e-6), 0.0, 1.0)
        half = half_width_start + (half_width_end - half_width_start) * along
        across = np.clip((rx * nx + ry * ny) / np.maximum(half, 0.5), -1.0, 1.0)
        diffuse = np.sqrt(1.0 - across * across)
        highlight = np.exp(-(((across + 0.35) / 0.2) ** 2)) * np.float32(shine)
        out = base * (0.25 + 0.75 * diffuse)[:, :, None]
        out += highlight[:, :, None]
        return out

    return shade
