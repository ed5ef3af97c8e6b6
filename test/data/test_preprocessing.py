"""The shared preprocessing (`endoarss_ros.data.preprocessing`) against references computed
another way: the mask resize against exact integer arithmetic in Python (test/reference_resize.py),
the image resize against the antialiased bilinear filter written out in float64 numpy, the
normalisation against its formula. Every step is pinned: a resize without antialiasing, a
mask resize with OpenCV's INTER_NEAREST or torch's float ``nearest-exact``, or a missing or
different normalisation fails here."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference_resize import nearest_exact_indices, resize_nearest_exact

from endoarss_ros.data.preprocessing import (
    Preprocessing,
    nearest_axis,
    nearest_indices,
    resize_frame,
    resize_mask,
    resize_pixels,
    round_pixels,
)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def antialiased_bilinear_weights(size_in: int, size_out: int) -> np.ndarray:
    """size_out x size_in float64 weights: a triangle filter centred on each target pixel
    centre, its radius one source pixel, widened by the downscale factor, then normalised."""
    scale = size_in / size_out
    radius = max(scale, 1.0)
    source = np.arange(size_in) + 0.5
    centres = (np.arange(size_out) + 0.5) * scale
    weights = np.clip(1.0 - np.abs(source[None, :] - centres[:, None]) / radius, 0.0, None)
    return weights / weights.sum(axis=1, keepdims=True)


def reference_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """H x W x 3 -> size[0] x size[1] x 3 float64, separable."""
    rows = antialiased_bilinear_weights(image.shape[0], size[0])
    cols = antialiased_bilinear_weights(image.shape[1], size[1])
    columns = np.einsum("hwc,jw->hjc", image.astype(np.float64), cols)
    return np.einsum("ih,hjc->ijc", rows, columns)


def reference_input(frame: np.ndarray, size: tuple[int, int], mean, std) -> np.ndarray:
    """The network input (3 x H x W float64) of an H x W x 3 uint8 frame."""
    resized = reference_resize(frame, size) if frame.shape[:2] != size else frame.astype(float)
    normalized = (resized / 255.0 - np.asarray(mean)) / np.asarray(std)
    return normalized.transpose(2, 0, 1)


def random_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# Pairs where a floating-point pixel-centre mapping picks the neighbouring pixel: torch's
# nearest-exact for 1024 -> 244, 480 -> 112 and 1920 -> 224, float64 ``(i + 0.5) * (n_in /
# n_out)`` (the Predictor's former upsampling) for 224 -> 277, 56 -> 71 and 272 -> 56.
HARD_SIZES = [(1024, 244), (480, 112), (1920, 224), (224, 277), (56, 71), (272, 56), (244, 289)]


@pytest.mark.parametrize(("size_in", "size_out"), HARD_SIZES)
def test_nearest_axis_is_exact_where_float_arithmetic_is_not(size_in, size_out):
    expected = nearest_exact_indices(size_in, size_out)
    np.testing.assert_array_equal(nearest_axis(size_in, size_out).numpy(), expected)
    # The sizes are chosen so the test can tell: float arithmetic misses at least one pixel.
    x = torch.arange(size_in, dtype=torch.float32).view(1, 1, 1, size_in)
    torch_exact = F.interpolate(x, size=(1, size_out), mode="nearest-exact").flatten().long()
    centres = torch.arange(size_out, dtype=torch.float64) + 0.5
    float64 = (centres * (size_in / size_out)).floor().clamp(max=size_in - 1).long()
    assert not (
        np.array_equal(torch_exact.numpy(), expected) and np.array_equal(float64.numpy(), expected)
    )


def test_nearest_axis_over_many_sizes():
    for size_in in (*range(1, 80), 244, 272, 480, 640, 1024, 1080, 1280, 1920):
        for size_out in (1, 7, 14, 56, 70, 98, 224, 244, 277, 480, 1024):
            np.testing.assert_array_equal(
                nearest_axis(size_in, size_out).numpy(), nearest_exact_indices(size_in, size_out)
            )


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ((480, 640), (224, 224)),
        ((1024, 1280), (244, 244)),
        ((56, 70), (480, 640)),
        ((7, 9), (1080, 1920)),
    ],
)
def test_masks_are_resized_by_exact_pixel_centre_nearest(source, target):
    mask = np.random.default_rng(sum(source)).integers(0, 7, source, dtype=np.uint8)
    expected = resize_nearest_exact(mask, target)
    resized = resize_mask(mask, target)
    assert resized.dtype == np.uint8 and resized.flags.c_contiguous
    np.testing.assert_array_equal(resized, expected)
    tensor = resize_mask(torch.from_numpy(mask)[None], target)  # a leading batch axis
    np.testing.assert_array_equal(tensor[0].numpy(), expected)
    rows, cols = nearest_indices(source, target)
    np.testing.assert_array_equal(mask[rows.numpy()[:, None], cols.numpy()[None, :]], expected)
    # OpenCV's INTER_NEAREST (no half-pixel offset) is another mask: this test would see it.
    opencv = cv2.resize(mask, target[::-1], interpolation=cv2.INTER_NEAREST)
    assert not np.array_equal(opencv, expected)


def test_a_mask_of_the_target_size_is_returned_as_it_is():
    mask = np.zeros((56, 70), np.uint8)
    assert resize_mask(mask, (56, 70)) is mask


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ((480, 640), (224, 224)),
        ((1024, 1280), (224, 224)),
        ((480, 640), (56, 70)),
        ((41, 33), (56, 70)),
    ],
)
def test_images_are_resized_antialiased_bilinear(source, target):
    frame = random_frame(*source, seed=source[0])
    expected = reference_resize(frame, target)
    pixels = torch.from_numpy(frame).permute(2, 0, 1)
    resized = resize_pixels(pixels, target)
    assert resized.dtype == torch.float32 and resized.shape == (3, *target)
    # float32 against float64: a few thousandths of a grey level.
    np.testing.assert_allclose(resized.permute(1, 2, 0).numpy(), expected, atol=0.01)
    np.testing.assert_allclose(resize_frame(frame, target, rounded=False), expected, atol=0.01)
    rounded = resize_frame(frame, target, rounded=True)
    assert rounded.dtype == np.uint8
    assert np.abs(rounded - expected).max() <= 0.5 + 0.01
    batched = resize_pixels(pixels[None].float(), target)
    torch.testing.assert_close(batched[0], resized)
    if source[0] > target[0]:  # shrinking: plain bilinear would alias, far from the filter
        plain = F.interpolate(pixels[None].float(), size=target, mode="bilinear")[0]
        assert np.abs(plain.permute(1, 2, 0).numpy() - expected).max() > 20


@pytest.mark.parametrize(
    ("source", "target"), [((2000, 3000), (224, 224)), ((3000, 1500), (112, 149))]
)
def test_a_large_frame_is_resized_in_strips_to_the_one_pass_result(monkeypatch, source, target):
    """Strips of rows made float32 one at a time give the one pass's numbers, bit for bit,
    batched or not; the float32 copy of the whole frame never exists."""
    import endoarss_ros.data.preprocessing as preprocessing

    frame = random_frame(*source, seed=3)
    pixels = torch.from_numpy(frame).permute(2, 0, 1)  # a strided view, as the Predictor's
    whole = F.interpolate(
        pixels[None].float(), size=target, mode="bilinear", align_corners=False, antialias=True
    )
    assert source[0] * source[1] > preprocessing.STRIP_PIXELS
    assert torch.equal(resize_pixels(pixels[None], target), whole)
    monkeypatch.setattr(preprocessing, "STRIP_PIXELS", 7 * source[1] + 3)  # uneven last strip
    assert torch.equal(resize_pixels(pixels, target), whole[0])
    converted = []
    original_float = torch.Tensor.float
    monkeypatch.setattr(
        torch.Tensor, "float", lambda t: converted.append(t.numel()) or original_float(t)
    )
    resize_pixels(pixels, target)
    assert max(converted) <= 3 * 7 * source[1]


def test_resizing_to_the_same_size_only_converts():
    frame = random_frame(56, 70)
    pixels = torch.from_numpy(frame).permute(2, 0, 1)
    same = resize_pixels(pixels, (56, 70))
    assert same.dtype == torch.float32
    assert torch.equal(same, pixels.float())


def test_normalisation_is_the_formula():
    frame = random_frame(56, 70, seed=4)
    preprocessing = Preprocessing((56, 70), MEAN, STD)
    pixels = torch.from_numpy(frame).permute(2, 0, 1)
    expected = reference_input(frame, (56, 70), MEAN, STD)
    np.testing.assert_allclose(preprocessing.normalize(pixels).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(preprocessing(pixels[None])[0].numpy(), expected, atol=1e-5)
    other = Preprocessing((56, 70), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    np.testing.assert_allclose(
        other.normalize(pixels).numpy(), frame.transpose(2, 0, 1) / 255.0, atol=1e-6
    )


@pytest.mark.parametrize("source", [(480, 640), (1024, 1280)])
def test_the_whole_path_against_the_reference(source):
    frame = random_frame(*source, seed=7)
    preprocessing = Preprocessing((224, 224), MEAN, STD)
    network_input = preprocessing(torch.from_numpy(frame).permute(2, 0, 1)[None])[0]
    expected = reference_input(frame, (224, 224), MEAN, STD)
    # 0.01 grey level / 255 / std: 2e-4 in normalised units.
    np.testing.assert_allclose(network_input.numpy(), expected, atol=2e-4)


def test_rounding_saturates():
    pixels = torch.tensor([-3.0, 0.4, 0.5, 1.5, 254.6, 300.0])
    assert round_pixels(pixels).tolist() == [0, 0, 0, 2, 255, 255]


def test_sizes_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        nearest_axis(0, 4)
    with pytest.raises(ValueError, match="positive"):
        resize_mask(np.zeros((4, 4), np.uint8), (0, 4))
