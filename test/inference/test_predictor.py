"""The Predictor against an independent computation with the model itself, and its errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference_resize import resize_nearest_exact

from endoarss_ros.inference import (
    UNLABELED,
    CheckpointLoadError,
    DeviceError,
    FrameError,
    Predictor,
    PredictorError,
)
from endoarss_ros.inference.predictor import nearest_indices


def random_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def reference(checkpoint, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Activity probabilities and mask computed step by step on the CPU, with OpenCV doing
    the final nearest-neighbour resize."""
    from endoarss_ros.model import load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    model.merge()
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=meta.input_size, mode="bilinear", antialias=True)
    x = (x - torch.tensor(meta.mean).view(1, 3, 1, 1)) / torch.tensor(meta.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        out = model(x)
    probabilities = torch.softmax(out["activity"], dim=1)[0].numpy()
    ids = out["segmentation"][0].argmax(0).numpy().astype(np.uint8)
    height, width = frame.shape[:2]
    mask = cv2.resize(ids, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    return probabilities, mask


@pytest.mark.parametrize(("height", "width"), [(480, 640), (1024, 1280), (41, 33)])
def test_results_match_the_model_at_the_source_resolution(
    tiny_checkpoint, cpu_predictor, height, width
):
    frame = random_frame(height, width, seed=height)
    (prediction,) = cpu_predictor.predict([frame])
    probabilities, mask = reference(tiny_checkpoint, frame)

    assert prediction.activity.dtype == np.float32
    assert prediction.activity.shape == (3,)
    assert prediction.activity.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(prediction.activity, probabilities, atol=1e-5)
    assert prediction.mask.dtype == np.uint8
    assert prediction.mask.shape == (height, width)
    # The reference normalises with different float arithmetic; only near-ties may differ.
    assert np.mean(prediction.mask == mask) > 0.995
    assert len(np.unique(prediction.mask)) > 1, "a constant mask would hide geometry errors"


def test_mask_upsampling_is_exact_where_float_arithmetic_is_not(cpu_predictor):
    # 224 -> 277 and 244 -> 289: a float64 mapping (and OpenCV's fixed point) picks the
    # neighbouring pixel for some rows and columns.
    ids = torch.from_numpy(np.random.default_rng(4).integers(0, 5, (224, 244), dtype=np.uint8))
    upsampled = cpu_predictor._upsample(ids, 277, 289).numpy()
    np.testing.assert_array_equal(upsampled, resize_nearest_exact(ids.numpy(), (277, 289)))


@pytest.mark.parametrize(("source", "target"), [((56, 70), (480, 640)), ((7, 9), (1024, 1280))])
def test_mask_upsampling_is_pixel_centre_nearest(source, target):
    ids = torch.from_numpy(np.random.default_rng(3).integers(0, 5, source, dtype=np.uint8))
    rows, cols = nearest_indices(source, target)
    upsampled = ids[rows[:, None], cols[None, :]].numpy()
    np.testing.assert_array_equal(upsampled, resize_nearest_exact(ids.numpy(), target))
    # OpenCV's INTER_NEAREST_EXACT is the same mapping in fixed point (exact from 5.0 on).
    opencv = cv2.resize(ids.numpy(), (target[1], target[0]), interpolation=cv2.INTER_NEAREST_EXACT)
    assert np.mean(upsampled == opencv) > 0.998


def test_a_stereo_batch_equals_two_single_frames(cpu_predictor):
    left, right = random_frame(480, 640, 1), random_frame(480, 640, 2)
    pair = cpu_predictor.predict([left, right])
    singles = [cpu_predictor.predict([frame])[0] for frame in (left, right)]
    for batched, single in zip(pair, singles, strict=True):
        np.testing.assert_allclose(batched.activity, single.activity, atol=1e-5)
        assert np.mean(batched.mask == single.mask) > 0.999
    assert not np.array_equal(pair[0].mask, pair[1].mask)


def test_frames_of_different_sizes_share_one_batch(cpu_predictor):
    small, large = random_frame(120, 160), random_frame(1024, 1280)
    results = cpu_predictor.predict([small, large])
    assert [r.mask.shape for r in results] == [(120, 160), (1024, 1280)]


def test_lora_is_merged_and_model_metadata_is_exposed(cpu_predictor, tiny_checkpoint):
    assert cpu_predictor.model.merged
    info = cpu_predictor.info
    assert info.input_size == (56, 70)  # test/inference/conftest.py
    assert info.name == "vit_tiny_patch14"
    assert len(info.checkpoint_hash) == 16
    assert len(info.segmentation_colors) == len(info.segmentation_names) == 5
    assert cpu_predictor.device == torch.device("cpu")
    assert cpu_predictor.precision == "fp32"
    assert cpu_predictor.warmup_seconds > 0


def test_confidence_threshold_marks_unsure_pixels_unlabeled(tiny_checkpoint):
    frame = random_frame(96, 128)
    unsure = Predictor(tiny_checkpoint, device="cpu", mask_min_confidence=0.999)
    (prediction,) = unsure.predict([frame])
    assert np.all(prediction.mask == UNLABELED)
    permissive = Predictor(tiny_checkpoint, device="cpu", mask_min_confidence=0.0)
    assert not np.any(permissive.predict([frame])[0].mask == UNLABELED)


def test_bf16_on_cpu_gives_nearly_the_fp32_answer(tiny_checkpoint, cpu_predictor):
    frame = random_frame(480, 640)
    bf16 = Predictor(tiny_checkpoint, device="cpu", precision="bf16")
    assert bf16.precision == "bf16"
    (low,) = bf16.predict([frame])
    (full,) = cpu_predictor.predict([frame])
    np.testing.assert_allclose(low.activity, full.activity, atol=0.05)
    assert np.mean(low.mask == full.mask) > 0.8


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((10, 10, 3), dtype=np.float32),
        np.zeros((10, 10), dtype=np.uint8),
        np.zeros((10, 10, 4), dtype=np.uint8),
        np.zeros((0, 10, 3), dtype=np.uint8),
        [[1, 2, 3]],
    ],
    ids=["float", "grey", "rgba", "empty", "list"],
)
def test_frames_that_are_not_rgb8_are_refused(cpu_predictor, frame):
    with pytest.raises(FrameError, match="frame 0"):
        cpu_predictor.predict([frame])


