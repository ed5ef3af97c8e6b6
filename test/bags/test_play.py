"""`bag play` timing and options over DDS: start offset, rate, remapping, /clock, loop."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from bag_clip import CLIP_FPS, CLIP_FRAMES
from ros_harness import NodeProcess, wait_until

from endoarss_ros.ros.bags.play import PlayOptions, play_bag

pytestmark = pytest.mark.ros

FIRST_STAMP_NS = 1_700_000_000 * 1_000_000_000
PERIOD_NS = round(1e9 / CLIP_FPS)


class Received:
    def __init__(self) -> None:
        self.items: list[tuple[float, int]] = []
        self.lock = threading.Lock()

    def __call__(self, msg) -> None:
        stamp = msg.header.stamp if hasattr(msg, "header") else msg.clock
        with self.lock:
            self.items.append((time.monotonic(), stamp.sec * 1_000_000_000 + stamp.nanosec))


def subscribe(ros_node, topic: str):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image

    frames, clock = Received(), Received()
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    ros_node.create_subscription(Image, topic, frames, reliable)
    best_effort = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)
    ros_node.create_subscription(Clock, "/clock", clock, best_effort)
    return frames, clock


def test_offset_rate_remap_and_clock(clip_bag: Path, ros_node) -> None:
    topic = "/bag_play_test/image"
    frames, clock = subscribe(ros_node, topic)
    result = play_bag(
        clip_bag,
        PlayOptions(
            rate=4.0,
            start_offset_s=2.0,
            remap={"/camera/image_raw": topic},
            topics=["/camera/image_raw"],
            clock_hz=200.0,
            wait_for=[topic, "/clock"],
            linger_s=0.5,
        ),
    )
    skipped = round(2.0 * CLIP_FPS)
    assert result.messages == CLIP_FRAMES - skipped
    wait_until(lambda: len(frames.items) == CLIP_FRAMES - skipped, 5, "all played frames")
    stamps = [stamp for _, stamp in frames.items]
    assert stamps == [FIRST_STAMP_NS + i * PERIOD_NS for i in range(skipped, CLIP_FRAMES)]
    span = frames.items[-1][0] - frames.items[0][0]
    expected = (CLIP_FRAMES - skipped - 1) / CLIP_FPS / 4.0
    assert expected * 0.8 < span < expected + 1.0
    clock_times = [stamp for _, stamp in clock.items]
    assert clock_times == sorted(clock_times)
    assert clock_times[0] >= stamps[0] and clock_times[-1] == stamps[-1]
    # Between frames the clock advances too (200 Hz against 40 frames per second).
    assert len(set(clock_times)) > len(stamps)


def test_loop_until_interrupted(clip_bag: Path, ros_node) -> None:
    topic = "/bag_loop_test/image"
    frames, _ = subscribe(ros_node, topic)
    player = NodeProcess(
        "player",
        [
            sys.executable,
            "-m",
            "endoarss_ros.cli",
            "bag",
            "play",
            str(clip_bag),
            "--loop",
            "--rate",
            "8",
            "--topics",
            "/camera/image_raw",
            "--remap",
            f"/camera/image_raw:={topic}",
            "--wait-for",
            topic,
        ],
    )
    try:
        wait_until(lambda: len(frames.items) > CLIP_FRAMES + 5, 30, "a second pass of the bag")
        assert player.stop(signal.SIGINT) == 0, player.output
    finally:
        player.kill()
    assert "played" in player.output
    stamps = [stamp for _, stamp in frames.items]
    restart = stamps.index(FIRST_STAMP_NS, 1)
    assert restart == CLIP_FRAMES


def test_remap_uses_the_current_rcl_syntax(clip_bag: Path, ros_node) -> None:
    topic = "/bag_remap_test/image"
    frames, _ = subscribe(ros_node, topic)
    player = NodeProcess(
        "player",
        [
            sys.executable,
            "-m",
            "endoarss_ros.cli",
            "bag",
            "play",
            str(clip_bag),
            "--rate",
            "8",
            "--topics",
            "/camera/image_raw",
            "--remap",
            f"/camera/image_raw:={topic}",
            "--wait-for",
            topic,
        ],
    )
    try:
        wait_until(lambda: player.returncode is not None, 30, "the player to finish")
    finally:
        player.kill()
    assert player.returncode == 0 and "played" in player.output, player.output
    wait_until(lambda: len(frames.items) == CLIP_FRAMES, 5, "every frame on the remapped topic")
    assert "deprecated" not in player.output.lower(), player.output
