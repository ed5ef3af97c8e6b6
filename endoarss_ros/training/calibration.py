"""Fitting and measuring calibration: temperature scaling of each head (``endoarss
calibrate``) and the expected calibration error that ``endoarss eval`` reports.

A softmax confidence is only useful to a control node if it means what it says: of the frames
labelled with 0.8, about 80 % should be right. Temperature scaling (Guo et al. 2017) divides a
head's logits by one scalar T fitted by negative log-likelihood on held-out frames; it moves
no argmax. One T for the activity head; one T for every pixel of the segmentation head, fitted
on a fixed-seed uniform subsample of the labelled pixels. Under distribution shift a
temperature fitted on clean frames is over-confident (Ovadia et al. 2019), so the fit uses the
validation split's clean frames plus mildly corrupted copies (severities 1-2 of the
corruption suite; Tomani et al. 2021).

ECE is torchmetrics' top-label calibration error (15 equal-width bins, L1). For segmentation it
is measured per class over that class's own pixels (at most ``pixels_per_class`` of them, a
fixed-seed subsample): one ECE over all pixels is dominated by the background and hides the
errors on the small foreground classes. The frames go through the evaluation data path
(`endoarss_ros.training.evaluation`), which is the Predictor's preprocessing, and probabilities
through `endoarss_ros.inference.calibration`, the Predictor's scaling.

The same command fits the out-of-distribution score's feature statistics
(:func:`fit_ood_statistics`, `endoarss_ros.trust.ood`): on the training split, whose
distribution is the one the model knows, rather than the validation split the temperatures
need (held-out frames for the score's reference are set aside from the fitted ones inside the
fit). The features are the merged network's pooled trunk tokens, the Predictor's preprocessing
applied to the source frames, exactly what the Predictor's feature hook returns.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error
from tqdm import tqdm

from endoarss_ros.data.classes import IGNORE_INDEX
from endoarss_ros.data.corruptions import CORRUPTIONS, corrupt
from endoarss_ros.data.dataset import ActivitySegmentationDataset, DatasetError, Sample
from endoarss_ros.inference.calibration import calibrated_softmax
from endoarss_ros.model.checkpoint import (
    TEMPERATURE_RANGE,
    Calibration,
    CheckpointMetadata,
    Model,
    Trust,
    load_checkpoint,
)
from endoarss_ros.training.config import DataSection

ECE_BINS = 15
"""Bins of every reported ECE (Guo et al. 2017)."""
FIT_PIXELS = 200_000
"""Labelled pixels (a uniform fixed-seed subsample) the segmentation temperature is fitted on."""
PIXELS_PER_CLASS = 20_000
"""Pixels of each class (a fixed-seed subsample) its ECE is measured on."""
MILD_SEVERITIES = (1, 2)
DEFAULT_COPIES = 0.25
"""Corrupted copies per validation frame in the fit (see `MildlyCorrupted`): one for a quarter
of the frames. More copies calibrate corrupted frames better and clean frames worse (one T
serves both); on the demo model a quarter kept the clean activity ECE under 2 % and cut the
mildly corrupted one from 3.0 % to 1.8 % (docs/training.md, "Calibration")."""
DEFAULT_OOD_FRAMES = 2000
"""Training frames the feature statistics are fitted on at most (a fixed-seed random subset):
a fifth of them held out sets the reference's 99th percentile from 400 distances, and the
fit stays a few minutes on a CPU whatever the dataset's size."""
DEFAULT_OOD_RANK = 256
"""Principal directions kept (see `endoarss_ros.trust.ood`; capped at the feature width)."""


