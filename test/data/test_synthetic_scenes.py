"""Synthetic scenes: determinism, labels that match the picture, the activity rule, clips, and
writing the generic layout."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from endoarss_ros.cli import main as cli_main
from endoarss_ros.cli_options import frame_size
from endoarss_ros.data.classes import IGNORE_INDEX
from endoarss_ros.data.generic import GenericLayoutDataset
from endoarss_ros.data.synthetic.clips import activity_segments, hermite_track, plan_clip
from endoarss_ros.data.synthetic.dataset import SyntheticDataset, generate_frame
from endoarss_ros.data.synthetic.render import render
from endoarss_ros.data.synthetic.sampling import sample_scene
from endoarss_ros.data.synthetic.scene import (
    SYNTHETIC_CLASSES,
    Activity,
    Instrument,
    InstrumentKind,
    SegClass,
    activity_of,
    without_instruments,
)
from endoarss_ros.data.synthetic.writer import assign_splits, write_synthetic_dataset

INSTRUMENT_CLASSES = (SegClass.SHAFT, SegClass.WRIST, SegClass.JAWS)
HELD_CLASSES = (*INSTRUMENT_CLASSES, SegClass.NEEDLE, SegClass.THREAD)


def test_same_seed_gives_identical_bytes_in_any_order():
    forward = SyntheticDataset(4, (96, 128), seed=3)
    backward = SyntheticDataset(4, (96, 128), seed=3)
    first = [forward[i] for i in range(4)]
    second = [backward[i] for i in reversed(range(4))][::-1]
    for a, b in zip(first, second, strict=True):
        assert a.image.tobytes() == b.image.tobytes()
        assert a.mask.tobytes() == b.mask.tobytes()
        assert a.activity == b.activity
    assert first[0].image.shape == (96, 128, 3) and first[0].image.dtype == np.uint8
    assert first[0].mask.shape == (96, 128) and first[0].mask.dtype == np.uint8
    other = SyntheticDataset(4, (96, 128), seed=4)[0]
    assert other.image.tobytes() != first[0].image.tobytes()
    assert first[0].image.tobytes() != first[1].image.tobytes()


def test_every_class_appears_and_activities_are_balanced():
    dataset = SyntheticDataset(40, (128, 128), seed=5)
    seen = np.zeros(256, dtype=bool)
    for index in range(len(dataset)):
        sample = dataset[index]
        seen[np.unique(sample.mask)] = True
        assert sample.activity == dataset.activity_of(index)
    expected = set(range(SYNTHETIC_CLASSES.num_segmentation_classes)) | {IGNORE_INDEX}
    assert set(np.flatnonzero(seen)) == expected
    counts = np.bincount(SyntheticDataset(500, (128, 128), seed=6).activities(), minlength=5)
    assert counts.min() >= 70 and counts.max() <= 130, counts


def test_each_activity_is_what_its_touching_instrument_does():
    rng = np.random.default_rng(0)
    for activity in Activity:
        for _ in range(10):
            scene = sample_scene(rng, 96, 96, activity)
            assert activity_of(scene) is activity
            touching = [tool for tool in scene.instruments if tool.touching]
            assert len(touching) == (0 if activity is Activity.IDLE else 1)
            if activity is Activity.SUCTION:
                assert touching[0].kind is InstrumentKind.SUCTION
                assert scene.blood_at(touching[0].tip)
            if activity is Activity.CAUTERY:
                assert touching[0].energized and touching[0].jaw_opening > 0
                assert any(plume.source == touching[0].tip for plume in scene.smoke)
                assert any(mark.points[-1] == touching[0].tip for mark in scene.burn_marks)
            if activity is Activity.SUTURING:
                assert touching[0].needle is not None and touching[0].needle.inserted > 0
            if activity is Activity.GRASPING:
                assert touching[0].jaw_opening == 0 and touching[0].kind is InstrumentKind.GRASPER


def test_activity_rule_reads_the_physical_state():
    scene = sample_scene(np.random.default_rng(1), 96, 96, Activity.SUCTION)
    tube = next(tool for tool in scene.instruments if tool.touching)
    others = [tool for tool in scene.instruments if tool is not tube]
    assert activity_of(replace(scene, blood_pools=())) is Activity.IDLE
    lifted = replace(tube, height=5.0)
    assert activity_of(replace(scene, instruments=(lifted, *others))) is Activity.IDLE
    grasper = Instrument(InstrumentKind.GRASPER, tube.entry, tube.tip, 0.0, 0.0, 0.0, 6.0)
    assert activity_of(replace(scene, instruments=(grasper,))) is Activity.GRASPING
    opened = replace(grasper, jaw_opening=0.4)
    assert activity_of(replace(scene, instruments=(opened,))) is Activity.IDLE
    burning = replace(opened, energized=True)
    assert activity_of(replace(scene, instruments=(burning,))) is Activity.CAUTERY
    with pytest.raises(ValueError, match="ambiguous"):
        activity_of(replace(scene, instruments=(tube, grasper)))


def _without(scene, **removed):
    return replace(scene, **{name: () for name in removed})


def _reach_of_instruments(scene, margin: float) -> np.ndarray:
    """Pixels within `margin` of any instrument's joint chain, inside or outside the view."""
    reach = np.zeros((scene.height, scene.width), np.uint8)
    for tool in scene.instruments:
        g = tool.geometry
        chain = np.array([g.entry, g.wrist, g.jaw_base, tool.tip], dtype=np.float64)
        thickness = round(tool.shaft_width * 1.4 + 2 * margin)
        cv2.polylines(reach, [np.round(chain).astype(np.int32)], False, 1, thickness)
    return reach > 0


