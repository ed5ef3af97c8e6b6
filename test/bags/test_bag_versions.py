"""Bags in each rosbag2 metadata version this package writes (5 for Humble, 8, 9 for Jazzy and
Kilted) hold exactly what rosbag2 of that version writes, checked against the field lists below
taken from rosbag2's source, and read back with rosbags and with this package's reader, for
mcap and sqlite3 storage, written at once or durably (`bag record`) and after `bag reindex`."""

from __future__ import annotations

import json
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rosbags.interfaces import QosDurability, QosReliability
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from endoarss_ros.bags import messages
from endoarss_ros.bags.formats import CUSTOM_DATA_SIDECAR, VersionedWriter
from endoarss_ros.bags.schema import (
    IMAGE,
    LABEL_MAP,
    latched_qos,
    message_folder,
    stream_qos,
    typestore,
)
from endoarss_ros.bags.storage import STORAGES, BagReader, BagWriter
from endoarss_ros.cli import main

# --- Reference: what rosbag2 writes and reads, per metadata version ----------------------------
#
# ros2/rosbag2, rosbag2_storage/include/rosbag2_storage/yaml.hpp, convert<BagMetadata>::decode:
# every field is read only from the version that introduced it: compression_format/_mode from 3,
# files from 5, custom_data from 6, ros_distro from 8; convert<TopicMetadata>::decode:
# offered_qos_profiles from 4, type_description_hash from 7. From 9 offered_qos_profiles is a
# YAML sequence with enum names (rosbag2_storage/src/rosbag2_storage/qos.cpp: integer enums for
# version <= 8; ros2/rosbag2#1476), before it a YAML string with integer enums.
# BagMetadata::version in rosbag2_storage/include/rosbag2_storage/bag_metadata.hpp:
# Humble (0.15) 5, with neither custom_data nor ros_distro
# (docs.ros.org/en/humble/p/rosbag2_storage/generated/structrosbag2__storage_1_1BagMetadata.html)
# and TopicMetadata {name, type, serialization_format, offered_qos_profiles (a YAML string)}
# (.../humble/.../structrosbag2__storage_1_1TopicMetadata.html); Jazzy (0.26) and Kilted 9
# (docs.ros.org/en/jazzy/p/rosbag2_storage/generated/structrosbag2__storage_1_1BagMetadata.html).
BAG_FIELDS = {
    5: {
        "version",
        "storage_identifier",
        "duration",
        "starting_time",
        "message_count",
        "topics_with_message_count",
        "compression_format",
        "compression_mode",
        "relative_file_paths",
        "files",
    },
}
BAG_FIELDS[8] = BAG_FIELDS[5] | {"custom_data", "ros_distro"}
BAG_FIELDS[9] = BAG_FIELDS[8]
TOPIC_FIELDS = {5: {"name", "type", "serialization_format", "offered_qos_profiles"}}
TOPIC_FIELDS[8] = TOPIC_FIELDS[5] | {"type_description_hash"}
TOPIC_FIELDS[9] = TOPIC_FIELDS[8]
FILE_FIELDS = {"path", "starting_time", "duration", "message_count"}
QOS_IS_STRING = {5: True, 8: True, 9: False}

# ros2/rosbag2 sqlite3 plugin (rosbag2_storage_default_plugins in Humble, rosbag2_storage_sqlite3
# after), SqliteStorage::initialize: db schema 3 since Humble 0.15.4 (ros2/rosbag2#1156,
# backported as #1175) adds the `schema` and `metadata` tables; schema 4 (after Humble) adds
# `message_definitions` and topics.type_description_hash. read_metadata() reads the last
# `metadata` row and parses topics' QoS in that row's version.
SQLITE_LAYOUT = {
    5: (
        3,
        {"schema", "metadata", "topics", "messages"},
        ["id", "name", "type", "serialization_format", "offered_qos_profiles"],
    ),
    9: (
        4,
        {"schema", "metadata", "topics", "message_definitions", "messages"},
        [
            *("id", "name", "type", "serialization_format", "offered_qos_profiles"),
            "type_description_hash",
        ],
    ),
}
SQLITE_LAYOUT[8] = SQLITE_LAYOUT[9]

