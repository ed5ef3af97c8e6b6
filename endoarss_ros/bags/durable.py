"""Bags that survive the death of the process writing them, and the repair of those that did
not.

rosbags' writers keep a bag unreadable until ``close()``: the mcap writer holds the open chunk
in memory and writes the summary and footer (which its reader requires) only at the end; the
sqlite3 writer commits one transaction at the end; ``metadata.yaml``, which every rosbag2
reader starts from, is written last. :class:`DurableWriter` is rosbags' writer with a
:meth:`~DurableWriter.checkpoint` that makes everything written so far a complete bag:

- ``metadata.yaml`` is rewritten (atomically, by rename) with the topics and counts so far,
  before the messages it counts reach the file, so it never lacks a topic that the file holds;
- mcap: the open chunk is closed and written, followed by a summary and footer, all in one
  write at the end of the data; the next checkpoint writes its chunks over that summary and a
  new summary after them. The file is a complete, indexed mcap after every checkpoint;
- sqlite3: the transaction is committed (rollback journal, with the page cache kept from
  spilling into the database between commits, so the database file changes only in commits).

A process killed between checkpoints loses what it wrote since the last one. A process killed
during one (a few milliseconds) can leave an mcap file without its footer or an sqlite3
database with a hot journal: :func:`reindex` repairs both.
"""

from __future__ import annotations

import io
import os
import sqlite3
import struct
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml
from rosbags.interfaces import ConnectionExtRosbag2
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.metadata import dump_qos_v8, dump_qos_v9, parse_qos
from rosbags.rosbag2.storage_mcap import DECOMPRESSORS, McapWriter, PendingChunk, get_qos
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Writer

from .schema import BagError, typestore

MCAP_MAGIC = b"\x89MCAP0\r\n"


class _Pending(io.BytesIO):
    """Bytes bound for the mcap file from offset ``base`` on. ``tell()`` answers file
    offsets, which the writer records in its chunk indexes and summary."""

    def __init__(self, base: int) -> None:
        super().__init__()
        self.base = base

    def tell(self) -> int:
        return self.base + super().tell()

    def close(self) -> None:
        """The writer closes its stream after the footer; the file stays open."""


class _DurableMcapWriter(McapWriter):
    """rosbags' mcap writer whose records go to memory until :meth:`checkpoint` writes them,
    with a summary and footer, to the file in one write."""

    def __init__(self, path: Path, compression: Any) -> None:
        super().__init__(path, compression)
        self._file = self.bio
        self._file.flush()
        self._data_end = self._file.tell()
        self._file_end = self._data_end
        self.bio = _Pending(self._data_end)

    def checkpoint(self, version: int, metadata: str) -> None:
        if self.chunk.msgs:
            self.close_chunk()
        data = self.bio.getvalue()
        tail = _Pending(self._data_end + len(data))
        self.bio = tail
        # The library's close writes the metadata record, summary and footer into `tail`.
        # Schema and channel records not yet followed by a message stay in the open chunk
        # (the summary lists them meanwhile).
        waiting, self.chunk = (
            self.chunk,
            PendingChunk(2**63 - 1, 0, io.BytesIO(), defaultdict(list)),
        )
        McapWriter.close(self, version, metadata)
        self.chunk = waiting
        end = self._data_end + len(data) + len(tail.getvalue())
        fd = self._file.fileno()
        os.pwrite(fd, data + tail.getvalue(), self._data_end)
        if end < self._file_end:
            os.ftruncate(fd, end)
        self._file_end = end
        self._data_end += len(data)
        self.bio = _Pending(self._data_end)

    def close(self, version: int, metadata: str) -> None:
        if self.chunk.bio.tell():
            self.close_chunk()
        self.checkpoint(version, metadata)
        self._file.close()

    def abort(self) -> None:
        self._file.close()


class _DurableSqlite3Writer(Sqlite3Writer):
    def __init__(self, path: Path, compression: Any) -> None:
        super().__init__(path, compression)
        # Between commits the database file stays as the last commit left it.
        self.conn.execute("PRAGMA cache_spill = OFF")

    def checkpoint(self, version: int, metadata: str) -> None:
        self.conn.commit()


