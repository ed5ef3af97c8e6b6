"""Checkpoints for the benchmark tests: the tiny preset, once with non-zero LoRA adapters so
that merging them is visible in the outputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from endoarss_ros.ros.transport import configure_large_image_transport

configure_large_image_transport(os.environ)

INPUT_SIZE = (56, 70)


@pytest.fixture(scope="session")
def lora_checkpoint(tmp_path_factory) -> Path:
    """Random weights with random (non-zero) LoRA B matrices, unmerged in the file."""
    import torch

    from endoarss_ros.inference.random_checkpoint import (
        ACTIVITY_NAMES,
        SEGMENTATION_COLORS,
        SEGMENTATION_NAMES,
    )
    from endoarss_ros.model import CheckpointMetadata, create_model, save_checkpoint

    torch.manual_seed(1)
    model = create_model(
        "vit_tiny_patch14",
        num_activities=len(ACTIVITY_NAMES),
        num_seg_classes=len(SEGMENTATION_NAMES),
    )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("lora_B"):
                parameter.normal_(0.0, 0.05)
    metadata = CheckpointMetadata(
        activity_classes=ACTIVITY_NAMES,
        segmentation_classes=SEGMENTATION_NAMES,
        segmentation_colors=SEGMENTATION_COLORS,
        input_size=INPUT_SIZE,
    )
    return save_checkpoint(tmp_path_factory.mktemp("lora") / "lora.safetensors", model, metadata)
