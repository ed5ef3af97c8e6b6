"""Evaluation passes: one model over one dataset (training-time validation and ``endoarss
eval``), and a saved checkpoint over a split with best/worst frames and the corruption sweep.

The network input is the Predictor's (the node's): frames are resized from their source size
by `endoarss_ros.data.preprocessing`'s antialiased bilinear resize (`evaluation_frames`, which
keeps the result unrounded) and normalised by the same module (`EvalTransform`), so activity
probabilities equal the Predictor's on the same frames up to float rounding (a test holds them
to 1e-5 for 640x480 and 1280x1024 frames into 224x224).

Masks are scored at the network input resolution: the ground truth is resized there by
pixel-centre nearest neighbour, and the prediction is the argmax of the logits there. The
Predictor's mask (at its default ``mask_min_confidence`` 0) is exactly this prediction
upsampled to the frame by the same pixel-centre mapping, so it carries no information beyond
it; scoring at the network resolution weighs every frame alike whatever its size, batches
frames of different sizes, and is the protocol of the EndoARSS release (masks resized to its
244 x 244 input). What it leaves out is ground-truth detail finer than a network pixel, which
no prediction of this model can resolve. ``bag eval`` scores the node's masks at the frame's
resolution instead.

``evaluate_checkpoint`` also measures calibration on the same pass (`.calibration`): ECE before
temperature scaling and after it with the checkpoint's temperatures (1 when it has none).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from endoarss_ros.data.classes import ClassInfo
from endoarss_ros.data.dataset import ActivitySegmentationDataset
from endoarss_ros.data.preprocessing import round_pixels
from endoarss_ros.data.transforms import EvalTransform
from endoarss_ros.metrics import MultiTaskMetrics, headline
from endoarss_ros.model.checkpoint import CheckpointMetadata, load_checkpoint
from endoarss_ros.training.calibration import CalibrationSample, calibration_metrics
from endoarss_ros.training.config import DataSection
from endoarss_ros.training.data import (
    EVALUATION_RESIZE,
    Batch,
    BatchCollator,
    ResizedFrames,
    make_loader,
    open_split,
)
from endoarss_ros.training.reports import FrameExample


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def evaluation_frames(
    source: ActivitySegmentationDataset, input_size: Sequence[int], *, cache: bool = True
) -> ResizedFrames:
    """``source``'s frames as every evaluation reads them: the Predictor's resize to
    ``input_size``, unrounded; masks by pixel-centre nearest."""
    return ResizedFrames(
        source,
        (int(input_size[0]), int(input_size[1])),
        cache=cache,
        image_resize=EVALUATION_RESIZE,
    )


@torch.no_grad()
def model_outputs(
    model: nn.Module,
    batches: Iterable[Batch],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> Iterator[tuple[Batch, dict[str, torch.Tensor]]]:
    """Each batch (on ``device``) with the float32 outputs of ``model`` (in eval mode) on it;
    the training mode is restored when the iteration ends."""
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            batch = batch.to(device)
            with autocast_context(device, amp_dtype):
                output = model(batch.images)
            yield batch, {k: v.float() for k, v in output.items()}
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    num_activities: int,
    num_seg_classes: int,
    tasks: Sequence[str],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    per_frame: bool = False,
    progress: bool = False,
    description: str = "eval",
    observe: Callable[[Batch, dict[str, torch.Tensor]], None] | None = None,
) -> MultiTaskMetrics:
    """Run ``model`` in eval mode over ``batches``; returns the filled metric accumulator
    (call ``compute()`` on it, on every process when distributed). ``observe`` also sees each
    batch and its outputs (calibration gathers its logits there, in the same pass)."""
    metrics = MultiTaskMetrics(num_activities, num_seg_classes, tasks, device, per_frame=per_frame)
    # disable=None shows the bar on a terminal only.
    bar = tqdm(batches, desc=description, disable=None if progress else True, leave=False)
    for batch, output in model_outputs(model, bar, device, amp_dtype):
        metrics.update(output, batch.activities, batch.masks, batch.indices)
        if observe is not None:
            observe(batch, output)
    return metrics


@dataclass
class CheckpointEvaluation:
    """Metrics of a checkpoint on one split, plus what a report needs to show frames."""

    metrics: dict[str, dict[str, Any]]
    class_info: ClassInfo
    tasks: tuple[str, ...]
    frames: dict[str, np.ndarray]
    best: list[FrameExample]
    worst: list[FrameExample]
    robustness: dict[str, dict[int, dict[str, float]]] | None
    context: dict[str, Any]
    calibration: dict[str, Any] | None = None
    """`endoarss_ros.training.calibration.calibration_metrics` on the evaluated split."""


def class_info_from_metadata(meta: CheckpointMetadata, name: str = "") -> ClassInfo:
    return ClassInfo(
        activities=meta.activity_classes,
        segmentation=meta.segmentation_classes,
        colors=meta.segmentation_colors,
        name=name,
    )


def trained_tasks(meta: CheckpointMetadata) -> tuple[str, ...]:
    """The tasks a checkpoint was trained for (both when it does not say)."""
    tasks = meta.training.get("tasks") if isinstance(meta.training, dict) else None
    if not tasks:
        return ("activity", "segmentation")
    return tuple(t for t in ("activity", "segmentation") if t in tasks)


def check_classes(
    checkpoint: str | Path, meta: CheckpointMetadata, source: ActivitySegmentationDataset
) -> None:
    """Refuse a dataset whose classes are not the checkpoint's (scores would be meaningless)."""
    class_info = class_info_from_metadata(meta)
    if source.class_info.activities != class_info.activities or (
        source.class_info.segmentation != class_info.segmentation
    ):
        raise ValueError(
            f"{checkpoint}: the model's classes ({len(class_info.activities)} activities, "
            f"{len(class_info.segmentation)} segmentation classes) are not the dataset's "
            f"({source.class_info.num_activities}, {source.class_info.num_segmentation_classes})"
        )


