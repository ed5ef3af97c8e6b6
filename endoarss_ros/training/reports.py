"""Evaluation report folder: ``metrics.json``, ``report.md`` and PNG plots.

Plots (matplotlib, Agg backend, so no display is needed): the activity confusion matrix,
per-class IoU bars, overlays of the best and worst frames (image | ground truth | prediction),
robustness curves (metric against corruption severity, severity 0 = clean) and a reliability
diagram (accuracy against confidence before and after temperature scaling, and per-class
segmentation ECE).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from endoarss_ros.data.classes import IGNORE_INDEX, ClassInfo
from endoarss_ros.metrics import json_ready

CONVENTIONS = (
    "Confusion matrices have rows = ground truth and columns = prediction. Segmentation IoU and "
    "Dice are per class from the dataset-level confusion matrix; pixels labelled 255 are "
    "ignored; a class absent from both ground truth and prediction is undefined ('-') and left "
    "out of the means. 'with background' averages over all classes; 'without background' drops "
    "class 0 (and pixel accuracy then counts only pixels whose ground truth is not class 0). "
    "Activity macro-F1 averages over the classes present in the ground truth or the prediction. "
    "Challenge IoU and ISI IoU follow the EndoVis/ISINet protocol (per frame, foreground "
    "classes in the ground truth, resp. in ground truth or prediction; then averaged over frames)."
)


@dataclass
class FrameExample:
    """One frame for the best/worst overlays, at model input size."""

    image: np.ndarray
    mask: np.ndarray
    predicted_mask: np.ndarray | None
    activity: int
    predicted_activity: int | None
    score: float
    sample_id: str


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_report(
    metrics: dict[str, Any],
    class_info: ClassInfo,
    context: dict[str, Any],
    robustness: dict[str, dict[int, dict[str, float]]] | None = None,
    calibration: dict[str, Any] | None = None,
) -> str:
    """The Markdown summary: context, headline tables, per-class tables, calibration and
    robustness tables."""
    lines = ["# Evaluation report", ""]
    for key, value in context.items():
        lines.append(f"- **{key}**: {value}")
    lines += ["", CONVENTIONS, ""]
    activity = metrics.get("activity")
    if activity is not None:
        chance = 1.0 / class_info.num_activities
        lines += [
            "## Activity recognition",
            "",
            "| accuracy | macro-F1 | macro precision | macro recall | frames | chance (uniform) |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {_fmt(activity['accuracy'])} | {_fmt(activity['macro_f1'])} | "
            f"{_fmt(activity['macro_precision'])} | {_fmt(activity['macro_recall'])} | "
            f"{activity['samples']} | {chance:.4f} |",
            "",
            "| activity | precision | recall | F1 | support |",
            "|---|---:|---:|---:|---:|",
        ]
        for i, name in enumerate(class_info.activities):
            lines.append(
                f"| {name} | {_fmt(activity['per_class_precision'][i])} | "
                f"{_fmt(activity['per_class_recall'][i])} | {_fmt(activity['per_class_f1'][i])} | "
                f"{activity['support'][i]} |"
            )
        lines.append("")
    seg = metrics.get("segmentation")
    if seg is not None:
        lines += [
            "## Segmentation",
            "",
            "| | mIoU | mean Dice | pixel accuracy |",
            "|---|---:|---:|---:|",
            f"| with background | {_fmt(seg['miou'])} | {_fmt(seg['mean_dice'])} | "
            f"{_fmt(seg['pixel_accuracy'])} |",
            f"| without background | {_fmt(seg['miou_no_background'])} | "
            f"{_fmt(seg['mean_dice_no_background'])} | "
            f"{_fmt(seg['pixel_accuracy_no_background'])} |",
            "",
        ]
        if "challenge_iou" in seg:
            lines += [
                f"EndoVis-style: Challenge IoU {_fmt(seg['challenge_iou'])}, "
                f"ISI IoU {_fmt(seg['isi_iou'])}.",
                "",
            ]
        lines += ["| class | IoU | Dice | pixels (ground truth) |", "|---|---:|---:|---:|"]
        for i, name in enumerate(class_info.segmentation):
            lines.append(
                f"| {i} {name} | {_fmt(seg['per_class_iou'][i])} | "
                f"{_fmt(seg['per_class_dice'][i])} | {seg['pixels'][i]} |"
            )
        lines.append("")
    if calibration:
        lines += calibration_markdown(calibration, class_info)
    if robustness:
        lines += robustness_markdown(robustness)
    return "\n".join(lines) + "\n"


def calibration_markdown(calibration: dict[str, Any], class_info: ClassInfo) -> list[str]:
    """ECE and NLL before and after temperature scaling; per-class segmentation ECE."""
    temperatures = calibration["temperatures"]
    lines = [
        "## Calibration",
        "",
        f"Top-label ECE with {calibration['n_bins']} equal-width bins (torchmetrics), before "
        f"temperature scaling and after it with the checkpoint's temperatures (activity "
        f"{temperatures['activity']:.4g}, segmentation {temperatures['segmentation']:.4g}). "
        "Segmentation ECE is per class over that class's own pixels (a fixed-seed subsample), "
        "then averaged over the classes present; 'all pixels' pools a uniform subsample, "
        "which the background dominates. Diagram: reliability.png.",
        "",
        "| | samples | ECE before | ECE after | NLL before | NLL after |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    activity = calibration.get("activity")
    if activity is not None:
        lines.append(
            f"| activity | {activity['samples']} | {_fmt(activity['ece_before'])} | "
            f"{_fmt(activity['ece_after'])} | {_fmt(activity['nll_before'])} | "
            f"{_fmt(activity['nll_after'])} |"
        )
    seg = calibration.get("segmentation")
    if seg is not None:
        pixels = seg["pixels"]
        counted = sum(c["samples"] for c in seg["per_class"] if c is not None)
        lines += [
            f"| segmentation, mean over classes | {counted} | "
            f"{_fmt(seg['mean_class_ece_before'])} | {_fmt(seg['mean_class_ece_after'])} | - | - |",
            f"| segmentation, all pixels | {pixels['samples']} | {_fmt(pixels['ece_before'])} | "
            f"{_fmt(pixels['ece_after'])} | {_fmt(pixels['nll_before'])} | "
            f"{_fmt(pixels['nll_after'])} |",
            "",
            "| class | pixels | accuracy | ECE before | ECE after |",
            "|---|---:|---:|---:|---:|",
        ]
        for i, name in enumerate(class_info.segmentation):
            scores = seg["per_class"][i] if i < len(seg["per_class"]) else None
            if scores is None:
                lines.append(f"| {i} {name} | 0 | - | - | - |")
                continue
            lines.append(
                f"| {i} {name} | {scores['samples']} | {_fmt(scores['accuracy'])} | "
                f"{_fmt(scores['ece_before'])} | {_fmt(scores['ece_after'])} |"
            )
    lines.append("")
    return lines


def robustness_markdown(robustness: dict[str, dict[int, dict[str, float]]]) -> list[str]:
    """One row per corruption: each headline metric at severities 1..5 and its mean."""
    metric_names = [
        m for m in ("activity_accuracy", "segmentation_miou") if m in _first_metrics(robustness)
    ]
    lines = ["## Robustness (corruption suite, severities 1-5)", ""]
    clean = robustness.get("clean", {}).get(0, {})
    for metric in metric_names:
        lines += [
            f"### {metric} (clean: {_fmt(clean.get(metric))})",
            "",
            "| corruption | 1 | 2 | 3 | 4 | 5 | mean |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, by_severity in robustness.items():
            if name == "clean":
                continue
            values = [by_severity.get(s, {}).get(metric) for s in range(1, 6)]
            known = [v for v in values if v is not None]
            mean = sum(known) / len(known) if known else None
            lines.append(f"| {name} | " + " | ".join(_fmt(v) for v in [*values, mean]) + " |")
        lines.append("")
    return lines


def _first_metrics(robustness: dict[str, dict[int, dict[str, float]]]) -> dict[str, float]:
    for by_severity in robustness.values():
        for values in by_severity.values():
            return values
    return {}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(
    confusion: Sequence[Sequence[int]], names: Sequence[str], path: Path
) -> None:
    """Row-normalised colours (recall per true class) with the counts written in the cells."""
    plt = _pyplot()
    matrix = np.asarray(confusion, dtype=np.float64)
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = max(4.0, 0.6 * len(names) + 2.5)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title("Activity confusion matrix (row-normalised)")
    for i in range(len(names)):
        for j in range(len(names)):
            colour = "white" if normalised[i, j] > 0.5 else "black"
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", color=colour)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_per_class_iou(
    iou: Sequence[float | None], class_info: ClassInfo, path: Path, title: str = "Per-class IoU"
) -> None:
    plt = _pyplot()
    values = [float("nan") if v is None else float(v) for v in iou]
    colours = [tuple(c / 255.0 for c in rgb) for rgb in class_info.colors]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(values) + 2.0), 3.8))
    positions = np.arange(len(values))
    ax.bar(positions, np.nan_to_num(values), color=colours, edgecolor="black")
    for x, v in zip(positions, values, strict=True):
        ax.text(
            x,
            (0 if math.isnan(v) else v) + 0.02,
            "-" if math.isnan(v) else f"{v:.2f}",
            ha="center",
            fontsize=8,
        )
    ax.set_xticks(positions, list(class_info.segmentation), rotation=45, ha="right")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("IoU")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def overlay(
    image: np.ndarray, mask: np.ndarray, class_info: ClassInfo, alpha: float = 0.55
) -> np.ndarray:
    """``image`` with every pixel of a foreground class tinted by its class colour (background,
    class 0, and ignored pixels show the image as it is)."""
    palette = class_info.palette().astype(np.float32)
    colours = palette[mask]
    untouched = (mask == IGNORE_INDEX) | (mask == 0)
    weight = np.where(untouched[..., None], 0.0, alpha)
    blended = image.astype(np.float32) * (1 - weight) + colours * weight
    return blended.clip(0, 255).astype(np.uint8)


def plot_frames(
    examples: Sequence[FrameExample], class_info: ClassInfo, path: Path, title: str
) -> None:
    """One row per frame: the image, ground truth overlay, predicted overlay."""
    plt = _pyplot()
    rows = max(1, len(examples))
    fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.6 * rows), squeeze=False)
    for row, example in enumerate(examples):
        truth = class_info.activities[example.activity]
        predicted = (
            class_info.activities[example.predicted_activity]
            if example.predicted_activity is not None
            else "-"
        )
        panels = [
            (example.image, f"{example.sample_id}"),
            (overlay(example.image, example.mask, class_info), f"truth: {truth}"),
            (
                overlay(example.image, example.predicted_mask, class_info)
                if example.predicted_mask is not None
                else example.image,
                f"pred: {predicted} (IoU {_fmt(example.score, 2)})",
            ),
        ]
        for col, (picture, caption) in enumerate(panels):
            ax = axes[row][col]
            ax.imshow(picture)
            ax.set_title(caption, fontsize=8)
            ax.axis("off")
    for col in range(3):
        if not examples:
            axes[0][col].axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_robustness(robustness: dict[str, dict[int, dict[str, float]]], path: Path) -> None:
    """One panel per headline metric; one line per corruption over severities 0 (clean) to 5."""
    plt = _pyplot()
    metrics = [
        m for m in ("activity_accuracy", "segmentation_miou") if m in _first_metrics(robustness)
    ]
    clean = robustness.get("clean", {}).get(0, {})
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.0 * len(metrics), 4.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for name, by_severity in robustness.items():
            if name == "clean":
                continue
            severities = [0, *sorted(by_severity)]
            values = [clean.get(metric, float("nan"))] + [
                by_severity[s].get(metric, float("nan")) for s in sorted(by_severity)
            ]
            ax.plot(severities, values, marker="o", label=name)
        ax.set_xlabel("severity (0 = clean)")
        ax.set_ylabel(metric)
        ax.set_xticks(range(6))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle("Robustness to corruptions")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _reliability_panel(ax: Any, scores: dict[str, Any], title: str) -> None:
    """Accuracy against mean confidence per bin, before and after scaling, with the diagonal
    of perfect calibration and bars for the share of samples in each bin."""
    bins = len(scores["reliability_before"]["share"])
    centres = (np.arange(bins) + 0.5) / bins
    after = scores["reliability_after"]
    ax.bar(
        centres,
        after["share"],
        width=1.0 / bins,
        color="0.85",
        edgecolor="0.6",
        label="share of samples (after)",
    )
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    for key, colour, name in (
        ("reliability_before", "tab:red", "before"),
        ("reliability_after", "tab:blue", "after"),
    ):
        curve = scores[key]
        confidence = np.asarray(curve["confidence"], dtype=np.float64)
        accuracy = np.asarray(curve["accuracy"], dtype=np.float64)
        known = ~np.isnan(confidence)
        ece = scores["ece_before" if name == "before" else "ece_after"]
        ax.plot(
            confidence[known],
            accuracy[known],
            marker="o",
            color=colour,
            label=f"{name} scaling (ECE {ece:.3f})",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top label)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)


def plot_reliability(calibration: dict[str, Any], class_info: ClassInfo, path: Path) -> None:
    """Reliability diagrams (activity; segmentation pixels) and per-class segmentation ECE,
    before and after temperature scaling."""
    plt = _pyplot()
    panels = [k for k in ("activity", "segmentation") if k in calibration]
    columns = len(panels) + (1 if "segmentation" in calibration else 0)
    fig, axes = plt.subplots(1, columns, figsize=(4.6 * columns, 4.4), squeeze=False)
    temperatures = calibration["temperatures"]
    column = 0
    if "activity" in calibration:
        title = f"Activity (T = {temperatures['activity']:.3g})"
        _reliability_panel(axes[0][column], calibration["activity"], title)
        column += 1
    seg = calibration.get("segmentation")
    if seg is not None:
        title = f"Segmentation, all pixels (T = {temperatures['segmentation']:.3g})"
        _reliability_panel(axes[0][column], seg["pixels"], title)
        ax = axes[0][column + 1]
        positions = np.arange(len(class_info.segmentation))
        per_class = list(seg["per_class"]) + [None] * (len(positions) - len(seg["per_class"]))
        for offset, key, colour, name in (
            (-0.2, "ece_before", "tab:red", "before"),
            (0.2, "ece_after", "tab:blue", "after"),
        ):
            values = [float("nan") if c is None else c[key] for c in per_class]
            ax.bar(positions + offset, np.nan_to_num(values), width=0.4, color=colour, label=name)
        ax.set_xticks(positions, list(class_info.segmentation), rotation=45, ha="right")
        ax.set_ylabel("ECE over the class's pixels")
        ax.set_title("Segmentation ECE per class", fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Calibration before and after temperature scaling")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(
    out_dir: str | Path,
    metrics: dict[str, Any],
    class_info: ClassInfo,
    context: dict[str, Any],
    best: Sequence[FrameExample] = (),
    worst: Sequence[FrameExample] = (),
    robustness: dict[str, dict[int, dict[str, float]]] | None = None,
    calibration: dict[str, Any] | None = None,
) -> list[Path]:
    """Write the report folder; returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    document = {"context": context, "metrics": metrics, "conventions": CONVENTIONS}
    if robustness is not None:
        document["robustness"] = {
            name: {str(s): v for s, v in by_severity.items()}
            for name, by_severity in robustness.items()
        }
    if calibration is not None:
        document["calibration"] = calibration
    path = out / "metrics.json"
    path.write_text(json.dumps(json_ready(document), indent=2), encoding="utf-8")
    written.append(path)
    path = out / "report.md"
    path.write_text(
        markdown_report(metrics, class_info, context, robustness, calibration), encoding="utf-8"
    )
    written.append(path)
    if "activity" in metrics:
        path = out / "confusion_matrix.png"
        plot_confusion_matrix(metrics["activity"]["confusion"], class_info.activities, path)
        written.append(path)
    if "segmentation" in metrics:
        path = out / "per_class_iou.png"
        plot_per_class_iou(metrics["segmentation"]["per_class_iou"], class_info, path)
        written.append(path)
    if best:
        path = out / "best_frames.png"
        plot_frames(best, class_info, path, "Best frames")
        written.append(path)
    if worst:
        path = out / "worst_frames.png"
        plot_frames(worst, class_info, path, "Worst frames")
        written.append(path)
    if calibration and ("activity" in calibration or "segmentation" in calibration):
        path = out / "reliability.png"
        plot_reliability(calibration, class_info, path)
        written.append(path)
    if robustness:
        path = out / "robustness.png"
        plot_robustness(robustness, path)
        written.append(path)
    return written
