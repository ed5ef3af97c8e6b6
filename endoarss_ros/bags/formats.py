"""rosbag2 format versions: which metadata version the `ros2 bag` of each supported ROS 2
distribution opens, and a writer that produces each version exactly as rosbag2 does.

What each distribution's rosbag2 writes (``BagMetadata::version`` in
rosbag2_storage/include/rosbag2_storage/bag_metadata.hpp of its branch) and reads:

- Humble (rosbag2 0.15): version 5. Its reader decodes the fields of versions <= 5 and nothing
  newer: no ``custom_data`` (6), no topic ``type_description_hash`` (7), no ``ros_distro`` (8),
  and ``offered_qos_profiles`` as a YAML *string* with integer enums. A version 9 file, whose
  ``offered_qos_profiles`` is a YAML sequence with enum names, fails there ("bad conversion",
  ros2/rosbag2#2013). Its sqlite3 plugin writes db schema 3 (tables ``schema``, ``metadata``,
  ``topics`` without ``type_description_hash``, ``messages``; no ``message_definitions``);
  its mcap plugin writes channels whose only metadata is ``offered_qos_profiles``.
- Jazzy (0.26) and Kilted (0.32): version 9. Their readers decode every older version
  (rosbag2_storage/include/rosbag2_storage/yaml.hpp: each field read only from the version
  that introduced it; rosbag2_storage/src/rosbag2_storage/qos.cpp: integer enums up to
  version 8), so a version 5 bag opens there too.

Every version's mcap file carries the ``rosbag2`` metadata record (serialized metadata of that
version), as rosbag2 writes it from Iron on: Jazzy's and Kilted's mcap plugin take the version
from it to parse the channels' QoS when the .mcap is opened without metadata.yaml (without the
record they assume 9, and Humble's integer enums would read as unknown); Humble's plugin reads
only channels and schemas, so the record changes nothing there.

So version 5 (``--ros-distro humble``) is what all three open, and it is the default. It lacks
``custom_data``: what a tool stores there (`bag infer`'s skipped frames) goes to the sidecar
file :data:`CUSTOM_DATA_SIDECAR` in the bag folder instead, which rosbag2 ignores and
:func:`read_custom_data` reads back. Versions 8 and 9 are rosbags' own writer; version 5 is
that writer with Humble's metadata fields and Humble's sqlite3 layout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

import yaml
from rosbags.interfaces import Connection, ConnectionExtRosbag2, Qos
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.rosbag2.enums import CompressionMode
from rosbags.rosbag2.metadata import dump_qos_v8, dump_qos_v9
from rosbags.rosbag2.storage_mcap import McapWriter
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Writer

if TYPE_CHECKING:
    from rosbags.rosbag2.metadata import QosDict
    from rosbags.rosbag2.writer import StorageWriter

ROS_DISTROS: Final = {"humble": 5, "jazzy": 9, "kilted": 9}
"""ROS 2 distribution -> the rosbag2 metadata version its `ros2 bag` writes."""

DEFAULT_ROS_DISTRO: Final = "humble"
"""Bags are written for Humble unless asked otherwise: version 5, which Humble, Jazzy and
Kilted all open."""

WRITABLE_VERSIONS: Final = (5, 8, 9)

CUSTOM_DATA_SIDECAR: Final = "endoarss_custom_data.yaml"
"""File in the bag folder holding custom_data for versions that lack the field (< 6)."""

WRITER_DISTRO: Final = "rosbags"
"""``ros_distro`` (metadata.yaml from version 8, sqlite3 ``schema`` table) of the bags written
here, as rosbags writes it: the writer, not a ROS installation, made them."""


def metadata_version(ros_distro: str) -> int:
    """The metadata version that `ros2 bag` of ``ros_distro`` writes (and so opens)."""
    try:
        return ROS_DISTROS[ros_distro]
    except KeyError:
        raise ValueError(
            f"unknown ROS 2 distribution {ros_distro!r}; choose one of {', '.join(ROS_DISTROS)}"
        ) from None


def has_custom_data(version: int) -> bool:
    return version >= 6


def writable_version(version: int) -> int:
    """The version to rewrite a bag of ``version`` in (`bag reindex`): itself where this
    package writes it, else the nearest newer one that keeps its fields."""
    if version <= 5:
        return 5
    if version <= 8:
        return 8
    if version == 9:
        return 9
    raise ValueError(f"rosbag2 metadata version {version} is newer than this tool knows (9)")


def dump_qos(qos: list[Qos], version: int) -> str | list[QosDict]:
    """``offered_qos_profiles`` as the version stores it: a YAML string with integer enums up
    to version 8, a YAML sequence with enum names from version 9."""
    return dump_qos_v9(qos) if version >= 9 else dump_qos_v8(qos)


@dataclass(frozen=True)
class TopicEntry:
    name: str
    msgtype: str
    serialization_format: str
    offered_qos_profiles: list[Qos]
    type_description_hash: str
    message_count: int


def bagfile_information(
    version: int,
    storage_identifier: str,
    file_name: str,
    topics: Iterable[TopicEntry],
    start: int,
    duration: int,
    custom_data: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """metadata.yaml's ``rosbag2_bagfile_information`` with exactly the fields of ``version``
    (rosbag2_storage/include/rosbag2_storage/yaml.hpp, ``convert<BagMetadata>``)."""
    if version not in WRITABLE_VERSIONS:
        raise ValueError(f"cannot write rosbag2 metadata version {version}")
    topics = list(topics)
    count = sum(topic.message_count for topic in topics)
    listed = []
    for topic in topics:
        metadata: dict[str, Any] = {
            "name": topic.name,
            "type": topic.msgtype,
            "serialization_format": topic.serialization_format,
            "offered_qos_profiles": dump_qos(topic.offered_qos_profiles, version),
        }
        if version >= 7:
            metadata["type_description_hash"] = topic.type_description_hash
        listed.append({"topic_metadata": metadata, "message_count": topic.message_count})
    information: dict[str, Any] = {
        "version": version,
        "storage_identifier": storage_identifier,
        "duration": {"nanoseconds": duration},
        "starting_time": {"nanoseconds_since_epoch": start},
        "message_count": count,
        "topics_with_message_count": listed,
        "compression_format": "",
        "compression_mode": "",
        "relative_file_paths": [file_name],
        "files": [
            {
                "path": file_name,
                "starting_time": {"nanoseconds_since_epoch": start},
                "duration": {"nanoseconds": duration},
                "message_count": count,
            }
        ],
    }
    if has_custom_data(version):
        information["custom_data"] = dict(custom_data or {}) or None
    if version >= 8:
        information["ros_distro"] = WRITER_DISTRO
    return information


def dump_yaml(data: Any) -> str:
    """Block-style YAML in the given key order; strings stay on one line (a QoS string before
    version 9 is one double-quoted scalar with ``\\n`` escapes, as rosbag2 writes it)."""
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=False, width=float("inf"))


def write_metadata(path: Path, information: Mapping[str, Any]) -> None:
    """metadata.yaml, replaced atomically (written aside, then renamed)."""
    temporary = path.with_suffix(".yaml.tmp")
    temporary.write_text(dump_yaml({"rosbag2_bagfile_information": dict(information)}), "utf8")
    temporary.replace(path)


def write_custom_data_sidecar(folder: Path, custom_data: Mapping[str, str]) -> Path:
    path = folder / CUSTOM_DATA_SIDECAR
    temporary = path.with_suffix(".yaml.tmp")
    temporary.write_text(
        "# custom_data of this bag: its rosbag2 metadata version has no custom_data field\n"
        + dump_yaml(dict(custom_data)),
        "utf8",
    )
    temporary.replace(path)
    return path


def read_custom_data(folder: Path) -> dict[str, str]:
    """custom_data of a bag: metadata.yaml's field (versions >= 6) and the sidecar file
    (versions that lack the field); empty where neither has any."""
    found: dict[str, str] = {}
    try:
        info = yaml.safe_load((folder / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        listed = info.get("custom_data")
        if isinstance(listed, dict):
            found.update({str(k): str(v) for k, v in listed.items()})
    except (OSError, KeyError, TypeError, AttributeError, yaml.YAMLError):
        pass
    try:
        sidecar = yaml.safe_load((folder / CUSTOM_DATA_SIDECAR).read_text())
        if isinstance(sidecar, dict):
            found.update({str(k): str(v) for k, v in sidecar.items()})
    except (OSError, yaml.YAMLError):
        pass
    return found


class HumbleSqlite3Writer(Sqlite3Writer):
    """The .db3 layout of Humble's rosbag2_storage_default_plugins (db schema version 3, since
    0.15.4): ``schema`` and ``metadata`` tables, topics without ``type_description_hash`` and
    no ``message_definitions`` table (both came with schema 4, after Humble)."""

    SCHEMA_VERSION: ClassVar[int] = 3
    SQLITE_SCHEMA = f"""
    CREATE TABLE schema(
      schema_version INTEGER PRIMARY KEY,
      ros_distro TEXT NOT NULL
    );
    CREATE TABLE metadata(
      id INTEGER PRIMARY KEY,
      metadata_version INTEGER NOT NULL,
      metadata TEXT NOT NULL
    );
    CREATE TABLE topics(
      id INTEGER PRIMARY KEY,
      name TEXT NOT NULL,
      type TEXT NOT NULL,
      serialization_format TEXT NOT NULL,
      offered_qos_profiles TEXT NOT NULL
    );
    CREATE TABLE messages(
      id INTEGER PRIMARY KEY,
      topic_id INTEGER NOT NULL,
      timestamp INTEGER NOT NULL,
      data BLOB NOT NULL
    );
    CREATE INDEX timestamp_idx ON messages (timestamp ASC);
    INSERT INTO schema(schema_version, ros_distro) VALUES ({SCHEMA_VERSION}, '{WRITER_DISTRO}');
    """

    def add_msgtype(self, connection: Connection) -> None:
        """Humble's database keeps no message definitions."""

    def add_connection(self, connection: Connection, offered_qos_profiles: str) -> None:
        assert isinstance(connection.ext, ConnectionExtRosbag2)
        self.cursor.execute(
            "INSERT INTO topics VALUES(?, ?, ?, ?, ?)",
            (
                connection.id,
                connection.topic,
                connection.msgtype,
                connection.ext.serialization_format,
                offered_qos_profiles,
            ),
        )


