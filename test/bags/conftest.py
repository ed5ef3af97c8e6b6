"""Fixtures for the bag tools: a tiny random checkpoint with the synthetic classes and a short
synthetic clip bag (160x128, 10 fps), shared by the whole session."""

from __future__ import annotations

from pathlib import Path

import pytest
from bag_clip import CLIP_FPS, CLIP_FRAMES, CLIP_SIZE

from endoarss_ros.bags.make import MakeOptions, make_bag
from endoarss_ros.bags.sources import synthetic_source


@pytest.fixture(scope="session")
def synthetic_checkpoint(tmp_path_factory) -> Path:
    from endoarss_ros.data.synthetic.scene import SYNTHETIC_CLASSES
    from endoarss_ros.inference import write_random_checkpoint

    return write_random_checkpoint(
        tmp_path_factory.mktemp("checkpoint") / "tiny.safetensors",
        input_size=(56, 70),
        activity_names=SYNTHETIC_CLASSES.activities,
        segmentation_names=SYNTHETIC_CLASSES.segmentation,
        segmentation_colors=SYNTHETIC_CLASSES.colors,
    )


@pytest.fixture(scope="session")
def clip_bag(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bags") / "clip"
    make_bag(path, synthetic_source(CLIP_FRAMES, CLIP_SIZE, seed=3, fps=CLIP_FPS), MakeOptions())
    return path
