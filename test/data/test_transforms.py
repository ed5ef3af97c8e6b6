"""Joint image/mask transforms: alignment, nearest-neighbour masks, sizes, batching."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from reference_resize import resize_nearest_exact
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from torchvision.transforms import v2

from endoarss_ros.data.classes import IGNORE_INDEX
from endoarss_ros.data.dataset import Sample
from endoarss_ros.data.preprocessing import Preprocessing, resize_frame, resize_mask
from endoarss_ros.data.synthetic.dataset import SyntheticDataset
from endoarss_ros.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    TrainTransform,
    check_input_size,
    denormalize,
)

PALETTE = np.array(
    [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), (40, 220, 220)], np.uint8
)


def coded_sample(seed: int, height: int = 150, width: int = 190) -> Sample:
    """Regions whose colour encodes their class, so the mask can be read back from the image."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.uint8)
    for _ in range(12):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        axes = (int(rng.integers(8, 40)), int(rng.integers(8, 40)))
        cv2.ellipse(
            mask, (x, y), axes, float(rng.uniform(0, 180)), 0, 360, int(rng.integers(5)), -1
        )
    mask[:10, :10] = IGNORE_INDEX
    image = PALETTE[np.minimum(mask, 4)]
    image[mask == IGNORE_INDEX] = 0
    return Sample(image, mask, activity=2, sample_id=f"coded-{seed}")


def decode(image: np.ndarray) -> np.ndarray:
    distance = ((image[:, :, None, :].astype(int) - PALETTE[None, None].astype(int)) ** 2).sum(-1)
    return distance.argmin(-1)


@pytest.mark.parametrize("seed", range(6))
def test_train_transform_keeps_image_and_mask_aligned(seed: int):
    torch.manual_seed(seed)
    transform = TrainTransform(
        (112, 140),
        hflip=0.5,
        vflip=0.5,
        degrees=30,
        scale=(0.7, 1.3),
        translate=0.1,
        brightness=0,
        contrast=0,
        saturation=0,
        hue=0,
    )
    sample = coded_sample(seed)
    out = transform(sample)
    mask = out["mask"].numpy()
    image = denormalize(out["image"])
    assert image.shape == (112, 140, 3) and mask.shape == (112, 140)
    labelled = mask != IGNORE_INDEX
    # Compare away from region borders, where interpolated colours are mixtures.
    uniform = cv2.erode(mask.astype(np.uint8), np.ones((5, 5))) == cv2.dilate(
        mask.astype(np.uint8), np.ones((5, 5))
    )
    inner = labelled & uniform
    assert inner.sum() > 0.3 * mask.size
    assert (decode(image)[inner] == mask[inner]).mean() > 0.99
    plain = EvalTransform((112, 140))(sample)["mask"].numpy()
    assert not np.array_equal(mask, plain)  # the augmentation moved something


def test_mask_values_stay_in_the_class_set_with_full_augmentation():
    torch.manual_seed(0)
    transform = TrainTransform(98, degrees=25, scale=(0.6, 1.4))
    for seed in range(8):
        sample = coded_sample(seed)
        out = transform(sample)
        assert out["mask"].dtype == torch.int64
        assert set(out["mask"].unique().tolist()) <= set(np.unique(sample.mask).tolist()) | {
            IGNORE_INDEX
        }
        assert out["image"].dtype == torch.float32 and out["image"].shape == (3, 98, 98)
        assert out["activity"] == 2 and out["sample_id"] == f"coded-{seed}"


def test_colour_jitter_changes_the_image_only():
    sample = coded_sample(1)
    torch.manual_seed(3)
    jittered = TrainTransform(98, hflip=0, degrees=0, scale=(1, 1), translate=0, brightness=0.5)(
        sample
    )
    reference = EvalTransform(98)(sample)
    assert torch.equal(jittered["mask"], reference["mask"])
    assert not torch.allclose(jittered["image"], reference["image"])


