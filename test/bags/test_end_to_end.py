"""Synthetic clip -> bag -> `bag play` -> perception node -> `bag record` -> `bag eval`, over
real DDS between processes, against `bag infer` on the same bag.

The node subscribes reliably and the clip plays at 10 fps, slower than the tiny model needs,
so every frame must be answered; the recorder logs bag time from the player's /clock.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from bag_clip import CLIP_FRAMES
from ros_harness import NodeProcess, wait_until
from rosbags.interfaces import QosDurability, QosReliability

from endoarss_ros.bags.schema import ACTIVITY, IMAGE, stamp_ns
from endoarss_ros.bags.storage import BagReader

pytestmark = pytest.mark.ros

NAMESPACE = "/bag_e2e"
# One intra-op thread: on a loaded 2-core machine two threads stall inference for ~1 s at a
# time, and both runs then compute in the same order, so the scores must be identical.
SINGLE_THREAD = {"OMP_NUM_THREADS": "1"}


def endoarss(name: str, *args: str) -> NodeProcess:
    return NodeProcess(name, [sys.executable, "-m", "endoarss_ros.cli", *args], env=SINGLE_THREAD)


def node_process(checkpoint: Path) -> NodeProcess:
    from ament_index_python.packages import get_package_prefix

    executable = (
        Path(get_package_prefix("endoarss_ros")) / "lib" / "endoarss_ros" / "perception_node"
    )
    parameters = {
        "checkpoint": str(checkpoint),
        "device": "cpu",
        "input_qos": "reliable",
        "input_depth": 10,
        "smoothing.method": "none",
    }
    args = ["--ros-args", "-r", f"__ns:={NAMESPACE}"]
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


def test_played_bag_through_the_node_scores_like_bag_infer(
    clip_bag: Path, synthetic_checkpoint: Path, tmp_path: Path
) -> None:
    recorded = tmp_path / "recorded"
    node = node_process(synthetic_checkpoint)
    recorder = player = None
    try:
        node.wait_for_output(r"\bready:", timeout=90)
        recorder = endoarss(
            "recorder",
            "bag",
            "record",
            str(recorded),
            "--namespace",
            NAMESPACE,
            "--use-sim-time",
            "--idle-timeout",
            "3",
        )
        for topic in ("activity", "segmentation/mask", "labels"):
            recorder.wait_for_output(f"matched {NAMESPACE}/{topic}$", timeout=30)
        player = endoarss(
            "player",
            "bag",
            "play",
            str(clip_bag),
            "--topics",
            "/camera/image_raw",
            "/camera/camera_info",
            "--remap",
            f"/camera/image_raw:={NAMESPACE}/image",
            "--clock",
            "500",
            "--wait-for",
            f"{NAMESPACE}/image",
            "--wait-for",
            "/clock",
        )
        played = player.wait_for_output(r"^played ", timeout=60)
        finish(recorder, timeout=30)
        assert "before the first /clock" not in recorder.output
    finally:
        for process in (player, recorder, node):
            if process is not None:
                process.stop()
                process.kill()
    print(played)

    with BagReader(clip_bag) as bag:
        frame_stamps = [stamp_ns(m.header) for _, m in bag.decoded("/camera/image_raw", IMAGE)]
    with BagReader(recorded) as bag:
        activity_stamps = [
            stamp_ns(m.header) for _, m in bag.decoded(f"{NAMESPACE}/activity", ACTIVITY)
        ]
        mask_stamps = [
            stamp_ns(m.header) for _, m in bag.decoded(f"{NAMESPACE}/segmentation/mask", IMAGE)
        ]
        assert bag.topics[f"{NAMESPACE}/labels"] == "endoarss_ros/msg/LabelMap"
        # Connections carry the QoS the node offers, so the bag replays as the node published.
        (labels_qos,) = bag.connection(f"{NAMESPACE}/labels").ext.offered_qos_profiles
        (activity_qos,) = bag.connection(f"{NAMESPACE}/activity").ext.offered_qos_profiles
    assert labels_qos.durability == QosDurability.TRANSIENT_LOCAL
    assert activity_qos.reliability == QosReliability.RELIABLE
    assert activity_qos.durability == QosDurability.VOLATILE
    # Every frame answered once, in order, with its own stamp.
    assert activity_stamps == frame_stamps
    assert mask_stamps == frame_stamps

    inferred = tmp_path / "inferred"
    infer = endoarss(
        "infer",
        "bag",
        "infer",
        str(clip_bag),
        str(inferred),
        "--checkpoint",
        str(synthetic_checkpoint),
        "--smoothing",
        "none",
    )
    finish(infer, timeout=120)

    reports = {}
    for name, outputs in (("node", recorded), ("infer", inferred)):
        report = tmp_path / f"report_{name}"
        evaluate = endoarss(
            "eval", "bag", "eval", str(clip_bag), str(outputs), "--report", str(report)
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
