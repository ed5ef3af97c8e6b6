"""`bag eval`: score an output bag (recorded from the node, or written by `bag infer`) against
the ground truth of the input bag it was computed from.

Outputs are paired with frames by header stamp, which the node copies from its source frame.
Latency is an output's log time (when the recorder received it) minus its source stamp, so it
is meaningful when both share a clock: wall time for a live camera, or bag time when the
player publishes /clock and the recorder uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from endoarss_ros.image_conversion import image_to_numpy

from .frames import camera_topic, left_of
from .schema import (
    ACTIVITY,
    GROUND_TRUTH_ACTIVITY,
    GROUND_TRUTH_LABELS,
    GROUND_TRUTH_MASK,
    IMAGE,
    LABEL_MAP,
    BagError,
    stamp_ns,
)
from .storage import BagReader

UNLABELED = 255


@dataclass(frozen=True)
class EvalOptions:
    camera_topic: str | None = None
    activity_topic: str | None = None
    mask_topic: str | None = None


@dataclass
class FrameRecord:
    """One input frame and what was answered for it."""

    stamp: int
    true_activity: int | None
    predicted_activity: int | None = None
    latency_ms: float | None = None
    has_mask: bool = False


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    frames: list[FrameRecord] = field(default_factory=list)
    activity_names: tuple[str, ...] = ()


def _single(bag: BagReader, given: str | None, msgtype: str, suffix: str, what: str) -> str | None:
    if given is not None:
        bag.require(given, msgtype)
        return given
    found = [t for t in bag.topics_of_type(msgtype) if t.endswith(suffix)]
    left = left_of(found)
    if left is not None:
        return left
    if len(found) > 1:
        raise BagError(
            f"bag {str(bag.path)!r} has several {what} topics ({', '.join(found)}); choose one"
        )
    return found[0] if found else None


def _names(bag: BagReader, topic: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if topic is None:
        return (), ()
    decoded = bag.decoded(topic, LABEL_MAP)
    if not decoded:
        return (), ()
    label_map = decoded[-1][1]
    return tuple(label_map.activity_names), tuple(label_map.segmentation_names)


def _latency_stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    array = np.asarray(values)
    return {
        "count": int(array.size),
        "mean_ms": float(array.mean()),
        "min_ms": float(array.min()),
        **{f"p{q}_ms": float(np.percentile(array, q)) for q in (50, 90, 95, 99)},
        "max_ms": float(array.max()),
    }


def evaluate_bags(input_path: Path, output_path: Path, options: EvalOptions) -> Evaluation:
    from endoarss_ros.metrics import classification_metrics, segmentation_metrics

    with BagReader(input_path) as truth_bag, BagReader(output_path) as out_bag:
        frame_topic = camera_topic(truth_bag, options.camera_topic)
        truth_bag.require(GROUND_TRUTH_ACTIVITY, ACTIVITY)
        activity_topic = _single(out_bag, options.activity_topic, ACTIVITY, "activity", "activity")
        if activity_topic is None:
            raise BagError(f"bag {str(output_path)!r} has no SurgicalActivity topic")
        mask_topic = _single(out_bag, options.mask_topic, IMAGE, "segmentation/mask", "mask")
        labels_topic = _single(out_bag, None, LABEL_MAP, "labels", "label map")
        truth_labels = GROUND_TRUTH_LABELS if GROUND_TRUTH_LABELS in truth_bag.topics else None
        true_names, seg_names = _names(truth_bag, truth_labels)
        predicted_names, predicted_seg_names = _names(out_bag, labels_topic)

        stamps = [stamp_ns(m.decode().header) for m in truth_bag.messages([frame_topic])]
        if not stamps:
            raise BagError(f"topic {frame_topic!r} of bag {str(input_path)!r} holds no frames")
        truth = {
            stamp_ns(m.header): int(m.class_id)
            for _, m in truth_bag.decoded(GROUND_TRUTH_ACTIVITY, ACTIVITY)
        }
        records = {stamp: FrameRecord(stamp, truth.get(stamp)) for stamp in stamps}

        unmatched = duplicates = 0
        for log_time, message in out_bag.decoded(activity_topic, ACTIVITY):
            record = records.get(stamp_ns(message.header))
            if record is None:
                unmatched += 1
            elif record.predicted_activity is not None:
                duplicates += 1
            else:
                record.predicted_activity = int(message.class_id)
                record.latency_ms = (log_time - record.stamp) / 1e6

        classes = max(
            [len(true_names), len(predicted_names), 1]
            + [r.true_activity + 1 for r in records.values() if r.true_activity is not None]
            + [
                r.predicted_activity + 1
                for r in records.values()
                if r.predicted_activity is not None
            ]
        )
        confusion = np.zeros((classes, classes), dtype=np.int64)
        for record in records.values():
            if record.true_activity is not None and record.predicted_activity is not None:
                confusion[record.true_activity, record.predicted_activity] += 1

        segmentation: dict[str, Any] | None = None
        if mask_topic is not None and GROUND_TRUTH_MASK in truth_bag.topics:
            segmentation = _score_masks(
                truth_bag,
                out_bag,
                mask_topic,
                records,
                max(len(seg_names), len(predicted_seg_names)),
            )
            segmentation = segmentation_metrics(segmentation.pop("confusion_matrix")) | segmentation

        answered = [r for r in records.values() if r.predicted_activity is not None]
        metrics: dict[str, Any] = {
            "input_bag": str(input_path),
            "output_bag": str(output_path),
            "camera_topic": frame_topic,
            "activity_topic": activity_topic,
            "mask_topic": mask_topic,
            "frames": len(records),
            "frames_answered": len(answered),
            "frames_missing": len(records) - len(answered),
            "masks_missing": (
                sum(not r.has_mask for r in records.values()) if mask_topic is not None else None
            ),
            "outputs_unmatched": unmatched,
            "outputs_duplicate": duplicates,
            "activity_names": list(true_names or predicted_names),
            "activity": classification_metrics(confusion),
            "segmentation": segmentation,
            "segmentation_names": list(seg_names or predicted_seg_names),
            "latency": _latency_stats([r.latency_ms for r in answered if r.latency_ms is not None]),
        }
    frames = sorted(records.values(), key=lambda r: r.stamp)
    return Evaluation(metrics=metrics, frames=frames, activity_names=true_names or predicted_names)


def _score_masks(
    truth_bag: BagReader,
    out_bag: BagReader,
    mask_topic: str,
    records: dict[int, FrameRecord],
    classes: int,
) -> dict[str, Any]:
    """Pixel confusion over frames with both masks; pixels the ground truth leaves unlabeled are
    ignored, and pixels the model left unlabeled are counted apart (they have no class)."""
    truth_masks = {
        stamp_ns(m.header): image_to_numpy(m).copy()
        for _, m in truth_bag.decoded(GROUND_TRUTH_MASK, IMAGE)
    }
    classes = max(
        [classes, 1] + [int(m[m != UNLABELED].max(initial=0)) + 1 for m in truth_masks.values()]
    )
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for _, message in out_bag.decoded(mask_topic, IMAGE):
        stamp = stamp_ns(message.header)
        record = records.get(stamp)
        if record is None or record.has_mask or stamp not in truth_masks:
            continue
        predicted = image_to_numpy(message)
        truth = truth_masks[stamp]
        if predicted.shape != truth.shape:
            raise BagError(
                f"topic {mask_topic!r} of bag {str(out_bag.path)!r}: mask at stamp {stamp} is "
                f"{predicted.shape}, the ground truth is {truth.shape}"
            )
        record.has_mask = True
        pairs.append((truth, predicted))
        classes = max(classes, int(predicted[predicted != UNLABELED].max(initial=0)) + 1)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    unlabeled = 0
    for truth, predicted in pairs:
        valid = truth != UNLABELED
        unlabeled += int(np.count_nonzero(valid & (predicted == UNLABELED)))
        valid &= predicted != UNLABELED
        index = truth[valid].astype(np.int64) * classes + predicted[valid]
        confusion += np.bincount(index, minlength=classes * classes).reshape(classes, classes)
    return {
        "confusion_matrix": confusion,
        "frames_scored": len(pairs),
        "unlabeled_predicted_pixels": unlabeled,
    }