class DurableWriter(Writer):
    """rosbags' rosbag2 writer plus :meth:`checkpoint`."""

    STORAGE_PLUGINS: ClassVar[Mapping[StoragePlugin, Any]] = {
        StoragePlugin.SQLITE3: _DurableSqlite3Writer,
        StoragePlugin.MCAP: _DurableMcapWriter,
    }

    def open(self) -> None:
        super().open()
        self.checkpoint()

    def checkpoint(self) -> None:
        """Make everything written so far a complete bag on disk."""
        if self.storage is None:
            return
        information = self._information()
        _write_metadata(self.metapath, information)
        self.storage.checkpoint(self.version, _dump(information).strip())

    def _information(self) -> dict[str, Any]:
        """metadata.yaml's rosbag2_bagfile_information, as Writer.close writes it."""
        assert self.storage is not None
        dump_qos = dump_qos_v9 if self.version >= 9 else dump_qos_v8
        count = sum(self.counts.values())
        start = self.min_timestamp if count else 0
        duration = max(0, self.max_timestamp - self.min_timestamp) if count else 0
        name = self.storage.path.name
        return {
            "version": self.version,
            "storage_identifier": self.storage_plugin.name.lower(),
            "relative_file_paths": [name],
            "duration": {"nanoseconds": duration},
            "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": count,
            "topics_with_message_count": [
                {
                    "topic_metadata": {
                        "name": c.topic,
                        "type": c.msgtype,
                        "serialization_format": c.ext.serialization_format,
                        "offered_qos_profiles": dump_qos(c.ext.offered_qos_profiles),
                        "type_description_hash": c.digest,
                    },
                    "message_count": self.counts[c.id],
                }
                for c in self.connections
                if isinstance(c.ext, ConnectionExtRosbag2)
            ],
            "compression_format": "",
            "compression_mode": "",
            "files": [
                {
                    "path": name,
                    "starting_time": {"nanoseconds_since_epoch": start},
                    "duration": {"nanoseconds": duration},
                    "message_count": count,
                }
            ],
            "custom_data": self.custom_data or None,
            "ros_distro": "rosbags",
        }


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=False)


def _write_metadata(path: Path, information: dict[str, Any]) -> None:
    temporary = path.with_suffix(".yaml.tmp")
    temporary.write_text(_dump({"rosbag2_bagfile_information": information}), "utf8")
    temporary.replace(path)


# -- repair -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReindexResult:
    storage: str
    messages: dict[str, int]
    """Messages per topic in the repaired bag."""
    dropped_bytes: int = 0
    """mcap: bytes of an incomplete record at the end of the file that were left out."""


def reindex(path: Path) -> ReindexResult:
    """Rebuild a bag's metadata.yaml (and, for mcap, its summary and footer) from what its
    storage file holds: an mcap file cut short keeps every complete record (a chunk cut
    short is left out); an sqlite3 database gets its hot journal rolled back, so it holds
    its last committed transaction."""
    if not path.is_dir():
        raise BagError(f"bag {str(path)!r} is not a rosbag2 folder")
    files = sorted(path.glob("*.mcap")) + sorted(path.glob("*.db3"))
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "none"
        raise BagError(
            f"bag {str(path)!r}: reindex needs exactly one .mcap or .db3 file, found {found}"
        )
    (storage_file,) = files
    hashes = _listed_hashes(path)
    if storage_file.suffix == ".mcap":
        return _reindex_mcap(path, storage_file, hashes)
    return _reindex_sqlite3(path, storage_file)


def _listed_hashes(path: Path) -> dict[str, str]:
    """Type hashes an existing metadata.yaml gives, by message type."""
    try:
        info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        return {
            t["topic_metadata"]["type"]: t["topic_metadata"]["type_description_hash"]
            for t in info["topics_with_message_count"]
            if t["topic_metadata"].get("type_description_hash")
        }
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return {}