def test_missing_checkpoint_names_the_path(tmp_path):
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(CheckpointLoadError, match=r"nowhere\.safetensors.*does not exist"):
        Predictor(missing, device="cpu")


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointLoadError, match=r"junk\.safetensors.*cannot be used"):
        Predictor(junk, device="cpu")


def test_a_safetensors_file_without_metadata_is_refused(tmp_path):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, plain)
    with pytest.raises(CheckpointLoadError, match="not an EndoARSS checkpoint"):
        Predictor(plain, device="cpu")


@pytest.mark.parametrize(
    ("device", "precision", "message"),
    [
        ("gpu0", "fp32", "device must be one of auto, cpu, cuda, cuda:N"),
        ("cpu", "fp64", "precision must be one of auto, fp32, fp16, bf16"),
        ("cpu", "fp16", "fp16' needs a CUDA device"),
        ("cuda:7", "auto", "cuda:7"),
    ],
)
def test_impossible_devices_and_precisions_are_refused(tiny_checkpoint, device, precision, message):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a CUDA device 7")
    with pytest.raises(DeviceError, match=message):
        Predictor(tiny_checkpoint, device=device, precision=precision)


def test_auto_device_follows_cuda_availability(tiny_checkpoint):
    predictor = Predictor(tiny_checkpoint)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert predictor.device.type == expected
    assert predictor.precision in (("fp32",) if expected == "cpu" else ("bf16", "fp16"))


def test_confidence_threshold_out_of_range_is_refused(tiny_checkpoint):
    with pytest.raises(PredictorError, match="mask_min_confidence"):
        Predictor(tiny_checkpoint, device="cpu", mask_min_confidence=1.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_results_match_the_cpu(tiny_checkpoint, cpu_predictor, precision):
    frame = random_frame(1024, 1280)
    gpu = Predictor(tiny_checkpoint, device="cuda", precision=precision)
    (on_gpu,) = gpu.predict([frame])
    (on_cpu,) = cpu_predictor.predict([frame])
    tolerance = 1e-4 if precision == "fp32" else 0.05
    np.testing.assert_allclose(on_gpu.activity, on_cpu.activity, atol=tolerance)
    assert np.mean(on_gpu.mask == on_cpu.mask) > (0.99 if precision == "fp32" else 0.8)


@pytest.mark.slow
def test_compiled_model_gives_the_eager_answer(tiny_checkpoint, cpu_predictor):
    frame = random_frame(480, 640)
    compiled = Predictor(tiny_checkpoint, device=str(cpu_predictor.device), compile=True)
    assert compiled.compiled
    (fast,) = compiled.predict([frame])
    (eager,) = cpu_predictor.predict([frame])
    np.testing.assert_allclose(fast.activity, eager.activity, atol=1e-4)
    assert np.mean(fast.mask == eager.mask) > 0.999


@pytest.mark.parametrize("output", ["activity", "segmentation"])
def test_non_finite_outputs_are_refused_never_returned(tiny_checkpoint, output):
    from endoarss_ros.inference.errors import NonFiniteOutput

    predictor = Predictor(tiny_checkpoint, device="cpu")
    forward = predictor._forward

    def poisoned(batch):
        outputs = dict(forward(batch))
        outputs[output] = outputs[output].clone()
        outputs[output].view(-1)[0] = float("nan")
        return outputs

    predictor._forward = poisoned
    with pytest.raises(NonFiniteOutput, match=f"{output}.*NaN or infinite") as info:
        predictor.predict([random_frame(40, 50)])
    assert isinstance(info.value, PredictorError)
    assert "\n" not in str(info.value)
