"""The frame pipeline against direct Predictor calls: the same masks and probabilities in every
input mode, averaging and smoothing as documented, and its errors."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from endoarss_ros.inference import FrameError, render_overlay
from endoarss_ros.inference.errors import CheckpointLoadError
from endoarss_ros.inference.options import PipelineConfig, PredictorOptions
from endoarss_ros.inference.pipeline import FramePipeline, load_predictor
from endoarss_ros.inference.smoothing import SmoothingConfig
from endoarss_ros.inference.stereo import LEFT, RIGHT

MS = 1_000_000
RAW = SmoothingConfig(method="none")


def frame(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def config(input_mode: str = "mono", **kwargs) -> PipelineConfig:
    kwargs.setdefault("smoothing", RAW)
    return PipelineConfig(input_mode=input_mode, **kwargs)


def assert_matches(result, predictions) -> None:
    expected = np.mean([p.activity for p in predictions], axis=0)
    np.testing.assert_allclose(result.activity.probabilities, expected, rtol=0, atol=1e-6)
    assert result.activity.raw_class_id == int(np.argmax(expected))
    assert len(result.masks) == len(predictions)
    for mask, prediction in zip(result.masks, predictions, strict=True):
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, prediction.mask)


def test_mono_equals_the_predictor(cpu_predictor):
    pipeline = FramePipeline(cpu_predictor, config())
    image = frame(48, 64, 1)
    result = pipeline.run([image])
    assert_matches(result, cpu_predictor.predict([image]))
    assert result.sources == (0,)
    assert result.images[0] is image
    assert result.masks[0].shape == (48, 64)
    assert result.inference_s > 0


def test_stereo_runs_both_eyes_as_one_batch_and_averages_them(cpu_predictor):
    pipeline = FramePipeline(cpu_predictor, config("stereo"))
    left, right = frame(48, 64, 2), frame(40, 60, 3)
    result = pipeline.run([left, right])
    predictions = cpu_predictor.predict([left, right])
    assert_matches(result, predictions)
    assert result.sources == (0, 1)
    assert [m.shape for m in result.masks] == [(48, 64), (40, 60)]
    # Averaged, not one eye's answer.
    assert not np.allclose(predictions[0].activity, predictions[1].activity)


def test_side_by_side_splits_one_frame_into_its_halves(cpu_predictor):
    pipeline = FramePipeline(cpu_predictor, config("side_by_side"))
    image = frame(48, 128, 4)
    result = pipeline.run([image])
    assert_matches(result, cpu_predictor.predict([image[:, :64], image[:, 64:]]))
    assert result.sources == (0, 0)
    np.testing.assert_array_equal(result.images[0], image[:, :64])
    np.testing.assert_array_equal(result.images[1], image[:, 64:])
    assert [m.shape for m in result.masks] == [(48, 64), (48, 64)]


def test_side_by_side_odd_width_and_wrong_image_counts_are_frame_errors(cpu_predictor):
    side_by_side = FramePipeline(cpu_predictor, config("side_by_side"))
    with pytest.raises(FrameError, match="odd width 65; it cannot be split into two eyes"):
        side_by_side.run([frame(32, 65, 5)])
    with pytest.raises(FrameError, match="must be H x W x 3"):
        side_by_side.run([np.zeros((32, 64), np.uint8)])
    with pytest.raises(FrameError, match="side_by_side input takes 1 image per frame, got 2"):
        side_by_side.run([frame(32, 64, 5)] * 2)
    stereo = FramePipeline(cpu_predictor, config("stereo"))
    with pytest.raises(FrameError, match="stereo input takes 2 images per frame, got 1"):
        stereo.run([frame(32, 64, 5)])
    mono = FramePipeline(cpu_predictor, config())
    with pytest.raises(FrameError, match="mono input takes 1 image per frame, got 0"):
        mono.run([])
    # The Predictor's own frame checks reach the caller as they are.
    with pytest.raises(FrameError, match="uint8 RGB"):
        mono.run([np.zeros((32, 64, 3), np.float32)])


def test_predictor_exceptions_pass_through_unchanged():
    class Boom(RuntimeError):
        pass

    def predict(frames):
        raise Boom("out of memory")

    predictor = SimpleNamespace(
        info=SimpleNamespace(segmentation_colors=((0, 0, 0),), segmentation_names=()),
        feature_statistics=None,
    )
    predictor.predict = predict
    pipeline = FramePipeline(predictor, config())
    with pytest.raises(Boom, match="out of memory"):
        pipeline.run([frame(8, 8, 0)])


def test_activity_is_smoothed_after_averaging_and_can_be_reset(cpu_predictor):
    alpha = 0.4
    smoothing = SmoothingConfig(method="ema", ema_alpha=alpha)
    pipeline = FramePipeline(cpu_predictor, config("stereo", smoothing=smoothing))
    pairs = [(frame(32, 48, 10 + i), frame(32, 48, 20 + i)) for i in range(3)]
    average = None
    for left, right in pairs:
        result = pipeline.run([left, right])
        raw = np.mean([p.activity for p in cpu_predictor.predict([left, right])], axis=0)
        average = raw if average is None else alpha * raw + (1 - alpha) * average
        np.testing.assert_allclose(result.activity.probabilities, average, atol=1e-6)
        assert result.activity.raw_confidence == pytest.approx(float(raw.max()), abs=1e-6)
    pipeline.reset_smoothing()
    result = pipeline.run(list(pairs[0]))
    raw = np.mean([p.activity for p in cpu_predictor.predict(list(pairs[0]))], axis=0)
    np.testing.assert_allclose(result.activity.probabilities, raw, atol=1e-6)


def test_overlay_is_render_overlay_of_the_stream_at_the_current_alpha(cpu_predictor):
    pipeline = FramePipeline(cpu_predictor, config("side_by_side", overlay_alpha=0.5))
    image = frame(40, 96, 6)
    result = pipeline.run([image])
    overlay = pipeline.overlay(result, 1)
    assert overlay.shape == (40, 48, 3) and overlay.dtype == np.uint8
    np.testing.assert_array_equal(
        overlay, render_overlay(image[:, 48:], result.masks[1], pipeline.palette, 0.5)
    )
    pipeline.configure(config("side_by_side", overlay_alpha=1.0))
    np.testing.assert_array_equal(
        pipeline.overlay(result, 0),
        render_overlay(image[:, :48], result.masks[0], pipeline.palette, 1.0),
    )


def test_an_overlay_blended_in_strips_is_the_whole_frame_blend(monkeypatch):
    import cv2

    import endoarss_ros.inference.overlay as overlay

    rng = np.random.default_rng(5)
    table = overlay.palette([(0, 0, 0), (0, 114, 189), (237, 177, 32)])
    image = frame(61, 37, 9)[:, 3:34]  # a strided view, as a side-by-side eye
    mask = rng.choice(np.array([0, 1, 2, 255], np.uint8), image.shape[:2])
    colour = table[mask]
    whole = cv2.addWeighted(image, 0.6, colour, 0.4, 0.0)
    whole[mask == 255] = image[mask == 255]
    monkeypatch.setattr(overlay, "STRIP_PIXELS", 5 * 31 + 2)
    np.testing.assert_array_equal(overlay.render_overlay(image, mask, table, 0.4), whole[..., ::-1])


def test_configure_changes_smoothing_but_not_the_input(cpu_predictor):
    pipeline = FramePipeline(
        cpu_predictor, config(smoothing=SmoothingConfig(method="ema", ema_alpha=0.1))
    )
    first, second = frame(32, 48, 7), frame(32, 48, 8)
    pipeline.run([first])
    pipeline.configure(config())
    assert pipeline.config.smoothing == RAW
    result = pipeline.run([second])
    np.testing.assert_allclose(
        result.activity.probabilities, cpu_predictor.predict([second])[0].activity, atol=1e-6
    )
    with pytest.raises(ValueError, match="input_mode cannot change"):
        pipeline.configure(config("stereo"))
    with pytest.raises(ValueError, match="stereo_slop_ms cannot change"):
        pipeline.configure(config(stereo_slop_ms=30.0))
    assert pipeline.config == config()


def test_stereo_pairing_through_the_pipeline(cpu_predictor):
    pipeline: FramePipeline[str] = FramePipeline(cpu_predictor, config("stereo"))
    assert pipeline.pair(LEFT, 0, "L0") is None
    assert pipeline.pair(RIGHT, 20 * MS, "R0") is None  # beyond the 15 ms slop
    pair = pipeline.pair(LEFT, 25 * MS, "L1")
    assert pair is not None and (pair.left, pair.right, pair.skew_ns) == ("L1", "R0", -5 * MS)
    assert pipeline.unpaired == 1  # L0 can no longer be paired
    pipeline.pair(LEFT, 1000 * MS, "L2")
    pipeline.clear_pairing()
    assert pipeline.pair(RIGHT, 1000 * MS, "R2") is None
    assert pipeline.unpaired == 1

    mono = FramePipeline(cpu_predictor, config())
    with pytest.raises(ValueError, match="only in stereo input mode, this pipeline is mono"):
        mono.pair(LEFT, 0, "L0")
    assert mono.unpaired == 0
    mono.clear_pairing()


def test_pairing_and_smoothing_changes_from_other_threads_during_runs(cpu_predictor):
    pipeline: FramePipeline[int] = FramePipeline(cpu_predictor, config("stereo"))
    pairs: list = []
    stop = threading.Event()

    def callbacks() -> None:
        for index in range(200):
            for side in (LEFT, RIGHT):
                pair = pipeline.pair(side, index * 33 * MS, index)
                if pair is not None:
                    pairs.append(pair)
        stop.set()

    def operator() -> None:
        while not stop.is_set():
            pipeline.reset_smoothing()
            pipeline.configure(config("stereo", smoothing=SmoothingConfig(method="ema")))

    threads = [threading.Thread(target=callbacks), threading.Thread(target=operator)]
    for thread in threads:
        thread.start()
    left, right = frame(32, 48, 9), frame(32, 48, 10)
    runs = 0
    while runs < 5 or not stop.is_set():
        pipeline.run([left, right])
        runs += 1
    for thread in threads:
        thread.join()
    assert [(p.left, p.right) for p in pairs] == [(i, i) for i in range(200)]
    assert pipeline.unpaired == 0


def test_load_predictor_builds_what_the_options_say(tiny_checkpoint, monkeypatch):
    with pytest.raises(CheckpointLoadError, match="'checkpoint' is empty"):
        load_predictor(PredictorOptions(), PipelineConfig())

    built: list[tuple] = []

    class Recorder:
        def __init__(self, checkpoint, **kwargs) -> None:
            built.append((checkpoint, kwargs))

    import endoarss_ros.inference.predictor as predictor_module

    monkeypatch.setattr(predictor_module, "Predictor", Recorder)
    options = PredictorOptions(
        checkpoint=str(tiny_checkpoint),
        device="cpu",
        precision="fp32",
        cpu_threads=1,
        mask_min_confidence=0.5,
    )
    for mode, batch in (("mono", 1), ("stereo", 2), ("side_by_side", 2)):
        load_predictor(options, PipelineConfig(input_mode=mode))
        assert built.pop() == (
            str(tiny_checkpoint),
            {
                "device": "cpu",
                "precision": "fp32",
                "compile": False,
                "threads": 1,
                "mask_min_confidence": 0.5,
                "warmup_batch_sizes": (batch,),
            },
        )


def test_load_predictor_loads_the_checkpoint(tiny_checkpoint):
    options = PredictorOptions(
        checkpoint=str(tiny_checkpoint), device="cpu", mask_min_confidence=0.9
    )
    predictor = load_predictor(options, PipelineConfig(input_mode="side_by_side"))
    assert predictor.mask_min_confidence == 0.9
    result = FramePipeline(predictor, PipelineConfig(input_mode="side_by_side")).run(
        [frame(32, 96, 11)]
    )
    # A random model is never 90 % sure: every pixel is unlabeled.
    assert all((mask == 255).all() for mask in result.masks)