@dataclass(frozen=True)
class _McapChannel:
    topic: str
    msgtype: str
    encoding: str
    msgdef: str
    metadata: bytes


def _records(data: bytes | memoryview, start: int) -> Iterator[tuple[int, memoryview, int]]:
    """(opcode, body, end offset) of each complete record from ``start``; stops at the end of
    the data or at a record cut short."""
    view = memoryview(data)
    offset = start
    while offset + 9 <= len(view):
        opcode = view[offset]
        (length,) = struct.unpack_from("<Q", view, offset + 1)
        end = offset + 9 + length
        if end > len(view):
            return
        yield opcode, view[offset + 9 : end], end
        offset = end


def _string(body: memoryview, offset: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<I", body, offset)
    return bytes(body[offset + 4 : offset + 4 + length]).decode(), offset + 4 + length


def _scan_mcap(
    data: bytes,
) -> tuple[dict[int, _McapChannel], list[tuple[int, int, bytes]], int]:
    """Channels, (channel, log time, data) of every message, and the offset where complete
    data ends, reading records from the start (no summary needed)."""
    if not data.startswith(MCAP_MAGIC):
        raise BagError("not an mcap file (bad magic)")
    schemas: dict[int, tuple[str, str, str]] = {}
    channels: dict[int, _McapChannel] = {}
    found: list[tuple[int, int, bytes]] = []

    def read(opcode: int, body: memoryview) -> None:
        if opcode == 0x03:
            (schema_id,) = struct.unpack_from("<H", body, 0)
            name, offset = _string(body, 2)
            encoding, offset = _string(body, offset)
            (length,) = struct.unpack_from("<I", body, offset)
            msgdef = bytes(body[offset + 4 : offset + 4 + length]).decode()
            schemas[schema_id] = (name, encoding, msgdef)
        elif opcode == 0x04:
            channel_id, schema_id = struct.unpack_from("<HH", body, 0)
            topic, offset = _string(body, 4)
            encoding, offset = _string(body, offset)
            (length,) = struct.unpack_from("<I", body, offset)
            metadata = bytes(body[offset + 4 : offset + 4 + length])
            name, _, msgdef = schemas.get(schema_id, ("", "", ""))
            channels[channel_id] = _McapChannel(topic, name, encoding, msgdef, metadata)
        elif opcode == 0x05:
            channel_id, _, log_time, _ = struct.unpack_from("<HIQQ", body, 0)
            found.append((channel_id, log_time, bytes(body[22:])))

    data_end = len(MCAP_MAGIC)
    for opcode, body, end in _records(data, len(MCAP_MAGIC)):
        if opcode == 0x0F:  # DataEnd: the summary follows
            break
        if opcode == 0x06:
            _, _, size, _ = struct.unpack_from("<QQQI", body, 0)
            compression, offset = _string(body, 28)
            (length,) = struct.unpack_from("<Q", body, offset)
            try:
                chunk = DECOMPRESSORS[compression](
                    bytes(body[offset + 8 : offset + 8 + length]), size
                )
            except Exception:  # a corrupt chunk ends the readable data
                break
            for inner, inner_body, _ in _records(chunk, 0):
                read(inner, inner_body)
        else:
            read(opcode, body)
        data_end = end
    return channels, found, data_end


def _reindex_mcap(path: Path, storage_file: Path, hashes: dict[str, str]) -> ReindexResult:
    data = storage_file.read_bytes()
    try:
        channels, found, data_end = _scan_mcap(data)
    except (struct.error, UnicodeDecodeError) as exc:
        raise BagError(f"bag {str(path)!r}: {storage_file.name} is unreadable: {exc}") from exc
    except BagError as exc:
        raise BagError(f"bag {str(path)!r}: {storage_file.name}: {exc}") from exc
    rebuilt = path / ".reindex" / path.name
    if rebuilt.parent.exists():
        for leftover in sorted(rebuilt.parent.rglob("*"), reverse=True):
            leftover.unlink() if leftover.is_file() else leftover.rmdir()
    counts: dict[str, int] = {}
    writer = Writer(rebuilt, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    try:
        connections = {}
        for channel_id, channel in channels.items():
            connections[channel_id] = writer.add_connection(
                channel.topic,
                channel.msgtype,
                msgdef=channel.msgdef,
                rihs01=hashes.get(channel.msgtype) or _type_hash(channel.msgtype, path),
                serialization_format=channel.encoding,
                offered_qos_profiles=get_qos(channel.metadata),
            )
            counts[channel.topic] = 0
        for channel_id, log_time, message in sorted(found, key=lambda m: m[1]):
            if channel_id in connections:
                writer.write(connections[channel_id], log_time, message)
                counts[channels[channel_id].topic] += 1
        writer.close()
    except BaseException:
        writer.abort()
        raise
    os.replace(rebuilt / f"{path.name}.mcap", storage_file)
    metadata = yaml.safe_load((rebuilt / "metadata.yaml").read_text())
    info = metadata["rosbag2_bagfile_information"]
    info["relative_file_paths"] = [storage_file.name]
    for entry in info["files"]:
        entry["path"] = storage_file.name
    _write_metadata(path / "metadata.yaml", info)
    (rebuilt / "metadata.yaml").unlink()
    rebuilt.rmdir()
    rebuilt.parent.rmdir()
    dropped = 0 if data.endswith(MCAP_MAGIC) else len(data) - data_end
    return ReindexResult("mcap", counts, dropped)


def _type_hash(msgtype: str, path: Path) -> str:
    try:
        return typestore().hash_rihs01(msgtype)
    except KeyError as exc:
        raise BagError(
            f"bag {str(path)!r}: message type {msgtype} is unknown here, so its type hash "
            "cannot be written"
        ) from exc


def _reindex_sqlite3(path: Path, storage_file: Path) -> ReindexResult:
    try:
        # A normal connection rolls a hot journal back: the last committed transaction stays.
        connection = sqlite3.connect(storage_file)
        try:
            connection.execute("PRAGMA integrity_check").fetchone()
            topics = connection.execute(
                "SELECT topics.id, name, type, serialization_format, offered_qos_profiles, "
                "type_description_hash, count(messages.id), min(messages.timestamp), "
                "max(messages.timestamp) FROM topics LEFT JOIN messages ON "
                "topics.id = messages.topic_id GROUP BY topics.id ORDER BY topics.id"
            ).fetchall()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise BagError(f"bag {str(path)!r}: {storage_file.name} is unreadable: {exc}") from exc
    starts = [row[7] for row in topics if row[6]]
    ends = [row[8] for row in topics if row[6]]
    count = sum(row[6] for row in topics)
    start = min(starts) if starts else 0
    duration = max(ends) - start if ends else 0
    info = {
        "version": Writer.VERSION_LATEST,
        "storage_identifier": "sqlite3",
        "relative_file_paths": [storage_file.name],
        "duration": {"nanoseconds": duration},
        "starting_time": {"nanoseconds_since_epoch": start},
        "message_count": count,
        "topics_with_message_count": [
            {
                "topic_metadata": {
                    "name": name,
                    "type": msgtype,
                    "serialization_format": serialization,
                    "offered_qos_profiles": dump_qos_v9(parse_qos(qos)),
                    "type_description_hash": digest,
                },
                "message_count": messages,
            }
            for _, name, msgtype, serialization, qos, digest, messages, _, _ in topics
        ],
        "compression_format": "",
        "compression_mode": "",
        "files": [
            {
                "path": storage_file.name,
                "starting_time": {"nanoseconds_since_epoch": start},
                "duration": {"nanoseconds": duration},
                "message_count": count,
            }
        ],
        "custom_data": None,
        "ros_distro": "rosbags",
    }
    _write_metadata(path / "metadata.yaml", info)
    return ReindexResult("sqlite3", {row[1]: row[6] for row in topics})
