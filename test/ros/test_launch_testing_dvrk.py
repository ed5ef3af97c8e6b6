"""dvrk_stereo.launch.py started for real by launch_testing, next to a stereo camera process
publishing on the dVRK video pipeline's topics (/<rig>/{left,right}/image_raw, the eyes a
few milliseconds apart): every pair comes back as one activity with the left eye's header and
one mask per eye with that eye's header; the node exits cleanly when the launch ends."""

from __future__ import annotations

import os
import tempfile
import time
import unittest
from pathlib import Path

import pytest

pytest.importorskip(
    "launch_ros",
    reason="launch_ros is missing: source a ROS 2 distribution or run make setup with the ROS 2 "
    "tools folder (docs/development.md, 'Without the ROS 2 tools')",
)
pytest.importorskip("launch_testing", reason="launch_testing comes with launch_ros")

import cv2
import launch_testing.actions
import launch_testing.asserts
import numpy as np
import rclpy
from ament_index_python.packages import get_package_share_directory
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch_ros.actions import Node

import launch

NAMESPACE = "dvrk_launch_test"
RIG = "test_rig"


@pytest.mark.launch_test
def generate_test_description():
    from endoarss_ros.inference import write_random_checkpoint

    folder = Path(tempfile.mkdtemp())
    checkpoint = write_random_checkpoint(folder / "tiny.safetensors")
    frames = folder / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
        cv2.imwrite(str(frames / f"{index:03d}.png"), image)
    launch_file = os.path.join(
        get_package_share_directory("endoarss_ros"), "launch", "dvrk_stereo.launch.py"
    )
    arguments = {
        "checkpoint": str(checkpoint),
        "rig_name": RIG,
        "namespace": NAMESPACE,
        "device": "cpu",
    }
    camera = Node(
        package="endoarss_ros",
        executable="frame_publisher",
        name="stereo_camera",
        arguments=[
            "--images",
            str(frames),
            "--layout",
            "stereo",
            "--left-topic",
            f"/{RIG}/left/image_raw",
            "--right-topic",
            f"/{RIG}/right/image_raw",
            "--rate",
            "10",
            "--right-delay-ms",
            "3",
        ],
        output="screen",
    )
    return launch.LaunchDescription(
        [
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(launch_file), launch_arguments=arguments.items()
            ),
            camera,
            launch_testing.actions.ReadyToTest(),
        ]
    )


class TestDvrkStereoLaunch(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        rclpy.init()
        cls.node = rclpy.create_node("dvrk_launch_test_peer")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.node.destroy_node()
        rclpy.shutdown()

    def test_each_pair_gives_one_activity_and_a_mask_per_eye(self) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from endoarss_ros.msg import SurgicalActivity

        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        activities: list = []
        masks: dict[str, list] = {"left": [], "right": []}
        self.node.create_subscription(
            SurgicalActivity, f"/{NAMESPACE}/activity", activities.append, reliable
        )
        for eye, inbox in masks.items():
            self.node.create_subscription(
                Image, f"/{NAMESPACE}/{eye}/segmentation/mask", inbox.append, reliable
            )
        deadline = time.monotonic() + 120.0
        while min(len(activities), len(masks["left"]), len(masks["right"])) < 3:
            self.assertLess(time.monotonic(), deadline, "the launched stereo node never answered")
            rclpy.spin_once(self.node, timeout_sec=0.2)
        left_stamps = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in masks["left"]}
        right_stamps = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in masks["right"]}
        self.assertTrue(left_stamps.isdisjoint(right_stamps), "each eye keeps its own stamp")
        for activity in activities[:2]:
            stamp = (activity.header.stamp.sec, activity.header.stamp.nanosec)
            self.assertIn(stamp, left_stamps, "the activity of a pair carries the left header")
        mask = masks["left"][0]
        self.assertEqual((mask.height, mask.width, mask.encoding), (120, 160, "mono8"))


@launch_testing.post_shutdown_test()
class TestDvrkStereoLaunchShutdown(unittest.TestCase):
    def test_every_process_exits_cleanly(self, proc_info) -> None:
        launch_testing.asserts.assertExitCodes(proc_info)
