"""perception.launch.py started for real by launch_testing: fed a frame, it answers with
an activity and a mask stamped like the frame, latches its label map, reports on
/diagnostics, and exits cleanly when the launch ends.

launch_testing's pytest plugin runs this module (it collects ``generate_test_description``);
launch_ros and launch_testing come with a ROS 2 distribution or with `make setup`'s ROS 2
tools, and the module is skipped with that reason where neither is installed.
"""

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
pytest.importorskip("launch_testing", reason="launch_testing comes with a ROS 2 distribution")

import launch_testing.actions
import launch_testing.asserts
import numpy as np
import rclpy
from ament_index_python.packages import get_package_share_directory
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource

import launch

NAMESPACE = "launch_test"
CAMERA_TOPIC = "/launch_test_camera/image_raw"


@pytest.mark.launch_test
def generate_test_description():
    from endoarss_ros.inference import write_random_checkpoint

    checkpoint = write_random_checkpoint(Path(tempfile.mkdtemp()) / "tiny.safetensors")
    launch_file = os.path.join(
        get_package_share_directory("endoarss_ros"), "launch", "perception.launch.py"
    )
    arguments = {
        "checkpoint": str(checkpoint),
        "image_topic": CAMERA_TOPIC,
        "namespace": NAMESPACE,
        "device": "cpu",
    }
    return launch.LaunchDescription(
        [
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(launch_file), launch_arguments=arguments.items()
            ),
            launch_testing.actions.ReadyToTest(),
        ]
    )


class TestPerceptionLaunch(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        rclpy.init()
        cls.node = rclpy.create_node("launch_test_peer")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.node.destroy_node()
        rclpy.shutdown()

    def test_a_camera_frame_comes_back_as_activity_and_mask(self) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from endoarss_ros.image_conversion import numpy_to_image
        from endoarss_ros.msg import SurgicalActivity

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        activities, masks = [], []
        self.node.create_subscription(
            SurgicalActivity, f"/{NAMESPACE}/activity", activities.append, reliable
        )
        self.node.create_subscription(
            Image, f"/{NAMESPACE}/segmentation/mask", masks.append, reliable
        )
        camera = self.node.create_publisher(Image, CAMERA_TOPIC, reliable)
        frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        message = numpy_to_image(frame, "rgb8")
        message.header.stamp = self.node.get_clock().now().to_msg()
        message.header.frame_id = "camera_optical"
        deadline = time.monotonic() + 120.0
        while not any(m.header.stamp == message.header.stamp for m in masks):
            self.assertLess(time.monotonic(), deadline, "the launched node never answered")
            camera.publish(message)
            rclpy.spin_once(self.node, timeout_sec=0.5)
        mask = next(m for m in masks if m.header.stamp == message.header.stamp)
        self.assertEqual((mask.height, mask.width, mask.encoding), (480, 640, "mono8"))
        self.assertEqual(mask.header.frame_id, "camera_optical")
        end = time.monotonic() + 5.0
        while not activities and time.monotonic() < end:
            rclpy.spin_once(self.node, timeout_sec=0.1)
        self.assertTrue(any(a.header.stamp == message.header.stamp for a in activities))

    def test_the_label_map_is_latched_and_diagnostics_are_published(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        from endoarss_ros.msg import LabelMap
        from endoarss_ros.ros import qos

        labels, statuses = [], []
        # Subscribed after the node published it: only a latched map can arrive.
        self.node.create_subscription(
            LabelMap, f"/{NAMESPACE}/labels", labels.append, qos.latched_qos()
        )
        self.node.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            lambda array: statuses.extend(
                s for s in array.status if s.name == f"/{NAMESPACE}/perception: perception"
            ),
            10,
        )
        deadline = time.monotonic() + 30.0
        while not (labels and statuses):
            self.assertLess(time.monotonic(), deadline, "no label map or no diagnostics")
            rclpy.spin_once(self.node, timeout_sec=0.2)
        self.assertEqual(labels[0].model_name, "vit_tiny_patch14")
        self.assertGreater(len(labels[0].activity_names), 1)
        keys = {kv.key for kv in statuses[-1].values}
        self.assertTrue({"frames_received", "latency_p95_ms", "model_hash"} <= keys)


@launch_testing.post_shutdown_test()
class TestPerceptionLaunchShutdown(unittest.TestCase):
    def test_the_node_exits_cleanly(self, proc_info) -> None:
        launch_testing.asserts.assertExitCodes(proc_info)
