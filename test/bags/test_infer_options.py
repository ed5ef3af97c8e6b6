"""`bag infer` takes the node's options: side-by-side input, mask confidence, the generated
command-line options (names, defaults, one-line errors) and the input-mode topic flags."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from endoarss_ros.bags.frames import decoded_frames
from endoarss_ros.bags.schema import ACTIVITY, IMAGE
from endoarss_ros.bags.storage import BagReader
from endoarss_ros.cli import build_parser, main
from endoarss_ros.cli_options import option_name
from endoarss_ros.image_conversion import image_to_numpy
from endoarss_ros.inference.options import PipelineConfig, PredictorOptions
from endoarss_ros.validation import flat_fields

CAMERA = "/camera/image_raw"


@pytest.fixture(scope="module")
def wide_bag(tmp_path_factory) -> Path:
    """Six 192x64 frames on one topic: read side by side, two 96x64 eyes each."""
    path = tmp_path_factory.mktemp("bags") / "wide"
    assert main(["bag", "make", str(path), "--synthetic", "6", "--size", "192x64"]) == 0
    return path


def infer(bag: Path, output: Path, checkpoint: Path, *options: str) -> int:
    return main(["bag", "infer", str(bag), str(output), "--checkpoint", str(checkpoint), *options])


def frames_of(bag: Path, topic: str = CAMERA) -> list[tuple]:
    with BagReader(bag) as reader:
        return [(header, rgb) for _, _, header, rgb in decoded_frames(reader, topic)]


@pytest.mark.parametrize(
    "flag", [["--side-by-side-topic", CAMERA], ["--input-mode", "side_by_side"]]
)
def test_side_by_side_frames_are_split_and_written_as_left_and_right(
    wide_bag: Path, synthetic_checkpoint: Path, tmp_path: Path, flag: list[str], capsys
) -> None:
    from endoarss_ros.inference import Predictor

    output = tmp_path / "outputs"
    assert infer(wide_bag, output, synthetic_checkpoint, *flag, "--smoothing", "none") == 0
    assert '"frames": 6' in capsys.readouterr().out
    with BagReader(output) as reader:
        activities = [m for _, m in reader.decoded("/endoarss/activity", ACTIVITY)]
        left = [m for _, m in reader.decoded("/endoarss/left/segmentation/mask", IMAGE)]
        right = [m for _, m in reader.decoded("/endoarss/right/segmentation/mask", IMAGE)]
        assert "/endoarss/segmentation/mask" not in reader.topics
    predictor = Predictor(synthetic_checkpoint, device="cpu")
    frames = frames_of(wide_bag)
    assert len(activities) == len(left) == len(right) == len(frames) == 6
    for (header, rgb), activity, left_mask, right_mask in zip(
        frames, activities, left, right, strict=True
    ):
        # Both eyes and the activity carry the one frame's header, as the node's do.
        assert activity.header == left_mask.header == right_mask.header == header
        eyes = predictor.predict([rgb[:, :96], rgb[:, 96:]])
        expected = np.mean([p.activity for p in eyes], axis=0)
        np.testing.assert_allclose(activity.probabilities, expected, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(image_to_numpy(left_mask), eyes[0].mask)
        np.testing.assert_array_equal(image_to_numpy(right_mask), eyes[1].mask)


def test_side_by_side_frame_of_odd_width_names_the_topic(
    synthetic_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    bag = tmp_path / "odd"
    assert main(["bag", "make", str(bag), "--synthetic", "2", "--size", "95x64"]) == 0
    capsys.readouterr()
    code = infer(bag, tmp_path / "outputs", synthetic_checkpoint, "--input-mode", "side_by_side")
    error = capsys.readouterr().err
    assert code == 1
    assert str(bag) in error and CAMERA in error and "odd width 95" in error


def test_mask_min_confidence_unlabels_unsure_pixels(
    wide_bag: Path, synthetic_checkpoint: Path, tmp_path: Path
) -> None:
    from endoarss_ros.inference import Predictor

    output = tmp_path / "outputs"
    assert infer(wide_bag, output, synthetic_checkpoint, "--mask-min-confidence", "0.3") == 0
    predictor = Predictor(synthetic_checkpoint, device="cpu", mask_min_confidence=0.3)
    with BagReader(output) as reader:
        masks = [image_to_numpy(m) for _, m in reader.decoded("/endoarss/segmentation/mask", IMAGE)]
    frames = frames_of(wide_bag)
    assert len(masks) == len(frames)
    unlabeled = 0
    for mask, (_, rgb) in zip(masks, frames, strict=True):
        np.testing.assert_array_equal(mask, predictor.predict([rgb])[0].mask)
        unlabeled += int(np.count_nonzero(mask == 255))
    # A random model is unsure about some pixels, sure about others.
    assert 0 < unlabeled < sum(m.size for m in masks)


def test_stereo_mode_finds_the_bags_left_and_right_topics(
    synthetic_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    bag = tmp_path / "stereo"
    assert main(["bag", "make", str(bag), "--synthetic", "3", "--size", "96x64", "--stereo"]) == 0
    output = tmp_path / "outputs"
    assert infer(bag, output, synthetic_checkpoint, "--input-mode", "stereo") == 0
    assert '"frames": 3' in capsys.readouterr().out
    with BagReader(output) as reader:
        assert len(reader.decoded("/endoarss/right/segmentation/mask", IMAGE)) == 3

    assert infer(bag, tmp_path / "x", synthetic_checkpoint, "--input-mode", "side_by_side") == 1
    assert "several camera topics" in capsys.readouterr().err


def infer_args(*options: str) -> argparse.Namespace:
    argv = ["bag", "infer", "in", "out", "--checkpoint", "m.safetensors", *options]
    return build_parser("bag").parse_args(argv)


def test_every_node_option_is_generated_with_the_nodes_name_and_default(capsys) -> None:
    from endoarss_ros.ros.bags.command import _infer_options

    with pytest.raises(SystemExit):
        build_parser("bag").parse_args(["bag", "infer", "--help"])
    usage = " ".join(capsys.readouterr().out.split())
    for section in (PredictorOptions, PipelineConfig):
        for field in flat_fields(section):
            assert option_name(field.name) in usage
            assert field.doc in usage
    assert "--compile, --no-compile" in usage and "--device DEVICE" in usage
    assert "(default: auto)" in usage and "--smoothing-method" in usage

    options = _infer_options(infer_args())
    assert options.predictor == PredictorOptions(checkpoint="m.safetensors")
    assert options.predictor.device == "auto"
    assert options.pipeline == PipelineConfig()

    options = _infer_options(
        infer_args(
            "--device",
            "CPU",
            "--compile",
            "--cpu-threads",
            "1",
            "--mask-min-confidence",
            "0.25",
            "--stereo-topics",
            "/l",
            "/r",
            "--stereo-slop-ms",
            "30",
            "--smoothing-method",
            "ema_hysteresis",
            "--smoothing-ema-alpha",
            "0.5",
            "--hysteresis-frames",  # the older spelling still works
            "4",
        )
    )
    assert options.predictor == PredictorOptions(
        checkpoint="m.safetensors",
        device="cpu",
        compile=True,
        cpu_threads=1,
        mask_min_confidence=0.25,
    )
    assert options.pipeline.input_mode == "stereo"
    assert options.pipeline.stereo_slop_ms == 30.0
    assert options.pipeline.smoothing.method == "ema_hysteresis"
    assert options.pipeline.smoothing.ema_alpha == 0.5
    assert options.pipeline.smoothing.hysteresis_frames == 4
    assert options.stereo_topics == ("/l", "/r")
    assert _infer_options(infer_args("--side-by-side-topic", "/s")).camera_topic == "/s"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--device", "tpu"], "--device must be one of auto, cpu, cuda, cuda:N, got 'tpu'"),
        (["--cpu-threads", "two"], "--cpu-threads must be an integer in [0, 1024], got 'two'"),
        (["--mask-min-confidence", "1"], "--mask-min-confidence must be a number in [0, 1)"),
        (["--stereo-slop-ms", "0"], "--stereo-slop-ms must be a number in (0, 1000] ms, got 0.0"),
        (["--smoothing", "median"], "--smoothing-method must be one of none, ema, hysteresis"),
        (["--precision", "fp8"], "--precision must be one of auto, fp32, fp16, bf16"),
        (["--input-mode", "mono", "--stereo-topics", "/l", "/r"], "--stereo-topics needs"),
        (["--input-mode", "stereo", "--camera-topic", "/c"], "--camera-topic names one topic"),
    ],
)
def test_bad_option_exits_2_with_one_line_naming_it(
    options: list[str], message: str, tmp_path: Path, capsys
) -> None:
    argv = ["bag", "infer", "absent", str(tmp_path / "out"), "--checkpoint", "m.safetensors"]
    assert main([*argv, *options]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"endoarss bag infer: {message}")
    assert not (tmp_path / "out").exists()