def test_instrument_pixels_are_where_the_instruments_are_drawn():
    size = 160
    checked = 0
    for index in range(30):
        scene = sample_scene(np.random.default_rng([9, index]), size, size)
        if not scene.instruments:
            continue
        scene = replace(scene, smoke=(), haze=0.0)  # smoke may veil anything; tested apart
        image, mask = render(scene)
        bare, bare_mask = render(_without(scene, instruments=True))
        assert not np.isin(bare_mask, INSTRUMENT_CLASSES).any()
        relabelled = mask != bare_mask  # instruments and what they hold (needle, thread)
        assert set(np.unique(mask[relabelled])) <= set(HELD_CLASSES)
        changed = np.abs(image.astype(int) - bare.astype(int)).max(axis=2) > 12
        core = cv2.erode(np.isin(mask, INSTRUMENT_CLASSES).astype(np.uint8), np.ones((3, 3)))
        for tool in scene.instruments:  # the cautery glow lights the jaw tips, like tissue
            if tool.energized:
                centre = (round(tool.tip[0]), round(tool.tip[1]))
                cv2.circle(core, centre, round(0.04 * size), 0, -1)
        assert changed[core > 0].mean() > 0.97
        # Away from instruments, their shadows and what they do to the tissue, nothing changes.
        margin = 0.2 * size  # shadows offset by up to 0.14, wrinkles up to 0.17 long
        held = cv2.dilate(relabelled.astype(np.uint8), np.ones((3, 3)), iterations=round(margin))
        near = _reach_of_instruments(scene, margin) | (held > 0)
        assert changed[~near & (mask != IGNORE_INDEX)].mean() < 0.002
        checked += 1
    assert checked >= 20


def test_frames_without_instruments_are_the_same_scenes_withdrawn_and_idle():
    size = (96, 128)
    seen_acting = 0
    for index in range(12):
        shown = generate_frame(4, index, size)
        bare = generate_frame(4, index, size, instruments=False)
        assert (
            bare.scene == without_instruments(shown.scene) == replace(shown.scene, instruments=())
        )
        assert bare.activity == Activity.IDLE == activity_of(bare.scene)
        assert not np.isin(bare.mask, INSTRUMENT_CLASSES).any()
        # Away from where the instruments were, the picture is the same frame's.
        near = _reach_of_instruments(shown.scene, 0.2 * min(size))
        changed = np.abs(bare.image.astype(int) - shown.image).max(axis=2) > 12
        assert changed[(bare.mask != IGNORE_INDEX) & ~near].mean() < 0.002
        seen_acting += shown.activity != Activity.IDLE
    assert seen_acting >= 6
    dataset = SyntheticDataset(5, size, seed=4, instruments=False)
    assert [dataset.activity_of(i) for i in range(5)] == [Activity.IDLE] * 5
    np.testing.assert_array_equal(
        dataset[2].image, generate_frame(4, 2, size, instruments=False).image
    )