def fit_temperature(
    logits: torch.Tensor, labels: torch.Tensor, *, bounds: tuple[float, float] = TEMPERATURE_RANGE
) -> float:
    """The T minimising the mean NLL of ``softmax(logits / T)`` for ``labels`` (N x C logits,
    N labels), by L-BFGS on log T (T stays positive), within ``bounds``.

    The NLL is convex in 1 / T, so the bounded optimum is the unbounded one clipped (a model
    right on every sample drives T towards 0, a model with no signal towards infinity).
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"expected N x C logits and N labels, got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if logits.shape[0] == 0:
        raise ValueError("no labelled samples to fit a temperature on")
    values = logits.detach().to("cpu", torch.float64).clone()
    targets = labels.detach().to("cpu", torch.long).clone()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [log_t],
        lr=1.0,
        max_iter=200,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(values / log_t.exp(), targets)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    temperature = math.exp(float(log_t.detach()))
    if not math.isfinite(temperature):
        raise ValueError("the temperature fit diverged")
    low, high = bounds
    return min(max(temperature, low), high)


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    return float(F.cross_entropy(logits.double() / temperature, labels.long()))


def expected_calibration_error(
    probabilities: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS
) -> float:
    """Top-label ECE of N x C ``probabilities`` (torchmetrics' multiclass calibration error,
    L1 norm, equal-width bins)."""
    return float(
        multiclass_calibration_error(
            probabilities, labels.long(), probabilities.shape[1], n_bins=n_bins, norm="l1"
        )
    )


def reliability_bins(
    probabilities: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS
) -> dict[str, list[float]]:
    """What a reliability diagram plots: per equal-width bin of the top-label confidence, the
    share of samples, their mean confidence and their accuracy (NaN for an empty bin). Bins
    are torchmetrics' (a confidence of exactly 1 falls in the last one)."""
    confidence, predicted = probabilities.float().max(dim=1)
    correct = (predicted == labels.long()).double()
    index = (torch.bucketize(confidence, torch.linspace(0, 1, n_bins + 1), right=True) - 1).clamp(
        0, n_bins - 1
    )
    count = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, torch.ones_like(correct))
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, confidence.double())
    hit_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, correct)
    total = max(float(count.sum()), 1.0)
    return {  # 0 / 0 is NaN: an empty bin
        "share": (count / total).tolist(),
        "confidence": (conf_sum / count).tolist(),
        "accuracy": (hit_sum / count).tolist(),
    }


