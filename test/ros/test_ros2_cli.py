"""The node driven the way a ROS user drives it: `ros2 launch` of the installed launch file, a
camera process, and the `ros2` command (topic, param, lifecycle, service) against them.

Needs the real launch and ros2cli (a sourced ROS 2 distribution, or `make setup` with the ROS 2
tools folder); skipped with that reason where they are missing.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from perception_harness import scene_frames, start_frame_publisher, write_frames
from ros_harness import NodeProcess, wait_until

pytestmark = [
    pytest.mark.ros,
    pytest.mark.skipif(
        shutil.which("ros2") is None
        or subprocess.run(
            ["ros2", "launch", "--help"], capture_output=True, timeout=60, check=False
        ).returncode
        != 0,
        reason="the ros2 command with `ros2 launch` is not installed (README: 'Without the ROS "
        "2 tools')",
    ),
]

NAMESPACE = "/cli"
NODE = f"{NAMESPACE}/perception"
CAMERA = "/cli_camera/image_raw"


def ros2(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """One ros2 command; stdout and stderr together in ``stdout`` (the CLI prints some
    answers, e.g. a refused parameter, on stderr)."""
    return subprocess.run(
        ["ros2", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def launch(*arguments: str) -> NodeProcess:
    return NodeProcess(
        "ros2 launch",
        ["ros2", "launch", "endoarss_ros", "perception.launch.py", *arguments],
    )


@pytest.fixture(scope="module")
def running(tiny_checkpoint, tmp_path_factory) -> Iterator[NodeProcess]:
    """perception.launch.py with a camera process looping frames into it."""
    frames = write_frames(tmp_path_factory.mktemp("cli_frames"), scene_frames(96, 128, 4))
    launched = launch(
        f"checkpoint:={tiny_checkpoint}",
        f"image_topic:={CAMERA}",
        f"namespace:={NAMESPACE.strip('/')}",
        "device:=cpu",
    )
    camera = start_frame_publisher(
        frames, "--rate", "10", "--topic", CAMERA, "--wait-for-subscribers", "0"
    )
    try:
        launched.wait_for_output(r"\bready:", timeout=120)
        yield launched
    finally:
        camera.stop()
        camera.kill()
        launched.stop()
        launched.kill()


def test_topic_hz_measures_the_outputs(running):
    for topic in ("activity", "segmentation/mask"):
        hz = subprocess.Popen(
            ["ros2", "topic", "hz", f"{NAMESPACE}/{topic}", "--window", "20"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(8.0)
        hz.send_signal(signal.SIGINT)
        output, _ = hz.communicate(timeout=20)
        rates = [float(r) for r in re.findall(r"average rate: ([0-9.]+)", output)]
        assert rates, output
        assert 5.0 < rates[-1] < 15.0, f"{topic}: {rates} (camera at 10 Hz)"


def test_topic_echo_once_gets_the_latched_labels(running):
    result = ros2(
        "topic",
        "echo",
        "--once",
        "--qos-durability",
        "transient_local",
        "--qos-reliability",
        "reliable",
        f"{NAMESPACE}/labels",
        "endoarss_ros/msg/LabelMap",
    )
    assert result.returncode == 0, result.stdout
    assert "activity_names:" in result.stdout
    assert "model_name: vit_tiny_patch14" in result.stdout


def test_param_set_accepts_a_valid_value_and_shows_why_it_refuses_another(running):
    shown = ros2("param", "get", "--no-daemon", "--spin-time", "5", NODE, "smoothing.ema_alpha")
    original = shown.stdout.strip().rsplit(" ", 1)[-1]
    float(original)
    ok = ros2("param", "set", "--no-daemon", "--spin-time", "5", NODE, "smoothing.ema_alpha", "0.5")
    assert "Set parameter successful" in ok.stdout, ok.stdout
    assert (
        ros2("param", "get", "--no-daemon", "--spin-time", "5", NODE, "smoothing.ema_alpha")
        .stdout.strip()
        .endswith("0.5")
    )
    refused = ros2(
        "param", "set", "--no-daemon", "--spin-time", "5", NODE, "smoothing.ema_alpha", "0.0"
    )
    assert "Setting parameter failed" in refused.stdout, refused.stdout
    assert "parameter 'smoothing.ema_alpha' must be a number in (0, 1], got 0.0" in refused.stdout
    held = ros2("param", "set", "--no-daemon", "--spin-time", "5", NODE, "device", "cpu")
    assert "take(s) effect at configure" in held.stdout, held.stdout
    restored = ros2(
        "param", "set", "--no-daemon", "--spin-time", "5", NODE, "smoothing.ema_alpha", original
    )
    assert "Set parameter successful" in restored.stdout, restored.stdout


def test_param_describe_shows_type_and_range(running):
    result = ros2(
        "param",
        "describe",
        "--no-daemon",
        "--spin-time",
        "5",
        NODE,
        "stereo_slop_ms",
        "input_depth",
    )
    out = result.stdout
    assert result.returncode == 0, result.stdout
    assert "Parameter name: stereo_slop_ms" in out and "Type: double" in out
    assert "Min value: 0.0" in out and "Max value: 1000.0" in out
    assert "must be a number in (0, 1000] ms" in out
    assert "Parameter name: input_depth" in out and "Type: integer" in out
    assert "Max value: 100" in out


def test_lifecycle_set_and_get(running):
    assert "active [3]" in ros2("lifecycle", "get", "--no-daemon", "--spin-time", "5", NODE).stdout
    try:
        result = ros2("lifecycle", "set", "--no-daemon", "--spin-time", "5", NODE, "deactivate")
        assert "Transitioning successful" in result.stdout, result.stdout
        shown = ros2("lifecycle", "get", "--no-daemon", "--spin-time", "5", NODE).stdout
        assert "inactive [2]" in shown
    finally:
        result = ros2("lifecycle", "set", "--no-daemon", "--spin-time", "5", NODE, "activate")
    assert "Transitioning successful" in result.stdout, result.stdout
    assert "active [3]" in ros2("lifecycle", "get", "--no-daemon", "--spin-time", "5", NODE).stdout


def test_service_calls(running):
    result = ros2("service", "call", f"{NODE}/reset_smoothing", "std_srvs/srv/Trigger")
    assert "success=True" in result.stdout, result.stdout
    result = ros2("service", "call", f"{NODE}/enable", "std_srvs/srv/SetBool", "{data: true}")
    assert "success=True" in result.stdout and "message='active'" in result.stdout, result.stdout


def test_ctrl_c_ends_the_launch_cleanly(tiny_checkpoint):
    """SIGINT to `ros2 launch` (Ctrl-C) ends it and the node, with exit 0; a launch of its own,
    so the module's shared one stays up for the other tests."""
    launched = launch(
        f"checkpoint:={tiny_checkpoint}",
        f"image_topic:={CAMERA}_int",
        "namespace:=cli_int",
        "device:=cpu",
    )
    try:
        launched.wait_for_output(r"\bready:", timeout=120)
        started = time.monotonic()
        code = launched.stop(signal.SIGINT, timeout=15.0)
        took = time.monotonic() - started
    finally:
        launched.kill()
    assert code == 0, launched.output
    assert took < 10.0, f"took {took:.1f} s"
    assert "Traceback" not in launched.output, launched.output
    assert re.search(r"process has finished cleanly", launched.output), launched.output


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ((), r"parameter 'checkpoint' is required"),
        (("checkpoint:={missing}",), r"checkpoint:=.*missing\.safetensors.* does not exist"),
        (("checkpoint:={tiny}", "device:=gpu"), r"parameter 'device' must be one of"),
        (("checkpoint:={tiny}", "autostart:=maybe"), r"autostart:='maybe' must be true or false"),
    ],
    ids=["no checkpoint", "missing checkpoint", "bad device", "bad autostart"],
)
def test_bad_launch_arguments_fail_before_the_node_starts(
    arguments, reason, tiny_checkpoint, tmp_path: Path
):
    values = {"missing": tmp_path / "missing.safetensors", "tiny": tiny_checkpoint}
    result = subprocess.run(
        [
            "ros2",
            "launch",
            "endoarss_ros",
            "perception.launch.py",
            *(a.format(**values) for a in arguments),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout
    assert result.returncode != 0, output
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1, output
    assert re.search(reason, errors[0]), output
    assert "process started" not in output, "the node must not start"
    assert "Traceback" not in output


def test_sigterm_to_the_node_ends_it_cleanly(tiny_checkpoint, tmp_path: Path):
    """SIGTERM (what Docker and systemd send) to the node ends it as cleanly as SIGINT, and
    `ros2 launch` then ends with it."""
    frames = write_frames(tmp_path / "frames", scene_frames(96, 128, 2))
    launched = launch(
        f"checkpoint:={tiny_checkpoint}",
        f"image_topic:={CAMERA}_term",
        "namespace:=cli_term",
        "device:=cpu",
    )
    camera = start_frame_publisher(
        frames, "--rate", "10", "--topic", f"{CAMERA}_term", "--wait-for-subscribers", "0"
    )
    try:
        line = launched.wait_for_output(r"process started with pid \[\d+\]", timeout=60)
        pid = int(re.search(r"pid \[(\d+)\]", line).group(1))
        launched.wait_for_output(r"\bready:", timeout=120)
        echo = ros2(
            "topic",
            "echo",
            "--once",
            "/cli_term/activity",
            "endoarss_ros/msg/SurgicalActivity",
            timeout=60,
        )
        assert "class_id:" in echo.stdout, echo.stdout
        os.kill(pid, signal.SIGTERM)
        launched.wait_for_output(r"process has finished cleanly", timeout=15)
        wait_until(lambda: launched.returncode is not None, 15, "ros2 launch to end")
    finally:
        camera.stop()
        camera.kill()
        launched.stop()
        launched.kill()
    assert launched.returncode == 0, launched.output
    assert "Traceback" not in launched.output
