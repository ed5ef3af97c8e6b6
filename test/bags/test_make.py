"""`bag make`: what an independent reader finds in the bag (rosbags' low-level reader with a
typestore of its own, or sqlite3 on a .db3 file), and the CLI around it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import yaml
from bag_clip import CLIP_FPS, CLIP_FRAMES, CLIP_SIZE
from rosbags.interfaces import QosDurability, QosReliability
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from endoarss_ros.bags.schema import message_folder
from endoarss_ros.cli import main

EXPECTED_TYPES = {
    "/camera/image_raw": "sensor_msgs/msg/Image",
    "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
    "/ground_truth/activity": "endoarss_ros/msg/SurgicalActivity",
    "/ground_truth/mask": "sensor_msgs/msg/Image",
    "/ground_truth/labels": "endoarss_ros/msg/LabelMap",
}


def independent_typestore():
    store = get_typestore(Stores.ROS2_KILTED)
    for name in ("SurgicalActivity", "LabelMap"):
        text = (message_folder() / f"{name}.msg").read_text()
        store.register(get_types_from_msg(text, f"endoarss_ros/msg/{name}"))
    return store


def stamp(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def test_mcap_bag_has_schemas_counts_qos_and_stamps(clip_bag: Path) -> None:
    assert [p.suffix for p in clip_bag.iterdir() if p.suffix != ".yaml"] == [".mcap"]
    store = independent_typestore()
    with Reader(clip_bag) as reader:
        connections = {c.topic: c for c in reader.connections}
        assert {t: c.msgtype for t, c in connections.items()} == EXPECTED_TYPES
        counts = {t: c.msgcount for t, c in connections.items()}
        assert counts == {t: CLIP_FRAMES for t in EXPECTED_TYPES} | {"/ground_truth/labels": 1}
        camera_qos = connections["/camera/image_raw"].ext.offered_qos_profiles
        assert camera_qos[0].reliability == QosReliability.RELIABLE
        labels_qos = connections["/ground_truth/labels"].ext.offered_qos_profiles
        assert labels_qos[0].durability == QosDurability.TRANSIENT_LOCAL
        by_topic: dict[str, list[tuple[int, object]]] = {}
        for connection, log_time, raw in reader.messages():
            message = store.deserialize_cdr(raw, connection.msgtype)
            by_topic.setdefault(connection.topic, []).append((log_time, message))
    frames = by_topic["/camera/image_raw"]
    period = round(1e9 / CLIP_FPS)
    assert [stamp(m.header) for _, m in frames] == [
        frames[0][0] + i * period for i in range(CLIP_FRAMES)
    ]
    assert all(log_time == stamp(m.header) for log_time, m in frames)
    first = frames[0][1]
    assert (first.height, first.width, first.encoding) == (*CLIP_SIZE, "rgb8")
    for topic in ("/camera/camera_info", "/ground_truth/activity", "/ground_truth/mask"):
        assert [stamp(m.header) for _, m in by_topic[topic]] == [stamp(m.header) for _, m in frames]
    activities = [m for _, m in by_topic["/ground_truth/activity"]]
    labels = by_topic["/ground_truth/labels"][0][1]
    assert all(a.label == labels.activity_names[a.class_id] for a in activities)
    assert all(a.probabilities[a.class_id] == 1.0 for a in activities)
    mask = by_topic["/ground_truth/mask"][0][1]
    assert mask.encoding == "mono8" and mask.data.size == CLIP_SIZE[0] * CLIP_SIZE[1]
    assert set(np.unique(mask.data)) <= set(range(len(labels.segmentation_names))) | {255}
    # The metadata file is what `ros2 bag play` reads for the offered QoS.
    metadata = yaml.safe_load((clip_bag / "metadata.yaml").read_text())
    info = metadata["rosbag2_bagfile_information"]
    assert info["storage_identifier"] == "mcap"
    camera = next(
        t
        for t in info["topics_with_message_count"]
        if t["topic_metadata"]["name"] == "/camera/image_raw"
    )
    assert "reliability" in str(camera["topic_metadata"]["offered_qos_profiles"])


def test_sqlite3_compressed_stereo_bag_read_with_sqlite(tmp_path: Path) -> None:
    bag = tmp_path / "stereo"
    code = main(
        [
            "bag",
            "make",
            str(bag),
            "--synthetic",
            "6",
            "--size",
            "64x48",
            "--stereo",
            "--compressed",
            "--storage",
            "sqlite3",
        ]
    )
    assert code == 0
    (database,) = bag.glob("*.db3")
    with sqlite3.connect(database) as db:
        topics = dict(db.execute("SELECT name, type FROM topics"))
        counts = dict(
            db.execute(
                "SELECT t.name, COUNT(*) FROM messages m JOIN topics t ON m.topic_id = t.id "
                "GROUP BY t.name"
            )
        )
        qos = dict(db.execute("SELECT name, offered_qos_profiles FROM topics"))
    cameras = {f"/camera/{eye}/image_raw/compressed" for eye in ("left", "right")}
    infos = {f"/camera/{eye}/camera_info" for eye in ("left", "right")}
    assert {t for t, kind in topics.items() if kind == "sensor_msgs/msg/CompressedImage"} == cameras
    assert {t for t, kind in topics.items() if kind == "sensor_msgs/msg/CameraInfo"} == infos
    assert all(counts[t] == 6 for t in cameras | infos)
    assert counts["/ground_truth/activity"] == 6
    assert "reliability" in qos["/camera/left/image_raw/compressed"]
    store = independent_typestore()
    with sqlite3.connect(database) as db:
        (raw,) = db.execute(
            "SELECT data FROM messages m JOIN topics t ON m.topic_id = t.id "
            "WHERE t.name = '/camera/right/camera_info' LIMIT 1"
        ).fetchone()
    info = store.deserialize_cdr(raw, "sensor_msgs/msg/CameraInfo")
    assert (info.width, info.height) == (64, 48) and info.p[3] < 0


def test_make_from_image_folder(tmp_path: Path) -> None:
    import cv2

    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        cv2.imwrite(str(folder / f"{index:02d}.png"), np.full((32, 40, 3), index * 50, np.uint8))
    bag = tmp_path / "folder"
    assert main(["bag", "make", str(bag), "--images", str(folder), "--fps", "5"]) == 0
    with Reader(bag) as reader:
        topics = {c.topic: c.msgcount for c in reader.connections}
        duration = reader.duration
    # Plain images carry no ground truth, so no /ground_truth topics.
    assert topics == {"/camera/image_raw": 3, "/camera/camera_info": 3}
    assert duration == round(2 * 1e9 / 5) + 1