class _BottomK:
    """A fixed-size uniform subsample of a stream: the items with the k smallest random keys."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.keys = torch.empty(0)
        self.logits: torch.Tensor | None = None
        self.labels = torch.empty(0, dtype=torch.long)

    def add(self, keys: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        if keys.numel() > self.capacity:  # only the batch's own k smallest can survive
            keep = keys.topk(self.capacity, largest=False).indices
            keys, logits, labels = keys[keep], logits[keep], labels[keep]
        logits = logits.float().cpu()
        self.keys = torch.cat([self.keys, keys.cpu()])
        self.logits = logits if self.logits is None else torch.cat([self.logits, logits])
        self.labels = torch.cat([self.labels, labels.cpu().long()])
        if self.keys.numel() > self.capacity:
            keep = self.keys.topk(self.capacity, largest=False).indices.sort().values
            self.keys, self.labels = self.keys[keep], self.labels[keep]
            self.logits = self.logits[keep]

    def __len__(self) -> int:
        return int(self.keys.numel())


class CalibrationSample:
    """Logits and labels gathered over one evaluation pass, bounded in memory: every frame's
    activity logits; a uniform subsample of at most ``pixels`` labelled pixels' segmentation
    logits (the temperature fit and the all-pixel ECE); at most ``pixels_per_class`` pixels of
    each class (per-class ECE). The subsamples depend on ``seed`` and the order of the frames
    only, so a rerun measures on the same pixels."""

    def __init__(
        self,
        num_seg_classes: int,
        tasks: Sequence[str] = ("activity", "segmentation"),
        *,
        pixels: int = FIT_PIXELS,
        pixels_per_class: int = PIXELS_PER_CLASS,
        seed: int = 0,
    ) -> None:
        if pixels < 1 or pixels_per_class < 1:
            raise ValueError("pixel subsample sizes must be positive")
        self.tasks = tuple(tasks)
        self.num_seg_classes = num_seg_classes
        self._generator = torch.Generator().manual_seed(seed)
        self._activity_logits: list[torch.Tensor] = []
        self._activity_labels: list[torch.Tensor] = []
        self.pixels = _BottomK(pixels)
        self.by_class = [_BottomK(pixels_per_class) for _ in range(num_seg_classes)]

    @torch.no_grad()
    def update(
        self, output: Mapping[str, torch.Tensor], activities: torch.Tensor, masks: torch.Tensor
    ) -> None:
        """Add a batch: the model's logits by task and its labels."""
        if "activity" in self.tasks:
            self._activity_logits.append(output["activity"].detach().float().cpu())
            self._activity_labels.append(activities.detach().long().cpu())
        if "segmentation" in self.tasks:
            logits = output["segmentation"].detach()
            flat = logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
            labels = masks.detach().reshape(-1).long()
            valid = (labels != IGNORE_INDEX) & (labels < self.num_seg_classes)
            keys = torch.rand(labels.numel(), generator=self._generator).to(labels.device)
            flat, labels, keys = flat[valid], labels[valid], keys[valid]
            self.pixels.add(keys, flat, labels)
            for cls, pool in enumerate(self.by_class):
                mine = labels == cls
                if bool(mine.any()):
                    pool.add(keys[mine], flat[mine], labels[mine])

    @property
    def activity(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """All activity logits (N x A) and labels, None without the activity task."""
        if "activity" not in self.tasks or not self._activity_logits:
            return None
        return torch.cat(self._activity_logits), torch.cat(self._activity_labels)

    def fit(self) -> tuple[float, float]:
        """(activity, segmentation) temperatures fitted on this sample; 1 for an untrained
        task or one without labelled data."""
        activity = segmentation = 1.0
        gathered = self.activity
        if gathered is not None:
            activity = fit_temperature(*gathered)
        if "segmentation" in self.tasks and len(self.pixels) and self.pixels.logits is not None:
            segmentation = fit_temperature(self.pixels.logits, self.pixels.labels)
        return activity, segmentation


def _scores(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float, n_bins: int
) -> dict[str, Any]:
    raw = calibrated_softmax(logits, 1.0)
    scaled = calibrated_softmax(logits, temperature)
    return {
        "samples": int(labels.numel()),
        "ece_before": expected_calibration_error(raw, labels, n_bins),
        "ece_after": expected_calibration_error(scaled, labels, n_bins),
        "nll_before": nll(logits, labels),
        "nll_after": nll(logits, labels, temperature),
        "accuracy": float((raw.argmax(1) == labels).double().mean()),
        "reliability_before": reliability_bins(raw, labels, n_bins),
        "reliability_after": reliability_bins(scaled, labels, n_bins),
    }


def calibration_metrics(
    sample: CalibrationSample, temperatures: tuple[float, float], n_bins: int = ECE_BINS
) -> dict[str, Any]:
    """ECE (and NLL, reliability bins) before scaling (T = 1) and after (``temperatures``:
    activity, segmentation): ``activity`` over all frames; ``segmentation`` over the uniform
    pixel subsample (``pixels``) and per class over each class's own pixels (``per_class``,
    None for a class without pixels; ``mean_class_ece_*`` averages the others)."""
    result: dict[str, Any] = {
        "n_bins": n_bins,
        "temperatures": {"activity": temperatures[0], "segmentation": temperatures[1]},
    }
    gathered = sample.activity
    if gathered is not None:
        result["activity"] = _scores(*gathered, temperatures[0], n_bins)
    if "segmentation" in sample.tasks and sample.pixels.logits is not None:
        seg_t = temperatures[1]
        per_class: list[dict[str, Any] | None] = []
        for pool in sample.by_class:
            if pool.logits is None or not len(pool):
                per_class.append(None)
                continue
            scores = _scores(pool.logits, pool.labels, seg_t, n_bins)
            per_class.append(
                {k: scores[k] for k in ("samples", "ece_before", "ece_after", "accuracy")}
            )
        present = [c for c in per_class if c is not None]
        result["segmentation"] = {
            "pixels": _scores(sample.pixels.logits, sample.pixels.labels, seg_t, n_bins),
            "per_class": per_class,
            "mean_class_ece_before": sum(c["ece_before"] for c in present) / len(present),
            "mean_class_ece_after": sum(c["ece_after"] for c in present) / len(present),
        }
    return result


def ece_summary(metrics: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """The headline ECEs of :func:`calibration_metrics`, name -> (before, after)."""
    out: dict[str, tuple[float, float]] = {}
    if "activity" in metrics:
        a = metrics["activity"]
        out["activity ECE"] = (a["ece_before"], a["ece_after"])
    if "segmentation" in metrics:
        s = metrics["segmentation"]
        out["segmentation ECE, mean over classes"] = (
            s["mean_class_ece_before"],
            s["mean_class_ece_after"],
        )
        out["segmentation ECE, all pixels"] = (s["pixels"]["ece_before"], s["pixels"]["ece_after"])
    return out


class MildlyCorrupted(ActivitySegmentationDataset):
    """The frames of ``source`` at ``indices``, each followed by its corrupted copies:
    ``copies`` per frame on average (``0.25``: a quarter of the frames, chosen by a seeded
    draw, get one; ``2``: every frame gets two; ``0``: clean frames only).

    Each copy gets a corruption of ``corruptions`` at one of ``severities``, drawn with its
    pixels' randomness from a generator seeded by (seed, frame, copy): the fit sees the same
    frames on every run. Masks and activities are the source's."""

    def __init__(
        self,
        source: ActivitySegmentationDataset,
        indices: Sequence[int],
        copies: float = 1.0,
        corruptions: Sequence[str] = tuple(CORRUPTIONS),
        severities: Sequence[int] = MILD_SEVERITIES,
        seed: int = 0,
    ) -> None:
        if not (math.isfinite(copies) and copies >= 0):
            raise ValueError(f"copies must be 0 or more, got {copies}")
        unknown = [c for c in corruptions if c not in CORRUPTIONS]
        if unknown or (copies and not (corruptions and severities)):
            raise ValueError(f"unknown or no corruptions {list(corruptions)}")
        super().__init__(source.class_info)
        self.source = source
        self.indices = list(indices)
        self.corruptions = tuple(corruptions)
        self.severities = tuple(severities)
        self.seed = seed
        whole, part = divmod(copies, 1.0)
        extra = np.zeros(len(self.indices), dtype=bool)
        chosen = np.random.default_rng([seed, 1]).permutation(len(self.indices))
        extra[chosen[: round(part * len(self.indices))]] = True
        self._items = [
            (frame, copy_index)
            for frame in range(len(self.indices))
            for copy_index in range(1 + int(whole) + int(extra[frame]))
        ]

    def __len__(self) -> int:
        return len(self._items)

    def activity_of(self, index: int) -> int:
        return self.source.activity_of(self.indices[self._items[index][0]])

    def load(self, index: int) -> Sample:
        frame, copy_index = self._items[index]
        sample = self.source.load(self.indices[frame])
        if copy_index == 0:
            return sample
        rng = np.random.default_rng([self.seed, frame, copy_index])
        name = self.corruptions[int(rng.integers(len(self.corruptions)))]
        severity = self.severities[int(rng.integers(len(self.severities)))]
        image = corrupt(sample.image, name, severity, rng)
        sample_id = f"{sample.sample_id}~{name}{severity}"
        return Sample(image, sample.mask, sample.activity, sample_id, sample.path)


@dataclass
class CalibrationResult:
    """A calibrated checkpoint, ready to save: the (unmerged) model, its new metadata, and
    the scores before and after scaling on the frames of the fit."""

    model: Model
    metadata: CheckpointMetadata
    previous: Calibration | None
    metrics: dict[str, Any]
    frames: int


def calibrate_checkpoint(
    checkpoint: str | Path,
    data: DataSection,
    *,
    seed: int,
    device: torch.device,
    split: str | None = None,
    copies: float = DEFAULT_COPIES,
    corruptions: Sequence[str] = tuple(CORRUPTIONS),
    severities: Sequence[int] = MILD_SEVERITIES,
    corruption_seed: int = 0,
    batch_size: int = 16,
    num_workers: int = 0,
    pixels: int = FIT_PIXELS,
    pixels_per_class: int = PIXELS_PER_CLASS,
    progress: bool = False,
) -> CalibrationResult:
    """Fit the temperatures of a saved model on the validation split of ``data`` (as training
    chose it with ``seed``; ``split`` names another split) plus ``copies`` mildly corrupted
    copies of each frame, run as the Predictor runs it. Any earlier calibration is replaced
    (the fit starts from the raw logits)."""
    from endoarss_ros.training.data import build_splits, open_split
    from endoarss_ros.training.evaluation import (
        check_classes,
        evaluate,
        evaluation_frames,
        evaluation_loader,
        evaluation_transform,
        trained_tasks,
    )

    model, meta = load_checkpoint(checkpoint, map_location=device)
    tasks = trained_tasks(meta)
    if split is None:
        val = build_splits(data, meta.input_size, seed).val
        source, indices = val.source, val.indices
        described = "validation split"
    else:
        source = open_split(data, split)
        indices = list(range(len(source)))
        described = f"split {split}"
    check_classes(checkpoint, meta, source)
    fit_frames = MildlyCorrupted(
        source, indices, copies, corruptions, severities, seed=corruption_seed
    )
    frames = evaluation_frames(fit_frames, meta.input_size, cache=False)
    runner = copy.deepcopy(model).merge()  # the Predictor's network; ``model`` stays unmerged
    amp_dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    sample = CalibrationSample(
        len(meta.segmentation_classes), tasks, pixels=pixels, pixels_per_class=pixels_per_class
    )
    evaluate(
        runner,
        evaluation_loader(frames, evaluation_transform(meta), batch_size, num_workers),
        num_activities=len(meta.activity_classes),
        num_seg_classes=len(meta.segmentation_classes),
        tasks=tasks,
        device=device,
        amp_dtype=amp_dtype,
        progress=progress,
        description="calibrate",
        observe=lambda batch, output: sample.update(output, batch.activities, batch.masks),
    )
    temperatures = sample.fit()
    metrics = calibration_metrics(sample, temperatures)
    fit: dict[str, Any] = {
        "data": data.source + (f" ({data.root})" if data.root else ""),
        "split": described,
        "frames": len(indices),
        "corrupted_copies": copies,
        "corruptions": list(corruptions) if copies else [],
        "severities": list(severities) if copies else [],
        "n_bins": ECE_BINS,
    }
    if "activity" in metrics:
        scores = metrics["activity"]
        fit["activity"] = {
            k: scores[k] for k in ("ece_before", "ece_after", "nll_before", "nll_after")
        }
    if "segmentation" in metrics:
        seg = metrics["segmentation"]
        fit["segmentation"] = {
            "pixels": seg["pixels"]["samples"],
            "pixel_ece_before": seg["pixels"]["ece_before"],
            "pixel_ece_after": seg["pixels"]["ece_after"],
            "nll_before": seg["pixels"]["nll_before"],
            "nll_after": seg["pixels"]["nll_after"],
            "mean_class_ece_before": seg["mean_class_ece_before"],
            "mean_class_ece_after": seg["mean_class_ece_after"],
        }
    calibration = Calibration(
        activity_temperature=temperatures[0], segmentation_temperature=temperatures[1], fit=fit
    )
    return CalibrationResult(
        model=model,
        metadata=replace(meta, calibration=calibration),
        previous=meta.calibration,
        metrics=metrics,
        frames=len(fit_frames),
    )


class _Images(torch.utils.data.Dataset[np.ndarray]):
    """The source images (uint8 RGB, their own size) of ``indices``, for a loader's workers."""

    def __init__(self, source: ActivitySegmentationDataset, indices: Sequence[int]) -> None:
        self.source = source
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.source.load(self.indices[index]).image


def _as_list(batch: list[np.ndarray]) -> list[np.ndarray]:
    return batch


def fit_ood_statistics(
    model: Model,
    meta: CheckpointMetadata,
    data: DataSection,
    *,
    seed: int,
    device: torch.device,
    frames: int = DEFAULT_OOD_FRAMES,
    rank: int = DEFAULT_OOD_RANK,
    sample_seed: int = 0,
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = False,
    name: str | Path = "the checkpoint",
) -> Trust:
    """Feature statistics of ``model`` (unmerged, as loaded; a merged float32 copy runs) on
    at most ``frames`` frames of the training split of ``data`` (as training chose it with
    ``seed``), a random subset drawn with ``sample_seed`` in random order, so the held-out
    fifth is a random fifth. The means are per activity class (ground truth) when the model
    was trained for activities, one mean otherwise. ``name`` is the model in messages."""
    from endoarss_ros.training.data import build_splits
    from endoarss_ros.training.evaluation import check_classes, trained_tasks
    from endoarss_ros.trust.feature_tap import fit_feature_statistics

    if frames < 2:
        raise ValueError(f"frames must be at least 2, got {frames}")
    train = build_splits(data, meta.input_size, seed).train
    source = train.source
    check_classes(name, meta, source)
    order = np.random.default_rng([sample_seed, 2]).permutation(len(train.indices))
    chosen = [train.indices[i] for i in order[:frames]]
    by_class = "activity" in trained_tasks(meta)
    labels = [source.activity_of(i) for i in chosen] if by_class else None
    loader = torch.utils.data.DataLoader(
        _Images(source, chosen),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_as_list,
    )
    bar = tqdm(loader, desc="feature statistics", disable=None if progress else True, leave=False)
    images = (image for batch in bar for image in batch)
    runner = copy.deepcopy(model).merge().to(device=device, dtype=torch.float32).eval()
    described = f"training split ({data.train_split})"
    try:
        statistics = fit_feature_statistics(
            runner,
            images,
            input_size=meta.input_size,
            mean=meta.mean,
            std=meta.std,
            labels=labels,
            num_classes=len(meta.activity_classes) if by_class else None,
            batch_size=batch_size,
            rank=rank,
        )
    except ValueError as exc:
        if "too few frames" not in str(exc):
            raise
        where = data.root or data.source
        raise DatasetError(
            f"{where}: the {described} has {len(chosen)} frames, too few to fit the feature "
            f"statistics ({exc})"
        ) from exc
    fit = {
        "data": data.source + (f" ({data.root})" if data.root else ""),
        "split": described,
        "frames": len(chosen),
        "split_frames": len(train.indices),
        "sample_seed": sample_seed,
        "class_means": "activity" if by_class else "none",
        "requested_rank": rank,
    }
    return Trust(statistics, fit)