# rosbag2_storage_mcap (mcap_storage.cpp): channels carry `offered_qos_profiles` (Humble: its
# only key; Jazzy's writer adds `topic_type_hash`, which its reader takes as optional); from
# Iron a metadata record `rosbag2` holds `serialized_metadata`, which Jazzy's reader decodes
# for the version to parse the channels' QoS in (Humble's reader never reads it).
MCAP_CHANNEL_KEYS = {"offered_qos_profiles"}

DISTRO_VERSIONS = {"humble": 5, "jazzy": 9, "kilted": 9}
VERSIONS = (5, 8, 9)
CAMERA = "/camera/image_raw"
LABELS = "/endoarss/labels"
FRAMES = 4
START = 1_700_000_000 * 1_000_000_000


def independent_typestore():
    store = get_typestore(Stores.ROS2_KILTED)
    for name in ("SurgicalActivity", "LabelMap"):
        text = (message_folder() / f"{name}.msg").read_text()
        store.register(get_types_from_msg(text, f"endoarss_ros/msg/{name}"))
    return store


def _frame(index: int):
    import numpy as np

    return messages.image(np.full((6, 8, 3), index, np.uint8), "rgb8", START + index, "eye")


def _label_map():
    return messages.label_map(
        START, ["a", "b"], ["bg", "tool"], [[0, 0, 0], [9, 9, 9]], "m", "", (6, 8)
    )


def _fill(add_topic, write) -> None:
    add_topic(CAMERA, IMAGE, stream_qos(False))
    add_topic(LABELS, LABEL_MAP, latched_qos())
    write(LABELS, START, _label_map())
    for index in range(FRAMES):
        write(CAMERA, START + index * 1000, _frame(index))


def _write(path: Path, storage: str, version: int, custom: dict[str, str] | None = None) -> None:
    """A bag in ``version``: through BagWriter for a distribution's version, else (8) the
    versioned writer itself."""
    distro = next((d for d, v in DISTRO_VERSIONS.items() if v == version), None)
    if distro is not None:
        with BagWriter(path, storage, ros_distro=distro) as bag:
            _fill(bag.add_topic, bag.write)
            for key, value in (custom or {}).items():
                bag.set_custom_data(key, value)
        return
    writer = VersionedWriter(path, version=version, storage_plugin=STORAGES[storage])
    writer.open()
    connections = {}

    def add_topic(topic, msgtype, qos):
        connections[topic] = (
            writer.add_connection(
                topic, msgtype, typestore=typestore(), offered_qos_profiles=[qos]
            ),
            msgtype,
        )

    def write(topic, log_time, message):
        connection, msgtype = connections[topic]
        writer.write(connection, log_time, typestore().serialize_cdr(message, msgtype))

    _fill(add_topic, write)
    for key, value in (custom or {}).items():
        writer.set_custom_data(key, value)
    writer.close()


def _info(path: Path) -> dict:
    return yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]


def check_fields(info: dict, version: int, storage: str | None = None) -> None:
    """``info`` (a rosbag2_bagfile_information) has exactly the fields of ``version``."""
    assert info["version"] == version
    assert set(info) == BAG_FIELDS[version]
    if storage:
        assert info["storage_identifier"] == storage
    for entry in info["topics_with_message_count"]:
        assert set(entry) == {"topic_metadata", "message_count"}
        topic = entry["topic_metadata"]
        assert set(topic) == TOPIC_FIELDS[version]
        check_qos(topic["offered_qos_profiles"], version)
    for entry in info["files"]:
        assert set(entry) == FILE_FIELDS
    assert info["relative_file_paths"] == [entry["path"] for entry in info["files"]]


def check_qos(qos, version: int) -> None:
    if QOS_IS_STRING[version]:
        assert isinstance(qos, str)
        (profile,) = yaml.safe_load(qos)
        assert all(isinstance(profile[k], int) for k in ("history", "reliability", "durability"))
    else:
        assert isinstance(qos, list)
        (profile,) = qos
        assert profile["history"] == "keep_last" and profile["liveliness"] == "automatic"


