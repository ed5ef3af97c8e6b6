"""What play and record share on the rclpy side: message classes by type name, QoS between
rclpy and bag metadata, and a context whose shutdown the caller controls."""

from __future__ import annotations

import importlib
import signal
import threading
from typing import Any

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosReliability

from endoarss_ros.bags.schema import BagError, check_message_type, stream_qos


def message_class(msgtype: str) -> type:
    """'sensor_msgs/msg/Image' -> sensor_msgs.msg.Image.

    Only types of the typestore are resolved (:func:`check_message_type`): a type name comes
    from a bag or the graph, and importing whatever module it names would let a bag choose
    the code that runs."""
    package, kind, name = check_message_type(msgtype).split("/")
    try:
        cls = getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise BagError(f"message type {msgtype} is not available in this ROS environment") from exc
    if not isinstance(cls, type) or not hasattr(cls, "_TYPE_SUPPORT"):
        raise BagError(f"{package}.{kind}.{name} is not a ROS 2 message class")
    return cls


def to_rclpy(qos: Qos) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_ALL
        if qos.history == QosHistory.KEEP_ALL
        else HistoryPolicy.KEEP_LAST,
        depth=max(int(qos.depth), 1),
        reliability=(
            ReliabilityPolicy.BEST_EFFORT
            if qos.reliability == QosReliability.BEST_EFFORT
            else ReliabilityPolicy.RELIABLE
        ),
        durability=(
            DurabilityPolicy.TRANSIENT_LOCAL
            if qos.durability == QosDurability.TRANSIENT_LOCAL
            else DurabilityPolicy.VOLATILE
        ),
    )


def from_rclpy(profile: QoSProfile) -> Qos:
    base = stream_qos(profile.reliability != ReliabilityPolicy.BEST_EFFORT, max(profile.depth, 1))
    durability = (
        QosDurability.TRANSIENT_LOCAL
        if profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
        else QosDurability.VOLATILE
    )
    return base._replace(durability=durability)


class StopFlag:
    """Set by SIGINT / SIGTERM while in use, so the tools finish their bag cleanly instead of
    dying; the previous handlers come back on exit."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._stop)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _stop(self, *_: Any) -> None:
        self.event.set()

    def __bool__(self) -> bool:
        return self.event.is_set()
