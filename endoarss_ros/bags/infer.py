"""`bag infer`: the perception node's frame pipeline straight over a bag's frames, results
written as the node would publish them, for offline scoring of recorded surgeries without DDS.

The per-frame work is :class:`~endoarss_ros.inference.pipeline.FramePipeline`, the node's own,
built from the same options (:class:`PredictorOptions`, :class:`PipelineConfig`); this module
only reads frames, gives every output its frame's header and writes the bag:

- mono: one activity, one trust (FrameTrust, ``trust``) and one mask per frame of the camera
  topic;
- stereo (two camera topics): the eyes are paired by stamp as the node pairs them, both run as
  one batch, the activity and the trust carry the left header, and each
  eye gets its mask (``left/`` and ``right/segmentation/mask``);
- side_by_side (one topic of left|right frames): each frame is split into its eyes, then as
  stereo; every output carries the frame's header.

An output message's log time is when a node that keeps every frame would publish it: the later
of the frame's log time and the previous output's, plus the measured time from decoding to
results. `bag eval` then reports processing plus queueing as latency, and outputs stay in frame
order as a node publishes them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from endoarss_ros.inference.errors import FrameError
from endoarss_ros.inference.options import PipelineConfig, PredictorOptions
from endoarss_ros.inference.pipeline import FramePipeline, load_predictor
from endoarss_ros.inference.stereo import LEFT, RIGHT
from endoarss_ros.trust.assessment import message_fields

from . import messages
from .formats import DEFAULT_ROS_DISTRO
from .frames import camera_topic, read_frames, stereo_topics
from .schema import (
    ACTIVITY,
    IMAGE,
    LABEL_MAP,
    TRUST,
    BagError,
    latched_qos,
    stamp_ns,
    stream_qos,
)
from .storage import BagReader, BagWriter

if TYPE_CHECKING:
    from endoarss_ros.inference import ModelInfo


@dataclass(frozen=True)
class InferOptions:
    """The node's options (``predictor``, ``pipeline``) plus where the bag's frames are and
    where the results go."""

    predictor: PredictorOptions
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    camera_topic: str | None = None
    """mono: the camera topic; side_by_side: the topic of left|right frames. Default: the
    bag's one camera topic."""
    stereo_topics: tuple[str, str] | None = None
    """stereo: the left and right camera topics. Default: the bag's left/right pair."""
    output_ns: str = "/endoarss"
    storage: str = "mcap"
    ros_distro: str = DEFAULT_ROS_DISTRO
    """The distribution whose `ros2 bag` must open the output bag
    (:mod:`endoarss_ros.bags.formats`)."""

    def __post_init__(self) -> None:
        stereo = self.pipeline.input_mode == "stereo"
        if self.stereo_topics is not None and not stereo:
            raise ValueError(
                f"stereo topics need input mode stereo, got {self.pipeline.input_mode}"
            )
        if self.camera_topic is not None and stereo:
            raise ValueError("stereo input reads two topics: give stereo_topics, not camera_topic")


@dataclass(frozen=True)
class OutputTopics:
    """The topics `bag infer` writes, named as the node names them."""

    activity: str
    trust: str
    masks: list[str]
    """One per eye."""
    labels: str


def output_topics(namespace: str, stereo: bool = False) -> OutputTopics:
    ns = namespace.rstrip("/")
    eyes = [f"{ns}/left", f"{ns}/right"] if stereo else [ns]
    return OutputTopics(
        f"{ns}/activity",
        f"{ns}/trust",
        [f"{eye}/segmentation/mask" for eye in eyes],
        f"{ns}/labels",
    )


@dataclass(frozen=True)
class _Frame:
    topic: str
    index: int
    log_time: int
    header: Any
    rgb: np.ndarray


@dataclass(frozen=True)
class SkippedFrame:
    """A camera message that got no output, and why."""

    topic: str
    index: int
    """Position of the message in its topic, from 0."""
    log_time: int
    stamp_ns: int | None
    """None when the message does not decode far enough to have a header."""
    reason: str

    def describe(self) -> str:
        stamp = "unknown" if self.stamp_ns is None else _seconds(self.stamp_ns)
        return (
            f"skipped frame {self.index} of {self.topic} (stamp {stamp}, log time "
            f"{_seconds(self.log_time)}): {self.reason}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "index": self.index,
            "stamp_ns": self.stamp_ns,
            "log_time_ns": self.log_time,
            "reason": self.reason,
        }


def _seconds(ns: int) -> str:
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


@dataclass(frozen=True)
class InferResult:
    outputs: int
    """Outputs written: frames, or stereo pairs."""
    frames: int
    """Camera messages read, over all input topics."""
    skipped: tuple[SkippedFrame, ...]
    unpaired: int = 0
    """Stereo eyes that found no partner within the slop (the partner of a skipped eye)."""
    skipped_listed_in: Path | None = None
    """The file whose custom_data lists the skipped frames under :data:`SKIPPED_KEY`:
    metadata.yaml, or the sidecar file for metadata versions without custom_data."""


SKIPPED_KEY = "endoarss.skipped_frames"
"""custom_data key of the output bag: the skipped frames as a JSON list (in metadata.yaml, or
for metadata version 5 in its sidecar file; :attr:`BagReader.custom_data` reads either)."""


