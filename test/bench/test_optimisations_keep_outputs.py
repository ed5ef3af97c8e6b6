"""Each speed setting of the Predictor answers what the reference settings answer, and the
naive benchmark node computes the same numbers as the Predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from endoarss_ros.bench.ros.latency_probe import scene_frames
from endoarss_ros.bench.ros.naive_node import NaivePredictor, message_to_rgb
from endoarss_ros.inference import Predictor
from endoarss_ros.inference.errors import PredictorError

FRAME = scene_frames(480, 640, 1, seed=3)[0]


def assert_same_outputs(ours, reference, *, mask_tolerance: float = 1e-3) -> None:
    for a, b in zip(ours, reference, strict=True):
        np.testing.assert_allclose(a.activity, b.activity, atol=1e-4)
        assert a.mask.shape == b.mask.shape
        # Float rounding may move a pixel whose two best classes are tied to the last bit.
        assert np.mean(a.mask != b.mask) <= mask_tolerance


@pytest.fixture(scope="module")
def reference(lora_checkpoint):
    return Predictor(lora_checkpoint, device="cpu", merge_lora=False, warmup_batch_sizes=())


def test_merged_lora_keeps_outputs(lora_checkpoint, reference):
    merged = Predictor(lora_checkpoint, device="cpu", warmup_batch_sizes=())
    assert merged.model.merged and not reference.model.merged
    assert_same_outputs(merged.predict([FRAME]), reference.predict([FRAME]))


def test_the_adapters_matter_so_merging_is_tested(lora_checkpoint, reference):
    from endoarss_ros.model import load_checkpoint

    model, _ = load_checkpoint(lora_checkpoint)
    lora_b = [p for n, p in model.named_parameters() if n.endswith("lora_B")]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)


def test_one_thread_keeps_outputs(lora_checkpoint, reference):
    before = torch.get_num_threads()
    try:
        single = Predictor(lora_checkpoint, device="cpu", threads=1, warmup_batch_sizes=())
        assert torch.get_num_threads() == 1
        assert_same_outputs(single.predict([FRAME, FRAME]), reference.predict([FRAME, FRAME]))
    finally:
        torch.set_num_threads(before)


def test_negative_threads_are_refused(lora_checkpoint):
    with pytest.raises(PredictorError, match="threads"):
        Predictor(lora_checkpoint, device="cpu", threads=-1)


def test_naive_pipeline_computes_the_predictor_outputs(lora_checkpoint, reference):
    naive = NaivePredictor(str(lora_checkpoint))
    left, right = FRAME, scene_frames(480, 640, 1, seed=4)[0]
    for (activity, mask), ours in zip(
        naive.predict([left, right]), reference.predict([left, right]), strict=True
    ):
        np.testing.assert_allclose(activity, ours.activity, atol=1e-4)
        assert mask.dtype == np.uint8 and mask.shape == (480, 640)
        assert np.mean(mask != ours.mask) <= 1e-3


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_naive_conversion_reads_messages_as_the_node_does(encoding):
    import cv2

    from endoarss_ros.image_conversion import image_to_rgb8, numpy_to_image

    pixels = FRAME if encoding == "rgb8" else cv2.cvtColor(FRAME, cv2.COLOR_RGB2BGR)
    message = numpy_to_image(pixels, encoding)
    np.testing.assert_array_equal(message_to_rgb(message), image_to_rgb8(message))
    np.testing.assert_array_equal(message_to_rgb(message), FRAME)


@pytest.mark.parametrize(
    ("source", "target"),
    [((56, 70), (480, 640)), ((224, 224), (1024, 1280)), ((224, 224), (1080, 1920))],
)
def test_fast_mask_upsampling_picks_the_reference_pixels(reference, source, target):
    from endoarss_ros.inference.predictor import nearest_indices

    ids = torch.randint(0, 5, source, dtype=torch.uint8)
    rows, cols = nearest_indices(source, target)
    expected = ids[rows[:, None], cols[None, :]]
    assert torch.equal(reference._upsample(ids, *target), expected)


def test_channels_last_argmax_gives_the_reference_class_ids(reference):
    # Integer logits make ties common: both must pick the first of the tied classes.
    logits = torch.randint(0, 3, (2, 5, 56, 70)).float()
    expected = logits.argmax(dim=1).to(torch.uint8)
    assert torch.equal(reference._class_ids(logits), expected)
