"""rosbags message objects for frames, camera info and results: the bag-side counterpart of
`endoarss_ros.ros.messages`, with the same field mapping but no rclpy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from .schema import header_message, typestore


def image(pixels: np.ndarray, encoding: str, stamp: int, frame_id: str) -> Any:
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    return typestore().types["sensor_msgs/msg/Image"](
        header=header_message(stamp, frame_id),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=pixels.strides[0],
        data=pixels.reshape(-1).view(np.uint8),
    )


def compressed_image(rgb: np.ndarray, stamp: int, frame_id: str, quality: int = 90) -> Any:
    """JPEG with the format string image_transport's compressed plugin writes."""
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ValueError("JPEG encoding failed")
    return typestore().types["sensor_msgs/msg/CompressedImage"](
        header=header_message(stamp, frame_id),
        format="rgb8; jpeg compressed bgr8",
        data=encoded.reshape(-1),
    )


def camera_info(height: int, width: int, stamp: int, frame_id: str, tx: float = 0.0) -> Any:
    """A nominal pinhole (focal length = width, principal point at the centre, no distortion):
    the sources carry no calibration, and consumers such as image_proc need the topic."""
    types = typestore().types
    f, cx, cy = float(width), (width - 1) / 2.0, (height - 1) / 2.0
    return types["sensor_msgs/msg/CameraInfo"](
        header=header_message(stamp, frame_id),
        height=height,
        width=width,
        distortion_model="plumb_bob",
        d=np.zeros(5, dtype=np.float64),
        k=np.array([f, 0, cx, 0, f, cy, 0, 0, 1], dtype=np.float64),
        r=np.eye(3, dtype=np.float64).reshape(-1),
        p=np.array([f, 0, cx, tx * f, 0, f, cy, 0, 0, 0, 1, 0], dtype=np.float64),
        binning_x=0,
        binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        ),
    )


def activity(
    stamp: int,
    frame_id: str,
    names: Sequence[str],
    probabilities: np.ndarray,
    class_id: int,
    raw_class_id: int,
    raw_confidence: float,
) -> Any:
    probabilities = np.asarray(probabilities, dtype=np.float32)
    return typestore().types["endoarss_ros/msg/SurgicalActivity"](
        header=header_message(stamp, frame_id),
        class_id=int(class_id),
        label=names[class_id] if class_id < len(names) else str(class_id),
        confidence=float(probabilities[class_id]) if class_id < probabilities.size else 1.0,
        probabilities=probabilities,
        raw_class_id=int(raw_class_id),
        raw_confidence=float(raw_confidence),
    )


def trust(stamp: int, frame_id: str, fields: dict[str, Any]) -> Any:
    """A FrameTrust from :func:`endoarss_ros.trust.assessment.message_fields`."""
    return typestore().types["endoarss_ros/msg/FrameTrust"](
        header=header_message(stamp, frame_id), **fields
    )


def true_activity(stamp: int, frame_id: str, names: Sequence[str], class_id: int) -> Any:
    """Ground truth as a SurgicalActivity: a one-hot distribution on the true class."""
    one_hot = np.zeros(max(len(names), class_id + 1), dtype=np.float32)
    one_hot[class_id] = 1.0
    return activity(stamp, frame_id, names, one_hot, class_id, class_id, 1.0)


def label_map(
    stamp: int,
    activity_names: Sequence[str],
    segmentation_names: Sequence[str],
    segmentation_colors: Sequence[Sequence[int]],
    model_name: str,
    model_hash: str,
    input_size: tuple[int, int],
) -> Any:
    return typestore().types["endoarss_ros/msg/LabelMap"](
        header=header_message(stamp, ""),
        activity_names=list(activity_names),
        segmentation_names=list(segmentation_names),
        segmentation_colors=np.array(
            [channel for color in segmentation_colors for channel in color], dtype=np.uint8
        ),
        model_name=model_name,
        model_hash=model_hash,
        input_height=input_size[0],
        input_width=input_size[1],
    )