def test_smoke_changes_the_picture_not_the_labels():
    scene = sample_scene(np.random.default_rng(2), 128, 128, Activity.CAUTERY)
    assert scene.smoke
    image, mask = render(replace(scene, haze=0.5))
    clear, clear_mask = render(replace(scene, smoke=(), haze=0.0))
    np.testing.assert_array_equal(mask, clear_mask)
    assert np.abs(image.astype(int) - clear).mean() > 10


def test_blood_pixels_are_where_the_blood_is_drawn():
    scene = sample_scene(np.random.default_rng(3), 160, 160, Activity.SUCTION)
    image, mask = render(scene)
    bare, bare_mask = render(_without(scene, blood_pools=True))
    blood = mask == SegClass.BLOOD
    assert blood.sum() > 200 and not (bare_mask == SegClass.BLOOD).any()
    core = cv2.erode(blood.astype(np.uint8), np.ones((3, 3)))
    for tool in scene.instruments:  # the tube's footprint, rim and ripples glisten on the pool
        if tool.touching:
            cv2.circle(core, (round(tool.tip[0]), round(tool.tip[1])), round(0.1 * 160), 0, -1)
    core = core > 0
    assert core.sum() > 100
    red = image[core].astype(int)
    assert (red[:, 0] > 2 * red[:, 1]).mean() > 0.95  # dark red where blood is labelled
    assert (np.abs(image.astype(int) - bare).max(axis=2)[core] > 12).mean() > 0.97


def test_outside_field_of_view_is_ignored_and_dark():
    sample = SyntheticDataset(6, (120, 200), seed=2)
    for index in range(len(sample)):
        frame = sample[index]
        outside = frame.mask == IGNORE_INDEX
        assert outside.any()
        assert frame.image[outside].mean() < 12


