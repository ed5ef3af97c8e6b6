"""What every bag tool agrees on: the typestore with this package's messages, QoS profiles,
default topic names and the error type that names the bag and topic."""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path
from typing import Any, Final

from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

IMAGE: Final = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE: Final = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO: Final = "sensor_msgs/msg/CameraInfo"
ACTIVITY: Final = "endoarss_ros/msg/SurgicalActivity"
LABEL_MAP: Final = "endoarss_ros/msg/LabelMap"
TRUST: Final = "endoarss_ros/msg/FrameTrust"
CLOCK: Final = "rosgraph_msgs/msg/Clock"
FRAME_TYPES: Final = (IMAGE, COMPRESSED_IMAGE)

GROUND_TRUTH_ACTIVITY: Final = "/ground_truth/activity"
GROUND_TRUTH_MASK: Final = "/ground_truth/mask"
GROUND_TRUTH_LABELS: Final = "/ground_truth/labels"

_CUSTOM_MESSAGES: Final = ("SurgicalActivity", "LabelMap", "FrameTrust")
_DISTRO_STORES: Final = {
    "humble": Stores.ROS2_HUMBLE,
    "jazzy": Stores.ROS2_JAZZY,
    "kilted": Stores.ROS2_KILTED,
}


class BagError(RuntimeError):
    """A bag that cannot be used; the message names the bag and, where it applies, the topic."""


def message_folder() -> Path:
    """The installed .msg files of this package (colcon installs them under share/)."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        folder = Path(get_package_share_directory("endoarss_ros")) / "msg"
    except PackageNotFoundError as exc:
        raise BagError(
            "package endoarss_ros is not installed in the ROS environment (its message "
            "definitions are needed to read and write bags); build it and source install/"
        ) from exc
    return folder


@cache
def typestore() -> Any:
    """Standard types of the sourced distribution (Kilted when none) plus this package's
    messages, parsed from the installed .msg text so bags carry the exact definitions."""
    store = get_typestore(_DISTRO_STORES.get(os.environ.get("ROS_DISTRO", ""), Stores.ROS2_KILTED))
    folder = message_folder()
    types: dict[str, Any] = {}
    for name in _CUSTOM_MESSAGES:
        path = folder / f"{name}.msg"
        if not path.is_file():
            raise BagError(f"message definition {path} is missing; rebuild endoarss_ros")
        types.update(get_types_from_msg(path.read_text(), f"endoarss_ros/msg/{name}"))
    store.register(types)
    return store


_MESSAGE_TYPE: Final = re.compile(r"[a-z][a-z0-9_]*/msg/[A-Z][A-Za-z0-9]*")
"""``package/msg/Name`` as ROS 2 spells message types (REP 144 package names)."""


def check_message_type(msgtype: object) -> str:
    """``msgtype`` if it is a message type the tools know, else a one-line :class:`BagError`.

    A type name read from a bag (or the ROS graph) is data: the rclpy side turns a name into a
    Python import, so only the types of the typestore (the standard ROS 2 messages of the
    distribution and this package's own) are ever resolved. Anything else, well-formed or not,
    is refused before any module is imported."""
    shown = repr(msgtype)[:120]
    if not isinstance(msgtype, str) or not _MESSAGE_TYPE.fullmatch(msgtype):
        raise BagError(
            f"message type {shown} is not a ROS 2 message type name (package/msg/Name); "
            "refused without loading anything"
        )
    known = typestore().fielddefs
    if msgtype not in known:
        package = msgtype.split("/", 1)[0]
        where = (
            f"package {package} has no such message in the typestore"
            if any(name.startswith(package + "/") for name in known)
            else f"package {package} is not one this tool knows"
        )
        raise BagError(
            f"message type {shown} is not known ({where}; known: the standard ROS 2 messages "
            "and endoarss_ros); refused without loading anything"
        )
    return msgtype


def _qos(reliability: QosReliability, durability: QosDurability, depth: int) -> Qos:
    zero = QosTime(0, 0)
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=depth,
        reliability=reliability,
        durability=durability,
        deadline=zero,
        lifespan=zero,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=zero,
        avoid_ros_namespace_conventions=False,
    )


def stream_qos(reliable: bool, depth: int = 10) -> Qos:
    """Offered QoS of a volatile stream (camera, activity, mask)."""
    reliability = QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT
    return _qos(reliability, QosDurability.VOLATILE, depth)


def latched_qos() -> Qos:
    """Offered QoS of a label map: reliable and transient local, as the node publishes it."""
    return _qos(QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, 1)


def stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def time_message(ns: int) -> Any:
    time_type = typestore().types["builtin_interfaces/msg/Time"]
    return time_type(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def header_message(ns: int, frame_id: str) -> Any:
    header_type = typestore().types["std_msgs/msg/Header"]
    return header_type(stamp=time_message(ns), frame_id=frame_id)
