"""Command lines of the package's executables that have options of their own besides ROS's.

``ros2 run``, launch files (``Node``) and users append ROS arguments (``--ros-args -r ...
-p ... --log-level ...``) to any node executable; argparse would refuse them. They are taken
apart here: the executable's own options go to its parser, the whole command line to
``rclpy.init``, which reads only the ROS arguments.
"""

from __future__ import annotations

from collections.abc import Sequence


def split_ros_arguments(prog: str, argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``argv`` (without the program name) as (own options, ``rclpy.init`` arguments).

    Invalid ROS arguments (``--ros-args -r nonsense``) raise rclpy's error naming them.
    """
    from rclpy.utilities import remove_ros_args

    command_line = [prog, *argv]
    return remove_ros_args(command_line)[1:], command_line
