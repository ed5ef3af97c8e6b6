"""A bag never chooses which code runs: message types named in a bag are resolved only from
the typestore (the standard ROS 2 messages and endoarss_ros), and anything else is refused in
one line before any import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from rosbags.rosbag2 import Writer

from endoarss_ros.bags.schema import BagError, check_message_type

SENTINEL_PACKAGE = "evil_sentinel"
HOSTILE_TYPES = [
    f"{SENTINEL_PACKAGE}/msg/Payload",  # well-formed, but not a package the tools know
    "os/path/join",
    "json/decoder/JSONDecoder",
    "subprocess/msg/Popen",
    "sensor_msgs/msg/NotAMessage",
    "sensor_msgs/msg/Image/../x",
    "sensor_msgs/msg/Image\nsecond line",
]


@pytest.mark.parametrize("msgtype", HOSTILE_TYPES)
def test_unknown_or_malformed_types_are_refused(msgtype: str) -> None:
    with pytest.raises(BagError) as info:
        check_message_type(msgtype)
    assert "\n" not in str(info.value)
    assert repr(msgtype)[1:20] in str(info.value)


@pytest.mark.parametrize(
    "msgtype",
    ["sensor_msgs/msg/Image", "rosgraph_msgs/msg/Clock", "endoarss_ros/msg/SurgicalActivity"],
)
def test_known_types_pass(msgtype: str) -> None:
    assert check_message_type(msgtype) == msgtype


def _hostile_bag(path: Path, msgtype: str) -> Path:
    writer = Writer(path, version=Writer.VERSION_LATEST)
    writer.open()
    connection = writer.add_connection(
        "/camera/image_raw", msgtype, msgdef="int32 x\n", rihs01="RIHS01_" + "0" * 64
    )
    writer.write(connection, 1, b"\x00\x01\x00\x00\x07\x00\x00\x00")
    writer.close()
    return path


_PROBE = """
import sys
from endoarss_ros.cli import main
code = main(["bag", "play", sys.argv[1]])
print("IMPORTED:" + ",".join(m for m in ("{pkg}", "{pkg}.msg") if m in sys.modules))
sys.exit(code)
"""


@pytest.mark.ros
@pytest.mark.parametrize("msgtype", [f"{SENTINEL_PACKAGE}/msg/Payload", "os/path/join"])
def test_bag_play_refuses_a_hostile_type_without_importing_it(tmp_path: Path, msgtype: str) -> None:
    modules = tmp_path / "modules" / SENTINEL_PACKAGE
    modules.mkdir(parents=True)
    marker = tmp_path / "imported"
    code = f"open({str(marker)!r}, 'w').write('imported')\n"
    (modules / "__init__.py").write_text(code)
    (modules / "msg.py").write_text(code + "class Payload: pass\n")
    bag = _hostile_bag(tmp_path / "hostile", msgtype)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(modules.parent), *filter(None, [env.get("PYTHONPATH")])]
    )
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(pkg=SENTINEL_PACKAGE), str(bag)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert msgtype.split("/")[0] in errors[0]
    assert result.stdout.strip() == "IMPORTED:"
    assert not marker.exists()
