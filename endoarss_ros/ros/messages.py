"""The node's output messages, built from Predictor results: one place for the field mapping."""

from __future__ import annotations

import array
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from endoarss_ros.image_conversion import numpy_to_image
from endoarss_ros.inference.smoothing import SmoothedActivity
from endoarss_ros.msg import FrameTrust, LabelMap, SurgicalActivity
from endoarss_ros.trust.assessment import message_fields

if TYPE_CHECKING:
    from endoarss_ros.inference import ModelInfo
    from endoarss_ros.inference.pipeline import FrameResult


def label_map_message(info: ModelInfo, stamp: Time) -> LabelMap:
    height, width = info.input_size
    return LabelMap(
        header=Header(stamp=stamp, frame_id=""),
        activity_names=list(info.activity_names),
        segmentation_names=list(info.segmentation_names),
        segmentation_colors=array.array(
            "B", [channel for color in info.segmentation_colors for channel in color]
        ),
        model_name=info.name,
        model_hash=info.checkpoint_hash,
        input_height=height,
        input_width=width,
    )


def activity_message(
    header: Header, activity: SmoothedActivity, names: Sequence[str]
) -> SurgicalActivity:
    return SurgicalActivity(
        header=header,
        class_id=activity.class_id,
        label=names[activity.class_id],
        confidence=activity.confidence,
        probabilities=array.array("f", np.asarray(activity.probabilities, dtype=np.float32)),
        raw_class_id=activity.raw_class_id,
        raw_confidence=activity.raw_confidence,
    )


def mask_message(mask: np.ndarray, header: Header) -> Image:
    """mono8 class ids (255 = unlabeled) with the source frame's header."""
    return numpy_to_image(mask, "mono8", header)


def overlay_message(bgr: np.ndarray, header: Header) -> Image:
    return numpy_to_image(bgr, "bgr8", header)


def trust_message(header: Header, result: FrameResult) -> FrameTrust:
    fields = message_fields(result.trust, result.trust_latched)
    for name in ("reason_values", "reason_thresholds", "check_values"):
        fields[name] = array.array("f", fields[name])
    fields["reason_levels"] = array.array("B", fields["reason_levels"])
    return FrameTrust(header=header, **fields)
