"""Synthetic clip -> bag -> `bag play` -> perception node -> `bag record` -> `bag eval`, over
real DDS between processes, against `bag infer` on the same bag: for mono, two-topic stereo
and side-by-side input, the node and `bag infer` give every frame the same activity
probabilities and the same masks.

The node subscribes reliably and the clips play at 10 fps, slower than the tiny model needs,
so every frame must be answered; the recorder logs bag time from the player's /clock.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from bag_clip import CLIP_FPS, CLIP_FRAMES
from ros_harness import NodeProcess, wait_until
from rosbags.interfaces import QosDurability, QosReliability

from endoarss_ros.bags.schema import ACTIVITY, IMAGE, stamp_ns
from endoarss_ros.bags.storage import BagReader
from endoarss_ros.image_conversion import image_to_numpy

pytestmark = pytest.mark.ros

NAMESPACE = "/bag_e2e"
# One intra-op thread: on a loaded 2-core machine two threads stall inference for ~1 s at a
# time, and both runs then compute in the same order, so the scores must be identical.
SINGLE_THREAD = {"OMP_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Mode:
    """How one input mode is played into the node and given to `bag infer`."""

    name: str
    inputs: dict[str, str]
    """Camera topic of the bag -> the node's input topic (relative to its namespace)."""
    parameters: dict[str, object] = field(default_factory=dict)
    """Node parameters; `bag infer` gets the same ones as its generated options."""
    infer_options: tuple[str, ...] = ()

    @property
    def namespace(self) -> str:
        return f"{NAMESPACE}_{self.name}"

    @property
    def streams(self) -> tuple[str, ...]:
        return ("",) if self.parameters.get("input_mode", "mono") == "mono" else ("left/", "right/")

    def topics(self) -> list[str]:
        ns = self.namespace
        masks = [f"{ns}/{stream}segmentation/mask" for stream in self.streams]
        return [f"{ns}/activity", *masks, f"{ns}/labels"]

    def infer_argv(self) -> list[str]:
        argv = list(self.infer_options)
        for name, value in self.parameters.items():
            argv += ["--" + name.replace(".", "-").replace("_", "-"), str(value)]
        return argv


MONO = Mode("mono", {"/camera/image_raw": "image"}, {"smoothing.method": "none"})


def endoarss(name: str, *args: str) -> NodeProcess:
    return NodeProcess(name, [sys.executable, "-m", "endoarss_ros.cli", *args], env=SINGLE_THREAD)


def node_process(checkpoint: Path, mode: Mode) -> NodeProcess:
    from ament_index_python.packages import get_package_prefix

    executable = (
        Path(get_package_prefix("endoarss_ros")) / "lib" / "endoarss_ros" / "perception_node"
    )
    parameters = {
        "checkpoint": str(checkpoint),
        "device": "cpu",
        "input_qos": "reliable",
        "input_depth": 10,
        **mode.parameters,
    }
    args = ["--ros-args", "-r", f"__ns:={mode.namespace}"]
    for name, value in parameters.items():
        args += ["-p", f"{name}:={value}"]
    return NodeProcess("perception", [sys.executable, str(executable), *args], env=SINGLE_THREAD)


def finish(process: NodeProcess, timeout: float) -> str:
    """Wait for a command to exit by itself; fail with its output unless it succeeded."""
    try:
        process.wait_for_output(r"^\{", timeout=timeout)
        wait_until(lambda: process.returncode is not None, 15, f"{process.name} to exit")
        assert process.returncode == 0, process.output
    finally:
        process.kill()
    return process.output


