"""From a config's ``data`` section to the train/validation/test datasets and their batches.

Frames are resized to ``model.input_size`` once (the image with ``data.image_resize``'s
filter, the mask by pixel-centre nearest) and, with ``data.cache``, kept in memory as
uint8 arrays (a frame is decoded or rendered once per run, not once per epoch). Training
batches then pass through the data layer's joint augmentation (``TrainTransform``), evaluation
batches through its ``EvalTransform``; every batch carries the dataset indices of its frames so
reports can go back to the pictures.

Validation frames (and ``endoarss eval``'s) are resized by the Predictor's own resize instead
(`EVALUATION_RESIZE`, whatever ``data.image_resize`` trains with) and kept unrounded, so that a
score is what the node would compute on the source frames (one preprocessing path:
`endoarss_ros.data.preprocessing`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from endoarss_ros.data.classes import MTLENDOVIS_CLASSES, MTLESD_CLASSES, ClassInfo
from endoarss_ros.data.dataset import ActivitySegmentationDataset, Sample
from endoarss_ros.data.preprocessing import resize_frame, resize_mask
from endoarss_ros.training.config import DataSection

SYNTHETIC_SPLIT_SEEDS = {"train": 0, "val": 1_000_003, "test": 2_000_003}
"""Offsets added to ``data.synthetic.seed``: the splits draw from disjoint generator streams."""


class Batch(NamedTuple):
    """Model input (normalised float images) and labels of a batch, plus dataset indices."""

    images: torch.Tensor
    masks: torch.Tensor
    activities: torch.Tensor
    indices: torch.Tensor

    def to(self, device: torch.device) -> Batch:
        non_blocking = device.type == "cuda"
        return Batch(
            self.images.to(device, non_blocking=non_blocking),
            self.masks.to(device, non_blocking=non_blocking),
            self.activities.to(device, non_blocking=non_blocking),
            self.indices,
        )


# Pillow 9.1+ names filters in Image.Resampling; Ubuntu 22.04's 9.0 only as Image.BICUBIC.
_PIL_BICUBIC = getattr(Image, "Resampling", Image).BICUBIC


EVALUATION_RESIZE = "predictor"
"""``image_resize`` of validation and evaluation frames: the Predictor's resize
(`endoarss_ros.data.preprocessing.resize_pixels`, antialiased bilinear), kept as unrounded
float32 (0-255), which `EvalTransform` normalises as the Predictor does; four times the memory
of a uint8 frame (0.6 MB at 224 x 224)."""


def resize_image(image: np.ndarray, size: tuple[int, int], method: str = "area") -> np.ndarray:
    """``image`` (H x W x 3 uint8) at ``size`` (H, W). ``area``: OpenCV area when shrinking
    both sides, else bilinear; ``pil_bicubic``: Pillow's bicubic (antialiased when
    shrinking), the filter of the release's ``Image.resize`` default; `EVALUATION_RESIZE`: the
    Predictor's, float32."""
    height, width = size
    if method == EVALUATION_RESIZE:
        return resize_frame(image, size, rounded=False)
    if method == "pil_bicubic":
        resized = Image.fromarray(np.ascontiguousarray(image)).resize((width, height), _PIL_BICUBIC)
        return np.array(resized)  # a writable copy (torch.from_numpy warns on read-only)
    if method != "area":
        raise ValueError(f"unknown image resize {method!r}; use area or pil_bicubic")
    shrinking = image.shape[0] > height and image.shape[1] > width
    return cv2.resize(
        image,
        (width, height),
        interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR,
    )


def resize_sample(sample: Sample, size: tuple[int, int], image_resize: str = "area") -> Sample:
    """The sample at ``size`` (H, W): the image by ``image_resize`` (see
    :func:`resize_image`), the mask by pixel-centre nearest."""
    height, width = size
    if sample.image.shape[:2] == (height, width):
        return sample
    image = resize_image(sample.image, size, image_resize)
    mask = resize_mask(sample.mask, size)
    return Sample(image, mask, sample.activity, sample.sample_id, sample.path)


