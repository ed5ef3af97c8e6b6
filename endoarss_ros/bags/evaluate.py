"""`bag eval`: score an output bag (recorded from the node, or written by `bag infer`) against
the ground truth of the input bag it was computed from.

Outputs are paired with frames by header stamp, which the node copies from its source frame.
Latency is an output's log time (when the recorder received it) minus its source stamp, so it
is meaningful when both share a clock: wall time for a live camera, or bag time when the
player publishes /clock and the recorder uses it.

When the output bag has a FrameTrust topic, :func:`trust_metrics` asks whether the trust signal
earns its place: how many frames each level got, whether the frames it left unflagged keep
their accuracy (the harm a filter on it would do), and, for a bag made with artefact segments
(:data:`~.make.ARTEFACTS_KEY`), how soon the latched level reaches ERROR inside a segment, how
soon it is OK again after it, and how often it fires on the clean frames.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from endoarss_ros.data.classes import IGNORE_INDEX
from endoarss_ros.image_conversion import image_to_numpy

from .frames import camera_topic, left_of
from .make import ARTEFACTS_KEY
from .schema import (
    ACTIVITY,
    GROUND_TRUTH_ACTIVITY,
    GROUND_TRUTH_LABELS,
    GROUND_TRUTH_MASK,
    IMAGE,
    LABEL_MAP,
    TRUST,
    BagError,
    stamp_ns,
)
from .storage import BagReader

UNLABELED = IGNORE_INDEX

LEVELS: Final = ("OK", "WARN", "ERROR")
"""FrameTrust levels by byte value (diagnostic_msgs/DiagnosticStatus)."""
WARN: Final = 1
ERROR: Final = 2

SETTLE_FRAMES: Final = 10
"""Clean frames within this many frames after a segment's end may still be latched by it; the
``settled`` rates leave them out."""


@dataclass(frozen=True)
class EvalOptions:
    camera_topic: str | None = None
    activity_topic: str | None = None
    mask_topic: str | None = None
    trust_topic: str | None = None


@dataclass
class FrameRecord:
    """One input frame and what was answered for it."""

    stamp: int
    true_activity: int | None
    predicted_activity: int | None = None
    latency_ms: float | None = None
    has_mask: bool = False
    mask_confusion: np.ndarray | None = None
    """Pixel confusion (truth x predicted) of this frame's mask, when it was scored."""
    trust_level: int | None = None
    trust_latched: int | None = None


@dataclass(frozen=True)
class ArtefactSpan:
    """An artefact segment of the input bag, as :data:`~.make.ARTEFACTS_KEY` lists it."""

    corruption: str
    severity: int
    first_frame: int
    last_frame: int
    first_stamp_ns: int
    last_stamp_ns: int

    def covers(self, stamp: int) -> bool:
        return self.first_stamp_ns <= stamp <= self.last_stamp_ns


def read_artefacts(bag: BagReader) -> list[ArtefactSpan] | None:
    """The bag's artefact segments in stamp order; None when it records none."""
    text = bag.custom_data.get(ARTEFACTS_KEY)
    if text is None:
        return None
    try:
        spans = [
            ArtefactSpan(
                str(entry["corruption"]),
                int(entry["severity"]),
                int(entry["first_frame"]),
                int(entry["last_frame"]),
                int(entry["first_stamp_ns"]),
                int(entry["last_stamp_ns"]),
            )
            for entry in json.loads(text)
        ]
    except (ValueError, TypeError, KeyError) as exc:
        raise BagError(
            f"bag {str(bag.path)!r}: custom_data {ARTEFACTS_KEY} is not a list of artefact "
            f"segments: {exc!r}"
        ) from exc
    return sorted(spans, key=lambda s: s.first_stamp_ns)


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
        trust_topic = _single(out_bag, options.trust_topic, TRUST, "trust", "trust")
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

        def take_activity(record: FrameRecord, log_time: int, message: Any) -> None:
            record.predicted_activity = int(message.class_id)
            record.latency_ms = (log_time - record.stamp) / 1e6

        def take_trust(record: FrameRecord, log_time: int, message: Any) -> None:
            record.trust_level = int(message.level)
            record.trust_latched = int(message.latched_level)

        unmatched, duplicates = _pair_by_stamp(
            out_bag.decoded(activity_topic, ACTIVITY),
            records,
            lambda r: r.predicted_activity is not None,
            take_activity,
        )
        trust_unmatched = trust_duplicates = 0
        if trust_topic is not None:
            trust_unmatched, trust_duplicates = _pair_by_stamp(
                out_bag.iter_decoded(trust_topic, TRUST),
                records,
                lambda r: r.trust_level is not None,
                take_trust,
            )
        artefacts = read_artefacts(truth_bag)

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
    metrics["trust"] = None
    if trust_topic is not None:
        metrics["trust"] = {
            "topic": trust_topic,
            "outputs_unmatched": trust_unmatched,
            "outputs_duplicate": trust_duplicates,
            **trust_metrics(frames, artefacts, segmentation is not None),
        }
    return Evaluation(metrics=metrics, frames=frames, activity_names=true_names or predicted_names)


