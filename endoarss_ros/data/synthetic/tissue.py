"""Tissue texture: mucosa colour, fat patches, vessels, relief shading and wet specular glints.

The texture depends only on its `TissueStyle` and is cached, so the frames of a clip (which
share one tissue canvas and pan over it) pay for it once.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Final

import cv2
import numpy as np

from endoarss_ros.data.procedural import fractal_noise
from endoarss_ros.data.synthetic.scene import TissueStyle

FAT_COLOR: Final = np.array([0.92, 0.78, 0.45], dtype=np.float32)
VESSEL_COLOR: Final = np.array([0.42, 0.06, 0.12], dtype=np.float32)
_RELIEF_LIGHT: Final = (-0.6, -0.8)


@lru_cache(maxsize=4)
def tissue_texture(style: TissueStyle) -> np.ndarray:
    """Canvas-sized H x W x 3 float32 RGB in about [0, 1.3]; read-only (shared by the cache)."""
    rng = np.random.default_rng(style.seed)
    height, width = style.canvas_size
    scale = min(height, width)
    relief = fractal_noise(rng, height, width, cells=3.0, octaves=5, persistence=0.6)
    albedo = fractal_noise(rng, height, width, cells=8.0, octaves=3, persistence=0.6)
    fat_noise = fractal_noise(rng, height, width, cells=2.5, octaves=3, persistence=0.5)

    fat = np.clip((fat_noise - 0.7) * 2.0, 0.0, 1.0) * np.float32(style.fat)
    vessels = _vessel_layer(rng, height, width, style.vessels, scale)
    slope = cv2.Sobel(relief, cv2.CV_32F, 1, 0, ksize=3) * _RELIEF_LIGHT[0]
    slope += cv2.Sobel(relief, cv2.CV_32F, 0, 1, ksize=3) * _RELIEF_LIGHT[1]
    slope *= np.float32(style.relief * 0.15 / max(float(slope.std()), 1e-6))
    shade = np.clip(slope + 1.0, 0.55, 1.4)
    glints = _glints(rng, relief, scale)

    # Per channel: ((mucosa * albedo) over fat, then under vessels) * relief shading + glints,
    # expanded into three weights shared by the channels so every pass is single-channel.
    base_color = np.asarray(style.color, dtype=np.float32)
    vessel_color = VESSEL_COLOR * base_color / 0.75
    clear = (1.0 - vessels) * shade
    mucosa_weight = (1.0 + 0.1 * albedo) * (1.0 - fat) * clear
    fat_weight = fat * clear
    vessel_weight = vessels * shade
    channels = [
        mucosa_weight * base_color[c]
        + fat_weight * FAT_COLOR[c]
        + vessel_weight * vessel_color[c]
        + glints
        for c in range(3)
    ]
    rgb = cv2.merge(channels)
    rgb.flags.writeable = False
    return rgb


def _vessel_layer(
    rng: np.random.Generator, height: int, width: int, count: int, scale: int
) -> np.ndarray:
    """Branching, tapering random walks drawn anti-aliased; float32 opacity in [0, 0.6]."""
    layer = np.zeros((height, width), dtype=np.uint8)
    step = 0.02 * scale
    pending = [
        (
            rng.uniform(0, width),
            rng.uniform(0, height),
            rng.uniform(0, 2 * math.pi),
            rng.uniform(0.004, 0.011) * scale,
            int(rng.integers(25, 60)),
        )
        for _ in range(count)
    ]
    drawn = 0
    while pending and drawn < 4 * count + 8:
        x, y, angle, thickness, steps = pending.pop()
        drawn += 1
        for _ in range(steps):
            angle += rng.normal(0.0, 0.22)
            nx, ny = x + step * math.cos(angle), y + step * math.sin(angle)
            cv2.line(
                layer,
                (round(x * 16), round(y * 16)),
                (round(nx * 16), round(ny * 16)),
                255,
                max(1, round(thickness)),
                cv2.LINE_AA,
                shift=4,
            )
            x, y, thickness = nx, ny, thickness * 0.985
            if rng.random() < 0.05 and thickness > 1.2:
                side = 1 if rng.random() < 0.5 else -1
                branch_angle = angle + side * rng.uniform(0.5, 1.1)
                pending.append((x, y, branch_angle, thickness * 0.65, int(rng.integers(8, 25))))
    blurred = cv2.GaussianBlur(layer, (0, 0), max(0.6, 0.002 * scale))
    return blurred.astype(np.float32) * np.float32(0.6 / 255.0)


def _glints(rng: np.random.Generator, relief: np.ndarray, scale: int) -> np.ndarray:
    """Small bright specular spots where the wet surface bulges (high relief)."""
    height, width = relief.shape
    layer = np.zeros((height, width), dtype=np.float32)
    candidates = int(60 * height * width / scale**2)
    xs = rng.integers(0, width, candidates)
    ys = rng.integers(0, height, candidates)
    sizes = rng.uniform(0.003, 0.014, (candidates, 2)) * scale
    angles = rng.uniform(0, 180, candidates)
    strengths = rng.uniform(0.5, 1.0, candidates)
    for x, y, (a, b), angle, strength in zip(xs, ys, sizes, angles, strengths, strict=True):
        if relief[y, x] > 1.0:
            cv2.ellipse(
                layer,
                ((float(x), float(y)), (float(a) * 2, float(b)), float(angle)),
                float(strength),
                -1,
                cv2.LINE_AA,
            )
    return cv2.GaussianBlur(layer, (0, 0), max(0.5, 0.0025 * scale))
