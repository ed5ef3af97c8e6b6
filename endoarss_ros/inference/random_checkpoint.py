"""Checkpoints with random weights, for measuring speed and exercising the node without a
trained model (a proof-of-life model, as Isaac ROS tests use a dummy ONNX file)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

ACTIVITY_NAMES = ("Marking", "Circumferential Incision", "Submucosal Dissection")
SEGMENTATION_NAMES = ("Background", "Electric Knife", "Mucosal Flap", "Submucosa", "Blood")
SEGMENTATION_COLORS = ((0, 0, 0), (250, 50, 50), (60, 200, 90), (240, 200, 40), (140, 20, 160))
STATISTICS_FRAMES = 40
"""Frames the statistics of a random checkpoint are fitted on (``feature_statistics=True``)."""


def write_random_checkpoint(
    path: str | Path,
    *,
    preset: str = "vit_tiny_patch14",
    input_size: tuple[int, int] = (56, 56),
    activity_names: Sequence[str] = ACTIVITY_NAMES,
    segmentation_names: Sequence[str] = SEGMENTATION_NAMES,
    segmentation_colors: Sequence[Sequence[int]] = SEGMENTATION_COLORS,
    seed: int = 0,
    feature_statistics: bool = False,
    statistics_rank: int = 16,
) -> Path:
    """Write a model of ``preset`` with seeded random weights as an EndoARSS checkpoint.

    ``feature_statistics``: also store OOD feature statistics, fitted on the model's own
    features of :data:`STATISTICS_FRAMES` seeded smooth random frames (a real fit, so the
    trust path runs end to end; what it calls in-distribution means nothing)."""
    import torch

    from endoarss_ros.model import CheckpointMetadata, create_model, save_checkpoint
    from endoarss_ros.model.checkpoint import Trust

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
    if feature_statistics:
        from dataclasses import replace

        from endoarss_ros.trust.feature_tap import fit_feature_statistics

        frames = _smooth_frames(STATISTICS_FRAMES, input_size, seed)
        statistics = fit_feature_statistics(
            model.eval(),
            frames,
            input_size=metadata.input_size,
            mean=metadata.mean,
            std=metadata.std,
            rank=statistics_rank,
        )
        fit = {"data": "random smooth frames", "seed": seed, "frames": len(frames)}
        metadata = replace(metadata, trust=Trust(statistics, fit))
    return save_checkpoint(path, model, metadata)


def _smooth_frames(count: int, size: tuple[int, int], seed: int) -> list:
    """Seeded uint8 RGB frames: a random colour gradient plus mild noise, unlike pure noise
    closer to what a camera sees."""
    import numpy as np

    rng = np.random.default_rng([seed, 7])
    height, width = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for _ in range(count):
        base = rng.uniform(40, 200, 3)
        slope = rng.uniform(-1, 1, (2, 3))
        image = (
            base + (y[..., None] / height) * 60 * slope[0] + (x[..., None] / width) * 60 * slope[1]
        )
        image = image + rng.normal(0, 8, image.shape)
        frames.append(np.clip(image, 0, 255).astype(np.uint8))
    return frames
