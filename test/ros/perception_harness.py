"""Helpers for driving the perception node from tests: start it, feed it, watch its outputs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from ros_harness import NodeProcess, python_node, wait_until

TINY_INPUT_SIZE = (56, 70)
FIRST_STAMP = 1_700_000_000.0


def installed_executable(name: str) -> Path:
    from ament_index_python.packages import get_package_prefix

    path = Path(get_package_prefix("endoarss_ros")) / "lib" / "endoarss_ros" / name
    assert path.is_file(), f"{name} is not installed; run scripts/setup.sh"
    return path


def start_perception_node(
    namespace: str,
    checkpoint: Path | str | None,
    *ros_args: str,
    **parameters: Any,
) -> NodeProcess:
    """The installed perception_node in its own process, with test-friendly defaults (CPU,
    raw activity, fast diagnostics); waits for its ready line."""
    settings = {
        "device": "cpu",
        "smoothing.method": "none",
        "diagnostics_period_s": 0.25,
        **parameters,
    }
    if checkpoint is not None:
        settings["checkpoint"] = str(checkpoint)
    args = ["--ros-args", "-r", f"__ns:={namespace}", *ros_args]
    for name, value in settings.items():
        args += ["-p", f"{name}:={_ros_value(value)}"]
    return python_node(f"perception{namespace}", installed_executable("perception_node"), *args)


def assert_stops_cleanly(
    namespace: str, checkpoint: Path | str, signal_number: int, **parameters: Any
) -> None:
    """A node of its own (a module's shared node stays up for the other tests), started,
    stopped by `signal_number`: exit status 0 and no traceback."""
    process = start_perception_node(namespace, checkpoint, **parameters)
    try:
        process.wait_for_output(r"\bready:", timeout=90)
        assert process.stop(signal_number) == 0, process.output
        assert "Traceback" not in process.output, process.output
    finally:
        process.kill()


def _ros_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def start_frame_publisher(images: Path, *args: str) -> NodeProcess:
    return python_node(
        "frame_publisher", installed_executable("frame_publisher"), "--images", str(images), *args
    )


def write_frames(folder: Path, frames: Iterable[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, rgb in enumerate(frames):
        cv2.imwrite(str(folder / f"frame_{index:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return folder


def scene_frames(height: int, width: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random scenes (blurred noise): realistic enough for JPEG, distinct per frame."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        small = rng.integers(0, 256, (max(height // 16, 2), max(width // 16, 2), 3), np.uint8)
        frames.append(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC))
    return frames


def stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def frame_index(stamp, rate_hz: float, count: int) -> int:
    """Which frame of a frame_publisher --first-stamp sequence carries this stamp."""
    return round((stamp_ns(stamp) / 1e9 - FIRST_STAMP) * rate_hz) % count


class Inbox:
    """Collects messages of one subscription and waits for one that satisfies a predicate."""

    def __init__(self) -> None:
        self.messages: list = []
        self._changed = threading.Condition()

    def __call__(self, msg) -> None:
        with self._changed:
            self.messages.append(msg)
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[Any], bool], timeout: float, what: str):
        deadline = time.monotonic() + timeout
        with self._changed:
            seen = 0
            while True:
                for msg in self.messages[seen:]:
                    if predicate(msg):
                        return msg
                seen = len(self.messages)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
                self._changed.wait(remaining)

    def with_stamp(self, stamp, timeout: float, what: str):
        return self.wait_for(lambda m: m.header.stamp == stamp, timeout, what)


class DiagnosticsWatcher:
    """The latest /diagnostics values of one node, as strings by key."""

    def __init__(self, node, node_name: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        self._name = f"{node_name}: perception"
        self.latest: dict[str, str] = {}
        self.level = None
        self.message = ""
        self._lock = threading.Lock()
        self._subscription = node.create_subscription(
            DiagnosticArray, "/diagnostics", self._on_array, 10
        )

    def _on_array(self, array) -> None:
        for status in array.status:
            if status.name == self._name:
                with self._lock:
                    self.latest = {kv.key: kv.value for kv in status.values}
                    self.level, self.message = status.level, status.message

    def value(self, key: str) -> str | None:
        with self._lock:
            return self.latest.get(key)

    def count(self, key: str) -> int:
        value = self.value(key)
        return int(value) if value is not None else -1

    def wait_for_count(self, key: str, at_least: int, timeout: float = 15.0) -> int:
        wait_until(lambda: self.count(key) >= at_least, timeout, f"diagnostics {key} >= {at_least}")
        return self.count(key)


def publish_until(publisher, message, condition: Callable[[], bool], timeout: float, what: str):
    """Republish (best-effort delivery may drop one) until the condition holds."""
    deadline = time.monotonic() + timeout
    while True:
        publisher.publish(message)
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            if condition():
                return
            time.sleep(0.01)
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class NodeIO:
    """The test's side of one perception node: a camera publisher per input topic, an inbox
    per output topic, and its diagnostics."""

    def __init__(
        self,
        peer,
        namespace: str,
        inputs: Iterable[str],
        message_type,
        streams: Iterable[str] = ("",),
    ) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from endoarss_ros.msg import SurgicalActivity

        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.namespace = namespace
        self.activity = Inbox()
        peer.create_subscription(SurgicalActivity, f"{namespace}/activity", self.activity, reliable)
        self.masks: dict[str, Inbox] = {}
        for stream in streams:
            self.masks[stream] = Inbox()
            peer.create_subscription(
                Image, f"{namespace}/{stream}segmentation/mask", self.masks[stream], reliable
            )
        camera_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self.cameras = [
            peer.create_publisher(message_type, f"{namespace}/{topic}", camera_qos)
            for topic in inputs
        ]
        self.diagnostics = DiagnosticsWatcher(peer, f"{namespace}/perception")
        wait_until(
            lambda: (
                all(c.get_subscription_count() >= 1 for c in self.cameras)
                and self.diagnostics.latest
            ),
            30,
            f"discovery of the perception node in {namespace}",
        )

    def answered(self, stamp, stream: str = "") -> bool:
        return any(m.header.stamp == stamp for m in self.masks[stream].messages)


def mask_pixels(mask) -> np.ndarray:
    return np.frombuffer(mask.data, np.uint8).reshape(mask.height, mask.step)[:, : mask.width]


def run_camera_process(folder: Path, *args: str, timeout: float = 60.0) -> NodeProcess:
    """A frame_publisher process run to its end (it waits for subscribers, then publishes)."""
    camera = start_frame_publisher(folder, *args)
    try:
        wait_until(lambda: camera.returncode is not None, timeout, "the camera process to finish")
    finally:
        camera.kill()
    assert camera.returncode == 0, camera.output
    return camera


def sequence_stamps(first: float, rate: float, count: int) -> dict[int, int]:
    """Stamp (ns) -> frame number of a frame_publisher --first-stamp run."""
    return {round((first + i / rate) * 1e9): i for i in range(count)}


def call_service(
    peer, service_type, name: str, request, timeout: float = 30.0, idempotent: bool = False
):
    """One service call from a test's peer node, waiting for the service and the response.

    A request sent just after the service was discovered can be answered before the server has
    matched this client's response reader, and Fast DDS then drops the answer (seen on a loaded
    2-core machine); an ``idempotent`` request (a query) is sent again every 5 s until
    answered."""
    client = peer.create_client(service_type, name)
    try:
        assert client.wait_for_service(timeout_sec=timeout), f"no service {name}"
        deadline = time.monotonic() + timeout
        while True:
            future = client.call_async(request)
            answered = time.monotonic() + (5.0 if idempotent else timeout)
            while not future.done() and time.monotonic() < min(answered, deadline):
                time.sleep(0.01)
            if future.done():
                return future.result()
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for a response from {name}"
                )
    finally:
        peer.destroy_client(client)
