"""What the real launch tests cannot cheaply cover: every dVRK source and layout variant of
dvrk_stereo.launch.py resolved to its topics, without starting a process per variant.

Each installed launch file is executed against a minimal stand-in of the launch API whose
constructors have the real keyword names (a misspelt keyword fails as it would in ROS), then
resolved with given arguments. test_launch_testing*.py and test_ros2_cli.py start both launch
files for real (frames in, outputs out, bad arguments, Ctrl-C).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import pytest

from endoarss_ros.ros.launch_support import LaunchArgumentError
from endoarss_ros.ros.parameters import parse_parameters, validate_parameter_file

pytestmark = pytest.mark.ros


class LaunchDescription:
    def __init__(self, initial_entities=None, *, deprecated_reason=None) -> None:
        self.entities = list(initial_entities or [])


class DeclareLaunchArgument:
    def __init__(self, name, *, default_value=None, description=None, choices=None) -> None:
        self.name, self.default_value, self.description = name, default_value, description


class OpaqueFunction:
    def __init__(self, *, function, args=None, kwargs=None) -> None:
        self.function, self.args, self.kwargs = function, args or [], kwargs or {}


class Node:
    """launch_ros.actions.Node's keywords; the rest go to ExecuteProcess, whose keywords are
    listed too."""

    PROCESS_KEYWORDS = frozenset(
        {"output", "emulate_tty", "additional_env", "respawn", "respawn_delay", "env", "cwd"}
    )

    def __init__(
        self,
        *,
        executable,
        package=None,
        name=None,
        namespace=None,
        exec_name=None,
        parameters=None,
        remappings=None,
        ros_arguments=None,
        arguments=None,
        **kwargs,
    ) -> None:
        unknown = set(kwargs) - self.PROCESS_KEYWORDS
        assert not unknown, f"Node() has no keyword(s) {unknown}"
        self.executable, self.package, self.name, self.namespace = (
            executable,
            package,
            name,
            namespace,
        )
        self.parameters = parameters or []
        self.remappings = remappings or []
        self.ros_arguments = ros_arguments or []
        self.kwargs = kwargs


class LaunchContext:
    def __init__(self, configurations: dict[str, str]) -> None:
        self.launch_configurations = configurations


@contextmanager
def stand_in_launch_api():
    modules = {
        "launch": types.ModuleType("launch"),
        "launch.actions": types.ModuleType("launch.actions"),
        "launch_ros": types.ModuleType("launch_ros"),
        "launch_ros.actions": types.ModuleType("launch_ros.actions"),
    }
    modules["launch"].LaunchDescription = LaunchDescription
    modules["launch.actions"].DeclareLaunchArgument = DeclareLaunchArgument
    modules["launch.actions"].OpaqueFunction = OpaqueFunction
    modules["launch_ros.actions"].Node = Node
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def share() -> Path:
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("endoarss_ros"))


def load_launch_file(name: str) -> LaunchDescription:
    path = share() / "launch" / name
    assert path.is_file(), f"{name} is not installed"
    with stand_in_launch_api():
        spec = importlib.util.spec_from_file_location(f"launch_file_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.generate_launch_description()


def declared(description: LaunchDescription) -> dict[str, str]:
    return {
        e.name: e.default_value
        for e in description.entities
        if isinstance(e, DeclareLaunchArgument)
    }


def resolve(description: LaunchDescription, **arguments: str) -> list[Node]:
    """The nodes the launch file starts with these arguments (others at their defaults)."""
    configurations = {**declared(description), **arguments}
    context = LaunchContext(configurations)
    nodes = [e for e in description.entities if isinstance(e, Node)]
    with stand_in_launch_api():
        for entity in description.entities:
            if isinstance(entity, OpaqueFunction):
                nodes += entity.function(context, *entity.args, **entity.kwargs)
    return nodes


def installed_executable(package: str, executable: str) -> Path:
    from ament_index_python.packages import get_package_prefix

    return Path(get_package_prefix(package)) / "lib" / package / executable


def node_parameters(node: Node) -> dict:
    """What the node would receive: parameter files in order, then the literal overrides."""
    values: dict = {}
    for entry in node.parameters:
        if isinstance(entry, dict):
            values.update(entry)
        else:
            path = Path(entry)
            assert path.is_file(), f"parameter file {path} does not exist"
            values.update(validate_parameter_file(path).as_dict())
    return values


PERCEPTION_ARGUMENTS = {
    "checkpoint",
    "image_topic",
    "input_transport",
    "namespace",
    "params_file",
    "device",
    "precision",
    "use_sim_time",
    "log_level",
    "autostart",
}


@pytest.mark.parametrize(
    ("arguments", "left", "right"),
    [
        ({}, "/jhu_daVinci/left/image_raw", "/jhu_daVinci/right/image_raw"),
        ({"rig_name": "ucl_si"}, "/ucl_si/left/image_raw", "/ucl_si/right/image_raw"),
        (
            {"source": "stereo_source"},
            "/stereo_source/left/image_raw",
            "/stereo_source/right/image_raw",
        ),
    ],
)
def test_dvrk_launch_reads_the_dvrk_video_topics(arguments, left, right, tiny_checkpoint):
    description = load_launch_file("dvrk_stereo.launch.py")
    (node,) = resolve(description, checkpoint=str(tiny_checkpoint), **arguments)
    assert installed_executable(node.package, node.executable).is_file()
    params = parse_parameters(node_parameters(node))
    assert params.pipeline.input_mode == "stereo"
    assert params.node.input_qos == "sensor_data", "must match gscam's reliable publishers"
    assert 0 < params.pipeline.stereo_slop_ms < 1000 / 30 / 2 + 1e-9
    remaps = dict(node.remappings)
    assert (remaps["left/image"], remaps["right/image"]) == (left, right)
    assert remaps["left/image/compressed"] == f"{left}/compressed"


def test_dvrk_launch_side_by_side_reads_one_frame(tiny_checkpoint):
    description = load_launch_file("dvrk_stereo.launch.py")
    (node,) = resolve(
        description,
        checkpoint=str(tiny_checkpoint),
        layout="side_by_side",
        side_by_side_topic="/console/stereo/image_raw",
    )
    assert parse_parameters(node_parameters(node)).pipeline.input_mode == "side_by_side"
    assert dict(node.remappings)["stereo/image"] == "/console/stereo/image_raw"
    with pytest.raises(LaunchArgumentError, match="side_by_side_topic"):
        resolve(description, checkpoint=str(tiny_checkpoint), layout="side_by_side")
    with pytest.raises(LaunchArgumentError, match="source must be one of"):
        resolve(description, checkpoint=str(tiny_checkpoint), source="firewire")


def test_dvrk_launch_declares_its_arguments():
    arguments = declared(load_launch_file("dvrk_stereo.launch.py"))
    assert set(arguments) == (PERCEPTION_ARGUMENTS - {"image_topic"}) | {
        "rig_name",
        "source",
        "layout",
        "side_by_side_topic",
    }
    assert arguments["params_file"] == str(share() / "config" / "dvrk.yaml")


@pytest.mark.parametrize("name", ["perception.yaml", "dvrk.yaml"])
def test_installed_parameter_files_validate(name):
    params = validate_parameter_file(share() / "config" / name)
    assert params.predictor.checkpoint == "", "the checkpoint comes from the command line"
