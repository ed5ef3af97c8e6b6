"""Opening bags for writing and reading, with errors that name the bag and the topic."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from rosbags.interfaces import Connection, Qos
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, WriterError

from .durable import DurableWriter
from .formats import (
    CUSTOM_DATA_SIDECAR,
    DEFAULT_ROS_DISTRO,
    ROS_DISTROS,
    VersionedWriter,
    has_custom_data,
    read_custom_data,
)
from .schema import BagError, typestore

STORAGES: Final = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


class BagWriter:
    """A rosbag2 being written: one connection per topic, messages serialised as CDR."""

    def __init__(
        self,
        path: Path,
        storage: str = "mcap",
        durable: bool = False,
        ros_distro: str = DEFAULT_ROS_DISTRO,
    ) -> None:
        """``durable``: :meth:`flush` makes what was written so far a complete bag on disk
        (:mod:`endoarss_ros.bags.durable`), for writers that may be killed. ``ros_distro``:
        the bag is written in the rosbag2 metadata version that distribution's `ros2 bag`
        writes (:mod:`endoarss_ros.bags.formats`; Humble's version 5, by default, opens in
        Humble, Jazzy and Kilted)."""
        if storage not in STORAGES:
            raise BagError(f"unknown storage {storage!r}; choose one of {', '.join(STORAGES)}")
        if ros_distro not in ROS_DISTROS:
            raise BagError(
                f"unknown ROS 2 distribution {ros_distro!r}; choose one of {', '.join(ROS_DISTROS)}"
            )
        self.path = path
        self.version = ROS_DISTROS[ros_distro]
        kind = DurableWriter if durable else VersionedWriter
        try:
            self._writer = kind(path, version=self.version, storage_plugin=STORAGES[storage])
            self._writer.open()
        except WriterError as exc:
            raise BagError(f"cannot write bag {str(path)!r}: {exc}") from exc
        except OSError as exc:
            raise BagError(f"cannot write bag {str(path)!r}: {exc.strerror}") from exc
        self._connections: dict[str, tuple[Connection, str]] = {}

    def add_topic(self, topic: str, msgtype: str, qos: Qos) -> None:
        connection = self._writer.add_connection(
            topic, msgtype, typestore=typestore(), offered_qos_profiles=[qos]
        )
        self._connections[topic] = (connection, msgtype)

    def write(self, topic: str, log_time: int, message: Any) -> None:
        connection, msgtype = self._connections[topic]
        self._writer.write(connection, log_time, typestore().serialize_cdr(message, msgtype))

    def write_raw(self, topic: str, log_time: int, data: bytes | memoryview) -> None:
        self._writer.write(self._connections[topic][0], log_time, data)

    def set_custom_data(self, key: str, value: str) -> None:
        """A string for the bag's custom_data, written when the bag closes: into metadata.yaml
        where its version has the field (6 on), else into :attr:`custom_data_file`."""
        self._writer.set_custom_data(key, value)

    @property
    def custom_data_file(self) -> Path:
        """Where custom_data is written: metadata.yaml, or the sidecar file for versions
        without the field. :func:`endoarss_ros.bags.formats.read_custom_data` reads both."""
        name = "metadata.yaml" if has_custom_data(self.version) else CUSTOM_DATA_SIDECAR
        return self.path / name

    def flush(self) -> None:
        """Durable bags: make everything written so far a complete bag on disk (metadata.yaml
        included); a no-op otherwise."""
        if isinstance(self._writer, DurableWriter):
            self._writer.checkpoint()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _listed_topics(path: Path) -> str:
    """The topics metadata.yaml promises, so an unreadable file still says what it should hold."""
    try:
        info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        topics = [
            f"{t['topic_metadata']['name']} ({t['message_count']} messages)"
            for t in info["topics_with_message_count"]
        ]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return ""
    return f"; its metadata lists topics {', '.join(topics)}" if topics else ""


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    log_time: int
    data: bytes | memoryview

    def decode(self) -> Any:
        return typestore().deserialize_cdr(self.data, self.msgtype)


class BagReader:
    """A rosbag2 opened for reading; topic lookups check existence and message type."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            raise BagError(f"bag {str(path)!r} does not exist")
        try:
            self._reader = Reader(path)
            self._reader.open()
        except (ReaderError, OSError, ValueError, KeyError) as exc:
            raise BagError(
                f"cannot open bag {str(path)!r} (truncated or not a rosbag2?): {exc}"
                f"{_listed_topics(path)}"
            ) from exc

    @property
    def custom_data(self) -> dict[str, str]:
        """The bag's custom_data: metadata.yaml's field and, for versions without it, the
        sidecar file (:mod:`endoarss_ros.bags.formats`)."""
        return read_custom_data(self.path) if self.path.is_dir() else {}

    @property
    def topics(self) -> dict[str, str]:
        """Topic -> message type of every connection."""
        return {c.topic: c.msgtype for c in self._reader.connections}

    def connection(self, topic: str) -> Connection:
        for connection in self._reader.connections:
            if connection.topic == topic:
                return connection
        raise BagError(f"bag {str(self.path)!r} has no topic {topic!r}")

    def require(self, topic: str, *msgtypes: str) -> str:
        """The topic's message type, which must be one of `msgtypes`."""
        msgtype = self.connection(topic).msgtype
        if msgtype not in msgtypes:
            raise BagError(
                f"topic {topic!r} of bag {str(self.path)!r} carries {msgtype}, expected "
                f"{' or '.join(msgtypes)}"
            )
        return msgtype

    def topics_of_type(self, *msgtypes: str) -> list[str]:
        return sorted(topic for topic, msgtype in self.topics.items() if msgtype in msgtypes)

    def messages(self, topics: list[str] | None = None) -> Iterator[BagMessage]:
        """Messages in log-time order; a truncated or corrupt file raises BagError."""
        connections = [c for c in self._reader.connections if topics is None or c.topic in topics]
        if not connections:
            return
        try:
            for connection, log_time, data in self._reader.messages(connections=connections):
                yield BagMessage(connection.topic, connection.msgtype, log_time, data)
        except (ReaderError, OSError, ValueError, KeyError, EOFError) as exc:
            names = ", ".join(sorted({c.topic for c in connections}))
            raise BagError(f"bag {str(self.path)!r} is unreadable (topics {names}): {exc}") from exc

    def iter_decoded(self, topic: str, *msgtypes: str) -> Iterator[tuple[int, Any]]:
        """(log time, message) of one topic, checked to be one of `msgtypes`."""
        self.require(topic, *msgtypes)
        for message in self.messages([topic]):
            try:
                decoded = message.decode()
            except Exception as exc:
                raise BagError(
                    f"topic {topic!r} of bag {str(self.path)!r}: message at {message.log_time} "
                    f"does not decode as {message.msgtype}: {exc}"
                ) from exc
            yield message.log_time, decoded

    def decoded(self, topic: str, *msgtypes: str) -> list[tuple[int, Any]]:
        return list(self.iter_decoded(topic, *msgtypes))

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
