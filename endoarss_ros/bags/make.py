"""`bag make`: camera topic(s), camera_info and ground truth from a frame source into a bag.

Every frame's log time equals its header stamp, and the ground truth of a frame carries that
stamp too, so a player reproduces the camera's timing and a scorer pairs results exactly.
Artefact segments (:class:`~.sources.ArtefactSegment`) corrupt runs of frames and are listed in
the bag's custom_data under :data:`ARTEFACTS_KEY`, so `bag eval` can score the trust signal
against them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
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
from .sources import ArtefactError, ArtefactSegment, FrameSource, with_artefacts
from .storage import BagWriter

STEREO_BASELINE_M = 0.005
"""Nominal baseline written into the right camera's projection matrix."""

ARTEFACTS_KEY = "endoarss.artefacts"
"""custom_data key of a bag with artefact segments: a JSON list, one object per segment in
frame order (corruption, severity, first_frame, last_frame, first_stamp_ns, last_stamp_ns;
frames inclusive, from 0). Absent when the bag has none."""


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
    artefacts: tuple[ArtefactSegment, ...] = ()
    """Runs of frames to corrupt; checked (inside the clip, no overlaps) by :func:`make_bag`."""
    artefact_seed: int = 0
    """With the frame index, seeds each corrupted frame's randomness."""


@dataclass(frozen=True)
class MadeBag:
    path: Path
    frames: int
    topics: dict[str, int]
    artefacts: list[dict[str, object]] = field(default_factory=list)
    """What :data:`ARTEFACTS_KEY` holds."""


def artefact_records(
    segments: tuple[ArtefactSegment, ...], first_ns: int, period_ns: int
) -> list[dict[str, object]]:
    """The custom_data entries of ``segments``, with the stamps of their first and last frame
    (which `bag eval` pairs outputs by)."""
    return [
        {
            "corruption": s.corruption,
            "severity": s.severity,
            "first_frame": s.first,
            "last_frame": s.last,
            "first_stamp_ns": first_ns + s.first * period_ns,
            "last_stamp_ns": first_ns + s.last * period_ns,
        }
        for s in segments
    ]


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
    """Raises BagError for a source that cannot be used, ArtefactError for artefact segments
    that do not fit the clip (for a video, whose length is known only at its end, after the
    frames were read: the bag is then removed)."""
    if source.fps <= 0:
        raise BagError(f"frame rate must be positive, got {source.fps}")
    source = with_artefacts(source, options.artefacts, options.artefact_seed)
    try:
        return _write(path, source, options)
    except ArtefactError:
        shutil.rmtree(path, ignore_errors=True)
        raise


def _write(path: Path, source: FrameSource, options: MakeOptions) -> MadeBag:
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
                        (eyes[0].shape[0], eyes[0].shape[1]),
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
        artefacts = artefact_records(
            tuple(sorted(options.artefacts, key=lambda s: s.first)), first_ns, period_ns
        )
        if artefacts:
            bag.set_custom_data(ARTEFACTS_KEY, json.dumps(artefacts))
    if frames == 0:
        shutil.rmtree(path)
        raise BagError(f"bag {str(path)!r} not written: the source produced no frames")
    return MadeBag(path=path, frames=frames, topics=counts, artefacts=artefacts)
