"""Colour overlay of a class-id mask on its frame, for people looking at the segmentation."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from endoarss_ros.data.classes import IGNORE_INDEX

UNLABELED = IGNORE_INDEX
"""Mask value of pixels that carry no class (vision_msgs convention for uint8 masks)."""


def palette(colors: Sequence[Sequence[int]]) -> np.ndarray:
    """A 256 x 3 RGB lookup table: class k gets colors[k], every other value black."""
    if len(colors) > UNLABELED:
        raise ValueError(f"{len(colors)} classes do not fit a uint8 mask with {UNLABELED} reserved")
    table = np.zeros((256, 3), dtype=np.uint8)
    if len(colors):
        table[: len(colors)] = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    return table


STRIP_PIXELS = 1 << 22
"""Pixels blended at a time (4 Mi: up to 2560x1440 in one go): the temporaries of a strip
(class ids as three channels, colours, blend, unlabeled test) stay under 40 MiB, so an overlay
of a large frame costs its own bytes and little more."""


def render_overlay(
    rgb: np.ndarray, mask: np.ndarray, table: np.ndarray, alpha: float
) -> np.ndarray:
    """Blend class colours over an RGB frame; returns BGR (the bgr8 overlay topic's layout).

    Unlabeled pixels show the frame unchanged, so "no class" never reads as "class 0".
    """
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"frame {rgb.shape[:2]} and mask {mask.shape} differ in size")
    overlay = np.empty(rgb.shape, dtype=np.uint8)
    step = max(1, STRIP_PIXELS // max(1, mask.shape[1]))
    for top in range(0, mask.shape[0], step):
        rows = slice(top, top + step)
        _blend(rgb[rows], mask[rows], table, alpha, overlay[rows])
    return overlay


def _blend(
    rgb: np.ndarray, mask: np.ndarray, table: np.ndarray, alpha: float, out: np.ndarray
) -> None:
    # OpenCV's table lookup, the class id repeated per channel: several times faster than
    # numpy's fancy indexing `table[mask]`, with the same result.
    colour = cv2.LUT(cv2.merge([mask, mask, mask]), table.reshape(256, 1, 3))
    blended = cv2.addWeighted(rgb, 1.0 - alpha, colour, alpha, 0.0)
    np.copyto(blended, rgb, where=(mask == UNLABELED)[..., None])
    cv2.cvtColor(blended, cv2.COLOR_RGB2BGR, dst=out)
