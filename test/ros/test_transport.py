"""The large-image Fast DDS profile is applied unless the user configured the middleware, and
with it best-effort camera-sized frames cross processes (test/ros/conftest.py applies it to
this process, whose environment the relay process inherits)."""

from __future__ import annotations

import os
import threading
import time
import xml.etree.ElementTree as ElementTree

import pytest
from ros_harness import TEST_NODES, wait_until

from endoarss_ros.ros.transport import (
    PROFILE_VARIABLES,
    configure_large_image_transport,
    large_image_profile,
    profile_variables,
    rmw_fastrtps_major,
)


def test_the_installed_profile_exists_and_enlarges_shared_memory():
    profile = large_image_profile()
    assert profile is not None, "config/fastdds_large_images.xml is not installed"
    ns = {"dds": "http://www.eprosima.com"}
    root = ElementTree.parse(profile).getroot()
    segment = root.find(".//dds:transport_descriptor[dds:type='SHM']/dds:segment_size", ns)
    assert segment is not None and int(segment.text) >= 16 * 2**20
    participant = root.find(".//dds:participant", ns)
    assert participant is not None and participant.get("is_default_profile") == "true"
    kinds = {t.text for t in root.findall(".//dds:transport_descriptor/dds:type", ns)}
    assert kinds == {"SHM", "UDPv4"}, "must keep the default transport kinds to interoperate"


def test_profile_is_selected_for_fast_dds_by_default():
    environ: dict[str, str] = {}
    note = configure_large_image_transport(environ)
    # Only the name this Fast DDS reads: Kilted's warns about the other one.
    (variable,) = profile_variables(rmw_fastrtps_major())
    assert environ == {variable: str(large_image_profile())}
    assert "large-image profile" in note


@pytest.mark.parametrize(
    ("rmw_major", "variables"),
    [
        (6, ("FASTRTPS_DEFAULT_PROFILES_FILE",)),  # Humble: Fast DDS 2.6
        (8, ("FASTRTPS_DEFAULT_PROFILES_FILE",)),  # Jazzy: Fast DDS 2.14
        (9, ("FASTDDS_DEFAULT_PROFILES_FILE",)),  # Kilted: Fast DDS 3
        (None, PROFILE_VARIABLES),  # unknown: both
    ],
)
def test_the_profile_variable_follows_the_fast_dds_version(rmw_major, variables):
    assert profile_variables(rmw_major) == variables


def test_the_installed_rmw_version_is_read():
    major = rmw_fastrtps_major()
    assert major is not None and major >= 6


@pytest.mark.parametrize(
    "variable",
    [*PROFILE_VARIABLES, "FASTDDS_BUILTIN_TRANSPORTS"],
)
def test_a_user_configuration_is_respected(variable):
    environ = {variable: "mine"}
    note = configure_large_image_transport(environ)
    assert environ == {variable: "mine"}
    assert variable in note


def test_other_middlewares_are_left_alone():
    environ = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}
    assert "rmw_cyclonedds_cpp" in configure_large_image_transport(environ)
    assert not set(PROFILE_VARIABLES) & set(environ)


@pytest.mark.ros
def test_best_effort_camera_frames_cross_processes_with_the_profile(ros_node, start_node):
    """640x480 rgb8 (0.9 MB) is above Fast DDS's default 512 KiB shared-memory segment: it only
    arrives best effort when both processes' Fast DDS read the profile (Jazzy's Fast DDS 2
    ignores FASTDDS_DEFAULT_PROFILES_FILE and lost 25-28 of 30 before it got the old name)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    assert all(os.environ.get(v) for v in profile_variables(rmw_fastrtps_major()))
    relay = start_node(
        "relay",
        TEST_NODES / "relay_node.py",
        "--best-effort",
        "--relay",
        "sensor_msgs/msg/Image",
        "/large/in",
        "/large/out",
    )
    relay.wait_for_output("^ready$")
    best_effort = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
    received: set[int] = set()
    lock = threading.Lock()

    def on_image(message) -> None:
        with lock:
            received.add(message.header.stamp.sec)

    publisher = ros_node.create_publisher(Image, "/large/in", best_effort)
    ros_node.create_subscription(Image, "/large/out", on_image, best_effort)
    wait_until(
        lambda: publisher.get_subscription_count() >= 1 and ros_node.count_publishers("/large/out"),
        30,
        "discovery of the relay process",
    )
    time.sleep(0.5)
    frame = Image(height=480, width=640, encoding="rgb8", step=640 * 3)
    frame.data = bytes(range(256)) * (640 * 480 * 3 // 256)
    sent = 20
    for index in range(sent):
        frame.header.stamp.sec = index + 1
        publisher.publish(frame)
        time.sleep(0.1)
    time.sleep(1.0)
    with lock:
        delivered = len(received)
    # Two best-effort hops on a loaded 2-core machine: allow a few losses, not the default's.
    assert delivered >= sent - 3, f"{delivered} of {sent} frames came back; relay: {relay.output}"
