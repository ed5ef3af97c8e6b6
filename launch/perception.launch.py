r"""Start the EndoARSS perception node on one camera.

    ros2 launch endoarss_ros perception.launch.py checkpoint:=/path/model.safetensors \
        image_topic:=/camera/image_raw [input_transport:=compressed] [device:=cuda:0]

Arguments override the parameter file (config/perception.yaml by default); the ones that set
a node parameter keep the file's value when left empty. Everything is checked with the node's
own validation before the node starts, so a typo or a missing checkpoint stops the launch with
one line naming it. ``ros2 launch endoarss_ros perception.launch.py --show-args`` lists them.

Large images: the node selects this package's Fast DDS large-image profile for itself. The
process that publishes the camera images must use it too, or best-effort images above about
0.5 MB are lost on the way (README, "Transport"):

    profile=$(ros2 pkg prefix endoarss_ros)/share/endoarss_ros/config/fastdds_large_images.xml
    export FASTDDS_DEFAULT_PROFILES_FILE=$profile    # Kilted (Fast DDS 3)
    export FASTRTPS_DEFAULT_PROFILES_FILE=$profile   # Humble, Jazzy (Fast DDS 2)
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import OpaqueFunction

from endoarss_ros.ros.launch_support import (
    PACKAGE,
    argument_table,
    declare_arguments,
    perception_node,
)
from launch import LaunchDescription

ARGUMENTS = argument_table(
    os.path.join(get_package_share_directory(PACKAGE), "config", "perception.yaml"),
    {
        "image_topic": (
            "/camera/image_raw",
            "camera topic; compressed input reads <topic>/compressed",
        ),
    },
)


def _perception_node(context) -> list:
    value = context.launch_configurations
    topic = value["image_topic"]
    return perception_node(
        value,
        remappings=[
            ("image", topic),
            ("image/compressed", f"{topic}/compressed"),
            ("stereo/image", topic),
            ("stereo/image/compressed", f"{topic}/compressed"),
        ],
    )


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [*declare_arguments(ARGUMENTS), OpaqueFunction(function=_perception_node)]
    )
