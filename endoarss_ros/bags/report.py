"""The `bag eval` report folder: metrics.json, report.md (with the trust signal's scores when
the output bag has them), and two plots (activity timeline predicted against truth, latency
histogram)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from endoarss_ros.metrics import json_ready

from .evaluate import Evaluation


def _number(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def write_report(evaluation: Evaluation, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    metrics = evaluation.metrics
    written = [folder / "metrics.json", folder / "report.md"]
    written[0].write_text(json.dumps(json_ready(metrics), indent=2) + "\n")
    written += _plots(evaluation, folder)
    written[1].write_text(_markdown(metrics, [p.name for p in written[2:]]))
    return written


def _markdown(metrics: dict[str, Any], plots: list[str]) -> str:
    activity = metrics["activity"]
    segmentation = metrics["segmentation"] or {}
    latency = metrics["latency"]
    lines = [
        "# Bag evaluation",
        "",
        f"- input bag: `{metrics['input_bag']}` (frames on `{metrics['camera_topic']}`)",
        f"- output bag: `{metrics['output_bag']}` (`{metrics['activity_topic']}`, "
        f"`{metrics['mask_topic']}`)",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| frames | {metrics['frames']} |",
        f"| frames answered | {metrics['frames_answered']} |",
        f"| frames missing | {metrics['frames_missing']} |",
        f"| masks missing | {_number(metrics['masks_missing'])} |",
        f"| outputs without a matching frame | {metrics['outputs_unmatched']} |",
        f"| duplicate outputs | {metrics['outputs_duplicate']} |",
        f"| activity accuracy | {_number(activity['accuracy'])} |",
        f"| activity macro F1 | {_number(activity['macro_f1'])} |",
        f"| segmentation mIoU | {_number(segmentation.get('miou'))} |",
        f"| segmentation mean Dice | {_number(segmentation.get('mean_dice'))} |",
        f"| latency p50 / p95 / max (ms) | {_number(latency.get('p50_ms'), 1)} / "
        f"{_number(latency.get('p95_ms'), 1)} / {_number(latency.get('max_ms'), 1)} |",
        "",
        "Latency is the output's receive time (its log time in the output bag) minus the stamp "
        "of its source frame. Activity F1 is the macro mean over classes present in truth or "
        "prediction; IoU and Dice come from the pixel confusion over all scored frames.",
        "",
    ]
    lines += _trust_markdown(metrics.get("trust"))
    lines += [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


def _trust_markdown(trust: dict[str, Any] | None) -> list[str]:
    if trust is None:
        return ["## Trust", "", "No trust output: the output bag has no FrameTrust topic.", ""]
    levels, latched = trust["levels"], trust["latched_levels"]
    lines = [
        f"## Trust (`{trust['topic']}`)",
        "",
        f"{trust['frames_assessed']} frames assessed, {trust['frames_missing']} without a trust "
        f"output, {trust['outputs_unmatched']} trust outputs without a matching frame, "
        f"{trust['outputs_duplicate']} duplicated.",
        "",
        "| level | frames (per frame) | frames (latched) |",
        "| --- | --- | --- |",
        *(f"| {name} | {levels[name]} | {latched[name]} |" for name in levels),
        "",
        'Scores by per-frame level: OK is "not flagged", so OK against all says whether '
        "frames the signal lets through keep their accuracy.",
        "",
        "| frames | count | activity accuracy | mIoU |",
        "| --- | --- | --- | --- |",
    ]
    names = {"OK": "OK (not flagged)", "flagged": "flagged (WARN or ERROR)"}
    for key, scores in trust["by_level"].items():
        lines.append(
            f"| {names.get(key, key)} | {scores['frames']} | "
            f"{_number(scores['activity_accuracy'])} | {_number(scores['miou'])} |"
        )
    lines.append("")
    segments = trust["segments"]
    if segments is None:
        lines += ["The input bag records no artefact segments: every frame counts as clean.", ""]
    else:
        lines += [
            "| artefact segment | frames | flag rate | latched ERROR rate | detection delay "
            "(frames) | recovery (frames) |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for segment in segments:
            lines.append(
                f"| {segment['corruption']} severity {segment['severity']}, frames "
                f"{segment['first_frame']}..{segment['last_frame']} | {segment['frames']} | "
                f"{_number(segment['flag_rate'], 3)} | "
                f"{_number(segment['latched_error_rate'], 3)} | "
                f"{_number(segment['detection_delay_frames'])} | "
                f"{_number(segment['recovery_frames'])} |"
            )
        lines.append("")
    lines += [
        "| clean frames | frames | flag rate | ERROR rate | latched flag rate | "
        "latched ERROR rate |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, label in (
        ("clean", "outside every segment"),
        ("settled", f"more than {trust['settle_frames']} frames after any segment"),
    ):
        rates = trust[key]
        lines.append(
            f"| {label} | {rates['frames']} | {_number(rates['flag_rate'], 3)} | "
            f"{_number(rates['error_rate'], 3)} | {_number(rates['latched_flag_rate'], 3)} | "
            f"{_number(rates['latched_error_rate'], 3)} |"
        )
    lines += [
        "",
        "Flagged: per-frame level WARN or ERROR. Detection delay: frames from a segment's first "
        "frame to the first frame inside it whose latched level is ERROR (n/a: never). "
        "Recovery: frames from its last frame to the first latched OK (0: OK at its last "
        "frame; n/a: not before the clip ends or the next segment starts).",
        "",
    ]
    return lines


def _plots(evaluation: Evaluation, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = evaluation.frames
    start = frames[0].stamp if frames else 0
    seconds = np.array([(f.stamp - start) / 1e9 for f in frames])
    truth = np.array([np.nan if f.true_activity is None else f.true_activity for f in frames])
    predicted = np.array(
        [np.nan if f.predicted_activity is None else f.predicted_activity for f in frames]
    )
    names = list(evaluation.activity_names)

    timeline = folder / "activity_timeline.png"
    figure, axes = plt.subplots(figsize=(10, 3))
    axes.step(seconds, truth, where="post", label="truth", linewidth=2)
    axes.step(seconds, predicted, where="post", label="predicted", linewidth=1)
    missing = np.isnan(predicted)
    if missing.any():
        axes.plot(seconds[missing], np.full(missing.sum(), -0.5), "rx", label="missing")
    if names:
        axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("time since first frame (s)")
    axes.set_title("Activity: predicted vs truth")
    axes.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(timeline, dpi=100)
    plt.close(figure)

    histogram = folder / "latency_histogram.png"
    latencies = [f.latency_ms for f in frames if f.latency_ms is not None]
    figure, axes = plt.subplots(figsize=(6, 3.5))
    if latencies:
        axes.hist(latencies, bins=min(50, max(5, len(latencies) // 2)))
    axes.set_xlabel("latency: receive time - source stamp (ms)")
    axes.set_ylabel("frames")
    axes.set_title(f"Latency ({len(latencies)} frames)")
    figure.tight_layout()
    figure.savefig(histogram, dpi=100)
    plt.close(figure)
    return [timeline, histogram]