def test_eval_transform_resizes_and_normalises():
    sample = coded_sample(2, 60, 80)
    out = EvalTransform((56, 84))(sample)
    expected = (
        cv2.resize(sample.image, (84, 56), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    )
    expected = (expected - IMAGENET_MEAN) / IMAGENET_STD
    got = out["image"].permute(1, 2, 0).numpy()
    assert np.abs(got - expected).mean() < 0.05
    # Pixel-centre nearest, aligned with the image resize.
    np.testing.assert_array_equal(out["mask"].numpy(), resize_nearest_exact(sample.mask, (56, 84)))
    native = EvalTransform((56, 84), resize_mask=False)(sample)
    assert native["mask"].shape == (60, 80) and native["image"].shape == (3, 56, 84)
    np.testing.assert_array_equal(native["mask"].numpy(), sample.mask)


def test_masks_are_resized_exactly_where_torchvision_nearest_exact_is_not():
    # 480 -> 112 and 1920 -> 224 are sizes where torch's float "nearest-exact" picks the
    # neighbouring pixel for some rows and columns.
    source, size = (480, 1920), (112, 224)
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 5, source, dtype=np.uint8)
    sample = Sample(rng.integers(0, 256, (*source, 3), dtype=np.uint8), mask, 0, "frame")
    expected = resize_nearest_exact(mask, size)
    np.testing.assert_array_equal(EvalTransform(size)(sample)["mask"].numpy(), expected)
    still = TrainTransform(
        size,
        hflip=0,
        degrees=0,
        scale=(1, 1),
        translate=0,
        brightness=0,
        contrast=0,
        saturation=0,
        hue=0,
    )
    np.testing.assert_array_equal(still(sample)["mask"].numpy(), expected)
    torchvision = v2.functional.resize(
        tv_tensors.Mask(torch.from_numpy(mask)),
        list(size),
        interpolation=v2.InterpolationMode.NEAREST_EXACT,
    )
    assert not np.array_equal(torchvision.numpy(), expected)


def test_eval_transform_takes_source_or_evaluation_frames_alike():
    """A source frame (uint8) and the same frame as evaluation frames keep it (the shared
    resize's float32) give the network the same input: the Predictor's."""
    sample = coded_sample(3)
    resized = Sample(
        resize_frame(sample.image, (56, 84), rounded=False),
        resize_mask(sample.mask, (56, 84)),
        sample.activity,
        sample.sample_id,
    )
    transform = EvalTransform((56, 84))
    direct, cached = transform(sample), transform(resized)
    torch.testing.assert_close(direct["image"], cached["image"], atol=1e-6, rtol=0)
    assert torch.equal(direct["mask"], cached["mask"])
    pixels = torch.from_numpy(sample.image).permute(2, 0, 1)[None]
    shared = Preprocessing((56, 84), IMAGENET_MEAN, IMAGENET_STD)(pixels)[0]
    torch.testing.assert_close(direct["image"], shared, atol=1e-6, rtol=0)


def test_train_transform_takes_uint8_frames_only():
    sample = coded_sample(4, 56, 56)
    floats = Sample(sample.image.astype(np.float32), sample.mask, 0, "float")
    with pytest.raises(TypeError, match="uint8"):
        TrainTransform(56)(floats)


@pytest.mark.parametrize("size", [100, (224, 230), (0, 14)])
def test_input_size_must_be_a_multiple_of_the_patch_size(size):
    with pytest.raises(ValueError, match="multiples of the patch size 14"):
        check_input_size(size)
    assert check_input_size(518) == (518, 518)


def test_a_dataloader_batches_transformed_samples():
    dataset = SyntheticDataset(6, (80, 96), seed=1, transform=TrainTransform(56))
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch["image"].shape == (4, 3, 56, 56)
    assert batch["mask"].shape == (4, 56, 56) and batch["mask"].dtype == torch.int64
    assert batch["activity"].shape == (4,)
    assert batch["sample_id"][0] == "synthetic-1-0000000"
