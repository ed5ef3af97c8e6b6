"""Live run of the perception node on a folder of frames: the ROS half of ``make demo``.

Starts two processes, as on a real system: ``frame_publisher`` playing the folder as a camera
and ``perception_node`` with the given checkpoint. This process listens like a consumer:
it prints the activity stream, saves the first overlays as PNG files, then stops both
processes with SIGINT and checks that they exit cleanly.

    python -m endoarss_ros.ros.live_demo --checkpoint runs/demo/model.safetensors \
        --images data/synthetic/images --output runs/demo/live
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

NAMESPACE = "/demo"


class ChildProcess:
    """An installed executable of this package, its output echoed with a prefix."""

    def __init__(self, name: str, arguments: list[str]) -> None:
        from ament_index_python.packages import get_package_prefix

        executable = Path(get_package_prefix("endoarss_ros")) / "lib" / "endoarss_ros" / name
        self.name = name
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, str(executable), *arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())
            print(f"  [{self.name}] {line.rstrip()}", flush=True)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not print {text!r} within {timeout} s")
            time.sleep(0.05)

    def interrupt(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._reader.join(5.0)
        return self.process.returncode


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The demo's options; ROS arguments (``--ros-args ...``) are for its listener node."""
    from .arguments import split_ros_arguments

    own_args, ros_args = split_ros_arguments("live_demo", sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="live_demo", description=__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True, help="folder of frames")
    parser.add_argument("--output", type=Path, required=True, help="where overlays are saved")
    parser.add_argument("--seconds", type=float, default=8.0, help="how long to listen")
    parser.add_argument("--rate", type=float, default=10.0, help="camera frame rate")
    parser.add_argument("--frames", type=int, default=60, help="frames read from the folder")
    parser.add_argument("--overlays", type=int, default=6, help="overlays to save")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(own_args)
    args.ros_args = ros_args
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    from .transport import configure_large_image_transport

    configure_large_image_transport()
    import cv2
    import numpy as np
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from endoarss_ros.msg import FrameTrust, LabelMap, SurgicalActivity

    args.output.mkdir(parents=True, exist_ok=True)
    node = ChildProcess(
        "perception_node",
        [
            "--ros-args",
            "-r", f"__ns:={NAMESPACE}",
            "-p", f"checkpoint:={args.checkpoint.resolve()}",
            "-p", f"device:={args.device}",
        ],
    )  # fmt: skip
    camera: ChildProcess | None = None
    rclpy.init(args=args.ros_args)
    listener = rclpy.create_node("demo_listener", namespace=NAMESPACE)
    executor = SingleThreadedExecutor()
    executor.add_node(listener)
    activities: dict[int, SurgicalActivity] = {}  # by the frame's stamp (ns)
    saved: list[Path] = []
    labels: list = []
    trust: list = []

    def on_activity(message) -> None:
        activities[_stamp_ns(message.header.stamp)] = message

    def on_trust(message) -> None:
        """Printed with the frame's activity, which the node publishes just before its trust."""
        trust.append(message)
        activity = activities.get(_stamp_ns(message.header.stamp))
        if activity is None or len(trust) % max(int(args.rate // 2), 1) != 1:
            return
        stamp = message.header.stamp.sec + message.header.stamp.nanosec / 1e9
        print(
            f"activity  stamp {stamp:.3f}  {activity.label:<28} "
            f"confidence {activity.confidence:.2f}  (this frame alone: "
            f"{labels[0].activity_names[activity.raw_class_id] if labels else '?'} "
            f"{activity.raw_confidence:.2f})  trust {message.summary}",
            flush=True,
        )

    def on_overlay(message) -> None:
        if len(saved) >= args.overlays:
            return
        pixels = np.frombuffer(message.data, np.uint8).reshape(message.height, message.step)
        bgr = pixels[:, : message.width * 3].reshape(message.height, message.width, 3)
        path = args.output / f"overlay_{len(saved):02d}.png"
        cv2.imwrite(str(path), bgr)
        saved.append(path)

    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    listener.create_subscription(LabelMap, "labels", labels.append, latched)
    listener.create_subscription(SurgicalActivity, "activity", on_activity, reliable)
    listener.create_subscription(FrameTrust, "trust", on_trust, reliable)
    listener.create_subscription(Image, "segmentation/overlay", on_overlay, reliable)
    codes: dict[str, int] = {}
    try:
        node.wait_for("ready:", timeout=300)
        camera = ChildProcess(
            "frame_publisher",
            [
                "--images", str(args.images),
                "--limit", str(args.frames),
                "--rate", str(args.rate),
                "--topic", f"{NAMESPACE}/image",
                "--frame-id", "demo_camera",
                "--wait-for-subscribers", "1",
            ],
        )  # fmt: skip
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
    finally:
        codes["frame_publisher"] = camera.interrupt() if camera is not None else -1
        codes["perception_node"] = node.interrupt()
        executor.shutdown()
        listener.destroy_node()
        rclpy.try_shutdown()
    tracebacks = [p.name for p in (node, camera) if p and any("Traceback" in x for x in p.lines)]
    levels = [m.level for m in trust]
    print(
        f"\n{len(activities)} activity messages, {len(saved)} overlays saved in {args.output}; "
        f"trust per frame: {levels.count(0)} OK, {levels.count(1)} WARN, {levels.count(2)} ERROR; "
        f"exit codes: {codes}"
    )
    clean = all(code == 0 for code in codes.values()) and not tracebacks
    return 0 if activities and saved and clean else 1


def _stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


if __name__ == "__main__":
    sys.exit(main())
