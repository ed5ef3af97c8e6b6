"""QoS profiles of the perception node, and the explanation of a QoS mismatch.

Inputs follow REP-2003's consumer rule: best effort, keep last 1. A best-effort subscription
matches reliable and best-effort publishers alike, and depth 1 means the freshest frame. A
reliable subscription does not match a best-effort camera; that silent mismatch is the most
reported failure of ROS perception nodes (yolo_ros #15, #17, #25, #27, #65, #82), so the node
names the offending publisher and policy in its log instead of staying quiet.

Outputs are reliable so that every subscriber can match and a recorder misses nothing; the
label map is also transient local, so a subscriber that joins late still receives it.
"""

from __future__ import annotations

from typing import Final

from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSCompatibility,
    QoSProfile,
    ReliabilityPolicy,
    qos_check_compatible,
    qos_profile_sensor_data,
    qos_profile_system_default,
)

ACTIVITY_DEPTH: Final = 10


def input_qos(preset: str, depth: int) -> QoSProfile:
    """``sensor_data`` (best effort), ``reliable``, or ``system_default``, keep last ``depth``."""
    base = {
        "sensor_data": qos_profile_sensor_data,
        "reliable": QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE),
        "system_default": qos_profile_system_default,
    }[preset]
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=base.reliability,
        durability=base.durability,
    )


def output_qos(depth: int = 1) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def latched_qos() -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def describe(profile: QoSProfile) -> str:
    return (
        f"{profile.reliability.name.lower()}, {profile.durability.name.lower()}, "
        f"{profile.history.name.lower()} {profile.depth}"
    )


def incompatible_publishers(node: Node, topic: str, subscription: QoSProfile) -> list[str]:
    """One line per publisher of ``topic`` whose offered QoS cannot match ``subscription``."""
    problems = []
    for info in node.get_publishers_info_by_topic(topic):
        compatibility, reason = qos_check_compatible(info.qos_profile, subscription)
        if compatibility == QoSCompatibility.ERROR:
            problems.append(
                f"publisher {info.node_namespace.rstrip('/')}/{info.node_name} offers "
                f"{describe(info.qos_profile)}: {reason.strip()}"
            )
    return problems


def qos_mismatch_hint(topic: str, subscription: QoSProfile, policy: str) -> str:
    """The log line for an incompatible publisher, with what to change on either side."""
    fix = (
        "set input_qos to sensor_data (best effort matches every publisher)"
        if subscription.reliability == ReliabilityPolicy.RELIABLE
        else "make the publisher's QoS compatible"
    )
    return (
        f"a publisher on {topic} offers QoS incompatible with this node's subscription "
        f"({describe(subscription)}); incompatible policy: {policy}. No frames will arrive "
        f"from it: {fix}."
    )
