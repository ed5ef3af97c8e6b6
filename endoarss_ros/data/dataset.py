"""The sample type and the `Dataset` interface shared by every reader.

Readers index cheaply at construction (which files exist, how they pair, which activity each
has) and validate the content when a sample is loaded (decodable files, equal sizes, class ids in
range). Every problem raises `DatasetError` naming the file, so a bad dataset stops training at
once instead of being silently thinned out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from endoarss_ros.data.classes import IGNORE_INDEX, ClassInfo


class DatasetError(ValueError):
    """A dataset that cannot be read as declared; the message starts with the offending path."""


@dataclass(frozen=True, eq=False)
class Sample:
    """One labelled frame.

    image: H x W x 3 uint8, RGB. mask: H x W uint8 class ids, `IGNORE_INDEX` (255) = unlabelled.
    activity: index into `ClassInfo.activities`. sample_id: unique within its dataset.
    path: the image file, None for generated frames.
    """

    image: np.ndarray
    mask: np.ndarray
    activity: int
    sample_id: str
    path: Path | None = None


Transform = Callable[[Sample], Any]


class ActivitySegmentationDataset(Dataset[Any], ABC):
    """A `torch.utils.data.Dataset` of `Sample`s with one activity and one mask per frame.

    `dataset[i]` is the validated `Sample`, or `transform(sample)` when a transform is set
    (see `endoarss_ros.data.transforms` for tensors a model can take). `activity_of(i)` answers
    without reading pixels, for class-balanced sampling and statistics.
    """

    def __init__(self, class_info: ClassInfo, transform: Transform | None = None) -> None:
        self.class_info = class_info
        self.transform = transform

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def load(self, index: int) -> Sample:
        """The validated sample at `index`, without the transform."""

    @abstractmethod
    def activity_of(self, index: int) -> int:
        """The activity of sample `index`, known from the index alone."""

    def __getitem__(self, index: int) -> Any:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        sample = self.load(index % len(self))
        return sample if self.transform is None else self.transform(sample)

    def activities(self) -> list[int]:
        return [self.activity_of(i) for i in range(len(self))]

    def verify(self) -> int:
        """Load every sample once, so a bad file fails before training starts; returns the count."""
        for index in range(len(self)):
            self.load(index)
        return len(self)


def check_pair(
    image: np.ndarray,
    mask: np.ndarray,
    class_info: ClassInfo,
    image_path: Path | str,
    mask_path: Path | str,
) -> None:
    """Raise `DatasetError` unless the mask matches the image's size and holds only known ids."""
    if image.shape[:2] != mask.shape[:2]:
        raise DatasetError(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
            f"{image_path} is {image.shape[1]}x{image.shape[0]}"
        )
    check_class_ids(mask, class_info, mask_path)


def check_class_ids(mask: np.ndarray, class_info: ClassInfo, mask_path: Path | str) -> None:
    """Raise `DatasetError` for a mask value that is neither a class id nor `IGNORE_INDEX`."""
    num_classes = class_info.num_segmentation_classes
    present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    bad = [int(v) for v in present if v >= num_classes and v != IGNORE_INDEX]
    if bad:
        raise DatasetError(
            f"{mask_path}: class ids {bad} out of range; expected 0..{num_classes - 1} "
            f"or {IGNORE_INDEX} (ignore)"
        )