def infer_bag(
    input_path: Path,
    output_path: Path,
    options: InferOptions,
    on_skip: Callable[[SkippedFrame], None] | None = None,
) -> InferResult:
    """Runs the pipeline over every frame; a frame that cannot be decoded or used is skipped
    (``on_skip`` hears of it at once) and the next one goes on. Raises BagError for a bag that
    cannot be used or gives no output at all, and PredictorError for a checkpoint or device
    that cannot be used."""
    config = options.pipeline
    pipeline: FramePipeline[_Frame] = FramePipeline(
        load_predictor(options.predictor, config), config
    )
    try:
        return _infer(pipeline, input_path, output_path, options, on_skip)
    finally:
        pipeline.close()


def _infer(
    pipeline: FramePipeline[_Frame],
    input_path: Path,
    output_path: Path,
    options: InferOptions,
    on_skip: Callable[[SkippedFrame], None] | None,
) -> InferResult:
    config = options.pipeline
    info = pipeline.predictor.info
    topic_names = output_topics(options.output_ns, config.stereo)
    activity_topic, mask_topics, labels_topic = (
        topic_names.activity,
        topic_names.masks,
        topic_names.labels,
    )
    outputs = read = 0
    busy_until = 0
    skipped: list[SkippedFrame] = []

    def skip(skipped_frame: SkippedFrame) -> None:
        skipped.append(skipped_frame)
        if on_skip is not None:
            on_skip(skipped_frame)

    with BagReader(input_path) as bag:
        if config.input_mode == "stereo":
            topics = list(stereo_topics(bag, options.stereo_topics))
            sides = {topics[0]: LEFT, topics[1]: RIGHT}
        else:
            mono = config.input_mode == "mono"
            topics = [camera_topic(bag, options.camera_topic, left_of_pair=mono)]
        with BagWriter(output_path, options.storage, ros_distro=options.ros_distro) as out:
            out.add_topic(activity_topic, ACTIVITY, stream_qos(True, 10))
            out.add_topic(topic_names.trust, TRUST, stream_qos(True, 10))
            for mask_topic in mask_topics:
                out.add_topic(mask_topic, IMAGE, stream_qos(True, 1))
            out.add_topic(labels_topic, LABEL_MAP, latched_qos())
            started = time.perf_counter_ns()
            for item in read_frames(bag, topics, config.max_frame_pixels):
                read += 1
                if item.error is not None or item.rgb is None:
                    skip(
                        SkippedFrame(
                            item.topic, item.index, item.log_time, item.stamp_ns, str(item.error)
                        )
                    )
                    continue
                frame = _Frame(item.topic, item.index, item.log_time, item.header, item.rgb)
                if config.input_mode == "stereo":
                    pair = pipeline.pair(sides[item.topic], stamp_ns(item.header), frame)
                    if pair is None:
                        continue
                    frames: tuple[_Frame, ...] = (pair.left, pair.right)
                else:
                    frames = (frame,)
                arrival = max(f.log_time for f in frames)
                try:
                    result = pipeline.run([f.rgb for f in frames])
                except FrameError as exc:
                    for f in frames:
                        skip(
                            SkippedFrame(f.topic, f.index, f.log_time, stamp_ns(f.header), str(exc))
                        )
                    started = time.perf_counter_ns()
                    continue
                if outputs == 0:
                    out.write(labels_topic, arrival, _label_map(info, arrival))
                done = max(arrival, busy_until) + (time.perf_counter_ns() - started)
                busy_until = done
                left = frames[0].header
                activity = result.activity
                out.write(
                    activity_topic,
                    done,
                    messages.activity(
                        stamp_ns(left),
                        left.frame_id,
                        info.activity_names,
                        activity.probabilities,
                        activity.class_id,
                        activity.raw_class_id,
                        activity.raw_confidence,
                    ),
                )
                out.write(
                    topic_names.trust,
                    done,
                    messages.trust(
                        stamp_ns(left),
                        left.frame_id,
                        message_fields(result.trust, result.trust_latched),
                    ),
                )
                for mask_topic, mask, source in zip(
                    mask_topics, result.masks, result.sources, strict=True
                ):
                    eye = frames[source].header
                    message = messages.image(mask, "mono8", stamp_ns(eye), eye.frame_id)
                    out.write(mask_topic, done, message)
                outputs += 1
                started = time.perf_counter_ns()
            out.set_custom_data(SKIPPED_KEY, json.dumps([s.to_dict() for s in skipped]))
            listed_in = out.custom_data_file
    if outputs == 0:
        where = f"bag {str(input_path)!r}: no output from {' and '.join(topics)}"
        if skipped and len(skipped) >= read:
            raise BagError(f"{where}: every frame was skipped (first: {skipped[0].reason})")
        raise BagError(f"{where}: no stereo pair within {config.stereo_slop_ms:g} ms")
    return InferResult(outputs, read, tuple(skipped), pipeline.unpaired, listed_in)


def _label_map(info: ModelInfo, stamp: int) -> Any:
    return messages.label_map(
        stamp,
        info.activity_names,
        info.segmentation_names,
        info.segmentation_colors,
        info.name,
        info.checkpoint_hash,
        info.input_size,
    )
