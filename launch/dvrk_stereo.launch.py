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
    export FASTDDS_DEFAULT_PROFILES_FILE=$profile    # Kilted (Fast DDS 3)
    export FASTRTPS_DEFAULT_PROFILES_FILE=$profile   # Humble, Jazzy (Fast DDS 2)
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import OpaqueFunction

from endoarss_ros.ros.launch_support import (
    PACKAGE,
    LaunchArgumentError,
    argument_table,
    declare_arguments,
    perception_node,
)
from launch import LaunchDescription

ARGUMENTS = argument_table(
    os.path.join(get_package_share_directory(PACKAGE), "config", "dvrk.yaml"),
    {
        "rig_name": ("jhu_daVinci", "dVRK stereo rig name (dvrk_video stereo_rig_name)"),
        "source": ("dvrk_video", "dvrk_video (/<rig>/left/image_raw) or stereo_source"),
        "layout": (
            "separate",
            "separate (one topic per eye) or side_by_side (one left|right frame)",
        ),
        "side_by_side_topic": (
            "",
            "the left|right frame topic; required with layout:=side_by_side",
        ),
    },
)

SOURCES = {
    "dvrk_video": "/{rig}/{eye}/image_raw",
    "stereo_source": "/stereo_source/{eye}/image_raw",
}


def _eye_remappings(value) -> tuple[str, list[tuple[str, str]]]:
    if value["layout"] == "side_by_side":
        topic = value["side_by_side_topic"]
        if not topic:
            raise LaunchArgumentError(
                "layout:=side_by_side needs side_by_side_topic:=<left|right topic>"
            )
        return "side_by_side", [
            ("stereo/image", topic),
            ("stereo/image/compressed", f"{topic}/compressed"),
        ]
    if value["layout"] != "separate":
        raise LaunchArgumentError(
            f"launch argument layout must be separate or side_by_side, got {value['layout']!r}"
        )
    if value["source"] not in SOURCES:
        raise LaunchArgumentError(
            f"launch argument source must be one of {', '.join(SOURCES)}, got {value['source']!r}"
        )
    remappings = []
    for eye in ("left", "right"):
        topic = SOURCES[value["source"]].format(rig=value["rig_name"], eye=eye)
        remappings += [(f"{eye}/image", topic), (f"{eye}/image/compressed", f"{topic}/compressed")]
    return "stereo", remappings


def _perception_node(context) -> list:
    value = context.launch_configurations
    input_mode, remappings = _eye_remappings(value)
    return perception_node(value, remappings=remappings, parameters={"input_mode": input_mode})


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [*declare_arguments(ARGUMENTS), OpaqueFunction(function=_perception_node)]
    )
