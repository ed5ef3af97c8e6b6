"""Corruptions: registered, deterministic by seed, stronger at every severity, image-only."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from endoarss_ros.data.corruptions import CORRUPTIONS, SEVERITIES, CorruptedDataset, corrupt
from endoarss_ros.data.synthetic.dataset import SyntheticDataset, generate_frame

REQUIRED = {"gaussian_blur", "gaussian_noise", "jpeg_compression", "contrast", "smoke", "bleeding"}


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return generate_frame(seed=0, index=2, size=(256, 256)).image


def test_registry_holds_the_required_corruptions():
    assert set(CORRUPTIONS) >= REQUIRED
    assert SEVERITIES == (1, 2, 3, 4, 5)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_each_severity_changes_the_image_more(frame: np.ndarray, name: str):
    original = frame.copy()
    distances = []
    for severity in SEVERITIES:
        out = corrupt(frame, name, severity, np.random.default_rng(11))
        assert out.shape == frame.shape and out.dtype == np.uint8
        distances.append(np.abs(out.astype(np.int16) - frame).mean())
    np.testing.assert_array_equal(frame, original)  # the input is not modified
    assert distances[0] > 0.5, distances
    assert all(a < b for a, b in itertools.pairwise(distances)), distances


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruptions_are_deterministic_by_seed(frame: np.ndarray, name: str):
    first = corrupt(frame, name, 3, np.random.default_rng(5))
    again = corrupt(frame, name, 3, np.random.default_rng(5))
    assert first.tobytes() == again.tobytes()


@pytest.mark.parametrize("name", ["gaussian_noise", "smoke", "bleeding", "motion_blur"])
def test_random_corruptions_depend_on_the_seed(frame: np.ndarray, name: str):
    first = corrupt(frame, name, 3, np.random.default_rng(5))
    other = corrupt(frame, name, 3, np.random.default_rng(6))
    assert first.tobytes() != other.tobytes()


def test_severity_is_independent_of_resolution():
    small = generate_frame(0, 2, (128, 128)).image
    large = generate_frame(0, 2, (512, 512)).image
    for name in ("gaussian_blur", "defocus_blur", "bleeding", "pixelate"):
        d_small = np.abs(
            corrupt(small, name, 4, np.random.default_rng(0)).astype(int) - small
        ).mean()
        d_large = np.abs(
            corrupt(large, name, 4, np.random.default_rng(0)).astype(int) - large
        ).mean()
        assert 0.33 < d_small / d_large < 3.0, (name, d_small, d_large)


def test_bad_arguments_are_rejected(frame: np.ndarray):
    with pytest.raises(KeyError, match="unknown corruption 'fog'"):
        corrupt(frame, "fog", 1, np.random.default_rng())
    with pytest.raises(ValueError, match="severity"):
        corrupt(frame, "smoke", 6, np.random.default_rng())
    with pytest.raises(ValueError, match="uint8"):
        corrupt(frame.astype(np.float32), "smoke", 1, np.random.default_rng())


def test_corrupted_dataset_changes_images_only_and_repeats():
    base = SyntheticDataset(3, (64, 64), seed=4)
    corrupted = CorruptedDataset(base, "bleeding", 5, seed=1)
    again = CorruptedDataset(base, "bleeding", 5, seed=1)
    assert corrupted.class_info == base.class_info and len(corrupted) == 3
    for index in range(3):
        clean, dirty = base[index], corrupted[index]
        np.testing.assert_array_equal(dirty.mask, clean.mask)
        assert dirty.activity == clean.activity == corrupted.activity_of(index)
        assert dirty.image.tobytes() != clean.image.tobytes()
        assert dirty.image.tobytes() == again[index].image.tobytes()
