"""`endoarss bench trust`: does the trust signal flag the frames it should, and only those?

Everything runs through the node's own frame pipeline (:class:`FramePipeline`, mono, no
smoothing), so the levels are what ``~/trust`` would publish for these frames:

- **clean**: clips of an unseen seed (consecutive frames, so the hysteresis sees a real
  sequence): per-frame WARN/ERROR rates (false alarms) and the latched ERROR rate;
- **corrupted**: the same frames under every corruption of the suite at severities 3-5;
- **far out of distribution**: natural photographs shipped with scikit-image and procedural
  textures: how often they are reported OK, and the AUROC of the OOD score against clean frames;
- **harm**: activity accuracy and mIoU (background excluded) of the frames the alarm does NOT
  flag under each corruption, against clean frames: an unflagged frame should be as good as a
  clean one;
- **calibration**: activity ECE (15 bins, top label, torchmetrics) before and after the
  checkpoint's temperature, on the clean frames;
- **cost**: the trust assessment's time against the Predictor's at 1280x1024, interleaved in
  one run (a ratio, comparable on a busy machine where absolute times are not).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from endoarss_ros.cli_options import OptionError, frame_size
from endoarss_ros.trust.assessment import trust_signals

from .report import machine_description, write_json

DEFAULT_CHECKPOINT = "checkpoints/demo/endoarss_demo.safetensors"
SEVERITIES = (3, 4, 5)
UNSEEN_SEED = 2024
"""A clip seed neither training nor calibration of the demo model used."""


@dataclass
class Group:
    """Per-frame outcomes of one set of frames (clean, one corruption at one severity, ...)."""

    name: str
    severity: int | None = None
    levels: list[int] = field(default_factory=list)
    ood: list[float] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    confusions: list[np.ndarray] = field(default_factory=list)
    """Per-frame pixel confusion matrices (rows: truth)."""

    def add(self, result: Any, activity: int | None, mask: np.ndarray | None, classes: int) -> None:
        self.levels.append(int(result.trust.level))
        score = result.trust.ood_score
        self.ood.append(float("nan") if score is None else float(score))
        if activity is not None:
            self.correct.append(int(result.activity.raw_class_id) == activity)
        if mask is not None:
            self.confusions.append(_confusion(mask, result.masks[0], classes))

    def summary(self, clean: Group | None = None) -> dict[str, Any]:
        """``clean``: the same frames uncorrupted, in the same order (the first of them): the
        unflagged frames' scores are then compared with those frames' clean scores."""
        levels = np.asarray(self.levels)
        flagged = levels >= 1
        row: dict[str, Any] = {
            "group": self.name,
            "severity": self.severity,
            "frames": int(levels.size),
            "flagged": float(flagged.mean()) if levels.size else float("nan"),
            "error": float((levels >= 2).mean()) if levels.size else float("nan"),
        }
        if self.correct:
            correct = np.asarray(self.correct)
            row["accuracy"] = float(correct.mean())
            kept = ~flagged[: correct.size]
            row["unflagged_frames"] = int(kept.sum())
            row["unflagged_accuracy"] = float(correct[kept].mean()) if kept.any() else None
            if clean is not None:
                same = np.asarray(clean.correct[: correct.size])
                row["clean_accuracy"] = float(same.mean())
                row["unflagged_clean_accuracy"] = float(same[kept].mean()) if kept.any() else None
        if self.confusions:
            confusions = np.stack(self.confusions)
            row["miou"] = _miou(confusions.sum(axis=0))
            kept = ~flagged[: len(self.confusions)]
            row["unflagged_miou"] = _miou(confusions[kept].sum(axis=0)) if kept.any() else None
            if clean is not None:
                same = np.stack(clean.confusions[: len(self.confusions)])
                row["clean_miou"] = _miou(same.sum(axis=0))
                row["unflagged_clean_miou"] = _miou(same[kept].sum(axis=0)) if kept.any() else None
        return row


def _confusion(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    from endoarss_ros.data.classes import IGNORE_INDEX

    valid = (truth != IGNORE_INDEX) & (predicted != IGNORE_INDEX)
    index = truth[valid].astype(np.int64) * classes + predicted[valid]
    return np.bincount(index, minlength=classes * classes).reshape(classes, classes)


def _miou(confusion: np.ndarray) -> float:
    from endoarss_ros.metrics import segmentation_metrics

    return float(segmentation_metrics(confusion)["miou_no_background"])


@dataclass(frozen=True)
class ClipFrame:
    image: np.ndarray
    activity: int
    mask: np.ndarray


def clean_clips(
    seed: int, clips: int, length: int, size: tuple[int, int], instruments: bool = True
) -> list[list[ClipFrame]]:
    """Rendered clips of consecutive frames with their true activity and mask; without
    ``instruments``, the same clips with every instrument withdrawn out of view (activity
    idle, as the taxonomy labels a frame where no instrument touches the tissue)."""
    from endoarss_ros.data.synthetic.clips import plan_clip
    from endoarss_ros.data.synthetic.render import render
    from endoarss_ros.data.synthetic.scene import activity_of, without_instruments

    out = []
    for index in range(clips):
        rng = np.random.default_rng([seed, index])
        clip = plan_clip(rng, size[0], size[1], length)
        frames = []
        for scene, activity in zip(clip.scenes, clip.activities(), strict=True):
            if not instruments:
                scene = without_instruments(scene)
                activity = activity_of(scene)
            rgb, mask = render(scene)
            frames.append(ClipFrame(rgb, int(activity), mask))
        out.append(frames)
    return out


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", type=Path, default=Path(DEFAULT_CHECKPOINT), help="model checkpoint"
    )
    parser.add_argument("--seed", type=int, default=UNSEEN_SEED, help="clip seed (unseen)")
    parser.add_argument("--clips", type=int, default=10, help="clean clips")
    parser.add_argument("--clip-length", type=int, default=30, help="frames per clip")
    parser.add_argument(
        "--size",
        type=frame_size(16),
        default=(240, 320),
        help="frame size WIDTHxHEIGHT (default 320x240, as `bag make`)",
    )
    parser.add_argument(
        "--corrupted-frames",
        type=int,
        default=100,
        help="frames per corruption and severity (the first ones of the clean clips)",
    )
    parser.add_argument("--corruptions", default=None, help="comma-separated (default: all)")
    parser.add_argument(
        "--still-frames", type=int, default=300, help="independent frames for the ECE"
    )
    parser.add_argument("--timing-rounds", type=int, default=30, help="1280x1024 frames timed")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: PyTorch's default)"
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for trust.json and .md")


def run(args: argparse.Namespace) -> int:
    import torch

    from endoarss_ros.data.corruptions import CORRUPTIONS, corrupt
    from endoarss_ros.data.synthetic.scene import SYNTHETIC_CLASSES
    from endoarss_ros.inference.options import PipelineConfig, PredictorOptions
    from endoarss_ros.inference.pipeline import FramePipeline, load_predictor
    from endoarss_ros.inference.smoothing import SmoothingConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.size
    names = list(CORRUPTIONS) if args.corruptions is None else args.corruptions.split(",")
    unknown = [name for name in names if name not in CORRUPTIONS]
    if unknown:
        raise OptionError("--corruptions", f"unknown {unknown}; known: {', '.join(CORRUPTIONS)}")
    for option in ("clips", "clip_length", "corrupted_frames", "still_frames", "timing_rounds"):
        if getattr(args, option) < 1:
            raise OptionError(f"--{option.replace('_', '-')}", "must be at least 1")
    config = PipelineConfig(smoothing=SmoothingConfig(method="none"))
    predictor = load_predictor(
        PredictorOptions(checkpoint=str(args.checkpoint), device="cpu"), config
    )
    info = predictor.info
    # The clips' classes are the synthetic taxonomy's; a checkpoint trained on other classes
    # still gets its flags and cost measured (its accuracy then means nothing).
    classes = max(len(info.segmentation_names), len(SYNTHETIC_CLASSES.segmentation))
    signals = trust_signals(info.feature_statistics, info.calibrated)
    print(f"model {info.name} ({info.checkpoint_hash}); trust signals: {signals}")

    clips = clean_clips(args.seed, args.clips, args.clip_length, size)
    frames = [frame for clip in clips for frame in clip]
    pipeline = FramePipeline(predictor, config)

    def judge(group: Group, items: Iterable[tuple[np.ndarray, int | None, np.ndarray | None]]):
        for image, activity, mask in items:
            group.add(pipeline.run([image]), activity, mask, classes)
        return group

    clean = Group("clean")
    latched: list[int] = []
    probabilities: list[np.ndarray] = []
    for clip in clips:
        pipeline.reset_trust()
        for frame in clip:
            result = pipeline.run([frame.image])
            clean.add(result, frame.activity, frame.mask, classes)
            latched.append(int(result.trust_latched))
            # smoothing is off: the reported distribution is the frame's own
            probabilities.append(np.asarray(result.activity.probabilities, np.float64))
    print(f"clean: {len(frames)} frames in {len(clips)} clips")

    groups = [clean]
    subset = frames[: args.corrupted_frames]
    for name in names:
        for severity in SEVERITIES:
            items = (
                (
                    corrupt(
                        f.image, name, severity, np.random.default_rng([args.seed, i, severity])
                    ),
                    f.activity,
                    f.mask,
                )
                for i, f in enumerate(subset)
            )
            groups.append(judge(Group(name, severity), items))
        print(
            f"  {name}: flagged " + ", ".join(f"{g.summary()['flagged']:.0%}" for g in groups[-3:])
        )

    out_of_view = [
        frame
        for clip in clean_clips(args.seed, args.clips, args.clip_length, size, instruments=False)
        for frame in clip
    ][: args.corrupted_frames]
    withdrawn = judge(
        Group("instruments out of view"), ((f.image, f.activity, f.mask) for f in out_of_view)
    )
    far = _far_out_of_distribution(size, args.seed)
    far_groups = [
        judge(Group(name), ((image, None, None) for image in images)) for name, images in far
    ]

    rows = [groups[0].summary()] + [group.summary(clean) for group in groups[1:]]
    far_rows = [group.summary() for group in far_groups]
    corrupted = [row for row in rows if row["severity"] is not None]
    results: dict[str, Any] = {
        "machine": machine_description(torch.device("cpu")),
        "checkpoint": str(args.checkpoint),
        "model_hash": info.checkpoint_hash,
        "signals": signals,
        "seed": args.seed,
        "size": list(size),
        "clean": rows[0] | {"latched_error": float(np.mean(np.asarray(latched) >= 2))},
        "corrupted": corrupted,
        "out_of_view": withdrawn.summary(),
        "corrupted_flagged": float(
            np.sum([r["flagged"] * r["frames"] for r in corrupted])
            / max(1, sum(r["frames"] for r in corrupted))
        ),
        "far_ood": far_rows,
        "far_ood_reported_ok": float(
            np.mean([level == 0 for group in far_groups for level in group.levels])
        ),
        "far_ood_auroc": _auroc(clean.ood, [s for g in far_groups for s in g.ood]),
        "far_ood_alarm_auroc": _auroc(
            _alarm_scores(clean), [s for g in far_groups for s in _alarm_scores(g)]
        ),
        "calibration": {
            "stills": _calibration(
                *_still_frames(pipeline, args.seed, args.still_frames, size), info
            ),
            "clips": _calibration(probabilities, [frame.activity for frame in frames], info),
        },
        "cost": _cost(pipeline, frames[0].image, args.timing_rounds),
    }
    table = markdown(results)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / "trust.json", results)
        (args.out / "trust.md").write_text(table)
        print(f"written: {args.out / 'trust.json'}, {args.out / 'trust.md'}")
    return 0


def _far_out_of_distribution(
    size: tuple[int, int], seed: int
) -> list[tuple[str, list[np.ndarray]]]:
    from endoarss_ros.trust.reference_images import natural_images, procedural_textures

    return [
        ("natural photographs (scikit-image)", [image for _, image in natural_images(size)]),
        ("procedural textures", [image for _, image in procedural_textures(size, seed=seed)]),
    ]


def _alarm_scores(group: Group) -> list[float]:
    """The alarm as one number per frame: its level, ties broken by the OOD score (mapped into
    [0, 1) so it never outranks a level); the level alone without feature statistics."""
    return [
        level + (ood / (1.0 + ood) if np.isfinite(ood) else 0.0)
        for level, ood in zip(group.levels, group.ood, strict=True)
    ]


def _auroc(inliers: Sequence[float], outliers: Sequence[float]) -> float | None:
    """AUROC of the OOD score separating far-OOD images (positives) from clean frames."""
    scores = np.asarray([*inliers, *outliers], np.float64)
    if not np.isfinite(scores).all():
        return None  # no feature statistics in the checkpoint
    import torch
    from torchmetrics.functional.classification import binary_auroc

    target = torch.tensor([0] * len(inliers) + [1] * len(outliers))
    return float(binary_auroc(torch.from_numpy(scores), target))


def _calibration(probabilities: list[np.ndarray], labels: list[int], info: Any) -> dict[str, Any]:
    """ECE with the checkpoint's temperature and without it: the Predictor's probabilities are
    softmax(z / T), so softmax(T log p) gives back softmax(z) exactly."""
    import torch
    from torchmetrics.functional.classification import multiclass_calibration_error

    scaled = torch.from_numpy(np.stack(probabilities))
    target = torch.tensor(labels)
    unscaled = torch.softmax(info.activity_temperature * torch.log(scaled.clamp_min(1e-12)), 1)
    classes = scaled.shape[1]

    def ece(p: torch.Tensor) -> float:
        return float(multiclass_calibration_error(p, target, classes, n_bins=15, norm="l1"))

    return {
        "temperature": info.activity_temperature,
        "calibrated": info.calibrated,
        "ece_before": ece(unscaled),
        "ece_after": ece(scaled),
        "accuracy": float((scaled.argmax(1) == target).double().mean()),
        "frames": len(labels),
    }


def _still_frames(
    pipeline: Any, seed: int, count: int, size: tuple[int, int]
) -> tuple[list[np.ndarray], list[int]]:
    """Independent frames of an unseen seed, as the held-out split holds them: the
    distribution the temperatures were fitted for."""
    from endoarss_ros.data.synthetic.dataset import generate_frame

    probabilities, labels = [], []
    for index in range(count):
        frame = generate_frame(seed, index, size)
        result = pipeline.run([frame.image])
        probabilities.append(np.asarray(result.activity.probabilities, np.float64))
        labels.append(int(frame.activity))
    return probabilities, labels


def _cost(pipeline: Any, image: np.ndarray, rounds: int) -> dict[str, float]:
    """What the trust assessment adds to a frame's time at 1280x1024: the pipeline's whole frame
    (model, image checks on their own thread meanwhile, OOD score, mask check) against the bare
    Predictor call, interleaved so that load on the machine hits both alike."""
    import cv2

    frame = cv2.resize(image, (1280, 1024), interpolation=cv2.INTER_LINEAR)
    predictor = pipeline.predictor
    pipeline.run([frame])  # warm-up at this size
    bare, whole, checks, added = [], [], [], []
    started = time.perf_counter()
    for _ in range(rounds):
        begin = time.perf_counter()
        predictor.predict([frame])
        bare.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        result = pipeline.run([frame])
        whole.append(time.perf_counter() - begin)
        checks.append(result.image_checks_s)
        added.append(result.trust_s)
    return {
        "frame": 1280 * 1024,
        "rounds": rounds,
        "predictor_ms": float(np.median(bare) * 1e3),
        "pipeline_ms": float(np.median(whole) * 1e3),
        "image_checks_ms": float(np.median(checks) * 1e3),
        "trust_after_model_ms": float(np.median(added) * 1e3),
        "ratio": float(np.median(whole) / np.median(bare) - 1.0),
        "seconds": time.perf_counter() - started,
    }


def _percent(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{100 * value:.1f} %"


def markdown(results: dict[str, Any]) -> str:
    clean = results["clean"]
    lines = [
        f"Model `{results['checkpoint']}` ({results['model_hash']}); signals: "
        f"{results['signals']}; clips of seed {results['seed']} at "
        f"{results['size'][1]}x{results['size'][0]}; {results['machine']}.",
        "",
        "Accuracy and mIoU (background excluded) of all frames, then of the frames the alarm does "
        "not flag, next to the same frames' scores when clean (the harm the alarm lets through).",
        "",
        "| frames | n | flagged (WARN+) | ERROR | accuracy | mIoU | unflagged | unflagged "
        "accuracy (same frames clean) | unflagged mIoU (same frames clean) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in [clean, *results["corrupted"]]:
        name = row["group"] if row["severity"] is None else f"{row['group']} s{row['severity']}"
        kept = row.get("unflagged_frames", 0)
        lines.append(
            f"| {name} | {row['frames']} | {_percent(row['flagged'])} | {_percent(row['error'])} | "
            f"{_percent(row.get('accuracy'))} | {_percent(row.get('miou'))} | {kept} | "
            + (
                f"{_percent(row.get('unflagged_accuracy'))} "
                f"({_percent(row.get('unflagged_clean_accuracy'))}) | "
                f"{_percent(row.get('unflagged_miou'))} "
                f"({_percent(row.get('unflagged_clean_miou'))}) |"
                if kept and row["severity"] is not None
                else f"{_percent(row.get('unflagged_accuracy'))} | "
                f"{_percent(row.get('unflagged_miou'))} |"
            )
        )
    for row in [results["out_of_view"], *results["far_ood"]]:
        lines.append(
            f"| {row['group']} | {row['frames']} | {_percent(row['flagged'])} | "
            f"{_percent(row['error'])} | | | | | |"
        )
    calibration, cost = results["calibration"], results["cost"]
    lines += [
        "",
        f"- corrupted frames flagged (all corruptions, severities 3-5): "
        f"{_percent(results['corrupted_flagged'])}",
        f"- clean frames: {_percent(clean['flagged'])} flagged per frame, "
        f"{_percent(clean['error'])} ERROR per frame, {_percent(clean['latched_error'])} "
        "ERROR after hysteresis",
        "- far out-of-distribution images reported OK: "
        f"{_percent(results['far_ood_reported_ok'])}; "
        f"AUROC against clean frames: the alarm (level, then OOD score) "
        f"{results['far_ood_alarm_auroc']:.4f}, the OOD score alone "
        + (
            "n/a (no feature statistics)"
            if results["far_ood_auroc"] is None
            else f"{results['far_ood_auroc']:.4f}"
        ),
        *(
            f"- activity ECE (15 bins) on {what}: {_percent(c['ece_before'])} without scaling, "
            f"{_percent(c['ece_after'])} with T = {c['temperature']:.3f} (accuracy "
            f"{_percent(c['accuracy'])}, {c['frames']} frames)"
            for what, c in (
                ("independent frames of the same seed", calibration["stills"]),
                ("the clean clips", calibration["clips"]),
            )
        ),
        f"- cost at 1280x1024 ({cost['rounds']} frames, medians): the whole frame "
        f"{cost['pipeline_ms']:.1f} ms against the bare Predictor's {cost['predictor_ms']:.1f} ms, "
        f"{_percent(cost['ratio'])} more; the image checks take {cost['image_checks_ms']:.2f} ms "
        f"on their own thread while the model runs, and {cost['trust_after_model_ms']:.2f} ms "
        "of trust work follows the model",
    ]
    return "\n".join(lines) + "\n"
