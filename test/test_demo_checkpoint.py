"""The shipped demo model (checkpoints/demo): small, loadable by today's code, recorded beside
its training config, log and reports, and still right on frames the generator renders today
with a seed never used in training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from endoarss_ros.data.synthetic.dataset import SyntheticDataset
from endoarss_ros.data.synthetic.scene import SYNTHETIC_CLASSES
from endoarss_ros.data.transforms import EvalTransform
from endoarss_ros.model.checkpoint import load_checkpoint, read_metadata

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "checkpoints" / "demo"
CHECKPOINT = DEMO / "endoarss_demo.safetensors"
BAG_SEED = ("--seed", "20261205")
"""A clip seed never used in training (training clips come from seed 0's own streams)."""


def test_demo_checkpoint_is_small_and_recorded() -> None:
    assert CHECKPOINT.stat().st_size < 25 * 2**20
    recorded = ("config.json", "history.jsonl", "summary.json", "train.log", "calibrate.log")
    for name in (*recorded, "README.md"):
        assert (DEMO / name).is_file(), name
    for report in ("report", "report_unseen", "report_unseen_clips"):
        assert (DEMO / report / "report.md").is_file()
        assert (DEMO / report / "metrics.json").is_file()


def test_demo_checkpoint_was_trained_with_the_shipped_config() -> None:
    config, meta = read_metadata(CHECKPOINT)
    recorded = json.loads((DEMO / "config.json").read_text(encoding="utf-8"))
    shipped = yaml.safe_load((ROOT / "config" / "train_demo.yaml").read_text(encoding="utf-8"))
    for section in ("model", "optim", "loss"):
        for key, value in shipped[section].items():
            assert recorded[section][key] == value, f"{section}.{key}"
    assert config.name == shipped["model"]["preset"]
    assert tuple(meta.input_size) == tuple(shipped["model"]["input_size"])
    assert meta.activity_classes == SYNTHETIC_CLASSES.activities
    assert meta.segmentation_classes == SYNTHETIC_CLASSES.segmentation


def test_demo_model_recognises_frames_of_an_unseen_seed() -> None:
    model, meta = load_checkpoint(CHECKPOINT)
    transform = EvalTransform(meta.input_size, meta.mean, meta.std)
    frames = SyntheticDataset(100, size=(112, 112), seed=20261129, transform=transform)
    batch = [frames[i] for i in range(len(frames))]
    images = torch.stack([item["image"] for item in batch])
    labels = torch.tensor([item["activity"] for item in batch])
    masks = torch.stack([item["mask"] for item in batch]).long()
    with torch.no_grad():
        out = model.merge()(images)
    accuracy = (out["activity"].argmax(1) == labels).float().mean().item()
    predicted = out["segmentation"].argmax(1)
    known = masks != 255
    pixel_accuracy = (predicted[known] == masks[known]).float().mean().item()
    # Measured 0.98 and 0.982 on these 100 frames; the bounds (the demo's activity target, and
    # a pixel accuracy the model had after two epochs) catch a model broken by a code or
    # generator change, not the noise of 100 frames.
    assert accuracy >= 0.85
    assert pixel_accuracy >= 0.95


@pytest.mark.parametrize(
    ("size", "miou_floor"),
    [
        ("112x112", 0.5),
        pytest.param("320x240", 0.4, marks=pytest.mark.slow),
        pytest.param("640x480", 0.4, marks=pytest.mark.slow),
    ],
)
def test_demo_model_holds_on_the_bag_path(tmp_path: Path, size: str, miou_floor: float) -> None:
    """A clip of an unseen seed, as the README's bag flow makes it, through `bag infer` (the
    node's frame pipeline, default smoothing) and `bag eval`."""
    from endoarss_ros.cli import main

    clip, out, report = tmp_path / "clip", tmp_path / "out", tmp_path / "report"
    assert main(["bag", "make", str(clip), "--synthetic", "300", "--size", size, *BAG_SEED]) == 0
    assert main(["bag", "infer", str(clip), str(out), "--checkpoint", str(CHECKPOINT)]) == 0
    assert main(["bag", "eval", str(clip), str(out), "--report", str(report)]) == 0
    metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["frames_answered"] == 300
    # Measured on this clip: activity 0.973 / 0.977 / 0.970 and mIoU without background 0.563 /
    # 0.465 / 0.442 at the three sizes. Activity meets the 0.85 bar set for the bag path; the
    # masks do not reach 0.6 (docs/training.md, "The demo model"), so their floors only catch a
    # model or pipeline that got worse.
    assert metrics["activity"]["accuracy"] >= 0.85
    assert metrics["segmentation"]["miou_no_background"] >= miou_floor


def test_demo_checkpoint_is_calibrated_and_carries_feature_statistics() -> None:
    config, meta = read_metadata(CHECKPOINT)
    assert meta.calibration is not None
    assert meta.calibration.fit["split"] == "validation split"
    activity_t, segmentation_t = meta.temperatures
    assert activity_t != 1.0 and segmentation_t != 1.0
    statistics = meta.feature_statistics
    assert statistics is not None and meta.trust is not None
    assert statistics.dim == 2 * config.backbone.embed_dim
    assert statistics.num_classes == len(meta.activity_classes)
    fit = meta.trust.ood_fit
    assert fit["split"].startswith("training split") and fit["frames"] == 2000
    assert statistics.fitted_frames + statistics.holdout_frames == fit["frames"]
    assert statistics.nbytes < 2**20
    readme = (DEMO / "README.md").read_text(encoding="utf-8")
    for number in (f"{activity_t:.4f}", f"{segmentation_t:.4f}", f"{statistics.reference:.0f}"):
        assert number in readme, number
    assert f"{statistics.reference:.4g}" in (DEMO / "calibrate.log").read_text(encoding="utf-8")


def test_demo_feature_statistics_tell_unseen_scenes_from_noise() -> None:
    from endoarss_ros.inference import Predictor

    predictor = Predictor(CHECKPOINT, device="cpu")
    statistics = predictor.feature_statistics
    assert statistics is not None and predictor.info.feature_statistics
    frames = SyntheticDataset(48, size=(112, 112), seed=20261129)
    images = [frames.load(i).image for i in range(len(frames))]
    noise = list(np.random.default_rng(0).integers(0, 256, (8, 112, 112, 3), dtype=np.uint8))
    scores = [
        statistics.score(prediction.features)
        for batch in (images[:24], images[24:], noise)
        for prediction in predictor.predict(batch)
    ]
    in_distribution, noisy = np.array(scores[:48]), np.array(scores[48:])
    # Measured: 1 % of scenes of unseen seeds at 1 or more, median 0.24; noise about 34.
    assert np.median(in_distribution) < 0.5 and np.mean(in_distribution >= 1.0) <= 0.1
    assert noisy.min() > 2.0


@pytest.mark.parametrize("name", ["report", "report_unseen", "report_unseen_clips"])
def test_demo_reports_state_the_model_they_scored(name: str) -> None:
    text = (DEMO / name / "report.md").read_text(encoding="utf-8")
    assert "vit_tiny_patch14" in text and "| accuracy |" in text
