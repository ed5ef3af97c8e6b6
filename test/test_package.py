"""The package as users get it: the colcon install, the pip-installable core, the CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The environment's own install folder (scripts/workspace.sh): install/, install-jazzy/ ...
INSTALL = Path(os.environ.get("ENDOARSS_INSTALL_BASE", ROOT / "install")) / "endoarss_ros"
# Modules that may import rclpy: the ROS layer, the generated messages, the ROS benchmarks.
ROS_LAYER = ("endoarss_ros.ros", "endoarss_ros.msg", "endoarss_ros.bench.ros")


def test_package_xml_declares_the_build_and_runtime_dependencies():
    from catkin_pkg.package import parse_package

    package = parse_package(str(ROOT / "package.xml"))
    package.validate()
    assert package.package_format == 3
    assert package.get_build_type() == "ament_cmake"
    declared = {
        dep.name for dep in package.buildtool_depends + package.build_depends + package.exec_depends
    }
    required = {
        "ament_cmake",
        "rosidl_default_generators",
        "rosidl_default_runtime",
        "rclpy",
        "rcl_interfaces",
        "lifecycle_msgs",
        "builtin_interfaces",
        "ament_index_python",
        "sensor_msgs",
        "std_msgs",
        "std_srvs",
        "diagnostic_msgs",
        "launch",
        "launch_ros",
        "ros2launch",
        "python3-numpy",
        "python3-opencv",
        "python3-yaml",
        "python3-matplotlib",
        "python3-tqdm",
        "python3-pil",
    }
    assert required <= declared, f"missing: {sorted(required - declared)}"
    tests = {dep.name for dep in package.test_depends}
    assert {"ament_cmake_pytest", "python3-pytest", "launch_testing"} <= tests
    assert "rosidl_interface_packages" in {group.name for group in package.member_of_groups}


# Top-level module -> the package.xml key that provides it; None: pip only (listed in the
# package.xml comment and installed from requirements/pip-only.txt).
IMPORT_KEYS = {
    "rclpy": "rclpy",
    "rcl_interfaces": "rcl_interfaces",
    "lifecycle_msgs": "lifecycle_msgs",
    "builtin_interfaces": "builtin_interfaces",
    "ament_index_python": "ament_index_python",
    "sensor_msgs": "sensor_msgs",
    "std_msgs": "std_msgs",
    "std_srvs": "std_srvs",
    "diagnostic_msgs": "diagnostic_msgs",
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "yaml": "python3-yaml",
    "matplotlib": "python3-matplotlib",
    "tqdm": "python3-tqdm",
    "PIL": "python3-pil",
    # python3-torch/-torchvision: PyTorch 1.x on jammy, none on noble (requirements/pip-only.txt).
    "torch": None,
    "torchvision": None,
    "launch": "launch",
    "launch_ros": "launch_ros",
    "timm": None,
    "safetensors": None,
    "rosbags": None,
    "torchmetrics": None,
}


def test_every_runtime_import_is_declared_or_listed_as_pip_only():
    import ast

    from catkin_pkg.package import parse_package

    package = parse_package(str(ROOT / "package.xml"))
    declared = {dep.name for dep in package.build_depends + package.exec_depends}
    imported = set()
    for source in (ROOT / "endoarss_ros").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"endoarss_ros", "__future__"}
    assert third_party <= IMPORT_KEYS.keys(), (
        f"unmapped imports: {sorted(third_party - IMPORT_KEYS.keys())}"
    )
    missing = {IMPORT_KEYS[name] for name in third_party if IMPORT_KEYS[name]} - declared
    assert not missing, f"imported but not in package.xml: {sorted(missing)}"
    manifest = (ROOT / "package.xml").read_text()
    pip_only = requirement_names("pip-only.txt")
    for name in sorted(third_party):
        if IMPORT_KEYS[name] is None:
            assert name in manifest, f"{name}: pip only, but not named in package.xml's comment"
            assert name in pip_only, f"{name}: pip only, but not in requirements/pip-only.txt"


def requirement_names(file: str) -> set[str]:
    lines = (ROOT / "requirements" / file).read_text().splitlines()
    return {
        re.split(r"[<>=!~;\s\[]", line.strip())[0].lower()
        for line in lines
        if line.strip() and not line.lstrip().startswith(("#", "-r"))
    }


@pytest.mark.parametrize("distro", ["kilted", "jazzy"])
def test_requirements_give_ranges_and_the_constraints_pin_every_one(distro):
    """Ranges for what a distribution may provide; exact versions only in the constraints."""
    for file in ("distro.txt", "pip-only.txt", "dev.txt", f"ros-wheels-{distro}.txt"):
        text = (ROOT / "requirements" / file).read_text()
        assert "==" not in text, f"{file}: exact pins belong in constraints-{distro}.txt"
    pinned = {
        line.split("==")[0].lower()
        for line in (ROOT / "requirements" / f"constraints-{distro}.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    for file in ("distro.txt", "pip-only.txt", "dev.txt", f"ros-wheels-{distro}.txt"):
        unpinned = requirement_names(file) - pinned
        assert not unpinned, f"{file}: not pinned in constraints-{distro}.txt: {sorted(unpinned)}"


def test_messages_and_hand_written_modules_share_one_installed_package():
    import endoarss_ros
    from endoarss_ros.msg import LabelMap, SurgicalActivity

    installed = Path(endoarss_ros.__file__).parent
    assert installed.is_relative_to(INSTALL), installed
    assert (installed / "cli.py").exists()
    assert SurgicalActivity.__module__.startswith("endoarss_ros.msg")
    assert LabelMap.UNLABELED == 255


def test_cli_is_on_the_workspace_path():
    result = subprocess.run(
        ["endoarss", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "summary" in result.stdout


def test_ros_free_core_imports_without_rclpy():
    """Training on a cluster must not need ROS: the core never imports rclpy."""
    code = (
        "import pkgutil, sys, endoarss_ros\n"
        "for info in pkgutil.walk_packages(endoarss_ros.__path__, 'endoarss_ros.'):\n"
        f"    if info.name.startswith({ROS_LAYER!r}):\n"
        "        continue\n"
        "    __import__(info.name)\n"
        "assert 'rclpy' not in sys.modules, 'rclpy imported by the core'\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": ""}  # the source tree only, no ROS workspace
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "PYTHONSAFEPATH": ""},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.slow
def test_pip_builds_the_core_with_the_endoarss_command(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("endoarss_ros-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "endoarss = endoarss_ros.cli:main" in archive.read(entry_points).decode()
    assert "endoarss_ros/cli.py" in names
    assert "endoarss_ros/model/__init__.py" in names


@pytest.mark.slow
@pytest.mark.skipif(
    bool(os.environ.get("ENDOARSS_COLCON_TEST")), reason="already running under colcon test"
)
def test_colcon_test_runs_the_suite_and_test_result_reports_it(tmp_path):
    """`make colcon-test` on one fast test, built apart from the project's build/ and install/."""
    selected = "test_cli_is_on_the_workspace_path"
    result = subprocess.run(
        [str(ROOT / "scripts" / "colcon-test.sh")],
        env={
            **os.environ,
            "PYTEST_ARGS": f"-k {selected}",
            "BUILD_BASE": str(tmp_path / "build"),
            "INSTALL_BASE": str(tmp_path / "install"),
        },
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    summary = re.search(r"Summary: (\d+) tests, 0 errors, 0 failures", output)
    assert summary is not None and int(summary.group(1)) >= 1, output[-4000:]
    xunit = tmp_path / "build" / "endoarss_ros" / "test_results" / "endoarss_ros"
    report = (xunit / "pytest.xunit.xml").read_text()
    assert f'name="{selected}"' in report
    assert 'failures="0"' in report and 'errors="0"' in report
