"""Finding and decoding the camera frames of an input bag."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from endoarss_ros.image_conversion import (
    ImageConversionError,
    compressed_to_numpy,
    image_to_rgb8,
)

from .schema import COMPRESSED_IMAGE, FRAME_TYPES, BagError, stamp_ns, typestore
from .storage import BagReader


def left_of(candidates: Sequence[str]) -> str | None:
    """The left eye's topic when the candidates are one stereo pair (its ground truth and the
    node's activity carry the left eye's header)."""
    left = [t for t in candidates if "/left/" in t]
    return left[0] if len(candidates) == 2 and len(left) == 1 else None


def _cameras(bag: BagReader) -> list[str]:
    return [t for t in bag.topics_of_type(*FRAME_TYPES) if not t.startswith("/ground_truth")]


def camera_topic(bag: BagReader, topic: str | None, left_of_pair: bool = True) -> str:
    """The given topic (checked), else the bag's one image topic outside /ground_truth (the
    left one of a stereo pair, unless ``left_of_pair`` is false: a side-by-side reader
    must not split one eye)."""
    if topic is not None:
        bag.require(topic, *FRAME_TYPES)
        return topic
    candidates = _cameras(bag)
    if not candidates:
        raise BagError(f"bag {str(bag.path)!r} has no camera topic (Image or CompressedImage)")
    if len(candidates) > 1:
        left = left_of(candidates) if left_of_pair else None
        if left is not None:
            return left
        raise BagError(
            f"bag {str(bag.path)!r} has several camera topics ({', '.join(candidates)}); "
            "choose one with --camera-topic"
        )
    return candidates[0]


def stereo_topics(bag: BagReader, topics: Sequence[str] | None) -> tuple[str, str]:
    """The given left and right topics (:func:`decoded_frames` checks them), else the bag's two
    camera topics when one is a left and the other a right eye."""
    if topics is not None:
        left, right = topics
        return left, right
    candidates = _cameras(bag)
    left_eye = left_of(candidates)
    right_eyes = [t for t in candidates if "/right/" in t]
    if left_eye is None or len(right_eyes) != 1:
        raise BagError(
            f"bag {str(bag.path)!r} has no left/right pair of camera topics "
            f"({', '.join(candidates) or 'no camera topic'}); choose the eyes with "
            "--stereo-topics LEFT RIGHT"
        )
    return left_eye, right_eyes[0]


@dataclass(frozen=True)
class BagFrame:
    """One message of a camera topic: its RGB pixels, or why it has none."""

    topic: str
    index: int
    """Position of the message in its topic, from 0."""
    log_time: int
    header: Any | None
    """None when the message does not even decode as its type."""
    rgb: np.ndarray | None
    error: str | None = None

    @property
    def stamp_ns(self) -> int | None:
        return None if self.header is None else stamp_ns(self.header)


def read_frames(
    bag: BagReader, topics: str | Sequence[str], max_pixels: int = 0
) -> Iterator[BagFrame]:
    """Every message of the camera topics in log-time order, decoded to RGB where it can be:
    a message that does not decode, has an unknown encoding, too little data, no pixels or a
    corrupt JPEG comes with ``error`` set instead of pixels. Each topic must hold at least
    one message; a bag that cannot be read raises BagError."""
    topics = [topics] if isinstance(topics, str) else list(topics)
    for topic in topics:
        bag.require(topic, *FRAME_TYPES)
    counts = dict.fromkeys(topics, 0)
    compressed = typestore().types[COMPRESSED_IMAGE]
    for raw in bag.messages(topics):
        index = counts[raw.topic]
        counts[raw.topic] += 1
        try:
            message = raw.decode()
        except Exception as exc:  # the CDR deserializer raises whatever the bytes provoke
            reason = f"message does not decode as {raw.msgtype}: {exc or type(exc).__name__}"
            yield BagFrame(raw.topic, index, raw.log_time, None, None, reason)
            continue
        try:
            if isinstance(message, compressed):
                rgb = compressed_to_numpy(message, max_pixels=max_pixels)
            else:
                # A copy: the view into the bag's read-only buffer cannot back a tensor.
                rgb = np.array(image_to_rgb8(message, max_pixels))
        except ImageConversionError as exc:
            yield BagFrame(raw.topic, index, raw.log_time, message.header, None, str(exc))
            continue
        yield BagFrame(raw.topic, index, raw.log_time, message.header, rgb)
    for topic, count in counts.items():
        if count == 0:
            raise BagError(f"topic {topic!r} of bag {str(bag.path)!r} holds no frames")


def decoded_frames(
    bag: BagReader, topics: str | Sequence[str]
) -> Iterator[tuple[str, int, object, np.ndarray]]:
    """(topic, log time, header, RGB pixels) of every frame of the topics in log-time order;
    each topic must hold at least one frame, and a frame that cannot be decoded raises
    BagError."""
    for frame in read_frames(bag, topics):
        if frame.error is not None or frame.rgb is None:
            raise BagError(
                f"topic {frame.topic!r} of bag {str(bag.path)!r}: bad frame at "
                f"{frame.log_time}: {frame.error}"
            )
        yield frame.topic, frame.log_time, frame.header, frame.rgb
