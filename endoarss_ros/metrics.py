"""Evaluation metrics for both tasks, from dataset-level confusion matrices.

Conventions (stated in every report):

* Confusion matrices have rows = ground truth, columns = prediction. They are accumulated with
  torchmetrics' ``MulticlassConfusionMatrix`` (pixels labelled 255 ignored), which also sums
  them across processes under ``torchrun``.
* Segmentation IoU and Dice are computed per class from the *dataset-level* matrix (as the
  EndoARSS code and most segmentation papers do), not averaged per image (torchmetrics'
  ``MeanIoU`` default). A class absent from both ground truth and prediction has an undefined
  score (``None`` in JSON) and is left out of the means.
* "with background" means over all classes; "without background" drops class 0 from the
  means and, for pixel accuracy, counts only pixels whose ground truth is not background.
* Activity macro-F1 averages the per-class F1 over the classes present in the ground truth or
  the prediction (scikit-learn's default label set); precision of a never-predicted class and
  recall of a class without support are undefined and left out of their macro means.
* Per-frame scores (for ranking best/worst frames and for the EndoVis-style IoUs) are computed
  only when asked for: ``frame_iou`` averages IoU over the classes present in a frame's ground
  truth or prediction, background included; ``challenge_iou`` (ISINet protocol) averages over
  the foreground classes present in the ground truth and ``isi_iou`` over the foreground classes
  present in ground truth or prediction, each then averaged over frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from endoarss_ros.data.classes import IGNORE_INDEX

BACKGROUND = 0


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise ``numerator / denominator`` with NaN where the denominator is 0."""
    numerator = numerator.astype(np.float64)
    denominator = denominator.astype(np.float64)
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def classification_metrics(confusion: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro/per-class precision, recall and F1 from a C x C confusion matrix."""
    confusion = np.asarray(confusion, dtype=np.int64)
    tp = np.diag(confusion)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, support + predicted)
    total = confusion.sum()
    return {
        "accuracy": float(tp.sum() / total) if total else float("nan"),
        "macro_f1": _nanmean(f1),
        "macro_precision": _nanmean(precision),
        "macro_recall": _nanmean(recall),
        "per_class_precision": precision.tolist(),
        "per_class_recall": recall.tolist(),
        "per_class_f1": f1.tolist(),
        "support": support.tolist(),
        "samples": int(total),
        "confusion": confusion.tolist(),
    }


def segmentation_metrics(confusion: np.ndarray, background: int = BACKGROUND) -> dict[str, Any]:
    """mIoU, mean Dice and pixel accuracy, with and without the background class."""
    confusion = np.asarray(confusion, dtype=np.int64)
    tp = np.diag(confusion)
    gt = confusion.sum(axis=1)
    pred = confusion.sum(axis=0)
    iou = _ratio(tp, gt + pred - tp)
    dice = _ratio(2 * tp, gt + pred)
    foreground = np.arange(len(tp)) != background
    total = confusion.sum()
    fg_pixels = gt[foreground].sum()
    return {
        "miou": _nanmean(iou),
        "miou_no_background": _nanmean(iou[foreground]),
        "mean_dice": _nanmean(dice),
        "mean_dice_no_background": _nanmean(dice[foreground]),
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "pixel_accuracy_no_background": (
            float(tp[foreground].sum() / fg_pixels) if fg_pixels else float("nan")
        ),
        "per_class_iou": iou.tolist(),
        "per_class_dice": dice.tolist(),
        "pixels": gt.tolist(),
        "confusion": confusion.tolist(),
    }


def frame_confusions(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """B x C x C confusion matrix of every frame (rows = ground truth), ignored pixels dropped."""
    batch = pred.shape[0]
    pred = pred.reshape(batch, -1).long()
    target = target.reshape(batch, -1).long()
    valid = target != ignore_index
    frame = torch.arange(batch, device=pred.device).unsqueeze(1).expand_as(pred)
    index = (frame * num_classes + target) * num_classes + pred
    counts = torch.bincount(index[valid], minlength=batch * num_classes * num_classes)
    return counts.reshape(batch, num_classes, num_classes)


def frame_scores(confusions: np.ndarray, background: int = BACKGROUND) -> dict[str, np.ndarray]:
    """Per-frame ``frame_iou``, ``challenge_iou`` and ``isi_iou`` from B x C x C matrices."""
    confusions = np.asarray(confusions, dtype=np.int64)
    tp = np.diagonal(confusions, axis1=1, axis2=2)
    gt = confusions.sum(axis=2)
    pred = confusions.sum(axis=1)
    iou = _ratio(tp, gt + pred - tp)
    present_any = (gt + pred) > 0
    foreground = np.arange(tp.shape[1]) != background
    frame_iou = np.array([_nanmean(row[mask]) for row, mask in zip(iou, present_any, strict=True)])
    isi = np.array(
        [
            _nanmean(row[mask & foreground]) if (mask & foreground).any() else 1.0
            for row, mask in zip(iou, present_any, strict=True)
        ]
    )
    challenge = []
    for row, gt_row, pred_row in zip(iou, gt, pred, strict=True):
        in_gt = (gt_row > 0) & foreground
        if in_gt.any():
            challenge.append(_nanmean(row[in_gt]))
        else:
            challenge.append(0.0 if (pred_row[foreground] > 0).any() else 1.0)
    return {"frame_iou": frame_iou, "challenge_iou": np.array(challenge), "isi_iou": isi}


class MultiTaskMetrics:
    """Accumulates predictions of one evaluation pass and turns them into metric dicts.

    ``update`` takes the model's logits and the labels of a batch; ``compute`` returns
    ``{"activity": {...}, "segmentation": {...}}`` for the evaluated tasks (synchronised over
    processes when ``torch.distributed`` is initialised). With ``per_frame=True`` the
    per-frame scores are kept too (single process only: they are not gathered).
    """

    def __init__(
        self,
        num_activities: int,
        num_seg_classes: int,
        tasks: Sequence[str] = ("activity", "segmentation"),
        device: torch.device | str = "cpu",
        per_frame: bool = False,
    ) -> None:
        self.tasks = tuple(tasks)
        self.num_seg_classes = num_seg_classes
        self.per_frame = per_frame
        self.activity = MulticlassConfusionMatrix(num_activities, validate_args=True).to(device)
        self.segmentation = MulticlassConfusionMatrix(
            num_seg_classes, ignore_index=IGNORE_INDEX, validate_args=True
        ).to(device)
        self._frames: list[np.ndarray] = []
        self._activity_hits: list[np.ndarray] = []
        self._indices: list[np.ndarray] = []

    @torch.no_grad()
    def update(
        self,
        output: dict[str, torch.Tensor],
        activity: torch.Tensor,
        mask: torch.Tensor,
        indices: torch.Tensor | None = None,
    ) -> None:
        """Add a batch: logits by task, labels, and (for per-frame scores) dataset indices."""
        if self.per_frame:
            if indices is None:
                indices = torch.arange(activity.shape[0]) + sum(len(i) for i in self._indices)
            self._indices.append(indices.cpu().numpy())
        if "activity" in self.tasks:
            predicted = output["activity"].argmax(dim=1)
            self.activity.update(predicted, activity)
            if self.per_frame:
                self._activity_hits.append((predicted == activity).cpu().numpy())
        if "segmentation" in self.tasks:
            predicted_mask = output["segmentation"].argmax(dim=1)
            self.segmentation.update(predicted_mask, mask.long())
            if self.per_frame:
                confusion = frame_confusions(predicted_mask, mask, self.num_seg_classes)
                self._frames.append(confusion.cpu().numpy())

    def compute(self) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = {}
        if "activity" in self.tasks:
            result["activity"] = classification_metrics(self.activity.compute().cpu().numpy())
        if "segmentation" in self.tasks:
            seg = segmentation_metrics(self.segmentation.compute().cpu().numpy())
            if self.per_frame and self._frames:
                scores = frame_scores(np.concatenate(self._frames))
                seg["challenge_iou"] = _nanmean(scores["challenge_iou"])
                seg["isi_iou"] = _nanmean(scores["isi_iou"])
            result["segmentation"] = seg
        return result

    def frame_scores(self) -> dict[str, np.ndarray]:
        """Per-frame scores in update order, with the frames' dataset ``index`` (needs
        ``per_frame=True``)."""
        if not self.per_frame:
            raise RuntimeError("per-frame scores were not kept; create with per_frame=True")
        out: dict[str, np.ndarray] = {}
        if self._indices:
            out["index"] = np.concatenate(self._indices)
        if self._frames:
            out.update(frame_scores(np.concatenate(self._frames)))
        if self._activity_hits:
            out["activity_correct"] = np.concatenate(self._activity_hits)
        return out


def headline(metrics: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The few numbers a log line or a table shows, flattened with task prefixes."""
    out: dict[str, float] = {}
    activity = metrics.get("activity")
    if activity is not None:
        out["activity_accuracy"] = activity["accuracy"]
        out["activity_macro_f1"] = activity["macro_f1"]
    seg = metrics.get("segmentation")
    if seg is not None:
        out["segmentation_miou"] = seg["miou"]
        out["segmentation_miou_no_background"] = seg["miou_no_background"]
        out["segmentation_mean_dice"] = seg["mean_dice"]
        out["segmentation_pixel_accuracy"] = seg["pixel_accuracy"]
    return out


def selection_score(metrics: dict[str, dict[str, Any]], metric: str = "auto") -> float:
    """The number model selection maximises: a named headline metric, or for ``auto`` the
    mean of activity macro-F1 and segmentation mIoU over the evaluated tasks."""
    flat = headline(metrics)
    if metric != "auto":
        return flat[metric]
    parts = [flat[k] for k in ("activity_macro_f1", "segmentation_miou") if k in flat]
    parts = [p for p in parts if not math.isnan(p)]
    return sum(parts) / len(parts) if parts else float("nan")


def json_ready(value: Any) -> Any:
    """NaN and infinities become ``None`` (JSON has no NaN); numpy scalars become Python."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