def mcap_records(path: Path):
    """(opcode, body) of every top-level record of an mcap file (the summary included)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89MCAP0\r\n" and data.endswith(b"\x89MCAP0\r\n")
    offset = 8
    while offset < len(data) - 8:
        opcode = data[offset]
        (length,) = struct.unpack_from("<Q", data, offset + 1)
        yield opcode, data[offset + 9 : offset + 9 + length]
        offset += 9 + length


def _string(body: bytes, offset: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<I", body, offset)
    return body[offset + 4 : offset + 4 + length].decode(), offset + 4 + length


def _string_map(body: bytes, offset: int) -> dict[str, str]:
    (length,) = struct.unpack_from("<I", body, offset)
    offset += 4
    end, found = offset + length, {}
    while offset < end:
        key, offset = _string(body, offset)
        found[key], offset = _string(body, offset)
    return found


def check_mcap(path: Path, version: int) -> None:
    (mcap,) = path.glob("*.mcap")
    records = list(mcap_records(mcap))
    assert _string(records[0][1], 0)[0] == "ros2"  # Header profile
    serialized = []
    channels = []
    for opcode, body in records:
        if opcode == 0x0C and _string(body, 0)[0] == "rosbag2":
            serialized.append(_string_map(body, _string(body, 0)[1])["serialized_metadata"])
        if opcode == 0x04:
            topic, offset = _string(body, 4)
            _, offset = _string(body, offset)
            channels.append((topic, _string_map(body, offset)))
    (text,) = serialized
    check_fields(yaml.safe_load(text), version, "mcap")
    assert {topic for topic, _ in channels} == {CAMERA, LABELS}
    for _, metadata in channels:
        assert set(metadata) == MCAP_CHANNEL_KEYS
        # The channel's QoS is a YAML string, of the version's serialization.
        qos = metadata["offered_qos_profiles"]
        check_qos(qos if QOS_IS_STRING[version] else yaml.safe_load(qos), version)


def check_sqlite(path: Path, version: int, rows: int = 1) -> None:
    (database,) = path.glob("*.db3")
    schema_version, tables, topic_columns = SQLITE_LAYOUT[version]
    with sqlite3.connect(database) as db:
        found = {
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        columns = [row[1] for row in db.execute("PRAGMA table_info(topics)")]
        (schema,) = db.execute("SELECT schema_version FROM schema").fetchall()
        metadata = db.execute(
            "SELECT metadata_version, metadata FROM metadata ORDER BY id"
        ).fetchall()
        qos = [q for (q,) in db.execute("SELECT offered_qos_profiles FROM topics")]
    assert found == tables and columns == topic_columns and schema == (schema_version,)
    assert len(metadata) == rows
    stored_version, text = metadata[-1]
    assert stored_version == version
    check_fields(yaml.safe_load(text), version, "sqlite3")
    for text in qos:
        check_qos(text if QOS_IS_STRING[version] else yaml.safe_load(text), version)


def check_reads(path: Path, messages_expected: int = FRAMES + 1) -> None:
    """rosbags (with a typestore of its own) and this package's reader read the bag."""
    store = independent_typestore()
    with Reader(path) as reader:
        connections = {c.topic: c for c in reader.connections}
        assert {t: c.msgcount for t, c in connections.items()} == {CAMERA: FRAMES, LABELS: 1}
        camera_qos = connections[CAMERA].ext.offered_qos_profiles[0]
        assert camera_qos.reliability == QosReliability.BEST_EFFORT
        labels_qos = connections[LABELS].ext.offered_qos_profiles[0]
        assert labels_qos.durability == QosDurability.TRANSIENT_LOCAL
        frames = [
            store.deserialize_cdr(raw, c.msgtype)
            for c, _, raw in reader.messages()
            if c.topic == CAMERA
        ]
        assert reader.message_count == messages_expected
    assert [int(f.data[0]) for f in frames] == list(range(FRAMES))
    with BagReader(path) as bag:
        assert bag.topics == {CAMERA: IMAGE, LABELS: LABEL_MAP}
        decoded = bag.decoded(CAMERA, IMAGE)
        assert [t for t, _ in decoded] == [START + i * 1000 for i in range(FRAMES)]
        assert bag.decoded(LABELS, LABEL_MAP)[0][1].activity_names == ["a", "b"]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("version", VERSIONS)
