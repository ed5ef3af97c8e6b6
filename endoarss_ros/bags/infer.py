"""`bag infer`: the perception node's frame pipeline straight over a bag's frames, results
written as the node would publish them, for offline scoring of recorded surgeries without DDS.

The per-frame work is :class:`~endoarss_ros.inference.pipeline.FramePipeline`, the node's own,
built from the same options (:class:`PredictorOptions`, :class:`PipelineConfig`); this module
only reads frames, gives every output its frame's header and writes the bag:

- mono: one activity and one mask per frame of the camera topic;
- stereo (two camera topics): the eyes are paired by stamp as the node pairs them, both run as
  one batch, the activity averages their probabilities and carries the left header, and each
  eye gets its mask (``left/`` and ``right/segmentation/mask``);
- side_by_side (one topic of left|right frames): each frame is split into its eyes, then as
  stereo; every output carries the frame's header.

An output message's log time is when a node that keeps every frame would publish it: the later
of the frame's log time and the previous output's, plus the measured time from decoding to
results. `bag eval` then reports processing plus queueing as latency, and outputs stay in frame
order as a node publishes them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from endoarss_ros.inference.errors import FrameError
from endoarss_ros.inference.options import PipelineConfig, PredictorOptions
from endoarss_ros.inference.pipeline import FramePipeline, load_predictor
from endoarss_ros.inference.stereo import LEFT, RIGHT

from . import messages
from .frames import camera_topic, decoded_frames, stereo_topics
from .schema import ACTIVITY, IMAGE, LABEL_MAP, BagError, latched_qos, stamp_ns, stream_qos
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

    def __post_init__(self) -> None:
        stereo = self.pipeline.input_mode == "stereo"
        if self.stereo_topics is not None and not stereo:
            raise ValueError(
                f"stereo topics need input mode stereo, got {self.pipeline.input_mode}"
            )
        if self.camera_topic is not None and stereo:
            raise ValueError("stereo input reads two topics: give stereo_topics, not camera_topic")


def output_topics(namespace: str, stereo: bool = False) -> tuple[str, list[str], str]:
    """Activity topic, mask topic per eye, label-map topic, named as the node names them."""
    ns = namespace.rstrip("/")
    eyes = [f"{ns}/left", f"{ns}/right"] if stereo else [ns]
    return f"{ns}/activity", [f"{eye}/segmentation/mask" for eye in eyes], f"{ns}/labels"


@dataclass(frozen=True)
class _Frame:
    log_time: int
    header: Any
    rgb: np.ndarray


def infer_bag(input_path: Path, output_path: Path, options: InferOptions) -> int:
    """Returns the number of outputs written (frames, or stereo pairs). Raises BagError for
    a bag that cannot be used and PredictorError for a checkpoint or device that cannot."""
    config = options.pipeline
    pipeline: FramePipeline[_Frame] = FramePipeline(
        load_predictor(options.predictor, config), config
    )
    info = pipeline.predictor.info
    activity_topic, mask_topics, labels_topic = output_topics(options.output_ns, config.stereo)
    outputs = 0
    busy_until = 0
    with BagReader(input_path) as bag:
        if config.input_mode == "stereo":
            topics = list(stereo_topics(bag, options.stereo_topics))
            sides = {topics[0]: LEFT, topics[1]: RIGHT}
        else:
            mono = config.input_mode == "mono"
            topics = [camera_topic(bag, options.camera_topic, left_of_pair=mono)]
        with BagWriter(output_path, options.storage) as out:
            out.add_topic(activity_topic, ACTIVITY, stream_qos(True, 10))
            for mask_topic in mask_topics:
                out.add_topic(mask_topic, IMAGE, stream_qos(True, 1))
            out.add_topic(labels_topic, LABEL_MAP, latched_qos())
            started = time.perf_counter_ns()
            for topic, log_time, header, rgb in decoded_frames(bag, topics):
                frame = _Frame(log_time, header, rgb)
                if config.input_mode == "stereo":
                    pair = pipeline.pair(sides[topic], stamp_ns(header), frame)
                    if pair is None:
                        continue
                    frames = (pair.left, pair.right)
                else:
                    frames = (frame,)
                arrival = max(f.log_time for f in frames)
                if outputs == 0:
                    out.write(labels_topic, arrival, _label_map(info, arrival))
                try:
                    result = pipeline.run([f.rgb for f in frames])
                except FrameError as exc:
                    raise BagError(
                        f"topic {topic!r} of bag {str(input_path)!r}: bad frame at {log_time}: "
                        f"{exc}"
                    ) from exc
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
                for mask_topic, mask, source in zip(
                    mask_topics, result.masks, result.sources, strict=True
                ):
                    eye = frames[source].header
                    message = messages.image(mask, "mono8", stamp_ns(eye), eye.frame_id)
                    out.write(mask_topic, done, message)
                outputs += 1
                started = time.perf_counter_ns()
    if outputs == 0:
        raise BagError(
            f"bag {str(input_path)!r}: no stereo pair within {config.stereo_slop_ms:g} ms on "
            f"{' and '.join(topics)}"
        )
    return outputs


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