def test_global_colour_statistics_do_not_give_the_activity_away():
    """A nearest-centroid classifier on colour means, spreads and a 64-bin histogram stays far
    from what a model that looks at the instruments can reach."""
    dataset = SyntheticDataset(300, (64, 64), seed=21)
    features, labels = [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        pixels = sample.image[sample.mask != IGNORE_INDEX].astype(np.float32) / 255
        bins = np.minimum((pixels * 4).astype(int), 3) @ np.array([16, 4, 1])
        histogram = np.bincount(bins, minlength=64) / len(pixels)
        features.append(np.concatenate([pixels.mean(0), pixels.std(0), histogram]))
        labels.append(sample.activity)
    x, y = np.array(features), np.array(labels)
    x = (x - x[:200].mean(0)) / (x[:200].std(0) + 1e-6)
    centroids = np.stack([x[:200][y[:200] == k].mean(0) for k in range(5)])
    predicted = np.argmin(((x[200:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    accuracy = (predicted == y[200:]).mean()
    assert accuracy < 0.5, accuracy


def test_clip_has_consecutive_segments_matching_every_frame():
    clip = plan_clip(np.random.default_rng(4), 96, 128, 150, mean_segment=30, min_segment=10)
    assert len(clip.scenes) == 150
    assert clip.segments[0].start == 0 and clip.segments[-1].stop == 150
    assert len(clip.segments) >= 3
    for before, after in itertools.pairwise(clip.segments):
        assert before.stop == after.start and before.activity != after.activity
    for segment in clip.segments[:-1]:
        assert segment.stop - segment.start >= 10
    labels = [activity_of(scene) for scene in clip.scenes]
    assert labels == clip.activities()
    assert activity_segments(labels) == list(clip.segments)


def test_clip_motion_is_smooth():
    clip = plan_clip(np.random.default_rng(8), 128, 128, 120)
    scale = 128
    for before, after in itertools.pairwise(clip.scenes):
        assert all(
            abs(a - b) <= 2 for a, b in zip(before.view_offset, after.view_offset, strict=True)
        )
        assert before.tissue == after.tissue and before.optics == after.optics
        for tool_a, tool_b in zip(before.instruments, after.instruments, strict=True):
            if tool_a.kind is tool_b.kind:  # instruments are exchanged only at segment bounds
                assert math.dist(tool_a.tip, tool_b.tip) < 0.05 * scale
                assert tool_a.entry == tool_b.entry


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_clip_frames_keep_the_still_frames_rules(seed):
    """As in still frames: a tool that is not sucking never works in blood, and no hovering
    instrument passes over the working tip."""
    from endoarss_ros.data.synthetic.sampling import covers

    clip = plan_clip(np.random.default_rng(seed), 120, 160, 300)
    scale = 120
    for t, scene in enumerate(clip.scenes):
        acting = [tool for tool in scene.instruments if tool.touching]
        if not acting:
            continue
        (tool,) = acting
        if activity_of(scene) is not Activity.SUCTION:
            assert not scene.blood_at(tool.tip), f"frame {t}: {activity_of(scene).name} in blood"
        for other in scene.instruments:
            if other is not tool:
                assert not covers(other, tool.tip, 0.06 * scale), f"frame {t}: tip hidden"


def test_clip_frames_render_deterministically():
    first = plan_clip(np.random.default_rng(5), 64, 64, 20)
    second = plan_clip(np.random.default_rng(5), 64, 64, 20)
    assert first.scenes == second.scenes
    images = [render(scene)[0] for scene in first.scenes[:3]]
    again = [render(scene)[0] for scene in second.scenes[:3]]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(images, again, strict=True))
    assert images[0].tobytes() != images[1].tobytes()


def test_hermite_track_passes_its_knots_and_halts_at_still_ones():
    points = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 4.0], [30.0, 4.0]])
    track = hermite_track([0, 5, 10, 20], points, [False, True, True, False], 21)
    np.testing.assert_allclose(track[[0, 5, 10, 20]], points, atol=1e-9)
    assert np.allclose(track[5:11, 0], 10.0)  # between still knots: on the joining segment


def test_splits_are_non_empty_and_follow_the_fractions():
    splits = assign_splits(100, 0.1, 0.2, np.random.default_rng(0))
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (70, 10, 20)
    small = assign_splits(3, 0.1, 0.1, np.random.default_rng(0))
    assert sorted(small) == ["test", "train", "val"]
    with pytest.raises(ValueError):
        assign_splits(10, 0.6, 0.5, np.random.default_rng(0))


def test_written_dataset_reads_back_with_the_generic_reader(tmp_path: Path):
    root = tmp_path / "synth"
    summary = write_synthetic_dataset(
        root, frames=10, sizes=[(64, 80)], seed=7, clips=3, clip_length=12, workers=1
    )
    assert summary.frames == 46
    assert sum(summary.per_split.values()) == 46
    everything = GenericLayoutDataset(root, split=None)
    assert everything.class_info == SYNTHETIC_CLASSES
    assert len(everything) == 46 and everything.verify() == 46
    for split in ("train", "val", "test"):
        assert len(GenericLayoutDataset(root, split)) > 0
    by_file = {record.file: record for record in everything.records}
    frame = generate_frame(7, 4, (64, 80))
    stored = everything[list(by_file).index("frames/000004.png")]
    np.testing.assert_array_equal(stored.image, frame.image)
    np.testing.assert_array_equal(stored.mask, frame.mask)
    assert stored.activity == frame.activity
    clips: dict[str, list] = {}
    for record in everything.records:
        if record.extra["clip"]:
            clips.setdefault(record.extra["clip"], []).append(record)
    assert len(clips) == 3
    for records in clips.values():
        assert [int(r.extra["frame"]) for r in records] == list(range(12))
        assert len({r.split for r in records}) == 1  # a clip never straddles splits
    assert (root / "synthetic.yaml").is_file()


def test_frames_and_clips_take_the_sizes_in_turn(tmp_path: Path):
    out = tmp_path / "mixed"
    argv = ["synth", str(out), "--frames", "5", "--clips", "3", "--clip-length", "4"]
    argv += ["--size", "64x48", "--size", "40x40", "--seed", "3", "--workers", "1"]
    assert cli_main(argv) == 0
    dataset = GenericLayoutDataset(out, split=None)
    files = [record.file for record in dataset.records]
    assert files[:5] == [f"frames/{i:06d}.png" for i in range(5)], "frames first, in order"
    shapes = {file: dataset[index].image.shape[:2] for index, file in enumerate(files)}
    for index in range(5):
        expected = (48, 64) if index % 2 == 0 else (40, 40)
        assert shapes[f"frames/{index:06d}.png"] == expected
        np.testing.assert_array_equal(
            dataset[index].image, generate_frame(3, index, expected).image
        )
    for clip, expected in enumerate([(48, 64), (40, 40), (48, 64)]):
        assert {shapes[f"clips/clip_{clip:04d}/{i:05d}.png"] for i in range(4)} == {expected}
    assert "sizes:\n- - 48\n  - 64\n- - 40\n  - 40" in (out / "synthetic.yaml").read_text()


def test_synth_command_writes_and_refuses_a_non_empty_folder(tmp_path: Path, capsys):
    out = tmp_path / "out"
    argv = ["synth", str(out), "--frames", "5", "--size", "64x48", "--seed", "1", "--workers", "1"]
    assert cli_main(argv) == 0
    assert "wrote 5 frames of 64x48" in capsys.readouterr().out  # WIDTHxHEIGHT
    assert len(GenericLayoutDataset(out, split=None)) == 5
    assert cli_main(argv) == 1, "an output folder that cannot be used is unusable input"
    assert "not empty" in capsys.readouterr().err


def test_synth_command_writes_frames_and_clips_without_instruments(tmp_path: Path):
    out = tmp_path / "bare"
    argv = ["synth", str(out), "--frames", "4", "--clips", "1", "--clip-length", "6"]
    argv += ["--size", "64x48", "--seed", "1", "--workers", "1", "--no-instruments"]
    assert cli_main(argv) == 0
    dataset = GenericLayoutDataset(out, split=None)
    assert len(dataset) == 10
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample.activity == Activity.IDLE
        assert not np.isin(sample.mask, INSTRUMENT_CLASSES).any()
    np.testing.assert_array_equal(
        dataset[list(r.file for r in dataset.records).index("frames/000003.png")].image,
        generate_frame(1, 3, (48, 64), instruments=False).image,
    )
    assert "instruments: false" in (out / "synthetic.yaml").read_text()


def test_size_argument_parsing():
    """WIDTHxHEIGHT for every frame-size option of every command, returned as (H, W)."""
    parse_size = frame_size(32)
    assert parse_size("640x480") == (480, 640)
    assert parse_size("256") == (256, 256)
    for bad in ("640*480", "16x16", "x", "-64x64", "64x"):
        with pytest.raises(Exception, match="size"):
            parse_size(bad)


@pytest.mark.slow
def test_parallel_writing_gives_the_same_files(tmp_path: Path):
    kwargs = {"frames": 70, "sizes": [(64, 64), (48, 64)], "seed": 2, "clips": 1, "clip_length": 10}
    write_synthetic_dataset(tmp_path / "one", workers=1, **kwargs)
    write_synthetic_dataset(tmp_path / "two", workers=2, **kwargs)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.png"))
    assert len(files) == 160
    for relative in [*files, Path("labels.csv")]:
        assert (tmp_path / "one" / relative).read_bytes() == (
            tmp_path / "two" / relative
        ).read_bytes()
