"""Checkpoints with random weights, for measuring speed and exercising the node without a
trained model (a proof-of-life model, as Isaac ROS tests use a dummy ONNX file)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

ACTIVITY_NAMES = ("Marking", "Circumferential Incision", "Submucosal Dissection")
SEGMENTATION_NAMES = ("Background", "Electric Knife", "Mucosal Flap", "Submucosa", "Blood")
SEGMENTATION_COLORS = ((0, 0, 0), (250, 50, 50), (60, 200, 90), (240, 200, 40), (140, 20, 160))


def write_random_checkpoint(
    path: str | Path,
    *,
    preset: str = "vit_tiny_patch14",
    input_size: tuple[int, int] = (56, 56),
    activity_names: Sequence[str] = ACTIVITY_NAMES,
    segmentation_names: Sequence[str] = SEGMENTATION_NAMES,
    segmentation_colors: Sequence[Sequence[int]] = SEGMENTATION_COLORS,
    seed: int = 0,
) -> Path:
    """Write a model of ``preset`` with seeded random weights as an EndoARSS checkpoint."""
    import torch

    from endoarss_ros.model import CheckpointMetadata, create_model, save_checkpoint

    torch.manual_seed(seed)
    model = create_model(
        preset, num_activities=len(activity_names), num_seg_classes=len(segmentation_names)
    )
    metadata = CheckpointMetadata(
        activity_classes=tuple(activity_names),
        segmentation_classes=tuple(segmentation_names),
        segmentation_colors=tuple(tuple(c) for c in segmentation_colors),
        input_size=tuple(input_size),
        training={"note": "random weights, not trained"},
    )
    return save_checkpoint(path, model, metadata)