def node_and_infer(bag: Path, checkpoint: Path, mode: Mode, tmp_path: Path) -> tuple[Path, Path]:
    """The node's outputs on the played bag, recorded, and `bag infer`'s on the same bag.

    `bag infer` runs while the node loads and is done before the first frame is played, so
    the node has the CPU to itself while frames arrive."""
    recorded, inferred = tmp_path / "recorded", tmp_path / "inferred"
    ns = mode.namespace
    node = node_process(checkpoint, mode)
    infer = endoarss(
        "infer",
        *("bag", "infer", str(bag), str(inferred), "--checkpoint", str(checkpoint)),
        *("--namespace", ns, "--device", "cpu", *mode.infer_argv()),
    )
    recorder = player = None
    try:
        node.wait_for_output(r"\bready:", timeout=90)
        recorder = endoarss(
            "recorder",
            *("bag", "record", str(recorded), "--topics", *mode.topics()),
            *("--use-sim-time", "--idle-timeout", "3"),
        )
        for topic in mode.topics():
            recorder.wait_for_output(f"matched {topic}$", timeout=30)
        finish(infer, timeout=120)
        remaps = [f"{camera}:={ns}/{topic}" for camera, topic in mode.inputs.items()]
        player = endoarss(
            "player",
            *("bag", "play", str(bag), "--topics", *mode.inputs, "--clock", "500"),
            *(arg for remap in remaps for arg in ("--remap", remap)),
            *(arg for topic in mode.inputs.values() for arg in ("--wait-for", f"{ns}/{topic}")),
            *("--wait-for", "/clock"),
            # The player's publishers see the node's subscriptions before the node has matched
            # them back; a first frame sent in that gap would be lost (volatile QoS).
            *("--delay", "1.0"),
        )
        print(player.wait_for_output(r"^played ", timeout=60))
        finish(recorder, timeout=30)
        assert "before the first /clock" not in recorder.output
    finally:
        for process in (player, recorder, infer, node):
            if process is not None:
                process.stop()
                process.kill()
    return recorded, inferred


def outputs(bag: Path, mode: Mode) -> tuple[list, list[list]]:
    """Activity messages, and per stream the (header, mask) of every mask message."""
    ns = mode.namespace
    with BagReader(bag) as reader:
        activities = [m for _, m in reader.decoded(f"{ns}/activity", ACTIVITY)]
        masks = [
            [(m.header, image_to_numpy(m)) for _, m in reader.decoded(topic, IMAGE)]
            for topic in (f"{ns}/{stream}segmentation/mask" for stream in mode.streams)
        ]
    return activities, masks


def assert_node_equals_infer(
    recorded: Path, inferred: Path, mode: Mode, frame_stamps: list[int]
) -> None:
    """Every frame answered once, in order, with its own stamp, and by the node exactly as
    by `bag infer`: probabilities to 1e-6, masks pixel for pixel."""
    node_activities, node_masks = outputs(recorded, mode)
    infer_activities, infer_masks = outputs(inferred, mode)
    assert [stamp_ns(m.header) for m in node_activities] == frame_stamps
    assert len(infer_activities) == len(frame_stamps)
    for ours, theirs in zip(node_activities, infer_activities, strict=True):
        assert ours.header == theirs.header
        np.testing.assert_allclose(ours.probabilities, theirs.probabilities, rtol=0, atol=1e-6)
        assert (ours.class_id, ours.raw_class_id) == (theirs.class_id, theirs.raw_class_id)
    for ours, theirs in zip(node_masks, infer_masks, strict=True):
        assert len(ours) == len(theirs) == len(frame_stamps)
        for (our_header, our_mask), (their_header, their_mask) in zip(ours, theirs, strict=True):
            assert our_header == their_header
            np.testing.assert_array_equal(our_mask, their_mask)