class ResizedFrames(Dataset[tuple[int, Sample]]):
    """A reader's frames at the training size (images resized by ``image_resize``, see
    :func:`resize_image`), kept in memory after the first read when ``cache`` is set. Items
    are ``(index, Sample)``."""

    def __init__(
        self,
        source: ActivitySegmentationDataset,
        size: tuple[int, int],
        indices: Sequence[int] | None = None,
        cache: bool = True,
        image_resize: str = "area",
    ) -> None:
        self.source = source
        self.size = size
        self.indices = list(range(len(source))) if indices is None else list(indices)
        self.cache = cache
        self.image_resize = image_resize
        self._frames: dict[int, Sample] = {}

    @property
    def class_info(self) -> ClassInfo:
        return self.source.class_info

    def __len__(self) -> int:
        return len(self.indices)

    def activity_of(self, index: int) -> int:
        return self.source.activity_of(self.indices[index])

    def sample(self, index: int) -> Sample:
        frame = self._frames.get(index)
        if frame is None:
            frame = resize_sample(
                self.source.load(self.indices[index]), self.size, self.image_resize
            )
            if self.cache:
                self._frames[index] = frame
        return frame

    def preload(self) -> None:
        """Read every frame now (when caching), so a bad file fails before training."""
        for index in range(len(self)):
            self.sample(index)

    def __getitem__(self, index: int) -> tuple[int, Sample]:
        return index, self.sample(index)


def pixel_counts(frames: ResizedFrames, num_classes: int) -> torch.Tensor:
    """Labelled pixels per segmentation class over ``frames`` (at the training size)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for index in range(len(frames)):
        mask = frames.sample(index).mask
        counts += np.bincount(mask[mask < num_classes].ravel(), minlength=num_classes)[:num_classes]
    return torch.from_numpy(counts)


SampleTransform = Callable[[Sample], dict[str, Any]]
"""``endoarss_ros.data.transforms``' TrainTransform or EvalTransform: Sample -> model input."""


class BatchCollator:
    """Turns ``(index, Sample)`` items into a :class:`Batch` through a sample transform (joint
    augmentation for training, resize + normalisation for evaluation)."""

    def __init__(self, transform: SampleTransform) -> None:
        self.transform = transform

    def __call__(self, items: Sequence[tuple[int, Sample]]) -> Batch:
        images, masks, activities, indices = [], [], [], []
        for index, sample in items:
            converted = self.transform(sample)
            images.append(converted["image"])
            masks.append(converted["mask"])
            activities.append(sample.activity)
            indices.append(index)
        return Batch(
            torch.stack(images),
            torch.stack(masks).long(),
            torch.tensor(activities, dtype=torch.long),
            torch.tensor(indices, dtype=torch.long),
        )


class EpochShardSampler(Sampler[int]):
    """A seeded permutation per epoch, cut into equal shards, one per process.

    Shards are padded by repeating the permutation's first frames so that every process runs
    the same number of steps (each optimiser step is a collective operation).
    """

    def __init__(
        self, length: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True
    ) -> None:
        self.length = length
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.length // self.world_size)

    def __iter__(self):
        if self.shuffle:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        total = len(self) * self.world_size
        order += order[: total - len(order)]
        return iter(order[self.rank : total : self.world_size])


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 63-bit seed for one (run seed, epoch, process) triple."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(2, np.uint64)[0]) >> 1


