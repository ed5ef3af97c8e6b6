"""End-to-end latency and delivered-frame ratio of the perception node, next to the
Predictor's own time for the same frames.

The probe is the camera and the consumer: it publishes synthetic frames at a fixed rate (each
stamped with now() when published), starts the installed perception_node in its own process,
and matches every SurgicalActivity it receives to the frame it was computed from by header
stamp. Latency = receive time - stamp (one clock: this process's); delivered = frames
answered / frames published. The Predictor is timed first, in this process, on the same
frames, device and precision; what the node adds on top is transport, conversion and waiting.

    python -m endoarss_ros.bench.ros.latency_probe --checkpoint model.safetensors \
        --sizes 640x480 1280x1024 --rate 30 --seconds 10 [--layout stereo] [--json out.json]

Without ``--checkpoint`` a random-weight model of ``--preset`` at ``--input-size`` is used
(speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from endoarss_ros.cli_options import frame_size
from endoarss_ros.ros.transport import PROFILE_VARIABLES, configure_large_image_transport

NAMESPACE = "/latency_probe"


@dataclass(frozen=True)
class ProbeResult:
    size: str
    layout: str
    transport: str
    rate_hz: float
    published: int
    answered: int
    delivered_ratio: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    predictor_p50_ms: float
    predictor_p95_ms: float
    node_dropped: dict[str, str]
    node_inference_p50_ms: float
    node_latency_p50_ms: float
    """The node's own received-to-published p50 (its diagnostics)."""