def test_written_bag_has_the_fields_of_its_version(tmp_path: Path, version: int, storage: str):
    bag = tmp_path / "bag"
    custom = {"endoarss.test": json.dumps([1, 2])}
    _write(bag, storage, version, custom)
    check_fields(_info(bag), version, storage)
    (check_mcap if storage == "mcap" else check_sqlite)(bag, version)
    check_reads(bag)
    # custom_data: in metadata.yaml from version 6, in the sidecar file before.
    sidecar = bag / CUSTOM_DATA_SIDECAR
    if version >= 6:
        assert _info(bag)["custom_data"] == custom and not sidecar.exists()
    else:
        assert yaml.safe_load(sidecar.read_text()) == custom
    with BagReader(bag) as reader:
        assert reader.custom_data == custom
    # Nothing but the storage file, metadata.yaml and (version 5, with custom data) the sidecar.
    names = {p.name for p in bag.iterdir()}
    assert names == {f"bag.{'mcap' if storage == 'mcap' else 'db3'}", "metadata.yaml"} | (
        set() if version >= 6 else {CUSTOM_DATA_SIDECAR}
    )


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("distro", sorted(DISTRO_VERSIONS))
def test_durable_bag_and_its_reindex_keep_the_version(tmp_path: Path, distro: str, storage: str):
    """What `bag record` leaves after a flush (killed before closing), then `bag reindex` of
    it without metadata.yaml: the version stays the one asked for."""
    version = DISTRO_VERSIONS[distro]
    bag = tmp_path / "bag"
    writer = BagWriter(bag, storage, durable=True, ros_distro=distro)
    _fill(writer.add_topic, writer.write)
    writer.flush()
    check_fields(_info(bag), version, storage)
    if storage == "sqlite3":
        check_sqlite(bag, version)
    else:
        check_mcap(bag, version)
    check_reads(bag)
    (bag / "metadata.yaml").unlink()
    completed = subprocess.run(
        [sys.executable, "-m", "endoarss_ros.cli", "bag", "reindex", str(bag)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    check_fields(_info(bag), version, storage)
    if storage == "mcap":
        check_mcap(bag, version)
    check_reads(bag)


@pytest.mark.parametrize(
    ("options", "version"),
    [((), 5)] + [(("--ros-distro", d), v) for d, v in sorted(DISTRO_VERSIONS.items())],
)
def test_make_writes_the_version_of_the_distribution(tmp_path: Path, options, version) -> None:
    bag = tmp_path / "made"
    assert main(["bag", "make", str(bag), "--synthetic", "2", "--size", "32x32", *options]) == 0
    check_fields(_info(bag), version, "mcap")
    with BagReader(bag) as reader:
        assert len(reader.decoded("/camera/image_raw", IMAGE)) == 2


def test_older_versions_still_read(tmp_path: Path) -> None:
    """Reading accepts versions this package no longer writes: a version 4 bag (no per-file
    metadata) reads like any other."""
    bag = tmp_path / "old"
    _write(bag, "sqlite3", 5)
    info = _info(bag)
    info["version"] = 4
    del info["files"]
    (bag / "metadata.yaml").write_text(yaml.safe_dump({"rosbag2_bagfile_information": info}))
    check_reads(bag)


def test_reindex_of_a_humble_database_without_schema_table(tmp_path: Path) -> None:
    """A .db3 as Humble before 0.15.4 wrote it (schema 2: no `schema` or `metadata` table, no
    type hashes) and no metadata.yaml: `bag reindex` writes Humble's version 5."""
    bag = tmp_path / "old"
    _write(bag, "sqlite3", 5)
    (database,) = bag.glob("*.db3")
    with sqlite3.connect(database) as db:
        db.execute("DROP TABLE schema")
        db.execute("DROP TABLE metadata")
    (bag / "metadata.yaml").unlink()
    assert main(["bag", "reindex", str(bag)]) == 0
    check_fields(_info(bag), 5, "sqlite3")
    check_reads(bag)
