"""Procedural noise: the texture source of synthetic tissue, smoke and corruptions.

Fractal (multi-octave) value noise is made by upsampling small random grids with bicubic
interpolation on a coarse working grid and resizing once to full size, so a 640x480 noise field
costs well under a millisecond.
"""

from __future__ import annotations

import cv2
import numpy as np


def fractal_noise(
    rng: np.random.Generator,
    height: int,
    width: int,
    cells: float = 4.0,
    octaves: int = 4,
    persistence: float = 0.5,
) -> np.ndarray:
    """H x W float32 noise with zero mean and unit standard deviation.

    `cells` is the number of noise cells across the longer side at the coarsest octave; each
    further octave doubles it and weighs `persistence` times the previous one. The octaves are
    summed on a grid four times finer than the finest octave and blurred there, which removes
    the axis-aligned streaks of interpolated value noise; only that grid is resized to full size.
    """
    longer = max(height, width)
    finest = cells * 2 ** (octaves - 1)
    work_h = min(height, max(4, round(4 * finest * height / longer)))
    work_w = min(width, max(4, round(4 * finest * width / longer)))
    total = np.zeros((work_h, work_w), dtype=np.float32)
    amplitude = 1.0
    for octave in range(octaves):
        across = cells * 2**octave
        grid_h = max(2, round(across * height / longer)) + 1
        grid_w = max(2, round(across * width / longer)) + 1
        grid = rng.standard_normal((grid_h, grid_w), dtype=np.float32)
        layer = cv2.resize(grid, (work_w, work_h), interpolation=cv2.INTER_CUBIC)
        cv2.scaleAdd(layer, amplitude, total, dst=total)
        amplitude *= persistence
    pixels_per_cell = work_w * longer / (finest * width)
    cv2.GaussianBlur(total, (0, 0), 0.4 * pixels_per_cell, dst=total)
    noise = cv2.resize(total, (width, height), interpolation=cv2.INTER_LINEAR)
    noise -= np.float32(noise.mean())
    noise *= np.float32(1.0 / max(float(noise.std()), 1e-6))
    return noise
