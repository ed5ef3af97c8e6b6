"""From `Sample` to model input: joint image/mask augmentation, resizing and normalisation.

Built on torchvision.transforms.v2, which applies one random draw to the image and its
`tv_tensors.Mask` together; geometric steps use nearest-neighbour interpolation on masks, so
class ids are never blended, and colour steps leave masks untouched. Pixels that an affine
warp brings in from outside the image are black in the image and `IGNORE_INDEX` in the mask.
Resizing and normalisation are `endoarss_ros.data.preprocessing`'s, the Predictor's own:
antialiased bilinear for images, pixel-centre nearest in exact integer arithmetic for masks
(which lines up with the image resize; torchvision's default nearest would shift masks by up to
half a source pixel when downscaling, and its ``NEAREST_EXACT``, computed in float, picks the
neighbouring pixel for some sizes). `EvalTransform` is the Predictor's preprocessing, step for
step; `TrainTransform` resizes the same way, rounds to uint8 for the augmentation and
normalises the same way.

Both transforms return a dict that `torch.utils.data.default_collate` batches:
`image` float32 3 x H x W (normalised), `mask` int64 H x W, `activity` int, `sample_id` str.
Randomness comes from torch's generator: seed it (`torch.manual_seed`, or per DataLoader
worker) for repeatable augmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from endoarss_ros.data.classes import IGNORE_INDEX
from endoarss_ros.data.dataset import Sample
from endoarss_ros.data.preprocessing import (
    Preprocessing,
    resize_mask,
    resize_pixels,
    round_pixels,
)

PATCH_SIZE: Final = 14
"""DINOv2 patch size: model input sides must be multiples of it."""
IMAGENET_MEAN: Final = (0.485, 0.456, 0.406)
IMAGENET_STD: Final = (0.229, 0.224, 0.225)


def check_input_size(size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width), both positive multiples of `PATCH_SIZE`; an int means a square."""
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if height <= 0 or width <= 0 or height % PATCH_SIZE or width % PATCH_SIZE:
        raise ValueError(
            f"input size {height}x{width} must be positive multiples of the patch size "
            f"{PATCH_SIZE} (e.g. 224, 336, 448, 518)"
        )
    return int(height), int(width)


def _positive_size(size: int | Sequence[int]) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if height <= 0 or width <= 0:
        raise ValueError(f"input size {height}x{width} must be positive")
    return int(height), int(width)


def to_tv_tensors(sample: Sample) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """The sample as a 3 x H x W image (uint8, or float32 0-255 for an evaluation frame) and an
    H x W uint8 mask, sharing its memory."""
    image = torch.from_numpy(np.ascontiguousarray(sample.image)).permute(2, 0, 1)
    mask = torch.from_numpy(np.ascontiguousarray(sample.mask))
    return tv_tensors.Image(image), tv_tensors.Mask(mask)


def resize_pair(
    image: tv_tensors.Image, mask: tv_tensors.Mask, size: tuple[int, int]
) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """Image: antialiased bilinear, rounded to uint8; mask: pixel-centre nearest, on the same
    pixel grid (`endoarss_ros.data.preprocessing`)."""
    if tuple(image.shape[-2:]) != tuple(size):
        image = tv_tensors.Image(round_pixels(resize_pixels(image.as_subclass(torch.Tensor), size)))
    mask = tv_tensors.Mask(resize_mask(mask.as_subclass(torch.Tensor), size))
    return image, mask


def _model_input(image: torch.Tensor, mask: torch.Tensor, sample: Sample) -> dict[str, Any]:
    return {
        "image": image.as_subclass(torch.Tensor).contiguous(),
        "mask": mask.as_subclass(torch.Tensor).to(torch.int64),
        "activity": sample.activity,
        "sample_id": sample.sample_id,
    }


class TrainTransform:
    """Resize to the model input, random flips, rotation/scale/shift, colour jitter, normalise."""

    def __init__(
        self,
        input_size: int | Sequence[int],
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        hflip: float = 0.5,
        vflip: float = 0.0,
        degrees: float = 15.0,
        scale: tuple[float, float] = (0.85, 1.15),
        translate: float = 0.05,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.02,
    ) -> None:
        self.input_size = check_input_size(input_size)
        self.geometric = v2.Compose(
            [
                v2.RandomHorizontalFlip(hflip),
                v2.RandomVerticalFlip(vflip),
                v2.RandomAffine(
                    degrees=degrees,
                    translate=(translate, translate),
                    scale=scale,
                    fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX},
                ),
            ]
        )
        self.photometric = v2.ColorJitter(brightness, contrast, saturation, hue)
        self.preprocessing = Preprocessing(self.input_size, mean, std)

    def __call__(self, sample: Sample) -> dict[str, Any]:
        image, mask = to_tv_tensors(sample)
        if image.dtype != torch.uint8:
            raise TypeError(
                f"TrainTransform takes uint8 images (training frames); sample "
                f"{sample.sample_id!r} has {image.dtype}"
            )
        image, mask = resize_pair(image, mask, self.input_size)
        image, mask = self.geometric(image, mask)
        image = self.preprocessing.normalize(self.photometric(image).as_subclass(torch.Tensor))
        return _model_input(image, mask, sample)


class EvalTransform:
    """The Predictor's preprocessing of the sample's image (`preprocessing.Preprocessing`:
    float32, antialiased bilinear resize unless the image has the input size already,
    normalisation) and the mask resized to the input size by pixel-centre nearest. The image
    may come at its source size (uint8) or already resized by `resize_pixels` (float32, as
    `training.data.ResizedFrames` keeps evaluation frames): the network input is the same.
    With `resize_mask=False` the mask keeps the source size, for metrics at native resolution
    (predictions are then resized to the mask).

    Any positive size: it comes from a checkpoint, validated there for its architecture (the
    released EndoARSS network takes 244 x 244 and resizes internally)."""

    def __init__(
        self,
        input_size: int | Sequence[int],
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        resize_mask: bool = True,
    ) -> None:
        self.input_size = _positive_size(input_size)
        self.resize_mask = resize_mask
        self.preprocessing = Preprocessing(self.input_size, mean, std)

    def __call__(self, sample: Sample) -> dict[str, Any]:
        image, mask = to_tv_tensors(sample)
        pixels = self.preprocessing(image.as_subclass(torch.Tensor))
        if self.resize_mask:
            mask = resize_mask(mask.as_subclass(torch.Tensor), self.input_size)
        return _model_input(pixels, mask, sample)


def denormalize(
    image: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> np.ndarray:
    """A normalised 3 x H x W tensor back to H x W x 3 uint8 RGB (for overlays and checks)."""
    m = torch.as_tensor(mean, dtype=image.dtype, device=image.device)[:, None, None]
    s = torch.as_tensor(std, dtype=image.dtype, device=image.device)[:, None, None]
    pixels = ((image * s + m).clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.permute(1, 2, 0).cpu().numpy()
