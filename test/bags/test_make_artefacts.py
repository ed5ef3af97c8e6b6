"""`bag make --artefact`: frames of any source corrupted with the corruption suite, the same
frames from the same seed, ground truth untouched, the segments listed in custom_data; bad
segments refused in one line that names the option."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from endoarss_ros.bags.frames import decoded_frames
from endoarss_ros.bags.make import ARTEFACTS_KEY
from endoarss_ros.bags.schema import ACTIVITY, IMAGE
from endoarss_ros.bags.sources import ArtefactSegment, artefact_rng
from endoarss_ros.bags.storage import BagReader
from endoarss_ros.cli import main
from endoarss_ros.data.corruptions import corrupt

START_NS = 1_700_000_000 * 10**9


def _frames(path: Path, topic: str = "/camera/image_raw") -> list[np.ndarray]:
    with BagReader(path) as bag:
        return [rgb for *_, rgb in decoded_frames(bag, topic)]


def _truth(path: Path) -> list:
    with BagReader(path) as bag:
        activities = [m.class_id for _, m in bag.decoded("/ground_truth/activity", ACTIVITY)]
        masks = [m.data.tobytes() for _, m in bag.decoded("/ground_truth/mask", IMAGE)]
    return activities + masks


def _make(path: Path, *extra: str) -> None:
    argv = ["bag", "make", str(path), "--synthetic", "8", "--size", "64x48", "--seed", "5"]
    assert main([*argv, *extra]) == 0


def test_synthetic_segments_are_seeded_per_frame_and_listed(tmp_path: Path, capsys) -> None:
    artefacts = ["--artefact", "bleeding:6:6", "--artefact", "gaussian_noise:2:4:3"]
    _make(tmp_path / "clean")
    _make(tmp_path / "jazzy", *artefacts, "--ros-distro", "jazzy")
    _make(tmp_path / "humble", *artefacts)
    printed = capsys.readouterr().out.splitlines()
    clean, jazzy, humble = (_frames(tmp_path / n) for n in ("clean", "jazzy", "humble"))
    segments = {2: ("gaussian_noise", 3), 3: ("gaussian_noise", 3), 4: ("gaussian_noise", 3)}
    segments[6] = ("bleeding", 4)
    for index, (plain, corrupted, again) in enumerate(zip(clean, jazzy, humble, strict=True)):
        np.testing.assert_array_equal(corrupted, again)
        if index not in segments:
            np.testing.assert_array_equal(corrupted, plain)
            continue
        name, severity = segments[index]
        rng = artefact_rng(5, index, ArtefactSegment(name, index, index, severity))
        np.testing.assert_array_equal(corrupted, corrupt(plain, name, severity, rng))
        assert not np.array_equal(corrupted, plain)
    assert _truth(tmp_path / "jazzy") == _truth(tmp_path / "clean")
    segment = ArtefactSegment("gaussian_noise", 2, 4, 3)
    draws = {int(artefact_rng(s, i, segment).integers(2**62)) for s in (5, 6, -5) for i in (2, 3)}
    assert len(draws) == 6, "each (seed, frame) pair has a generator of its own"

    period = round(1e9 / 30)
    expected = [
        {
            "corruption": "gaussian_noise",
            "severity": 3,
            "first_frame": 2,
            "last_frame": 4,
            "first_stamp_ns": START_NS + 2 * period,
            "last_stamp_ns": START_NS + 4 * period,
        },
        {
            "corruption": "bleeding",
            "severity": 4,
            "first_frame": 6,
            "last_frame": 6,
            "first_stamp_ns": START_NS + 6 * period,
            "last_stamp_ns": START_NS + 6 * period,
        },
    ]
    # Version 9 keeps custom_data in metadata.yaml, Humble's version 5 in the sidecar file.
    metadata = yaml.safe_load((tmp_path / "jazzy" / "metadata.yaml").read_text())
    listed = metadata["rosbag2_bagfile_information"]["custom_data"][ARTEFACTS_KEY]
    assert json.loads(listed) == expected
    assert (tmp_path / "humble" / "endoarss_custom_data.yaml").is_file()
    with BagReader(tmp_path / "humble") as bag:
        assert json.loads(bag.custom_data[ARTEFACTS_KEY]) == expected
    with BagReader(tmp_path / "clean") as bag:
        assert ARTEFACTS_KEY not in bag.custom_data
    assert json.loads(printed[-1])["artefacts"] == expected
    assert "artefacts" not in json.loads(printed[0])
    with BagReader(tmp_path / "jazzy") as bag:
        headers = [header for _, _, header, _ in decoded_frames(bag, "/camera/image_raw")]
    stamps = [h.stamp.sec * 10**9 + h.stamp.nanosec for h in headers]
    assert (stamps[2], stamps[4]) == (expected[0]["first_stamp_ns"], expected[0]["last_stamp_ns"])
    assert stamps[6] == expected[1]["first_stamp_ns"] == expected[1]["last_stamp_ns"]


def test_stereo_eyes_share_the_artefact(tmp_path: Path) -> None:
    _make(tmp_path / "stereo", "--stereo", "--disparity", "4", "--artefact", "smoke:1:2:5")
    _make(tmp_path / "plain", "--stereo", "--disparity", "4")
    left = _frames(tmp_path / "stereo", "/camera/left/image_raw")
    right = _frames(tmp_path / "stereo", "/camera/right/image_raw")
    plain = _frames(tmp_path / "plain", "/camera/left/image_raw")
    for index in (1, 2):
        assert not np.array_equal(left[index], plain[index])
        np.testing.assert_array_equal(right[index][:, :-4], left[index][:, 4:])
    np.testing.assert_array_equal(left[3], plain[3])


def test_image_folder_frames_corrupted(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(4):
        cv2.imwrite(str(folder / f"{index}.png"), rng.integers(0, 256, (32, 40, 3), np.uint8))
    bag = tmp_path / "bag"
    argv = ["bag", "make", str(bag), "--images", str(folder), "--fps", "5"]
    assert main([*argv, "--artefact", "contrast:1:2:5"]) == 0
    frames = _frames(bag)
    originals = [
        cv2.cvtColor(cv2.imread(str(folder / f"{i}.png")), cv2.COLOR_BGR2RGB) for i in range(4)
    ]
    changed = [not np.array_equal(a, b) for a, b in zip(frames, originals, strict=True)]
    assert changed == [False, True, True, False]
    with BagReader(bag) as reader:
        (segment,) = json.loads(reader.custom_data[ARTEFACTS_KEY])
    assert segment["first_stamp_ns"] == START_NS + 200_000_000
    assert segment["last_stamp_ns"] == START_NS + 400_000_000


def _video(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48))
    for index in range(frames):
        writer.write(np.full((48, 64, 3), 30 * index, np.uint8))
    writer.release()
    return path


BAD_SPECS = {
    "unknown corruption": (["blurry:1:2"], "unknown corruption 'blurry'; known: gaussian_noise"),
    "too few fields": (["smoke:3"], "expected NAME:FIRST:LAST[:SEVERITY]"),
    "too many fields": (["smoke:1:2:3:4"], "expected NAME:FIRST:LAST[:SEVERITY]"),
    "first not a number": (["smoke:a:3"], "FIRST must be an integer, got 'a'"),
    "last before first": (["smoke:5:3"], "0 <= FIRST <= LAST, got 5..3"),
    "negative first": (["smoke:-1:3"], "0 <= FIRST <= LAST"),
    "severity": (["smoke:1:3:6"], "severity must be 1..5, got 6"),
    "outside the clip": (["smoke:5:12"], "not inside the clip of 8 frames (0..7)"),
    "overlap": (["smoke:1:4", "bleeding:6:7", "pixelate:4:5"], "overlap (frames 4..4)"),
}


@pytest.mark.parametrize("case", BAD_SPECS, ids=list(BAD_SPECS))
def test_bad_artefacts_are_refused_naming_the_option(case: str, tmp_path: Path, capsys) -> None:
    specs, message = BAD_SPECS[case]
    bag = tmp_path / "bag"
    argv = ["bag", "make", str(bag), "--synthetic", "8", "--size", "64x48"]
    assert main([*argv, *(a for s in specs for a in ("--artefact", s))]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("endoarss bag make: --artefact ") and message in line, line
    assert not bag.exists()


def test_segments_past_the_end_of_a_folder_or_video(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        cv2.imwrite(str(folder / f"{index}.png"), np.full((32, 40, 3), 50 * index, np.uint8))
    bag = tmp_path / "folder_bag"
    assert main(["bag", "make", str(bag), "--images", str(folder), "--artefact", "smoke:2:3"]) == 2
    assert "--artefact 'smoke:2:3:4': frames 2..3 are not inside the clip of 3 frames" in (
        capsys.readouterr().err
    )
    assert not bag.exists()
    # A video's length is known once it has been read: the bag is then removed.
    video = _video(tmp_path / "clip.avi", 5)
    bag = tmp_path / "video_bag"
    assert main(["bag", "make", str(bag), "--video", str(video), "--artefact", "smoke:3:7"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "--artefact 'smoke:3:7:4': frames 3..7 are not inside the clip of 5 frames" in line
    assert not bag.exists()
    assert main(["bag", "make", str(bag), "--video", str(video), "--artefact", "smoke:3:4"]) == 0
    assert len(_frames(bag)) == 5