def scene_frames(height: int, width: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random scenes: cheap to make, realistic enough for JPEG and for the model."""
    import cv2

    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        small = rng.integers(0, 256, (max(height // 16, 2), max(width // 16, 2), 3), np.uint8)
        frames.append(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC))
    return frames


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {q: float("nan") for q in ("p50", "p95", "p99", "max")}
    array = np.asarray(values)
    return {
        "p50": float(np.percentile(array, 50)),
        "p95": float(np.percentile(array, 95)),
        "p99": float(np.percentile(array, 99)),
        "max": float(array.max()),
    }


def time_predictor(predictor, frames: list[np.ndarray], batch: int, repeats: int) -> list[float]:
    """Milliseconds per predict() call on the frames, as the node calls it (batch 2 = stereo)."""
    for frame in frames[:2]:
        predictor.predict([frame] * batch)
    times = []
    for index in range(repeats):
        frame = frames[index % len(frames)]
        started = time.perf_counter()
        predictor.predict([frame] * batch)
        times.append((time.perf_counter() - started) * 1e3)
    return times


def perception_node_command() -> list[str]:
    from ament_index_python.packages import get_package_prefix

    executable = Path(get_package_prefix("endoarss_ros")) / "lib/endoarss_ros/perception_node"
    return [sys.executable, str(executable)]


class NodeUnderTest:
    """A node in a child process (the installed perception_node unless ``command`` names
    another), with its output kept."""

    def __init__(self, arguments: list[str], command: Sequence[str] | None = None) -> None:
        self.process = subprocess.Popen(
            [*(command or perception_node_command()), "--ros-args", *arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any("ready:" in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the node did not start:\n" + "\n".join(self.lines))
            time.sleep(0.05)

    def stop(self) -> int:
        import signal

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        return self.process.returncode


def probe_size(
    args: argparse.Namespace,
    checkpoint: Path,
    predictor,
    height: int,
    width: int,
    *,
    command: Sequence[str] | None = None,
    extra_arguments: Sequence[str] = (),
    predictor_ms: list[float] | None = None,
) -> ProbeResult:
    """One node (the perception node unless ``command`` names another) at one frame size.

    ``predictor_ms`` reuses Predictor times already measured for these frames, so several
    nodes probed in a row are compared with the same model time.
    """
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.time import Time

    from endoarss_ros.msg import SurgicalActivity
    from endoarss_ros.ros.frame_publisher import CameraSettings, FramePublisher

    stereo = args.layout == "stereo"
    frames = scene_frames(height, width, 8, seed=width)
    if predictor_ms is None:
        predictor_ms = time_predictor(predictor, frames, 2 if stereo else 1, args.predictor_repeats)

    node = NodeUnderTest(
        [
            "-r", f"__ns:={NAMESPACE}",
            "-p", f"checkpoint:={checkpoint}",
            "-p", f"device:={args.device}",
            "-p", f"precision:={args.precision}",
            "-p", f"input_mode:={args.layout}",
            "-p", f"input_transport:={args.transport}",
            "-p", "smoothing.method:=none",
            *extra_arguments,
        ],
        command,
    )  # fmt: skip
    context = rclpy.Context()
    # ROS arguments of the probe's command line; other callers (`endoarss bench node`) give none.
    rclpy.init(context=context, args=getattr(args, "ros_args", None))
    peer = rclpy.create_node("latency_probe", context=context, namespace=NAMESPACE)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(peer)
    try:
        node.wait_ready(timeout=300)
        received: dict[int, float] = {}
        diagnostics: dict[str, str] = {}

        def on_activity(message) -> None:
            now = peer.get_clock().now().nanoseconds
            received.setdefault(Time.from_msg(message.header.stamp).nanoseconds, now)

        def on_diagnostics(array) -> None:
            for status in array.status:
                if status.name.startswith(f"{NAMESPACE}/perception"):
                    diagnostics.clear()
                    diagnostics.update({kv.key: kv.value for kv in status.values})

        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        peer.create_subscription(SurgicalActivity, "activity", on_activity, reliable)
        peer.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
        settings = CameraSettings(
            layout=args.layout,
            transport=args.transport,
            rate_hz=args.rate,
            right_delay_ms=3.0 if stereo else 0.0,
        )
        camera = FramePublisher(peer, [(f, f) for f in frames] if stereo else frames, settings)
        deadline = time.monotonic() + 30
        while camera.subscriber_count() < 1 or peer.count_publishers("activity") < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the perception node was not discovered")
            executor.spin_once(timeout_sec=0.05)

        def run(seconds: float) -> list[int]:
            stamps: list[int] = []
            camera.on_publish = lambda _, stamp: stamps.append(Time.from_msg(stamp).nanoseconds)
            camera.start(count=round(seconds * args.rate))
            while not camera.done:
                executor.spin_once(timeout_sec=0.01)
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.01)
            return stamps

        run(args.warmup_seconds)
        received.clear()
        stamps = run(args.seconds)
        latencies = [(received[s] - s) / 1e6 for s in stamps if s in received]
        stats = percentiles(latencies)
    finally:
        executor.shutdown()
        peer.destroy_node()
        rclpy.try_shutdown(context=context)
        code = node.stop()
    if code != 0:
        raise RuntimeError(f"the node exited with {code}:\n" + "\n".join(node.lines))
    predictor_stats = percentiles(predictor_ms)
    return ProbeResult(
        size=f"{width}x{height}",
        layout=args.layout,
        transport=args.transport,
        rate_hz=args.rate,
        published=len(stamps),
        answered=len(latencies),
        delivered_ratio=len(latencies) / max(len(stamps), 1),
        latency_p50_ms=stats["p50"],
        latency_p95_ms=stats["p95"],
        latency_p99_ms=stats["p99"],
        latency_max_ms=stats["max"],
        predictor_p50_ms=predictor_stats["p50"],
        predictor_p95_ms=predictor_stats["p95"],
        node_dropped={k: v for k, v in diagnostics.items() if k.startswith("dropped.")},
        node_inference_p50_ms=float(diagnostics.get("inference_p50_ms", "nan")),
        node_latency_p50_ms=float(diagnostics.get("latency_p50_ms", "nan")),
    )


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The probe's options; ROS arguments (``--ros-args ...``) are for its own node."""
    from endoarss_ros.ros.arguments import split_ros_arguments

    own_args, ros_args = split_ros_arguments(
        "latency_probe", sys.argv[1:] if argv is None else argv
    )
    parser = argparse.ArgumentParser(
        prog="latency_probe", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, help="checkpoint to run (default: random)")
    parser.add_argument("--preset", default="vit_tiny_patch14", help="model of the random one")
    parser.add_argument("--input-size", type=int, default=56, help="input of the random one")
    parser.add_argument(
        "--sizes", type=frame_size(16), nargs="+", default=[(480, 640), (1024, 1280)]
    )
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup-seconds", type=float, default=2.0)
    parser.add_argument("--layout", choices=("mono", "stereo"), default="mono")
    parser.add_argument("--transport", choices=("raw", "compressed"), default="raw")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--predictor-repeats", type=int, default=30)
    parser.add_argument(
        "--default-transport",
        action="store_true",
        help="publish with Fast DDS's default transports (shows what a camera without the "
        "large-image profile delivers)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(own_args)
    args.ros_args = ros_args
    return args


def _table(results: list[ProbeResult]) -> str:
    header = (
        "| frame | layout | delivered | e2e p50 ms | e2e p95 ms | e2e max ms "
        "| Predictor p50 ms | Predictor p95 ms | node inference p50 ms | drops (node) |"
    )
    lines = [header, "|" + " --- |" * 10]
    for r in results:
        drops = ", ".join(f"{k[8:]} {v}" for k, v in r.node_dropped.items() if v != "0") or "-"
        lines.append(
            f"| {r.size} {r.transport} | {r.layout} | {r.answered}/{r.published} "
            f"({100 * r.delivered_ratio:.0f} %) | {r.latency_p50_ms:.1f} | "
            f"{r.latency_p95_ms:.1f} | {r.latency_max_ms:.1f} | {r.predictor_p50_ms:.1f} | "
            f"{r.predictor_p95_ms:.1f} | {r.node_inference_p50_ms:.1f} | {drops} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    if args.default_transport:
        for variable in PROFILE_VARIABLES:
            os.environ.pop(variable, None)
        os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = "DEFAULT"
        print("camera side: Fast DDS default transports", flush=True)
    else:
        print(f"camera side: {configure_large_image_transport()}", flush=True)

    from endoarss_ros.inference import Predictor, write_random_checkpoint

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint = write_random_checkpoint(
                Path(folder) / "random.safetensors",
                preset=args.preset,
                input_size=(args.input_size, args.input_size),
            )
        predictor = Predictor(checkpoint, device=args.device, precision=args.precision)
        print(
            f"model: {predictor.describe()}; machine: {platform.processor() or platform.machine()}"
            f", {os.cpu_count()} CPU cores",
            flush=True,
        )
        results = []
        for height, width in args.sizes:
            result = probe_size(args, checkpoint, predictor, height, width)
            results.append(result)
            print(f"{result.size}: {result.answered}/{result.published} answered", flush=True)
    print(_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
