r"""A stand-in camera: publishes image files or in-memory frames at a fixed rate.

Mono, stereo (two topics, the right eye stamped ``right_delay_ms`` after the left, as two
independent dVRK capture processes would) or side by side (one frame, left | right); raw
``sensor_msgs/Image`` or ``CompressedImage`` on ``<topic>/compressed`` as image_transport
names it. Messages are built once, before publishing starts, so the rate does not depend on
encoding cost; only the header changes per frame.

Like a real camera process, it uses the large-image Fast DDS profile unless told not to.

Command line (``ros2 run endoarss_ros frame_publisher --help``), with ROS arguments as any node::

    frame_publisher --images DIR [--layout stereo] [--transport compressed] --rate 30 \
        [--ros-args -r __ns:=/camera -r image:=image_raw --log-level debug]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from rclpy.timer import Timer
from sensor_msgs.msg import CompressedImage, Image

from endoarss_ros.image_conversion import numpy_to_compressed, numpy_to_image

from .arguments import split_ros_arguments
from .transport import configure_large_image_transport

LAYOUTS = ("mono", "stereo", "side_by_side")
TRANSPORTS = ("raw", "compressed")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

Frame = np.ndarray
StereoFrame = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class CameraSettings:
    layout: str = "mono"
    transport: str = "raw"
    encoding: str = "rgb8"
    rate_hz: float = 30.0
    frame_id: str = "camera_optical"
    right_frame_id: str = "camera_right_optical"
    right_delay_ms: float = 0.0
    reliable: bool = True
    """gscam and most drivers publish reliable (REP-2003); best effort is the other option."""
    first_stamp: float | None = None
    """Stamp of frame 0 in seconds, later frames one period apart; None stamps with now()."""
    jpeg_quality: int = 90
    topic: str = ""
    """Base topic; default image (mono) or stereo/image (side by side)."""
    left_topic: str = "left/image"
    right_topic: str = "right/image"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.transport not in TRANSPORTS:
            raise ValueError(
                f"transport must be one of {', '.join(TRANSPORTS)}, got {self.transport!r}"
            )
        if not self.rate_hz > 0:
            raise ValueError(f"rate must be positive, got {self.rate_hz}")
        if self.encoding not in ("rgb8", "bgr8"):
            raise ValueError(f"encoding must be rgb8 or bgr8, got {self.encoding!r}")

    def topics(self) -> list[str]:
        if self.layout == "stereo":
            bases = [self.left_topic, self.right_topic]
        else:
            bases = [self.topic or ("image" if self.layout == "mono" else "stereo/image")]
        suffix = "/compressed" if self.transport == "compressed" else ""
        return [base + suffix for base in bases]


def read_frames(folder: Path, limit: int | None = None) -> list[Frame]:
    """RGB frames of the image files under ``folder`` (recursively), in name order."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    frames = []
    for path in paths[:limit]:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read image {path}")
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return frames


class FramePublisher:
    """Publishes ``frames`` (RGB arrays, or (left, right) pairs for stereo and side by side)
    through ``node``; call :meth:`publish_next` yourself or :meth:`start` a timer.
    ``on_publish(index, stamp)`` runs after each frame."""

    def __init__(
        self,
        node: Node,
        frames: Sequence[Frame] | Sequence[StereoFrame],
        settings: CameraSettings,
        on_publish: Callable[[int, TimeMsg], None] | None = None,
    ) -> None:
        if not frames:
            raise ValueError("no frames to publish")
        self.node = node
        self.settings = settings
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE
            if settings.reliable
            else ReliabilityPolicy.BEST_EFFORT,
        )
        message_type = CompressedImage if settings.transport == "compressed" else Image
        self.publishers = [
            node.create_publisher(message_type, topic, qos) for topic in settings.topics()
        ]
        self._messages = [self._encode(frame) for frame in frames]
        self.published = 0
        self.stamps: list[TimeMsg] = []
        """Stamp (of the left eye) of every published frame, in order."""
        self.on_publish = on_publish
        self._timer: Timer | None = None
        self._remaining: int | None = None

    def _encode(self, frame: Frame | StereoFrame) -> list[Image | CompressedImage]:
        layout = self.settings.layout
        if layout == "mono":
            eyes = [frame]
        else:
            left, right = frame if isinstance(frame, tuple) else (frame, frame)
            eyes = [left, right] if layout == "stereo" else [np.hstack([left, right])]
        return [self._message(np.asarray(eye)) for eye in eyes]

    def _message(self, rgb: np.ndarray) -> Image | CompressedImage:
        settings = self.settings
        pixels = rgb if settings.encoding == "rgb8" else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if settings.transport == "compressed":
            return numpy_to_compressed(
                pixels, settings.encoding, "jpeg", quality=settings.jpeg_quality
            )
        return numpy_to_image(pixels, settings.encoding)

    def stamp_of(self, index: int) -> TimeMsg:
        settings = self.settings
        if settings.first_stamp is None:
            return self.node.get_clock().now().to_msg()
        nanoseconds = round((settings.first_stamp + index / settings.rate_hz) * 1e9)
        return Time(nanoseconds=nanoseconds).to_msg()

    def publish_next(self) -> int:
        """Publish the next frame (cycling through them); returns its index in the sequence."""
        index = self.published
        messages = self._messages[index % len(self._messages)]
        stamp = self.stamp_of(index)
        delay_ns = round(self.settings.right_delay_ms * 1e6)
        frame_ids = [self.settings.frame_id, self.settings.right_frame_id]
        for eye, (publisher, message) in enumerate(zip(self.publishers, messages, strict=True)):
            eye_stamp = stamp
            if eye == 1:
                eye_stamp = (Time.from_msg(stamp) + Duration(nanoseconds=delay_ns)).to_msg()
            message.header.stamp = eye_stamp
            message.header.frame_id = frame_ids[eye]
            publisher.publish(message)
        self.stamps.append(stamp)
        self.published += 1
        if self.on_publish is not None:
            self.on_publish(index, stamp)
        return index

    def start(self, count: int | None = None) -> None:
        """Publish at the configured rate, ``count`` frames or until stopped."""
        self._remaining = count
        self._timer = self.node.create_timer(1.0 / self.settings.rate_hz, self._tick)

    @property
    def done(self) -> bool:
        return self._remaining is not None and self._remaining <= 0

    def stop(self) -> None:
        if self._timer is not None:
            self.node.destroy_timer(self._timer)
            self._timer = None

    def _tick(self) -> None:
        if self.done:
            self.stop()
            return
        self.publish_next()
        if self._remaining is not None:
            self._remaining -= 1

    def subscriber_count(self) -> int:
        """Subscriptions on the publisher that has the fewest (all eyes must be heard)."""
        return min(p.get_subscription_count() for p in self.publishers)