def evaluation_transform(meta: CheckpointMetadata) -> EvalTransform:
    """The checkpoint's network input as the Predictor makes it (input size, mean, std)."""
    return EvalTransform(meta.input_size, meta.mean, meta.std)


def evaluation_loader(
    frames: ResizedFrames, transform: EvalTransform, batch_size: int, workers: int = 0
) -> torch.utils.data.DataLoader[Batch]:
    """``frames`` in order, in batches of ``batch_size``, through ``transform``."""
    return make_loader(
        frames,
        BatchCollator(transform),
        batch_size,
        sampler=list(range(len(frames))),  # type: ignore[arg-type]
        drop_last=False,
        num_workers=workers,
        seed=0,
    )


@torch.no_grad()
def _examples(
    model: nn.Module,
    frames: ResizedFrames,
    positions: Sequence[int],
    scores: np.ndarray,
    transform: EvalTransform,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    tasks: Sequence[str],
) -> list[FrameExample]:
    if not positions:
        return []
    batch = BatchCollator(transform)([frames[int(p)] for p in positions])
    ((_, output),) = model_outputs(model, [batch], device, amp_dtype)
    masks = output["segmentation"].argmax(1).cpu().numpy()
    activities = output["activity"].argmax(1).cpu().numpy()
    examples = []
    for row, position in enumerate(positions):
        sample = frames.sample(int(position))
        examples.append(
            FrameExample(
                image=round_pixels(torch.from_numpy(sample.image)).numpy(),
                mask=sample.mask,
                predicted_mask=masks[row] if "segmentation" in tasks else None,
                activity=sample.activity,
                predicted_activity=int(activities[row]) if "activity" in tasks else None,
                score=float(scores[position]),
                sample_id=sample.sample_id,
            )
        )
    return examples


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: DataSection,
    split: str,
    *,
    device: torch.device,
    batch_size: int = 16,
    num_workers: int = 0,
    examples: int = 4,
    corruptions: Sequence[str] = (),
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    corruption_seed: int = 0,
    progress: bool = False,
) -> CheckpointEvaluation:
    """Evaluate a saved model on ``split`` of ``data`` as the Predictor would run it, masks
    scored at the model's input size (see the module's docstring); optionally sweep the
    corruption suite (corrupted at source resolution, then resized)."""
    from endoarss_ros.data.corruptions import CorruptedDataset

    model, meta = load_checkpoint(checkpoint, map_location=device)
    model.merge()
    tasks = trained_tasks(meta)
    class_info = class_info_from_metadata(meta)
    amp_dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    transform = evaluation_transform(meta)
    source = open_split(data, split)
    check_classes(checkpoint, meta, source)
    frames = evaluation_frames(source, meta.input_size, cache=True)
    calibration = CalibrationSample(class_info.num_segmentation_classes, tasks)

    def run(
        dataset: ResizedFrames, per_frame: bool, label: str, sample: CalibrationSample | None
    ) -> MultiTaskMetrics:
        return evaluate(
            model,
            evaluation_loader(dataset, transform, batch_size, num_workers),
            num_activities=class_info.num_activities,
            num_seg_classes=class_info.num_segmentation_classes,
            tasks=tasks,
            device=device,
            amp_dtype=amp_dtype,
            per_frame=per_frame,
            progress=progress,
            description=label,
            observe=None
            if sample is None
            else lambda batch, output: sample.update(output, batch.activities, batch.masks),
        )

    accumulator = run(frames, True, split, calibration)
    metrics = accumulator.compute()
    scores = accumulator.frame_scores()
    ranking = scores.get("frame_iou")
    if ranking is None:
        ranking = scores["activity_correct"].astype(np.float64)
    order = np.argsort(np.nan_to_num(ranking, nan=-1.0), kind="stable")
    count = min(examples, len(order) // 2)
    positions_best = [int(scores["index"][i]) for i in order[::-1][:count]]
    positions_worst = [int(scores["index"][i]) for i in order[:count]]
    by_position = np.full(len(frames), np.nan)
    by_position[scores["index"]] = ranking
    best = _examples(
        model, frames, positions_best, by_position, transform, device, amp_dtype, tasks
    )
    worst = _examples(
        model, frames, positions_worst, by_position, transform, device, amp_dtype, tasks
    )

    robustness: dict[str, dict[int, dict[str, float]]] | None = None
    if corruptions:
        robustness = {"clean": {0: headline(metrics)}}
        for name in corruptions:
            robustness[name] = {}
            for severity in severities:
                corrupted = CorruptedDataset(source, name, severity, seed=corruption_seed)
                resized = evaluation_frames(corrupted, meta.input_size, cache=False)
                result = run(resized, False, f"{name} {severity}", None).compute()
                robustness[name][severity] = headline(result)
    context = {
        "checkpoint": str(checkpoint),
        "split": split,
        "frames": len(frames),
        "data": data.source + (f" ({data.root})" if data.root else ""),
        "tasks": ", ".join(tasks),
        "input size": f"{meta.input_size[0]}x{meta.input_size[1]}",
        "model": model.config.name,
        "calibration": _describe_calibration(meta),
    }
    return CheckpointEvaluation(
        metrics,
        class_info,
        tasks,
        scores,
        best,
        worst,
        robustness,
        context,
        calibration_metrics(calibration, meta.temperatures),
    )


def _describe_calibration(meta: CheckpointMetadata) -> str:
    if meta.calibration is None:
        return "none (temperature 1; `endoarss calibrate` fits it)"
    activity, segmentation = meta.temperatures
    return f"temperature {activity:.4g} (activity), {segmentation:.4g} (segmentation)"
