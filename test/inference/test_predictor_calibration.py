"""The Predictor applies the checkpoint's temperatures to the logits before the softmax: the
probabilities (and the pixel confidences ``mask_min_confidence`` compares) change, the labels
and class ids do not."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from endoarss_ros.inference import UNLABELED, Predictor
from endoarss_ros.model.checkpoint import Calibration, load_checkpoint, save_checkpoint

ACTIVITY_T, SEGMENTATION_T = 2.5, 0.25


@pytest.fixture(scope="module")
def calibrated_checkpoint(tiny_checkpoint: Path, tmp_path_factory) -> Path:
    model, meta = load_checkpoint(tiny_checkpoint)
    calibration = Calibration(
        activity_temperature=ACTIVITY_T, segmentation_temperature=SEGMENTATION_T
    )
    path = tmp_path_factory.mktemp("calibrated") / "calibrated.safetensors"
    return save_checkpoint(path, model, dataclasses.replace(meta, calibration=calibration))


def frames() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((48, 64), (56, 70))]


def test_temperatures_change_probabilities_not_labels(
    tiny_checkpoint: Path, calibrated_checkpoint: Path
) -> None:
    raw = Predictor(tiny_checkpoint, device="cpu")
    scaled = Predictor(calibrated_checkpoint, device="cpu")
    assert not raw.info.calibrated
    assert (raw.info.activity_temperature, raw.info.segmentation_temperature) == (1.0, 1.0)
    assert scaled.info.calibrated
    assert scaled.info.activity_temperature == ACTIVITY_T
    assert scaled.info.segmentation_temperature == SEGMENTATION_T
    for before, after in zip(raw.predict(frames()), scaled.predict(frames()), strict=True):
        assert not np.allclose(before.activity, after.activity, atol=1e-4)
        assert after.activity.sum() == pytest.approx(1.0, abs=1e-5)
        # softmax(z / T) from softmax(z): log-probabilities are logits up to a constant
        expected = np.exp(np.log(before.activity.astype(np.float64)) / ACTIVITY_T)
        np.testing.assert_allclose(after.activity, expected / expected.sum(), atol=1e-5)
        assert after.activity.argmax() == before.activity.argmax()
        assert after.activity.max() < before.activity.max()  # T > 1 softens
        np.testing.assert_array_equal(after.mask, before.mask)


def test_mask_confidence_threshold_sees_the_scaled_confidences(
    tiny_checkpoint: Path, calibrated_checkpoint: Path
) -> None:
    threshold = 0.3
    raw = Predictor(tiny_checkpoint, device="cpu", mask_min_confidence=threshold)
    scaled = Predictor(calibrated_checkpoint, device="cpu", mask_min_confidence=threshold)
    ids = Predictor(tiny_checkpoint, device="cpu").predict(frames())
    for before, after, argmax in zip(
        raw.predict(frames()), scaled.predict(frames()), ids, strict=True
    ):
        unlabeled_before = int((before.mask == UNLABELED).sum())
        unlabeled_after = int((after.mask == UNLABELED).sum())
        assert unlabeled_after < unlabeled_before  # T < 1 sharpens: more pixels pass
        kept = after.mask != UNLABELED
        np.testing.assert_array_equal(after.mask[kept], argmax.mask[kept])
