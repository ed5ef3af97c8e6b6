"""A recorder killed with SIGKILL leaves a bag that this project's reader and rosbags open,
holding every message received up to about one second before the kill; `bag reindex`
repairs an mcap file cut short and a bag without metadata.yaml."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from ros_harness import NodeProcess, wait_until
from rosbags.rosbag2 import Reader

from endoarss_ros.bags.schema import IMAGE, stream_qos
from endoarss_ros.bags.storage import BagReader, BagWriter

TOPIC = "/record_kill_test/chatter"
RATE_HZ = 20.0
SECONDS = 3.0
LOSS_S = 1.0
"""What a kill may cost: messages received in the last second."""


def _count(bag: Path) -> tuple[int, list[int]]:
    """Messages as the project's reader and as rosbags read them, and the payload indices."""
    with BagReader(bag) as reader:
        ours = [int(m.decode().data) for m in reader.messages([TOPIC])]
    with Reader(bag) as reader:
        theirs = sum(1 for _ in reader.messages())
    return theirs, ours


@pytest.mark.ros
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_sigkill_loses_at_most_the_last_second(
    ros_node, tmp_path: Path, storage: str, record_property
) -> None:
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    publisher = ros_node.create_publisher(
        String, TOPIC, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    )
    bag = tmp_path / "killed"
    recorder = NodeProcess(
        "recorder",
        [
            sys.executable,
            "-m",
            "endoarss_ros.cli",
            "bag",
            "record",
            str(bag),
            "--topics",
            TOPIC,
            "--storage",
            storage,
        ],
    )
    try:
        recorder.wait_for_output(f"matched {TOPIC}", timeout=30)
        wait_until(lambda: publisher.get_subscription_count() > 0, 10, "the recorder's match")
        sent: list[float] = []
        start = time.monotonic()
        while time.monotonic() - start < SECONDS:
            publisher.publish(String(data=str(len(sent))))
            sent.append(time.monotonic())
            time.sleep(1.0 / RATE_HZ)
        recorder.kill()  # SIGKILL
        killed = time.monotonic()
    finally:
        recorder.kill()
    theirs, ours = _count(bag)
    due = sum(1 for t in sent if t <= killed - LOSS_S)
    record_property(f"{storage}_sent_survived_due", (len(sent), len(ours), due))
    print(f"{storage}: sent {len(sent)}, survived {len(ours)}, due {due}")
    assert ours == list(range(len(ours))), "the survivors are the first messages, in order"
    assert theirs == len(ours)
    assert len(ours) >= due


def _written(path: Path, storage: str, flushes: int, per_flush: int) -> list[int]:
    """A durable bag flushed `flushes` times and never closed, as a killed recorder leaves
    it; mcap: where the data ended after each flush."""
    import numpy as np

    from endoarss_ros.bags import messages

    bag = BagWriter(path, storage, durable=True)
    bag.add_topic("/camera/image_raw", IMAGE, stream_qos(True))
    data_ends = []
    for flush in range(flushes):
        for index in range(per_flush):
            n = flush * per_flush + index
            pixels = np.full((8, 8, 3), n, np.uint8)
            bag.write("/camera/image_raw", 10**18 + n, messages.image(pixels, "rgb8", n, "x"))
        bag.flush()
        data_ends.append(getattr(bag._writer.storage, "_data_end", 0))
    return data_ends


def _reindex(bag: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "endoarss_ros.cli", "bag", "reindex", str(bag)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_reindex_repairs_an_mcap_file_cut_short(tmp_path: Path) -> None:
    bag = tmp_path / "cut"
    _written(bag, "mcap", flushes=3, per_flush=5)
    (mcap,) = bag.glob("*.mcap")
    data = mcap.read_bytes()
    # Cut inside the summary: the footer and index are gone, every chunk is complete.
    mcap.write_bytes(data[: len(data) - 60])
    (bag / "metadata.yaml").unlink()
    completed = _reindex(bag)
    assert completed.returncode == 0, completed.stderr
    assert "15 messages" in completed.stdout
    with Reader(bag) as reader:
        assert reader.message_count == 15
        assert [t for _, t, _ in reader.messages()] == [10**18 + n for n in range(15)]
    with BagReader(bag) as reader:
        assert len(list(reader.messages())) == 15


def test_reindex_keeps_the_complete_chunks_of_a_file_cut_in_a_chunk(tmp_path: Path) -> None:
    bag = tmp_path / "cut"
    data_ends = _written(bag, "mcap", flushes=3, per_flush=5)
    (mcap,) = bag.glob("*.mcap")
    # Cut inside the third chunk: the first two are complete.
    mcap.write_bytes(mcap.read_bytes()[: data_ends[1] + 40])
    completed = _reindex(bag)
    assert completed.returncode == 0, completed.stderr
    with Reader(bag) as reader:
        assert reader.message_count == 10


def test_reindex_of_sqlite3_bag_without_metadata(tmp_path: Path) -> None:
    bag = tmp_path / "db"
    _written(bag, "sqlite3", flushes=2, per_flush=4)
    (bag / "metadata.yaml").unlink()
    completed = _reindex(bag)
    assert completed.returncode == 0, completed.stderr
    with Reader(bag) as reader:
        assert reader.message_count == 8
    with BagReader(bag) as reader:
        assert reader.topics == {"/camera/image_raw": IMAGE}