def _pair_by_stamp(
    messages: Iterable[tuple[int, Any]],
    records: dict[int, FrameRecord],
    taken: Callable[[FrameRecord], bool],
    take: Callable[[FrameRecord, int, Any], None],
) -> tuple[int, int]:
    """Give each output message to the frame whose stamp its header carries, the first one
    only; returns how many matched no frame and how many repeated one."""
    unmatched = duplicates = 0
    for log_time, message in messages:
        record = records.get(stamp_ns(message.header))
        if record is None:
            unmatched += 1
        elif taken(record):
            duplicates += 1
        else:
            take(record, log_time, message)
    return unmatched, duplicates


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
    pairs: list[tuple[FrameRecord, np.ndarray, np.ndarray]] = []
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
        pairs.append((record, truth, predicted))
        classes = max(classes, int(predicted[predicted != UNLABELED].max(initial=0)) + 1)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    unlabeled = 0
    for record, truth, predicted in pairs:
        valid = truth != UNLABELED
        unlabeled += int(np.count_nonzero(valid & (predicted == UNLABELED)))
        valid &= predicted != UNLABELED
        index = truth[valid].astype(np.int64) * classes + predicted[valid]
        record.mask_confusion = np.bincount(index, minlength=classes * classes).reshape(
            classes, classes
        )
        confusion += record.mask_confusion
    return {
        "confusion_matrix": confusion,
        "frames_scored": len(pairs),
        "unlabeled_predicted_pixels": unlabeled,
    }


def _rate(count: int, frames: int) -> float | None:
    return count / frames if frames else None


def _level_counts(levels: Sequence[int | None]) -> dict[str, int]:
    return {name: sum(1 for level in levels if level == value) for value, name in enumerate(LEVELS)}


def _scores(frames: Sequence[FrameRecord], segmentation: bool) -> dict[str, Any]:
    """Activity accuracy and mIoU over ``frames`` (those with a prediction and truth)."""
    from endoarss_ros.metrics import segmentation_metrics

    scored = [f for f in frames if f.true_activity is not None and f.predicted_activity is not None]
    correct = sum(f.true_activity == f.predicted_activity for f in scored)
    confusions = [f.mask_confusion for f in frames if f.mask_confusion is not None]
    miou = None
    if segmentation and confusions:
        miou = segmentation_metrics(np.sum(confusions, axis=0))["miou"]
    return {
        "frames": len(frames),
        "activity_accuracy": _rate(correct, len(scored)),
        "miou": miou,
    }


def _rates(frames: Sequence[FrameRecord]) -> dict[str, Any]:
    """How often the per-frame and latched levels fire over ``frames`` with a trust output."""
    levels = [(f.trust_level, f.trust_latched or 0) for f in frames if f.trust_level is not None]
    count = len(levels)
    return {
        "frames": count,
        "flag_rate": _rate(sum(level >= WARN for level, _ in levels), count),
        "error_rate": _rate(sum(level >= ERROR for level, _ in levels), count),
        "latched_flag_rate": _rate(sum(latched >= WARN for _, latched in levels), count),
        "latched_error_rate": _rate(sum(latched >= ERROR for _, latched in levels), count),
    }


