"""Validation splits, process shards and batches built from readers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from endoarss_ros.data.classes import ClassInfo
from endoarss_ros.data.dataset import DatasetError
from endoarss_ros.data.generic import LabelRecord, write_index, write_sample_files
from endoarss_ros.data.transforms import EvalTransform
from endoarss_ros.training.config import load_train_config
from endoarss_ros.training.data import (
    BatchCollator,
    EpochShardSampler,
    build_splits,
    stratified_split,
)

CLASSES = ClassInfo(
    activities=("a", "b", "c"),
    segmentation=("bg", "tool"),
    colors=((0, 0, 0), (255, 0, 0)),
    name="toy",
)


def write_toy_dataset(root: Path, splits: dict[str, int], size: int = 30) -> None:
    rng = np.random.default_rng(0)
    records = []
    for split, count in splits.items():
        for i in range(count):
            file = f"{split}_{i:03d}.png"
            image = rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)
            mask = (rng.random((size, size + 4)) > 0.7).astype(np.uint8)
            write_sample_files(root, file, image, mask)
            records.append(LabelRecord(file, i % 3, split))
    write_index(root, CLASSES, records)


def test_stratified_split_keeps_every_activity_and_is_seeded() -> None:
    activities = [0] * 20 + [1] * 10 + [2] * 3 + [3]
    train, val = stratified_split(activities, 0.2, seed=5)
    assert sorted(train + val) == list(range(len(activities)))
    assert not set(train) & set(val)
    counted = Counter(activities[i] for i in val)
    assert counted == {0: 4, 1: 2, 2: 1}  # the lone frame of activity 3 stays in training
    assert stratified_split(activities, 0.2, seed=5) == (train, val)
    assert stratified_split(activities, 0.2, seed=6) != (train, val)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_epoch_shards_cover_the_data_with_equal_lengths(world: int) -> None:
    shards = []
    for rank in range(world):
        sampler = EpochShardSampler(10, seed=1, rank=rank, world_size=world)
        sampler.set_epoch(2)
        shards.append(list(sampler))
    assert len({len(s) for s in shards}) == 1
    assert set().union(*shards) == set(range(10))
    again = EpochShardSampler(10, seed=1, rank=0, world_size=world)
    again.set_epoch(2)
    assert list(again) == shards[0]
    again.set_epoch(3)
    assert list(again) != shards[0] or (world == 3 and len(shards[0]) < 4)


def test_generic_layout_with_carved_validation_split(tmp_path: Path) -> None:
    write_toy_dataset(tmp_path, {"train": 12, "test": 3})
    config = load_train_config(
        None,
        [
            f"data.root={tmp_path}",
            "data.source=generic",
            "data.val_fraction=0.25",
            "model.input_size=[28, 28]",
        ],
    )
    splits = build_splits(config.data, (28, 28), seed=0)
    assert len(splits.train) == 9 and len(splits.val) == 3
    assert splits.class_info == CLASSES
    assert "stratified" in splits.description["validation"]
    batch = BatchCollator(EvalTransform((28, 28)))([splits.val[i] for i in range(3)])
    assert batch.images.shape == (3, 3, 28, 28)
    assert batch.masks.shape == (3, 28, 28) and set(batch.masks.unique().tolist()) <= {0, 1}
    assert batch.indices.tolist() == [0, 1, 2]


def test_missing_validation_split_is_reported(tmp_path: Path) -> None:
    write_toy_dataset(tmp_path, {"train": 4})
    config = load_train_config(
        None, [f"data.root={tmp_path}", "data.source=generic", "data.val_split=val"]
    )
    with pytest.raises(DatasetError, match="split 'val' is empty"):
        build_splits(config.data, (28, 28), seed=0)
