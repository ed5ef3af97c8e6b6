"""What the package's launch files share: their common arguments and the perception node
action, checked with the node's own validation before the node starts.

Arguments that set a node parameter take their description from the parameter table
(:mod:`endoarss_ros.ros.parameters`); empty means "keep the parameter file's value". A bad
value or a missing checkpoint stops the launch with one line naming it, before any process
starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from .parameters import (
    NODE_NAME,
    SPECS,
    ParameterError,
    parse_parameters,
    type_name,
    validate_parameter_file,
)

PACKAGE: Final = "endoarss_ros"
EXECUTABLE: Final = "perception_node"

PARAMETER_ARGUMENTS: Final = ("checkpoint", "device", "precision", "input_transport", "autostart")
"""Node parameters that are also launch arguments."""

COMMON_ARGUMENTS: Final = {
    "namespace": ("endoarss", "namespace of the node and its output topics"),
    "use_sim_time": ("false", "use /clock (bag replay with `endoarss bag play --clock`)"),
    "log_level": ("info", "debug | info | warn | error"),
}


class LaunchArgumentError(ValueError):
    """A launch argument that cannot start the node; the message names it."""


def argument_table(params_file: str, specific: dict[str, tuple[str, str]]) -> dict[str, tuple]:
    """Name -> (default, description) of every argument of a launch file: the parameter-backed
    ones, ``params_file`` with this file's default, the common ones, then ``specific``."""
    table: dict[str, tuple[str, str]] = {
        name: ("", f"{SPECS[name].description}; empty keeps the parameter file's value")
        for name in PARAMETER_ARGUMENTS
    }
    table["params_file"] = (params_file, "parameter file of the node")
    table.update(COMMON_ARGUMENTS)
    table.update(specific)
    return table


def declare_arguments(table: dict[str, tuple[str, str]]) -> list:
    from launch.actions import DeclareLaunchArgument

    return [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in table.items()
    ]


def _typed(name: str, text: str) -> Any:
    kind = type_name(SPECS[name].rule)
    try:
        if kind == "bool":
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if kind == "integer":
            return int(text)
        if kind == "double":
            return float(text)
    except ValueError:
        raise LaunchArgumentError(
            f"launch argument {name}:={text!r} must be {SPECS[name].rule.expectation}"
        ) from None
    return text


def perception_node(
    configurations: dict[str, str],
    *,
    remappings: list[tuple[str, str]],
    parameters: dict[str, Any] | None = None,
) -> list:
    """The perception node as the launch configuration asks, after checking the parameter
    file, the arguments and ``parameters`` together as the node will."""
    from launch_ros.actions import Node

    params_file = configurations["params_file"]
    overrides: dict[str, Any] = {
        name: _typed(name, configurations[name])
        for name in PARAMETER_ARGUMENTS
        if configurations.get(name, "")
    }
    overrides.update(parameters or {})
    use_sim_time = configurations.get("use_sim_time", "false").lower()
    if use_sim_time not in ("true", "false"):
        raise LaunchArgumentError(
            f"launch argument use_sim_time:={use_sim_time!r} must be true or false"
        )
    try:
        checked = validate_parameter_file(params_file)
        merged = parse_parameters({**checked.as_dict(), **overrides})
    except ParameterError as exc:
        raise LaunchArgumentError(str(exc)) from None
    checkpoint = Path(merged.predictor.checkpoint).expanduser()
    if not checkpoint.is_file():
        raise LaunchArgumentError(
            f"checkpoint:={str(checkpoint)!r} does not exist or is not a file"
        )
    node_parameters: dict[str, Any] = {**overrides, "use_sim_time": use_sim_time == "true"}
    return [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=NODE_NAME,
            namespace=configurations["namespace"],
            parameters=[params_file, node_parameters],
            remappings=remappings,
            ros_arguments=["--log-level", configurations["log_level"]],
            output="screen",
            emulate_tty=True,
        )
    ]
