"""`bag infer`: the Predictor straight over a bag's frames, results written as the node would
publish them, for offline scoring of recorded surgeries without DDS.

Mono: one activity and one mask per frame. Stereo (two camera topics): the eyes are paired by
stamp as the node pairs them, both run as one batch, the activity averages their
probabilities and carries the left header, and each eye gets its mask.

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

from endoarss_ros.inference.smoothing import ActivitySmoother, SmoothingConfig
from endoarss_ros.inference.stereo import LEFT, RIGHT, StereoPairer

from . import messages
from .frames import camera_topic, decoded_frames
from .schema import ACTIVITY, IMAGE, LABEL_MAP, BagError, latched_qos, stamp_ns, stream_qos
from .storage import BagReader, BagWriter

if TYPE_CHECKING:
    from endoarss_ros.inference import ModelInfo


@dataclass(frozen=True)
class InferOptions:
    checkpoint: Path
    camera_topic: str | None = None
    stereo_topics: tuple[str, str] | None = None
    stereo_slop_ms: float = 15.0
    output_ns: str = "/endoarss"
    device: str = "cpu"
    precision: str = "auto"
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    storage: str = "mcap"


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
    """Returns the number of outputs written (frames, or stereo pairs)."""
    from endoarss_ros.inference import Predictor

    stereo = options.stereo_topics is not None
    if stereo and options.stereo_slop_ms <= 0:
        raise BagError(f"stereo slop must be positive, got {options.stereo_slop_ms} ms")
    predictor = Predictor(options.checkpoint, device=options.device, precision=options.precision)
    info = predictor.info
    smoother = ActivitySmoother(options.smoothing)
    pairer: StereoPairer[_Frame] = StereoPairer(round(options.stereo_slop_ms * 1e6))
    activity_topic, mask_topics, labels_topic = output_topics(options.output_ns, stereo)
    outputs = 0
    busy_until = 0
    with BagReader(input_path) as bag:
        if options.stereo_topics is not None:
            topics = list(options.stereo_topics)
            sides = {topics[0]: LEFT, topics[1]: RIGHT}
        else:
            topics = [camera_topic(bag, options.camera_topic)]
        with BagWriter(output_path, options.storage) as out:
            out.add_topic(activity_topic, ACTIVITY, stream_qos(True, 10))
            for mask_topic in mask_topics:
                out.add_topic(mask_topic, IMAGE, stream_qos(True, 1))
            out.add_topic(labels_topic, LABEL_MAP, latched_qos())
            started = time.perf_counter_ns()
            for topic, log_time, header, rgb in decoded_frames(bag, topics):
                frame = _Frame(log_time, header, rgb)
                if stereo:
                    pair = pairer.add(sides[topic], stamp_ns(header), frame)
                    frames = [] if pair is None else [pair.left, pair.right]
                else:
                    frames = [frame]
                if not frames:
                    continue
                arrival = max(f.log_time for f in frames)
                if outputs == 0:
                    out.write(labels_topic, arrival, _label_map(info, arrival))
                predictions = predictor.predict([f.rgb for f in frames])
                smoothed = smoother.update(np.mean([p.activity for p in predictions], axis=0))
                done = max(arrival, busy_until) + (time.perf_counter_ns() - started)
                busy_until = done
                left = frames[0].header
                out.write(
                    activity_topic,
                    done,
                    messages.activity(
                        stamp_ns(left),
                        left.frame_id,
                        info.activity_names,
                        smoothed.probabilities,
                        smoothed.class_id,
                        smoothed.raw_class_id,
                        smoothed.raw_confidence,
                    ),
                )
                for mask_topic, eye, prediction in zip(
                    mask_topics, frames, predictions, strict=True
                ):
                    mask = messages.image(
                        prediction.mask, "mono8", stamp_ns(eye.header), eye.header.frame_id
                    )
                    out.write(mask_topic, done, mask)
                outputs += 1
                started = time.perf_counter_ns()
    if outputs == 0:
        raise BagError(
            f"bag {str(input_path)!r}: no stereo pair within {options.stereo_slop_ms} ms on "
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
