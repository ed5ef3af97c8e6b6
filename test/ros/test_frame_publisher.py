"""The stand-in camera publishes what it was given, in every layout and transport, with the
stamps it promises."""

from __future__ import annotations

import numpy as np
import pytest
from perception_harness import Inbox, scene_frames, start_frame_publisher, write_frames
from ros_harness import wait_until

from endoarss_ros.ros.arguments import split_ros_arguments
from endoarss_ros.ros.frame_publisher import CameraSettings, FramePublisher, read_frames

pytestmark = pytest.mark.ros


def receive(ros_peer, settings: CameraSettings, frames, message_type) -> list[Inbox]:
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    inboxes = []
    for topic in settings.topics():
        inbox = Inbox()
        ros_peer.create_subscription(
            message_type, topic, inbox, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        )
        inboxes.append(inbox)
    camera = FramePublisher(ros_peer, frames, settings)
    wait_until(lambda: camera.subscriber_count() >= 1, 10, "the subscriptions")
    for _ in range(3):
        camera.publish_next()
    for inbox in inboxes:
        wait_until(lambda inbox=inbox: len(inbox.messages) == 3, 10, "three frames")
    return inboxes


def test_stereo_eyes_are_stamped_apart_with_their_frame_ids(ros_peer):
    from sensor_msgs.msg import Image

    left, right = scene_frames(48, 64, 2, seed=1)
    settings = CameraSettings(
        layout="stereo",
        rate_hz=10.0,
        first_stamp=100.0,
        right_delay_ms=4.0,
        left_topic="/fp_stereo/left/image",
        right_topic="/fp_stereo/right/image",
    )
    left_inbox, right_inbox = receive(ros_peer, settings, [(left, right)], Image)
    for index, (l_msg, r_msg) in enumerate(
        zip(left_inbox.messages, right_inbox.messages, strict=True)
    ):
        left_ns = l_msg.header.stamp.sec * 10**9 + l_msg.header.stamp.nanosec
        right_ns = r_msg.header.stamp.sec * 10**9 + r_msg.header.stamp.nanosec
        assert left_ns == round((100.0 + index / 10.0) * 1e9)
        assert right_ns - left_ns == 4_000_000
        assert (l_msg.header.frame_id, r_msg.header.frame_id) == (
            "camera_optical",
            "camera_right_optical",
        )
    np.testing.assert_array_equal(
        np.frombuffer(right_inbox.messages[0].data, np.uint8).reshape(48, 64, 3), right
    )


def test_side_by_side_compressed_is_one_left_right_frame(ros_peer):
    from sensor_msgs.msg import CompressedImage

    from endoarss_ros.image_conversion import compressed_to_numpy

    left, right = scene_frames(48, 64, 2, seed=2)
    settings = CameraSettings(layout="side_by_side", transport="compressed", topic="/fp_sbs/image")
    assert settings.topics() == ["/fp_sbs/image/compressed"]
    (inbox,) = receive(ros_peer, settings, [(left, right)], CompressedImage)
    decoded = compressed_to_numpy(inbox.messages[0], "rgb8")
    assert decoded.shape == (48, 128, 3)
    # JPEG is lossy: the halves are close to the eyes they came from, not to the other eye.
    assert np.abs(decoded[:, :64].astype(int) - left).mean() < 8
    assert np.abs(decoded[:, 64:].astype(int) - right).mean() < 8


def test_mono_bgr8_from_an_image_folder(ros_peer, tmp_path):
    from perception_harness import write_frames
    from sensor_msgs.msg import Image

    frames = scene_frames(32, 40, 2, seed=3)
    loaded = read_frames(write_frames(tmp_path, frames))
    for original, read in zip(frames, loaded, strict=True):
        np.testing.assert_array_equal(original, read)
    settings = CameraSettings(encoding="bgr8", topic="/fp_mono/image")
    (inbox,) = receive(ros_peer, settings, loaded, Image)
    first = inbox.messages[0]
    assert first.encoding == "bgr8"
    np.testing.assert_array_equal(
        np.frombuffer(first.data, np.uint8).reshape(32, 40, 3), frames[0][:, :, ::-1]
    )


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="layout"):
        CameraSettings(layout="quad")
    with pytest.raises(ValueError, match="rate"):
        CameraSettings(rate_hz=0)
    with pytest.raises(FileNotFoundError, match="no image files"):
        read_frames(tmp_path)


def test_ros_arguments_are_left_to_rclpy():
    own, ros = split_ros_arguments(
        "frame_publisher",
        [
            "--images",
            "d",
            "--ros-args",
            "-r",
            "image:=/x",
            "--log-level",
            "warn",
            "--",
            "--rate",
            "5",
        ],
    )
    assert own == ["--images", "d", "--rate", "5"]
    assert ros[0] == "frame_publisher"
    assert ros[1:] == ["--images", "d", "--ros-args", "-r", "image:=/x", "--log-level", "warn",
                       "--", "--rate", "5"]  # fmt: skip


def test_the_executable_takes_ros_arguments_as_ros2_run_and_launch_give_them(ros_peer, tmp_path):
    """Its own options, then a namespace, a node name, a topic remapping, a parameter and the
    log level: the frames arrive on the remapped topic in the remapped namespace."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    folder = write_frames(tmp_path / "frames", scene_frames(24, 32, 2, seed=4))
    inbox = Inbox()
    ros_peer.create_subscription(
        Image,
        "/fp_remapped/camera/image_raw",
        inbox,
        QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
    )
    camera = start_frame_publisher(
        folder,
        "--rate", "20", "--count", "3", "--first-stamp", "100", "--wait-for-subscribers", "1",
        "--ros-args",
        "-r", "__ns:=/fp_remapped",
        "-r", "__node:=remapped_camera",
        "-r", "image:=camera/image_raw",
        "-p", "use_sim_time:=false",
        "--log-level", "warn",
    )  # fmt: skip
    try:
        wait_until(lambda: camera.returncode is not None, 60, "the camera process to finish")
    finally:
        camera.kill()
    assert camera.returncode == 0, camera.output
    wait_until(lambda: len(inbox.messages) == 3, 10, "three frames on the remapped topic")
    first = inbox.messages[0].header.stamp
    assert (first.sec, first.nanosec) == (100, 0)
    assert (inbox.messages[0].height, inbox.messages[0].width) == (24, 32)
