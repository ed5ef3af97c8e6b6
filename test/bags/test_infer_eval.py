"""`bag infer` and `bag eval` without DDS: results equal the Predictor's on the same frames,
scores follow from them, missing outputs are counted, and bad bags are named in the error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from bag_clip import CLIP_FRAMES

from endoarss_ros.bags.evaluate import EvalOptions, evaluate_bags
from endoarss_ros.bags.frames import decoded_frames
from endoarss_ros.bags.schema import ACTIVITY, IMAGE, stream_qos
from endoarss_ros.bags.storage import BagReader, BagWriter
from endoarss_ros.cli import main
from endoarss_ros.image_conversion import image_to_numpy


@pytest.fixture(scope="module")
def inferred(clip_bag: Path, synthetic_checkpoint: Path, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("infer") / "outputs"
    code = main(
        [
            "bag",
            "infer",
            str(clip_bag),
            str(output),
            "--checkpoint",
            str(synthetic_checkpoint),
            "--smoothing",
            "none",
        ]
    )
    assert code == 0
    return output


def test_infer_matches_the_predictor_and_eval_scores_it(
    clip_bag: Path, synthetic_checkpoint: Path, inferred: Path, tmp_path: Path
) -> None:
    from endoarss_ros.inference import Predictor

    predictor = Predictor(synthetic_checkpoint, device="cpu")
    with BagReader(clip_bag) as bag:
        frames = [item[1:] for item in decoded_frames(bag, "/camera/image_raw")]
        truth = [int(m.class_id) for _, m in bag.decoded("/ground_truth/activity", ACTIVITY)]
        true_masks = [image_to_numpy(m) for _, m in bag.decoded("/ground_truth/mask", IMAGE)]
    expected = [predictor.predict([rgb])[0] for _, _, rgb in frames]
    with BagReader(inferred) as bag:
        activities = bag.decoded("/endoarss/activity", ACTIVITY)
        masks = bag.decoded("/endoarss/segmentation/mask", IMAGE)
        assert bag.topics["/endoarss/labels"] == "endoarss_ros/msg/LabelMap"
    assert [m.header for _, m in activities] == [h for _, h, _ in frames]
    assert [int(m.class_id) for _, m in activities] == [int(p.activity.argmax()) for p in expected]
    for (_, message), prediction in zip(masks, expected, strict=True):
        np.testing.assert_array_equal(image_to_numpy(message), prediction.mask)
    # Output log times: after their frame's, in frame order.
    log_times = [log for log, _ in activities]
    assert log_times == sorted(log_times)
    assert all(log > frame_log for log, (frame_log, _, _) in zip(log_times, frames, strict=True))

    report = tmp_path / "report"
    assert main(["bag", "eval", str(clip_bag), str(inferred), "--report", str(report)]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert sorted(p.name for p in report.iterdir()) == [
        "activity_timeline.png",
        "latency_histogram.png",
        "metrics.json",
        "report.md",
    ]
    assert (report / "activity_timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert metrics["frames"] == metrics["frames_answered"] == CLIP_FRAMES
    assert metrics["frames_missing"] == metrics["masks_missing"] == 0
    predicted = [int(p.activity.argmax()) for p in expected]
    accuracy = np.mean([p == t for p, t in zip(predicted, truth, strict=True)])
    assert metrics["activity"]["accuracy"] == pytest.approx(accuracy)
    valid = [(t != 255) for t in true_masks]
    pixel_accuracy = sum(
        int(np.count_nonzero((p.mask == t) & v))
        for p, t, v in zip(expected, true_masks, valid, strict=True)
    ) / sum(int(v.sum()) for v in valid)
    assert metrics["segmentation"]["pixel_accuracy"] == pytest.approx(pixel_accuracy)
    assert metrics["latency"]["count"] == CLIP_FRAMES and metrics["latency"]["min_ms"] > 0
    assert "frames missing | 0" in (report / "report.md").read_text()


def test_eval_counts_missing_and_unmatched_outputs(
    clip_bag: Path, inferred: Path, tmp_path: Path
) -> None:
    partial = tmp_path / "partial"
    with BagReader(inferred) as source, BagWriter(partial) as out:
        out.add_topic("/endoarss/activity", ACTIVITY, stream_qos(True))
        for index, (log_time, message) in enumerate(source.decoded("/endoarss/activity", ACTIVITY)):
            if index in (3, 4, 17):
                continue
            if index == 5:
                message.header.stamp.nanosec += 1
            out.write("/endoarss/activity", log_time, message)
    evaluation = evaluate_bags(clip_bag, partial, EvalOptions())
    metrics = evaluation.metrics
    assert metrics["frames_missing"] == 4
    assert metrics["outputs_unmatched"] == 1
    assert metrics["frames_answered"] == CLIP_FRAMES - 4
    assert metrics["segmentation"] is None and metrics["mask_topic"] is None
    missing = [i for i, f in enumerate(evaluation.frames) if f.predicted_activity is None]
    assert missing == [3, 4, 5, 17]


def _error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 1
    return capsys.readouterr().err


def test_bad_bags_name_the_bag_and_topic(
    clip_bag: Path, inferred: Path, synthetic_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    checkpoint = str(synthetic_checkpoint)
    out = str(tmp_path / "x")
    error = _error(
        capsys,
        "bag",
        "eval",
        str(clip_bag),
        str(inferred),
        "--report",
        out,
        "--camera-topic",
        "/camera/nothing",
    )
    assert str(clip_bag) in error and "/camera/nothing" in error and "has no topic" in error

    error = _error(
        capsys,
        "bag",
        "infer",
        str(clip_bag),
        out,
        "--checkpoint",
        checkpoint,
        "--camera-topic",
        "/ground_truth/activity",
    )
    assert str(clip_bag) in error and "/ground_truth/activity" in error
    assert "carries endoarss_ros/msg/SurgicalActivity, expected sensor_msgs/msg/Image" in error

    truncated = tmp_path / "truncated"
    shutil.copytree(clip_bag, truncated)
    (mcap,) = truncated.glob("*.mcap")
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    error = _error(
        capsys, "bag", "infer", str(truncated), str(tmp_path / "y"), "--checkpoint", checkpoint
    )
    assert str(truncated) in error and "truncated" in error
    assert "/camera/image_raw (40 messages)" in error

    empty = tmp_path / "empty"
    with BagWriter(empty) as bag:
        bag.add_topic("/camera/image_raw", IMAGE, stream_qos(True))
    error = _error(
        capsys, "bag", "infer", str(empty), str(tmp_path / "z"), "--checkpoint", checkpoint
    )
    assert str(empty) in error and "topic '/camera/image_raw'" in error and "no frames" in error

    error = _error(capsys, "bag", "eval", str(tmp_path / "absent"), str(inferred), "--report", out)
    assert "absent" in error and "does not exist" in error


def test_video_to_compressed_bag_infers_but_has_no_truth_to_score(
    synthetic_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    import cv2

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48))
    for index in range(5):
        writer.write(np.full((48, 64, 3), 40 * index, np.uint8))
    writer.release()
    bag = tmp_path / "video"
    assert main(["bag", "make", str(bag), "--video", str(video), "--compressed"]) == 0
    capsys.readouterr()
    with BagReader(bag) as reader:
        assert reader.topics == {
            "/camera/image_raw/compressed": "sensor_msgs/msg/CompressedImage",
            "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
        }
        stamps = [
            m.header.stamp.nanosec
            for _, m in reader.decoded("/camera/camera_info", "sensor_msgs/msg/CameraInfo")
        ]
    assert stamps == [0, 40_000_000, 80_000_000, 120_000_000, 160_000_000]
    outputs = tmp_path / "outputs"
    assert (
        main(["bag", "infer", str(bag), str(outputs), "--checkpoint", str(synthetic_checkpoint)])
        == 0
    )
    with BagReader(outputs) as reader:
        masks = reader.decoded("/endoarss/segmentation/mask", IMAGE)
    assert [(m.height, m.width) for _, m in masks] == [(48, 64)] * 5
    error = _error(capsys, "bag", "eval", str(bag), str(outputs), "--report", str(tmp_path / "r"))
    assert str(bag) in error and "/ground_truth/activity" in error


def test_stereo_bag_pairs_eyes_like_the_node(synthetic_checkpoint: Path, tmp_path: Path) -> None:
    from endoarss_ros.inference import Predictor

    bag = tmp_path / "stereo"
    assert main(["bag", "make", str(bag), "--synthetic", "6", "--size", "96x64", "--stereo"]) == 0
    outputs = tmp_path / "outputs"
    left, right = "/camera/left/image_raw", "/camera/right/image_raw"
    code = main(
        [
            "bag",
            "infer",
            str(bag),
            str(outputs),
            "--checkpoint",
            str(synthetic_checkpoint),
            "--stereo-topics",
            left,
            right,
            "--smoothing",
            "none",
        ]
    )
    assert code == 0
    predictor = Predictor(synthetic_checkpoint, device="cpu")
    with BagReader(bag) as reader:
        eyes = {t: [] for t in (left, right)}
        for topic, _, header, rgb in decoded_frames(reader, [left, right]):
            eyes[topic].append((header, rgb))
    with BagReader(outputs) as reader:
        activities = [m for _, m in reader.decoded("/endoarss/activity", ACTIVITY)]
        left_masks = reader.decoded("/endoarss/left/segmentation/mask", IMAGE)
        right_masks = reader.decoded("/endoarss/right/segmentation/mask", IMAGE)
    assert len(activities) == len(left_masks) == len(right_masks) == 6
    for index, activity in enumerate(activities):
        (left_header, left_rgb), (right_header, right_rgb) = eyes[left][index], eyes[right][index]
        assert activity.header == left_header
        assert right_masks[index][1].header == right_header
        pair = predictor.predict([left_rgb, right_rgb])
        expected = np.mean([p.activity for p in pair], axis=0)
        np.testing.assert_allclose(activity.probabilities, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(image_to_numpy(left_masks[index][1]), pair[0].mask)
        np.testing.assert_array_equal(image_to_numpy(right_masks[index][1]), pair[1].mask)
    # eval picks the left camera and the left mask, which the ground truth describes.
    metrics = evaluate_bags(bag, outputs, EvalOptions()).metrics
    assert metrics["camera_topic"] == left
    assert metrics["mask_topic"] == "/endoarss/left/segmentation/mask"
    assert metrics["frames_answered"] == 6 and metrics["masks_missing"] == 0
