"""`bag make`: camera topic(s), camera_info and ground truth from a frame source into a bag.

Every frame's log time equals its header stamp, and the ground truth of a frame carries that
stamp too, so a player reproduces the camera's timing and a scorer pairs results exactly.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import messages
from .formats import DEFAULT_ROS_DISTRO
from .schema import (
    ACTIVITY,
    CAMERA_INFO,
    COMPRESSED_IMAGE,
    GROUND_TRUTH_ACTIVITY,
    GROUND_TRUTH_LABELS,
    GROUND_TRUTH_MASK,
    IMAGE,
    LABEL_MAP,
    BagError,
    latched_qos,
    stream_qos,
)
from .sources import FrameSource
from .storage import BagWriter

STEREO_BASELINE_M = 0.005
"""Nominal baseline written into the right camera's projection matrix."""


@dataclass(frozen=True)
class MakeOptions:
    camera_ns: str = "/camera"
    stereo: bool = False
    side_by_side_source: bool = False
    disparity: int = 8
    compressed: bool = False
    jpeg_quality: int = 90
    reliable: bool = True
    start_time_s: float = 1_700_000_000.0
    frame_id: str = "endoscope"
    storage: str = "mcap"
    ros_distro: str = DEFAULT_ROS_DISTRO
    """The distribution whose `ros2 bag` must open the bag (:mod:`endoarss_ros.bags.formats`)."""


@dataclass(frozen=True)
class MadeBag:
    path: Path
    frames: int
    topics: dict[str, int]


def camera_topics(options: MakeOptions) -> list[tuple[str, str]]:
    """(eye, image topic) pairs; eye is '' for mono."""
    eyes = ["left", "right"] if options.stereo else [""]
    suffix = "/image_raw/compressed" if options.compressed else "/image_raw"
    return [(eye, _eye_ns(options.camera_ns, eye) + suffix) for eye in eyes]


def _eye_ns(camera_ns: str, eye: str) -> str:
    return f"{camera_ns.rstrip('/')}/{eye}" if eye else camera_ns.rstrip("/")


def _eyes(rgb: np.ndarray, options: MakeOptions) -> list[np.ndarray]:
    if not options.stereo:
        return [rgb]
    if options.side_by_side_source:
        half = rgb.shape[1] // 2
        return [rgb[:, :half], rgb[:, half : 2 * half]]
    # One rendered view: the right eye sees the scene shifted left by the disparity.
    right = np.concatenate(
        [rgb[:, options.disparity :], rgb[:, -1:].repeat(options.disparity, 1)], 1
    )
    return [rgb, right]


def make_bag(path: Path, source: FrameSource, options: MakeOptions) -> MadeBag:
    if source.fps <= 0:
        raise BagError(f"frame rate must be positive, got {source.fps}")
    counts: dict[str, int] = {}
    period_ns = round(1e9 / source.fps)
    first_ns = round(options.start_time_s * 1e9)
    frame_type = COMPRESSED_IMAGE if options.compressed else IMAGE
    cameras = camera_topics(options)
    frames = 0
    with BagWriter(path, options.storage, ros_distro=options.ros_distro) as bag:

        def write(topic: str, stamp: int, message: object) -> None:
            bag.write(topic, stamp, message)
            counts[topic] = counts.get(topic, 0) + 1

        camera_qos = stream_qos(options.reliable)
        for eye, topic in cameras:
            bag.add_topic(topic, frame_type, camera_qos)
            bag.add_topic(_eye_ns(options.camera_ns, eye) + "/camera_info", CAMERA_INFO, camera_qos)
        truth = bool(source.activity_names)
        if truth:
            bag.add_topic(GROUND_TRUTH_ACTIVITY, ACTIVITY, stream_qos(True))
            bag.add_topic(GROUND_TRUTH_MASK, IMAGE, stream_qos(True))
            bag.add_topic(GROUND_TRUTH_LABELS, LABEL_MAP, latched_qos())
        for index, frame in enumerate(source.frames):
            stamp = first_ns + index * period_ns
            eyes = _eyes(frame.rgb, options)
            if truth and index == 0:
                write(
                    GROUND_TRUTH_LABELS,
                    stamp,
                    messages.label_map(
                        stamp,
                        source.activity_names,
                        source.segmentation_names,
                        source.segmentation_colors,
                        "ground truth",
                        "",
                        eyes[0].shape[:2],
                    ),
                )
            for (eye, topic), pixels in zip(cameras, eyes, strict=True):
                frame_id = f"{options.frame_id}_{eye}" if eye else options.frame_id
                height, width = pixels.shape[:2]
                tx = -STEREO_BASELINE_M if eye == "right" else 0.0
                info_topic = _eye_ns(options.camera_ns, eye) + "/camera_info"
                write(info_topic, stamp, messages.camera_info(height, width, stamp, frame_id, tx))
                if options.compressed:
                    message = messages.compressed_image(
                        pixels, stamp, frame_id, options.jpeg_quality
                    )
                else:
                    message = messages.image(pixels, "rgb8", stamp, frame_id)
                write(topic, stamp, message)
            if truth and frame.activity is not None:
                frame_id = f"{options.frame_id}_left" if options.stereo else options.frame_id
                write(
                    GROUND_TRUTH_ACTIVITY,
                    stamp,
                    messages.true_activity(stamp, frame_id, source.activity_names, frame.activity),
                )
            if truth and frame.mask is not None:
                frame_id = f"{options.frame_id}_left" if options.stereo else options.frame_id
                write(
                    GROUND_TRUTH_MASK, stamp, messages.image(frame.mask, "mono8", stamp, frame_id)
                )
            frames += 1
    if frames == 0:
        shutil.rmtree(path)
        raise BagError(f"bag {str(path)!r} not written: the source produced no frames")
    return MadeBag(path=path, frames=frames, topics=counts)
