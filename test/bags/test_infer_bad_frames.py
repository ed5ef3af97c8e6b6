"""`bag infer` goes past frames that cannot be decoded: each is skipped, reported on stderr
with its index, stamp, topic and reason and listed in the output bag's custom_data (metadata.yaml
from rosbag2 metadata version 6, the sidecar file for Humble's version 5); every good frame
after it is answered, and the exit status says that frames were skipped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from endoarss_ros.bags import messages
from endoarss_ros.bags.formats import CUSTOM_DATA_SIDECAR
from endoarss_ros.bags.schema import ACTIVITY, COMPRESSED_IMAGE, IMAGE, stream_qos, typestore
from endoarss_ros.bags.storage import BagReader, BagWriter
from endoarss_ros.cli import main

START = 1_700_000_000 * 1_000_000_000
PERIOD = 100_000_000
SKIPPED = 3


def _stamp(index: int) -> int:
    return START + index * PERIOD


def _rgb(index: int, width: int = 80, height: int = 64) -> np.ndarray:
    rng = np.random.default_rng(index)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _raw(index: int, **fields) -> object:
    """An rgb8 Image, with some fields replaced to make it unusable."""
    message = messages.image(_rgb(index), "rgb8", _stamp(index), "endoscope")
    for name, value in fields.items():
        setattr(message, name, value)
    return message


def _write(path: Path, topic: str, msgtype: str, frames: list[object | bytes]) -> None:
    with BagWriter(path) as bag:
        bag.add_topic(topic, msgtype, stream_qos(True))
        for index, frame in enumerate(frames):
            if isinstance(frame, bytes):
                bag.write_raw(topic, _stamp(index), frame)
            else:
                bag.write(topic, _stamp(index), frame)


def _infer(bag: Path, output: Path, checkpoint: Path, *options: str) -> int:
    return main(["bag", "infer", str(bag), str(output), "--checkpoint", str(checkpoint), *options])


def _stamps(output: Path, topic: str = "/endoarss/activity") -> list[int]:
    with BagReader(output) as reader:
        return [
            m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec
            for _, m in reader.decoded(topic, ACTIVITY if topic.endswith("activity") else IMAGE)
        ]


def _metadata(output: Path) -> dict:
    return yaml.safe_load((output / "metadata.yaml").read_text())["rosbag2_bagfile_information"]


def _skipped_in_metadata(output: Path) -> list[dict]:
    """The skipped frames the output bag lists, wherever its version keeps custom_data."""
    with BagReader(output) as reader:
        return json.loads(reader.custom_data["endoarss.skipped_frames"])


def _skip_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "skipped frame" in line]


def test_mono_bad_frames_are_skipped_and_reported(
    synthetic_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    topic = "/camera/image_raw"
    width, height = 80, 64
    frames: list[object | bytes] = [
        _raw(0),
        _raw(1, encoding="foo16"),  # unknown encoding
        _raw(2),
        _raw(3, data=_raw(3).data[: width * 3 * height // 2]),  # shorter than height * step
        _raw(4),
        _raw(5, height=0, width=0, step=0, data=np.zeros(0, np.uint8)),  # zero size
        _raw(6),
        b"\x00\x01\x00\x00garbage",  # not a CDR Image at all
        _raw(8),
    ]
    bag = tmp_path / "mono"
    _write(bag, topic, IMAGE, frames)
    output = tmp_path / "outputs"
    assert _infer(bag, output, synthetic_checkpoint) == SKIPPED
    captured = capsys.readouterr()
    lines = _skip_lines(captured.err)
    assert len(lines) == 4, captured.err
    for line, index in zip(lines, (1, 3, 5, 7), strict=True):
        assert f"frame {index} of {topic}" in line
    assert "stamp 1700000000.100000000" in lines[0] and "foo16" in lines[0]
    assert "stamp 1700000000.300000000" in lines[1]
    assert "stamp 1700000000.500000000" in lines[2] and "empty" in lines[2]
    assert "does not decode" in lines[3]
    assert "answered 5 of 9 frames" in captured.err and "skipped 4" in captured.err
    # Humble's metadata version (the default) has no custom_data: the sidecar file lists them.
    assert _metadata(output)["version"] == 5 and "custom_data" not in _metadata(output)
    assert f"listed in {output / CUSTOM_DATA_SIDECAR}" in captured.err
    sidecar = yaml.safe_load((output / CUSTOM_DATA_SIDECAR).read_text())
    assert json.loads(sidecar["endoarss.skipped_frames"])[0]["index"] == 1
    assert json.loads(captured.out)["skipped"] == 4
    assert _stamps(output) == [_stamp(i) for i in (0, 2, 4, 6, 8)]
    assert _stamps(output, "/endoarss/segmentation/mask") == [_stamp(i) for i in (0, 2, 4, 6, 8)]
    listed = _skipped_in_metadata(output)
    assert [(s["index"], s["topic"]) for s in listed] == [(i, topic) for i in (1, 3, 5, 7)]
    assert listed[0]["stamp_ns"] == _stamp(1) and "foo16" in listed[0]["reason"]


def test_corrupt_jpeg_frames_are_skipped(
    synthetic_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    topic = "/camera/image_raw/compressed"
    compressed = typestore().types[COMPRESSED_IMAGE]
    good = [messages.compressed_image(_rgb(i), _stamp(i), "endoscope") for i in range(5)]
    truncated = good[1].data[: len(good[1].data) // 3]
    frames = [
        good[0],
        compressed(header=good[1].header, format=good[1].format, data=truncated),
        good[2],
        compressed(
            header=good[3].header, format="jpeg", data=np.frombuffer(b"\xff" * 64, np.uint8)
        ),
        good[4],
    ]
    bag = tmp_path / "jpeg"
    _write(bag, topic, COMPRESSED_IMAGE, frames)
    output = tmp_path / "outputs"
    assert _infer(bag, output, synthetic_checkpoint, "--ros-distro", "jazzy") == SKIPPED
    err = capsys.readouterr().err
    lines = _skip_lines(err)
    assert [line.split(" of ")[0].rsplit(" ", 1)[-1] for line in lines] == ["1", "3"]
    assert _stamps(output) == [_stamp(i) for i in (0, 2, 4)]
    # Jazzy's metadata version keeps custom_data in metadata.yaml, and no sidecar is written.
    info = _metadata(output)
    assert info["version"] == 9 and not (output / CUSTOM_DATA_SIDECAR).exists()
    listed = json.loads(info["custom_data"]["endoarss.skipped_frames"])
    assert (
        [s["index"] for s in listed] == [1, 3] == [s["index"] for s in _skipped_in_metadata(output)]
    )
    assert f"listed in {output / 'metadata.yaml'}" in err


def test_stereo_pair_with_one_bad_eye_is_skipped(
    synthetic_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    left, right = "/camera/left/image_raw", "/camera/right/image_raw"
    bag = tmp_path / "stereo"
    with BagWriter(bag) as out:
        out.add_topic(left, IMAGE, stream_qos(True))
        out.add_topic(right, IMAGE, stream_qos(True))
        for index in range(4):
            out.write(left, _stamp(index), _raw(index))
            # The right eye is stamped 1 us after the left, as separate camera drivers do.
            eye = messages.image(_rgb(index + 10), "rgb8", _stamp(index) + 1000, "right")
            if index == 1:
                eye.encoding = "nonsense"
            out.write(right, _stamp(index) + 1000, eye)
    output = tmp_path / "outputs"
    assert _infer(bag, output, synthetic_checkpoint, "--input-mode", "stereo") == SKIPPED
    err = capsys.readouterr().err
    (line,) = _skip_lines(err)
    assert f"frame 1 of {right}" in line and "nonsense" in line
    assert _stamps(output) == [_stamp(i) for i in (0, 2, 3)]
    assert _stamps(output, "/endoarss/right/segmentation/mask") == [
        _stamp(i) + 1000 for i in (0, 2, 3)
    ]


def test_side_by_side_frame_of_odd_width_is_skipped(
    synthetic_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    topic = "/camera/image_raw"
    frames = [
        messages.image(_rgb(i, width=95 if i == 2 else 96), "rgb8", _stamp(i), "endoscope")
        for i in range(4)
    ]
    bag = tmp_path / "wide"
    _write(bag, topic, IMAGE, frames)
    output = tmp_path / "outputs"
    code = _infer(bag, output, synthetic_checkpoint, "--input-mode", "side_by_side")
    assert code == SKIPPED
    (line,) = _skip_lines(capsys.readouterr().err)
    assert f"frame 2 of {topic}" in line and "odd width 95" in line
    assert _stamps(output) == [_stamp(i) for i in (0, 1, 3)]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_bag_without_bad_frames_exits_zero(
    synthetic_checkpoint: Path, tmp_path: Path, capsys, storage: str
) -> None:
    bag = tmp_path / "good"
    _write(bag, "/camera/image_raw", IMAGE, [_raw(i) for i in range(3)])
    output = tmp_path / "outputs"
    assert _infer(bag, output, synthetic_checkpoint, "--storage", storage) == 0
    captured = capsys.readouterr()
    assert _skip_lines(captured.err) == [] and json.loads(captured.out)["skipped"] == 0
    assert _skipped_in_metadata(output) == []