def test_played_bag_through_the_node_scores_like_bag_infer(
    clip_bag: Path, synthetic_checkpoint: Path, tmp_path: Path
) -> None:
    recorded, inferred = node_and_infer(clip_bag, synthetic_checkpoint, MONO, tmp_path)
    ns = MONO.namespace
    with BagReader(clip_bag) as bag:
        frame_stamps = [stamp_ns(m.header) for _, m in bag.decoded("/camera/image_raw", IMAGE)]
    with BagReader(recorded) as bag:
        assert bag.topics[f"{ns}/labels"] == "endoarss_ros/msg/LabelMap"
        # Connections carry the QoS the node offers, so the bag replays as the node published.
        (labels_qos,) = bag.connection(f"{ns}/labels").ext.offered_qos_profiles
        (activity_qos,) = bag.connection(f"{ns}/activity").ext.offered_qos_profiles
    assert labels_qos.durability == QosDurability.TRANSIENT_LOCAL
    assert activity_qos.reliability == QosReliability.RELIABLE
    assert activity_qos.durability == QosDurability.VOLATILE
    assert_node_equals_infer(recorded, inferred, MONO, frame_stamps)

    reports = {}
    for name, output in (("node", recorded), ("infer", inferred)):
        report = tmp_path / f"report_{name}"
        evaluate = endoarss(
            "eval",
            *("bag", "eval", str(clip_bag), str(output), "--report", str(report)),
            *("--activity-topic", f"{ns}/activity", "--mask-topic", f"{ns}/segmentation/mask"),
        )
        finish(evaluate, timeout=120)
        reports[name] = json.loads((report / "metrics.json").read_text())
    node_metrics, infer_metrics = reports["node"], reports["infer"]
    print(json.dumps({name: r["latency"] for name, r in reports.items()}))
    for metrics in (node_metrics, infer_metrics):
        assert metrics["frames"] == metrics["frames_answered"] == CLIP_FRAMES
        assert metrics["frames_missing"] == metrics["masks_missing"] == 0
        assert metrics["outputs_unmatched"] == metrics["outputs_duplicate"] == 0
    assert node_metrics["activity"] == infer_metrics["activity"]
    assert node_metrics["segmentation"] == infer_metrics["segmentation"]
    latency = node_metrics["latency"]
    assert latency["count"] == CLIP_FRAMES and latency["min_ms"] >= 0


STEREO_FRAMES = 20
LEFT, RIGHT = "/camera/left/image_raw", "/camera/right/image_raw"
# Default smoothing (ema) on both sides: the node's and `bag infer`'s defaults agree.
STEREO = Mode(
    "stereo",
    {LEFT: "left/image", RIGHT: "right/image"},
    {"input_mode": "stereo"},
    ("--stereo-topics", LEFT, RIGHT),
)
# One 320x128 topic of left|right frames; some pixels fall below the mask confidence.
SIDE_BY_SIDE = Mode(
    "side_by_side",
    {"/camera/image_raw": "stereo/image"},
    {
        "input_mode": "side_by_side",
        "mask_min_confidence": 0.3,
        "smoothing.method": "ema_hysteresis",
        "smoothing.ema_alpha": 0.5,
    },
)


@pytest.mark.parametrize("mode", [STEREO, SIDE_BY_SIDE], ids=lambda mode: mode.name)
def test_stereo_inputs_through_the_node_equal_bag_infer(
    mode: Mode, synthetic_checkpoint: Path, tmp_path: Path
) -> None:
    from endoarss_ros.bags.make import MakeOptions, make_bag
    from endoarss_ros.bags.sources import synthetic_source

    bag = tmp_path / "clip"
    size = (128, 160) if mode is STEREO else (128, 320)
    source = synthetic_source(STEREO_FRAMES, size, seed=5, fps=CLIP_FPS)
    make_bag(bag, source, MakeOptions(stereo=mode is STEREO))
    recorded, inferred = node_and_infer(bag, synthetic_checkpoint, mode, tmp_path)
    with BagReader(bag) as reader:
        camera = next(iter(mode.inputs))
        frame_stamps = [stamp_ns(m.header) for _, m in reader.decoded(camera, IMAGE)]
    assert_node_equals_infer(recorded, inferred, mode, frame_stamps)
    if mode is SIDE_BY_SIDE:
        _, masks = outputs(recorded, mode)
        assert [mask.shape for _, mask in masks[0]] == [(128, 160)] * STEREO_FRAMES
        assert any((mask == 255).any() for stream in masks for _, mask in stream)
