r"""Start the EndoARSS perception node on one camera.

    ros2 launch endoarss_ros perception.launch.py checkpoint:=/path/model.safetensors \
        image_topic:=/camera/image_raw [input_transport:=compressed] [device:=cuda:0]

Arguments override the parameter file (config/perception.yaml by default); ``device`` and
``precision`` left empty keep the file's values. The parameters are checked with the node's
own validation before the node starts, so a typo fails here, naming the parameter.

Large images: the node selects this package's Fast DDS large-image profile for itself. The
process that publishes the camera images must use it too, or best-effort images above about
0.5 MB are lost on the way (README, "Transport"):

    profile=$(ros2 pkg prefix endoarss_ros)/share/endoarss_ros/config/fastdds_large_images.xml
    export FASTDDS_DEFAULT_PROFILES_FILE=$profile
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import Node

from launch import LaunchDescription

PACKAGE = "endoarss_ros"

ARGUMENTS = {
    "checkpoint": ("", "EndoARSS checkpoint (.safetensors) to run; required"),
    "image_topic": ("/camera/image_raw", "camera topic; compressed input reads <topic>/compressed"),
    "input_transport": ("raw", "raw (sensor_msgs/Image) or compressed (CompressedImage)"),
    "namespace": ("endoarss", "namespace of the node and its output topics"),
    "params_file": (
        os.path.join(get_package_share_directory(PACKAGE), "config", "perception.yaml"),
        "parameter file of the node",
    ),
    "device": ("", "auto | cpu | cuda | cuda:N; empty keeps the parameter file's"),
    "precision": ("", "auto | fp32 | fp16 | bf16; empty keeps the parameter file's"),
    "use_sim_time": ("false", "use /clock (bag replay)"),
    "log_level": ("info", "debug | info | warn | error"),
}


def _perception_node(context) -> list:
    from endoarss_ros.ros.parameters import as_dict, parse_parameters, validate_parameter_file

    value = context.launch_configurations
    params_file = value["params_file"]
    overrides = {
        "checkpoint": value["checkpoint"],
        "input_transport": value["input_transport"],
        "use_sim_time": value["use_sim_time"].lower() == "true",
    }
    overrides.update({name: value[name] for name in ("device", "precision") if value[name]})
    checked = validate_parameter_file(params_file)
    parse_parameters({**as_dict(checked), **overrides})
    topic = value["image_topic"]
    return [
        Node(
            package=PACKAGE,
            executable="perception_node",
            name="perception",
            namespace=value["namespace"],
            parameters=[params_file, overrides],
            remappings=[
                ("image", topic),
                ("image/compressed", f"{topic}/compressed"),
                ("stereo/image", topic),
                ("stereo/image/compressed", f"{topic}/compressed"),
            ],
            ros_arguments=["--log-level", value["log_level"]],
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument(name, default_value=default, description=description)
            for name, (default, description) in ARGUMENTS.items()
        ]
        + [OpaqueFunction(function=_perception_node)]
    )