class VersionedWriter(Writer):
    """rosbags' rosbag2 writer for metadata versions 5, 8 and 9, writing metadata.yaml, the
    sqlite3 ``metadata`` row and the mcap ``rosbag2`` metadata record with the fields of the
    version, and (version 5) Humble's sqlite3 layout. custom_data goes to metadata.yaml from
    version 6, to :data:`CUSTOM_DATA_SIDECAR` before. No compression."""

    # Not a ClassVar: rosbags' Writer declares it as a plain attribute.
    STORAGE_PLUGINS: Mapping[StoragePlugin, type[StorageWriter]] = {
        StoragePlugin.SQLITE3: Sqlite3Writer,
        StoragePlugin.MCAP: McapWriter,
    }
    HUMBLE_STORAGE_PLUGINS: ClassVar[Mapping[StoragePlugin, type[StorageWriter]]] = {
        StoragePlugin.SQLITE3: HumbleSqlite3Writer,
        StoragePlugin.MCAP: McapWriter,
    }

    def __init__(self, path: Path | str, *, version: int, storage_plugin: StoragePlugin) -> None:
        if version not in WRITABLE_VERSIONS:
            raise WriterError(
                f"cannot write rosbag2 metadata version {version}; expected one of "
                f"{', '.join(map(str, WRITABLE_VERSIONS))}"
            )
        # rosbags checks for 8 or 9; below 9 it stores QoS as version 8 does, as 5 does too.
        super().__init__(path, version=9 if version >= 9 else 8, storage_plugin=storage_plugin)
        # rosbags types it 8 | 9, but reads it only as `version >= 9` (the QoS format) outside
        # the methods overridden here; 5 (Humble) is this class's own.
        self.version = version  # type: ignore[assignment]

    def open(self) -> None:
        plugins = self.HUMBLE_STORAGE_PLUGINS if self.version == 5 else self.STORAGE_PLUGINS
        try:
            self.path.mkdir(mode=0o755, parents=True)
        except FileExistsError:
            raise WriterError(f"{self.path} exists already, not overwriting.") from None
        self.storage = plugins[self.storage_plugin](self.path, self.compression_mode)

    def set_compression(self, *args: Any) -> None:
        raise WriterError("compressed bags are not written here")

    def information(self) -> dict[str, Any]:
        """metadata.yaml's rosbag2_bagfile_information for what was written so far."""
        assert self.storage is not None
        count = sum(self.counts.values())
        return bagfile_information(
            self.version,
            self.storage_plugin.name.lower(),
            self.storage.path.name,
            [
                TopicEntry(
                    c.topic,
                    c.msgtype,
                    c.ext.serialization_format,
                    list(c.ext.offered_qos_profiles),
                    c.digest,
                    self.counts[c.id],
                )
                for c in self.connections
                if isinstance(c.ext, ConnectionExtRosbag2)
            ],
            start=self.min_timestamp if count else 0,
            duration=max(0, self.max_timestamp - self.min_timestamp) if count else 0,
            custom_data=self.custom_data,
        )

    def _write_custom_data(self) -> None:
        if self.custom_data and not has_custom_data(self.version):
            write_custom_data_sidecar(self.path, self.custom_data)

    def close(self) -> None:
        """Close the storage (which records the metadata, as rosbag2 does) and write
        metadata.yaml."""
        assert self.storage is not None
        assert self.compression_mode == CompressionMode.NONE
        information = self.information()
        self.storage.close(self.version, dump_yaml(information).strip())
        self.storage = None
        self._write_custom_data()
        write_metadata(self.metapath, information)
