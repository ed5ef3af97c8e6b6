r"""Start the EndoARSS perception node on a da Vinci Research Kit stereo endoscope.

    ros2 launch endoarss_ros dvrk_stereo.launch.py checkpoint:=/path/model.safetensors \
        [rig_name:=jhu_daVinci] [source:=dvrk_video|stereo_source] [device:=cuda:0]

Topics it reads, by ``source``:

- ``dvrk_video`` (``gscam_decklink_stereo.launch.py stereo_rig_name:=<rig>``):
  ``/<rig>/left/image_raw`` and ``/<rig>/right/image_raw``;
- ``stereo_source`` (the dvrk_data gscam bridge of the newer video stack, one per eye):
  ``/stereo_source/left/image_raw`` and ``/stereo_source/right/image_raw``;
- ``layout:=side_by_side`` reads one left|right frame from ``side_by_side_topic`` instead.

``input_transport:=compressed`` reads ``<topic>/compressed`` (gscam ``image_encoding:=jpeg``).
Outputs go to ``/<namespace>/activity``, ``/<namespace>/{left,right}/segmentation/mask``, ...

Large images: start the gscam processes with this package's Fast DDS profile, or best-effort
delivery of the (multi-megabyte) eye images fails (README, "Transport"):

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
    "rig_name": ("jhu_daVinci", "dVRK stereo rig name (dvrk_video stereo_rig_name)"),
    "source": ("dvrk_video", "dvrk_video (/<rig>/left/image_raw) or stereo_source"),
    "layout": ("separate", "separate (one topic per eye) or side_by_side (one left|right frame)"),
    "side_by_side_topic": ("", "the left|right frame topic; required with layout:=side_by_side"),
    "input_transport": ("raw", "raw (sensor_msgs/Image) or compressed (CompressedImage)"),
    "namespace": ("endoarss", "namespace of the node and its output topics"),
    "params_file": (
        os.path.join(get_package_share_directory(PACKAGE), "config", "dvrk.yaml"),
        "parameter file of the node",
    ),
    "device": ("", "auto | cpu | cuda | cuda:N; empty keeps the parameter file's"),
    "precision": ("", "auto | fp32 | fp16 | bf16; empty keeps the parameter file's"),
    "use_sim_time": ("false", "use /clock (bag replay)"),
    "log_level": ("info", "debug | info | warn | error"),
}

SOURCES = {
    "dvrk_video": "/{rig}/{eye}/image_raw",
    "stereo_source": "/stereo_source/{eye}/image_raw",
}


def _eye_remappings(value) -> tuple[str, list[tuple[str, str]]]:
    if value["layout"] == "side_by_side":
        topic = value["side_by_side_topic"]
        if not topic:
            raise RuntimeError("layout:=side_by_side needs side_by_side_topic:=<left|right topic>")
        return "side_by_side", [
            ("stereo/image", topic),
            ("stereo/image/compressed", f"{topic}/compressed"),
        ]
    if value["layout"] != "separate":
        raise RuntimeError(f"layout must be separate or side_by_side, got {value['layout']!r}")
    if value["source"] not in SOURCES:
        raise RuntimeError(f"source must be one of {', '.join(SOURCES)}, got {value['source']!r}")
    remappings = []
    for eye in ("left", "right"):
        topic = SOURCES[value["source"]].format(rig=value["rig_name"], eye=eye)
        remappings += [(f"{eye}/image", topic), (f"{eye}/image/compressed", f"{topic}/compressed")]
    return "stereo", remappings


def _perception_node(context) -> list:
    from endoarss_ros.ros.parameters import as_dict, parse_parameters, validate_parameter_file

    value = context.launch_configurations
    params_file = value["params_file"]
    input_mode, remappings = _eye_remappings(value)
    overrides = {
        "checkpoint": value["checkpoint"],
        "input_mode": input_mode,
        "input_transport": value["input_transport"],
        "use_sim_time": value["use_sim_time"].lower() == "true",
    }
    overrides.update({name: value[name] for name in ("device", "precision") if value[name]})
    parse_parameters({**as_dict(validate_parameter_file(params_file)), **overrides})
    return [
        Node(
            package=PACKAGE,
            executable="perception_node",
            name="perception",
            namespace=value["namespace"],
            parameters=[params_file, overrides],
            remappings=remappings,
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
