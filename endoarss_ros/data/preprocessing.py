"""The one preprocessing path from a frame to the network input, and the one mask resize.

The Predictor (and through it the node and ``bag infer``), ``endoarss eval`` and training
validation all feed the network through :class:`Preprocessing`, so a score measures what the
node computes. From a uint8 RGB frame of any size:

1. the pixels as float32 (0-255), N x 3 x H x W;
2. resized to the network input size by antialiased bilinear interpolation (torch's
   ``interpolate(..., mode="bilinear", antialias=True)``: a triangle filter widened by the
   downscale factor, as PIL's bilinear filter; without antialiasing a 640x480 frame shrunk to
   224 aliases); skipped when the frame already has that size;
3. normalised: ``(pixels - 255 * mean) * (1 / (255 * std))``.

The Predictor runs these steps on its device in one go. Evaluation runs step 2 when it reads
a frame (``training.data.ResizedFrames`` keeps the unrounded float32 result) and steps 1 and 3
in ``transforms.EvalTransform``; as the steps are these functions, the network sees the same
numbers up to float rounding. Training frames are the same resize rounded to uint8, which the
augmentation works on (`TrainTransform`), and are normalised here too.

Masks are resized by pixel-centre nearest neighbour in exact integer arithmetic: target pixel
``i`` takes source pixel ``floor((i + 1/2) * n_in / n_out) = (2i + 1) * n_in // (2 * n_out)``,
the mapping of OpenCV's ``INTER_NEAREST_EXACT`` and torch's ``nearest-exact``, which compute it
in fixed or floating point and pick the neighbouring pixel for some sizes (torch for 1024 ->
244, a float64 version for 224 -> 277). It puts each mask pixel where the image resize puts
its pixel (both map pixel centres, ``align_corners=False``); OpenCV's ``INTER_NEAREST``
(``floor(i * n_in / n_out)``) shifts masks by up to half a source pixel and changes about 1 %
of the pixels of a 640x480 or 1280x1024 mask resized to 224x224.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

MaskT = TypeVar("MaskT", np.ndarray, torch.Tensor)


def _size(size: int | Sequence[int]) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if height <= 0 or width <= 0:
        raise ValueError(f"size {height}x{width} must be positive")
    return int(height), int(width)


def nearest_axis(size_in: int, size_out: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Source index of every target index along one axis: ``(2i + 1) * size_in // (2 *
    size_out)``, pixel-centre nearest, exact (int64 arithmetic)."""
    if size_in <= 0 or size_out <= 0:
        raise ValueError(f"sizes must be positive, got {size_in} -> {size_out}")
    index = torch.arange(size_out, device=device, dtype=torch.int64)
    return torch.div((2 * index + 1) * size_in, 2 * size_out, rounding_mode="floor")


def nearest_indices(
    source: Sequence[int], target: Sequence[int], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source row and column of every target pixel for a (height, width) ``source`` resized
    to ``target``; gathering with them works for uint8 on every device, where interpolate()
    does not."""
    return (
        nearest_axis(int(source[0]), int(target[0]), device),
        nearest_axis(int(source[1]), int(target[1]), device),
    )


def resize_mask(mask: MaskT, size: int | Sequence[int]) -> MaskT:
    """``mask`` (numpy array or tensor, ... x H x W) at ``size`` (height, width) by
    pixel-centre nearest neighbour; class ids are copied, never blended."""
    height, width = _size(size)
    if tuple(mask.shape[-2:]) == (height, width):
        return mask
    if isinstance(mask, np.ndarray):
        rows, cols = nearest_indices(mask.shape[-2:], (height, width))
        return np.ascontiguousarray(mask[..., rows.numpy()[:, None], cols.numpy()[None, :]])
    rows, cols = nearest_indices(mask.shape[-2:], (height, width), mask.device)
    return mask.index_select(-1, cols).index_select(-2, rows)


STRIP_PIXELS = 1 << 22
"""Pixels (4 Mi: 48 MiB as float32) of an integer frame made float32 at a time by
:func:`resize_pixels`; frames up to this size (2560x1440 and below) are resized in one pass."""


def _antialiased(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=True)


def resize_pixels(pixels: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Steps 1 and 2: ``pixels`` (N x 3 x H x W or 3 x H x W, uint8 or float in 0-255) as
    float32 at ``size`` (height, width), antialiased bilinear; unrounded.

    The antialiased resize is separable, width first: an integer frame of more than
    `STRIP_PIXELS` pixels gets its width pass strip by strip of rows, each strip made float32
    only for that pass, and the height pass on the narrow result. A large frame (8000x8000 is
    183 MiB) then never exists as float32, which would take four times its bytes; the result is
    the one pass's, bit for bit (a test checks it)."""
    height, width = _size(size)
    batched = pixels if pixels.ndim == 4 else pixels.unsqueeze(0)
    rows, columns = batched.shape[-2:]
    if (rows, columns) == (height, width):
        resized = batched.float()
    elif not batched.is_floating_point() and rows * columns > STRIP_PIXELS and columns != width:
        step = max(1, STRIP_PIXELS // columns)
        narrow = torch.cat(
            [
                _antialiased(batched[..., top : top + step, :].float(), (strip, width))
                for top in range(0, rows, step)
                for strip in [min(step, rows - top)]
            ],
            dim=-2,
        )
        resized = _antialiased(narrow, (height, width))
    else:
        resized = _antialiased(batched.float(), (height, width))
    return resized if pixels.ndim == 4 else resized.squeeze(0)


def round_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """Float pixels (0-255) as uint8: rounded half to even, clamped."""
    if pixels.dtype == torch.uint8:
        return pixels
    return pixels.round().clamp_(0, 255).to(torch.uint8)


def resize_frame(image: np.ndarray, size: int | Sequence[int], *, rounded: bool) -> np.ndarray:
    """An H x W x 3 RGB array at ``size`` (height, width) by :func:`resize_pixels`: uint8
    when ``rounded`` (training frames), else the float32 values the network input is
    normalised from (evaluation frames)."""
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    resized = resize_pixels(pixels, size)
    if rounded:
        resized = round_pixels(resized)
    return np.ascontiguousarray(resized.permute(1, 2, 0).numpy())


class Preprocessing:
    """Steps 1-3 for one network: ``preprocessing(pixels)`` is the network input of uint8
    (or already resized float32) pixels N x 3 x H x W, on ``device``."""

    def __init__(
        self,
        input_size: int | Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str = "cpu",
    ) -> None:
        self.input_size = _size(input_size)
        shape = (1, 3, 1, 1)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._offset = torch.tensor(self.mean, device=device).view(shape) * 255.0
        self._scale = 1.0 / (torch.tensor(self.std, device=device).view(shape) * 255.0)

    def resize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Steps 1 and 2 (:func:`resize_pixels` to the input size)."""
        return resize_pixels(pixels, self.input_size)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Step 3 on pixels in 0-255 (N x 3 x H x W or 3 x H x W); float32."""
        batched = pixels if pixels.ndim == 4 else pixels.unsqueeze(0)
        normalized = (batched.float() - self._offset) * self._scale
        return normalized if pixels.ndim == 4 else normalized.squeeze(0)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.resize(pixels))
