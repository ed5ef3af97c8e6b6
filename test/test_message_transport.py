"""The package's messages and endoscope-sized images survive a real DDS round trip between
processes, field for field."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from ros_harness import TEST_NODES, wait_until

pytestmark = pytest.mark.ros

RELAY = TEST_NODES / "relay_node.py"


def assert_every_field_equal(sent, received) -> None:
    for field in sent.get_fields_and_field_types():
        expected, actual = getattr(sent, field), getattr(received, field)
        if hasattr(expected, "get_fields_and_field_types"):
            assert_every_field_equal(expected, actual)
        else:
            assert list(np.atleast_1d(actual)) == list(np.atleast_1d(expected)), field


def assert_no_default_field(msg) -> None:
    """A field left at its default could be lost in transit unnoticed."""
    default = type(msg)()
    for field in msg.get_fields_and_field_types():
        value = getattr(msg, field)
        if hasattr(value, "get_fields_and_field_types"):
            assert_no_default_field(value)
        else:
            assert value != getattr(default, field), f"{type(msg).__name__}.{field} is default"


def round_trip(ros_node, start_node, msg_type_name: str, msg, timeout: float = 30.0):
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    relay = start_node("relay", RELAY, "--relay", msg_type_name, "/rt/in", "/rt/out")
    relay.wait_for_output("^ready$")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    received: list = []
    arrived = threading.Event()

    def on_message(message) -> None:
        received.append(message)
        arrived.set()

    publisher = ros_node.create_publisher(type(msg), "/rt/in", qos)
    ros_node.create_subscription(type(msg), "/rt/out", on_message, qos)
    wait_until(
        lambda: publisher.get_subscription_count() >= 1 and ros_node.count_publishers("/rt/out"),
        timeout,
        "discovery of the relay process",
    )
    publisher.publish(msg)
    assert arrived.wait(timeout), f"no relayed message; relay output:\n{relay.output}"
    assert relay.stop() == 0, relay.output
    assert "Traceback" not in relay.output, relay.output
    return received[0]


def stamp(msg, sec: int, nanosec: int, frame_id: str) -> None:
    msg.header.stamp.sec = sec
    msg.header.stamp.nanosec = nanosec
    msg.header.frame_id = frame_id


def test_surgical_activity_round_trip(ros_node, start_node):
    from endoarss_ros.msg import SurgicalActivity

    msg = SurgicalActivity()
    stamp(msg, 1_700_000_000, 123_456_789, "ecm_left_optical")
    msg.class_id = 2
    msg.label = "Submucosal Dissection (ESD) — µ"
    msg.probabilities = [0.0625, 0.1875, 0.75]  # exact in float32
    msg.confidence = 0.75
    msg.raw_class_id = 1
    msg.raw_confidence = 0.5
    assert_no_default_field(msg)

    received = round_trip(ros_node, start_node, "endoarss_ros/msg/SurgicalActivity", msg)
    assert_every_field_equal(msg, received)
    assert received == msg


def test_label_map_round_trip(ros_node, start_node):
    from endoarss_ros.msg import LabelMap

    msg = LabelMap()
    stamp(msg, 12, 34, "none")
    msg.activity_names = ["Marking", "Circumferential Incision", "Submucosal Dissection"]
    msg.segmentation_names = ["background", "Electric Knife", "Mucosal Flaps"]
    msg.segmentation_colors = [0, 0, 0, 255, 0, 0, 0, 200, 90]
    msg.model_name = "vit_base_patch14_dinov2"
    msg.model_hash = "0123456789abcdef"
    msg.input_height = 448
    msg.input_width = 448
    assert_no_default_field(msg)
    assert LabelMap.UNLABELED == 255

    received = round_trip(ros_node, start_node, "endoarss_ros/msg/LabelMap", msg)
    assert_every_field_equal(msg, received)
    assert received == msg


def test_endoscope_image_round_trip(ros_node, start_node):
    from sensor_msgs.msg import Image

    height, width = 1024, 1280
    pixels = np.random.default_rng(7).integers(0, 256, (height, width, 3), dtype=np.uint8)
    msg = Image()
    stamp(msg, 99, 1, "ecm_left_optical")
    msg.height, msg.width, msg.encoding, msg.step = height, width, "rgb8", width * 3
    msg.is_bigendian = 1
    msg.data = pixels.tobytes()

    received = round_trip(ros_node, start_node, "sensor_msgs/msg/Image", msg)
    assert (received.height, received.width, received.step) == (height, width, width * 3)
    assert (received.encoding, received.is_bigendian) == ("rgb8", 1)
    assert received.header == msg.header
    restored = np.frombuffer(received.data, np.uint8).reshape(height, width, 3)
    np.testing.assert_array_equal(restored, pixels)