def trust_metrics(
    frames: Sequence[FrameRecord], artefacts: list[ArtefactSpan] | None, segmentation: bool
) -> dict[str, Any]:
    """The trust part of the metrics, over ``frames`` in stamp order (paired by stamp).

    - ``levels`` / ``latched_levels``: frames per level;
    - ``by_level``: activity accuracy and mIoU on the frames of each per-frame level, on the
      ``flagged`` ones (WARN or ERROR) and on ``all`` frames with a trust output; ``OK`` is
      "not flagged", so ``OK`` against ``all`` says whether a consumer that acts only on
      unflagged frames keeps (or gains) accuracy;
    - ``segments`` (input bags made with artefact segments, else None): per segment its flag
      rate (per-frame level >= WARN), ``detection_delay_frames`` (from its first frame to the
      first frame inside it latched at ERROR; None if never), ``recovery_frames`` (from its last
      frame to the first frame after it latched OK, before the next segment starts; None if
      never);
    - ``clean``: the same rates on the frames outside every segment (all frames when the bag
      records no segments), and ``settled``: those more than :data:`SETTLE_FRAMES` frames after
      any segment's end, out of reach of the hysteresis' tail.
    """
    assessed = [f for f in frames if f.trust_level is not None]
    by_level: dict[str, Any] = {
        name: _scores([f for f in assessed if f.trust_level == value], segmentation)
        for value, name in enumerate(LEVELS)
    }
    by_level["flagged"] = _scores(
        [f for f in assessed if (f.trust_level or 0) >= WARN], segmentation
    )
    by_level["all"] = _scores(assessed, segmentation)
    spans = artefacts or []
    inside = [any(s.covers(f.stamp) for s in spans) for f in frames]
    clean = [f for f, covered in zip(frames, inside, strict=True) if not covered]
    ends = [
        max((i for i, f in enumerate(frames) if s.covers(f.stamp)), default=None) for s in spans
    ]
    settled = [
        f
        for i, (f, covered) in enumerate(zip(frames, inside, strict=True))
        if not covered and all(end is None or not 0 < i - end <= SETTLE_FRAMES for end in ends)
    ]
    return {
        "frames_assessed": len(assessed),
        "frames_missing": len(frames) - len(assessed),
        "levels": _level_counts([f.trust_level for f in assessed]),
        "latched_levels": _level_counts([f.trust_latched for f in assessed]),
        "by_level": by_level,
        "segments": None if artefacts is None else _segments(frames, spans),
        "clean": _rates(clean),
        "settled": _rates(settled),
        "settle_frames": SETTLE_FRAMES,
    }


def _segments(frames: Sequence[FrameRecord], spans: list[ArtefactSpan]) -> list[dict[str, Any]]:
    out = []
    for number, span in enumerate(spans):
        positions = [i for i, f in enumerate(frames) if span.covers(f.stamp)]
        detection = recovery = None
        if positions:
            first, last = positions[0], positions[-1]
            detection = next(
                (i - first for i in positions if (frames[i].trust_latched or 0) >= ERROR), None
            )
            following = spans[number + 1].first_stamp_ns if number + 1 < len(spans) else None
            # 0: already OK at the segment's last frame (never raised, or cleared inside it).
            for i in range(last, len(frames)):
                if following is not None and frames[i].stamp >= following:
                    break
                if frames[i].trust_latched == 0:
                    recovery = i - last
                    break
        out.append(
            {
                "corruption": span.corruption,
                "severity": span.severity,
                "first_frame": span.first_frame,
                "last_frame": span.last_frame,
                "frames_in_bag": len(positions),
                **_rates([frames[i] for i in positions]),
                "detection_delay_frames": detection,
                "recovery_frames": recovery,
            }
        )
    return out