def _parse_args(argv: Iterable[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="frame_publisher", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--images", type=Path, required=True, help="folder of image files")
    parser.add_argument(
        "--right-images", type=Path, help="right-eye images (stereo); default: the same frames"
    )
    parser.add_argument("--layout", choices=LAYOUTS, default="mono")
    parser.add_argument("--transport", choices=TRANSPORTS, default="raw")
    parser.add_argument("--encoding", choices=("rgb8", "bgr8"), default="rgb8")
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second")
    parser.add_argument("--count", type=int, help="frames to publish (default: forever)")
    parser.add_argument("--topic", default="", help="base topic (mono, side by side)")
    parser.add_argument("--left-topic", default="left/image")
    parser.add_argument("--right-topic", default="right/image")
    parser.add_argument("--frame-id", default="camera_optical")
    parser.add_argument("--right-frame-id", default="camera_right_optical")
    parser.add_argument("--right-delay-ms", type=float, default=0.0)
    parser.add_argument("--first-stamp", type=float, help="stamp of frame 0 (s); default now()")
    parser.add_argument("--best-effort", action="store_true", help="publish best effort")
    parser.add_argument("--jpeg-quality", type=int, default=90)
    parser.add_argument("--limit", type=int, help="read at most this many image files")
    parser.add_argument(
        "--wait-for-subscribers",
        type=int,
        default=0,
        metavar="N",
        help="start publishing once every topic has N subscriptions",
    )
    parser.add_argument(
        "--default-transport",
        action="store_true",
        help="keep Fast DDS's default transports (large best-effort images get lost)",
    )
    parser.add_argument("--print-stamps", action="store_true", help="print each frame's stamp")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    own_args, ros_args = split_ros_arguments(
        "frame_publisher", sys.argv[1:] if argv is None else argv
    )
    args = _parse_args(own_args)
    settings = CameraSettings(
        layout=args.layout,
        transport=args.transport,
        encoding=args.encoding,
        rate_hz=args.rate,
        frame_id=args.frame_id,
        right_frame_id=args.right_frame_id,
        right_delay_ms=args.right_delay_ms,
        reliable=not args.best_effort,
        first_stamp=args.first_stamp,
        jpeg_quality=args.jpeg_quality,
        topic=args.topic,
        left_topic=args.left_topic,
        right_topic=args.right_topic,
    )
    left = read_frames(args.images, args.limit)
    frames: list = left
    if args.right_images is not None:
        right = read_frames(args.right_images, args.limit)
        frames = list(zip(left, right, strict=False))
    if not args.default_transport:
        print(configure_large_image_transport(), flush=True)
    rclpy.init(args=ros_args)
    node = rclpy.create_node("frame_publisher")
    status = 0

    def print_stamp(index: int, stamp: TimeMsg) -> None:
        print(f"frame {index} {stamp.sec}.{stamp.nanosec:09d}", flush=True)

    try:
        camera = FramePublisher(node, frames, settings, print_stamp if args.print_stamps else None)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        deadline = time.monotonic() + 60.0
        while camera.subscriber_count() < args.wait_for_subscribers:
            if time.monotonic() > deadline:
                print("no subscribers after 60 s", flush=True)
                status = 1
                return status
            executor.spin_once(timeout_sec=0.05)
        print(f"ready: {len(frames)} frames on {', '.join(settings.topics())}", flush=True)
        camera.start(args.count)
        while not camera.done:
            executor.spin_once(timeout_sec=0.1)
        executor.spin_once(timeout_sec=0.2)
        print(f"published {camera.published}", flush=True)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