def stratified_split(
    activities: Sequence[int], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Indices (train, val): ``fraction`` of each activity's frames, at least one from every
    activity with two or more frames, chosen by a seeded shuffle."""
    rng = np.random.default_rng([seed, 7919])
    by_activity: dict[int, list[int]] = {}
    for index, activity in enumerate(activities):
        by_activity.setdefault(activity, []).append(index)
    train: list[int] = []
    val: list[int] = []
    for activity in sorted(by_activity):
        members = np.array(by_activity[activity])
        rng.shuffle(members)
        wanted = round(fraction * len(members))
        count = min(max(wanted, 1), len(members) - 1) if len(members) >= 2 else 0
        val.extend(members[:count].tolist())
        train.extend(members[count:].tolist())
    return sorted(train), sorted(val)


@dataclass
class DataSplits:
    """The frames a run trains and selects on, and what their labels mean."""

    train: ResizedFrames
    val: ResizedFrames
    class_info: ClassInfo
    description: dict[str, Any]


def open_split(section: DataSection, split: str) -> ActivitySegmentationDataset:
    """The reader for one split named in ``section`` (``train``/``val``/``test`` for synthetic)."""
    if section.source == "synthetic":
        from endoarss_ros.data.synthetic.dataset import SyntheticDataset

        synthetic = section.synthetic
        frames = {
            "train": synthetic.train_frames,
            "val": synthetic.val_frames,
            "test": synthetic.test_frames,
        }
        if split not in frames:
            raise ValueError(f"synthetic data has splits train, val and test; got {split!r}")
        return SyntheticDataset(
            frames[split],
            tuple(synthetic.image_size),
            seed=synthetic.seed + SYNTHETIC_SPLIT_SEEDS[split],
        )
    if section.source == "generic":
        from endoarss_ros.data.generic import GenericLayoutDataset

        return GenericLayoutDataset(str(section.root), split=split)
    from endoarss_ros.data.official import OfficialLayoutDataset

    classes = {"mtlesd": MTLESD_CLASSES, "mtlendovis": MTLENDOVIS_CLASSES}
    return OfficialLayoutDataset(
        str(section.root),
        split=split,
        class_info=classes[section.official_classes],
        mask_mapping=section.mask_mapping,  # type: ignore[arg-type]
    )


def build_splits(section: DataSection, input_size: tuple[int, int], seed: int) -> DataSplits:
    """Training and validation frames; validation is carved from training when the source has
    no validation split (``data.val_split: null``). The test split is never opened here."""
    train_source = open_split(section, section.train_split)
    cache = section.cache
    resize = section.image_resize
    if section.source == "synthetic":
        val_source = open_split(section, "val")
        train = ResizedFrames(train_source, input_size, cache=cache, image_resize=resize)
        val = ResizedFrames(val_source, input_size, cache=cache, image_resize=EVALUATION_RESIZE)
        val_desc = "synthetic val stream"
    elif section.val_split is not None:
        val_source = open_split(section, section.val_split)
        train = ResizedFrames(train_source, input_size, cache=cache, image_resize=resize)
        val = ResizedFrames(val_source, input_size, cache=cache, image_resize=EVALUATION_RESIZE)
        val_desc = f"split {section.val_split}"
    else:
        train_idx, val_idx = stratified_split(train_source.activities(), section.val_fraction, seed)
        if not val_idx:
            raise ValueError(
                f"data.val_fraction {section.val_fraction} leaves no validation frame from the "
                f"{len(train_source)} frames of split {section.train_split}"
            )
        train = ResizedFrames(train_source, input_size, train_idx, cache, resize)
        val = ResizedFrames(train_source, input_size, val_idx, cache, EVALUATION_RESIZE)
        val_desc = f"{section.val_fraction:g} of split {section.train_split}, stratified"
    if train.class_info != val.class_info:
        raise ValueError("the training and validation splits describe different classes")
    description = {
        "source": section.source,
        "root": section.root,
        "train_frames": len(train),
        "val_frames": len(val),
        "validation": val_desc,
        "classes": train.class_info.name,
    }
    return DataSplits(train, val, train.class_info, description)


def make_loader(
    frames: Dataset[Any],
    collator: BatchCollator,
    batch_size: int,
    *,
    sampler: Sampler[int],
    drop_last: bool,
    num_workers: int,
    seed: int,
) -> torch.utils.data.DataLoader[Batch]:
    """A DataLoader whose worker seeds follow ``seed`` (deterministic augmentation)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        frames,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collator,
        generator=generator,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )
