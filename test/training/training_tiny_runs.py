"""Tiny synthetic training runs shared by the training tests (seconds each on one CPU thread)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from endoarss_ros.training.config import TrainConfig, load_train_config
from endoarss_ros.training.data import DataSplits, build_splits

TINY_RUN = [
    "threads=1",
    "model.preset=vit_tiny_patch14",
    "model.input_size=[56, 56]",
    "data.source=synthetic",
    "data.synthetic.image_size=[56, 56]",
    "data.synthetic.train_frames=16",
    "data.synthetic.val_frames=8",
    "data.synthetic.test_frames=8",
    "optim.batch_size=4",
    "optim.epochs=2",
    "optim.lr=0.003",
    "logging.progress=false",
    "logging.tensorboard=false",
    "logging.grad_conflict_every=1",
]


def tiny_config(tmp_path: Path, *overrides: str) -> TrainConfig:
    return load_train_config(None, [*TINY_RUN, f"output_dir={tmp_path}", *overrides])


_SPLITS: dict[Any, DataSplits] = {}


def tiny_splits(config: TrainConfig) -> DataSplits:
    """Synthetic splits rendered once per session for a given data section (and reused)."""
    key = (repr(config.data), config.model.input_size, config.seed)
    if key not in _SPLITS:
        _SPLITS[key] = build_splits(config.data, config.model.input_size, config.seed)
    return _SPLITS[key]
