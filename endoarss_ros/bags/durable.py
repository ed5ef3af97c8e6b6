"""Bags that survive the death of the process writing them, and the repair of those that did
not.

rosbags' writers keep a bag unreadable until ``close()``: the mcap writer holds the open chunk
in memory and writes the summary and footer (which its reader requires) only at the end; the
sqlite3 writer commits one transaction at the end; ``metadata.yaml``, which every rosbag2
reader starts from, is written last. :class:`DurableWriter` is the writer of
:mod:`endoarss_ros.bags.formats` (rosbags' writer, in the metadata version asked for) with a
:meth:`~DurableWriter.checkpoint` that makes everything written so far a complete bag:

- ``metadata.yaml`` is rewritten (atomically, by rename) with the topics and counts so far,
  before the messages it counts reach the file, so it never lacks a topic that the file holds;
- mcap: the open chunk is closed and written, followed by a summary and footer, all in one
  write at the end of the data; the next checkpoint writes its chunks over that summary and a
  new summary after them. The file is a complete, indexed mcap after every checkpoint;
- sqlite3: the transaction is committed (rollback journal, with the page cache kept from
  spilling into the database between commits, so the database file changes only in commits),
  with the metadata so far in the database's ``metadata`` table.

A process killed between checkpoints loses what it wrote since the last one. A process killed
during one (a few milliseconds) can leave an mcap file without its footer or an sqlite3
database with a hot journal: :func:`reindex` repairs both, keeping the bag's metadata version.
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
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import yaml
from rosbags.rosbag2 import StoragePlugin
from rosbags.rosbag2.metadata import parse_qos
from rosbags.rosbag2.storage_mcap import DECOMPRESSORS, McapWriter, PendingChunk, get_qos
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Writer

from .formats import (
    DEFAULT_ROS_DISTRO,
    HumbleSqlite3Writer,
    TopicEntry,
    VersionedWriter,
    bagfile_information,
    dump_yaml,
    has_custom_data,
    metadata_version,
    read_custom_data,
    writable_version,
    write_metadata,
)
from .schema import BagError, typestore

if TYPE_CHECKING:
    from rosbags.rosbag2.writer import StorageWriter

    class _DurableStorage(StorageWriter, Protocol):
        """A storage writer of :class:`DurableWriter`."""

        def checkpoint(self, version: int, metadata: str) -> None: ...


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
        self._write_to_memory(self._data_end)

    def _write_to_memory(self, base: int) -> _Pending:
        """Send the writer's records to a new :class:`_Pending` from file offset ``base``."""
        self._pending = _Pending(base)
        # rosbags types `bio` as the file it opens (BufferedWriter), but only writes to it and
        # asks its tell(), which any binary stream answers.
        self.bio = self._pending  # type: ignore[assignment]
        return self._pending

    def checkpoint(self, version: int, metadata: str) -> None:
        if self.chunk.msgs:
            self.close_chunk()
        data = self._pending.getvalue()
        tail = self._write_to_memory(self._data_end + len(data))
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
        self._write_to_memory(self._data_end)

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
        self._metadata_row: int | None = None

    def checkpoint(self, version: int, metadata: str) -> None:
        """Commit, with the bag's metadata so far in the ``metadata`` table (one row, kept
        current), which rosbag2 reads from schema 3 on when metadata.yaml is missing."""
        if self._metadata_row is None:
            cursor = self.conn.execute(
                "INSERT INTO metadata(metadata_version, metadata) VALUES(?, ?)", (version, metadata)
            )
            self._metadata_row = cursor.lastrowid
        else:
            self.conn.execute(
                "UPDATE metadata SET metadata_version = ?, metadata = ? WHERE id = ?",
                (version, metadata, self._metadata_row),
            )
        self.conn.commit()

    def close(self, version: int, metadata: str) -> None:
        self.checkpoint(version, metadata)
        self.conn.execute("PRAGMA optimize")
        self.conn.close()


class _DurableHumbleSqlite3Writer(_DurableSqlite3Writer, HumbleSqlite3Writer):
    """Humble's sqlite3 layout (metadata version 5), durable."""


class DurableWriter(VersionedWriter):
    """The rosbag2 writer of :mod:`endoarss_ros.bags.formats` plus :meth:`checkpoint`."""

    storage: _DurableStorage | None
    STORAGE_PLUGINS: Mapping[StoragePlugin, type[_DurableStorage]] = {
        StoragePlugin.SQLITE3: _DurableSqlite3Writer,
        StoragePlugin.MCAP: _DurableMcapWriter,
    }
    HUMBLE_STORAGE_PLUGINS: ClassVar[Mapping[StoragePlugin, type[_DurableStorage]]] = {
        StoragePlugin.SQLITE3: _DurableHumbleSqlite3Writer,
        StoragePlugin.MCAP: _DurableMcapWriter,
    }

    def open(self) -> None:
        super().open()
        self.checkpoint()

    def checkpoint(self) -> None:
        """Make everything written so far a complete bag on disk."""
        if self.storage is None:
            return
        information = self.information()
        self._write_custom_data()
        write_metadata(self.metapath, information)
        self.storage.checkpoint(self.version, dump_yaml(information).strip())


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
    listed = _listed_metadata(path)
    if storage_file.suffix == ".mcap":
        return _reindex_mcap(path, storage_file, listed)
    return _reindex_sqlite3(path, storage_file, listed)


def _listed_metadata(path: Path) -> dict[str, Any]:
    """An existing metadata.yaml's rosbag2_bagfile_information, or {} where there is none
    that reads."""
    try:
        info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return {}
    return info if isinstance(info, dict) else {}


def _version_of(*found: Any) -> int | None:
    """The first metadata version among ``found`` that is an int."""
    return next((v for v in found if isinstance(v, int) and not isinstance(v, bool)), None)


def _rewritten_version(path: Path, version: int | None) -> int:
    """The version a repaired bag is written in: the bag's own (newer ones this package
    cannot write become the nearest it can), the default where nothing tells it."""
    if version is None:
        return metadata_version(DEFAULT_ROS_DISTRO)
    try:
        return writable_version(version)
    except ValueError as exc:
        raise BagError(f"bag {str(path)!r}: {exc}") from exc


def _listed_hashes(info: dict[str, Any]) -> dict[str, str]:
    """Type hashes a metadata.yaml gives, by message type."""
    try:
        return {
            t["topic_metadata"]["type"]: t["topic_metadata"]["type_description_hash"]
            for t in info["topics_with_message_count"]
            if t["topic_metadata"].get("type_description_hash")
        }
    except (KeyError, TypeError, AttributeError):
        return {}


def _serialized_version(text: str | None) -> tuple[int | None, dict[str, str]]:
    """Version and custom_data of metadata serialized into a storage file (the sqlite3
    ``metadata`` table, the mcap ``rosbag2`` record)."""
    if not text:
        return None, {}
    try:
        info = yaml.safe_load(text)
    except yaml.YAMLError:
        return None, {}
    if not isinstance(info, dict):
        return None, {}
    custom = info.get("custom_data")
    return _version_of(info.get("version")), (
        {str(k): str(v) for k, v in custom.items()} if isinstance(custom, dict) else {}
    )


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


@dataclass
class _McapScan:
    channels: dict[int, _McapChannel]
    messages: list[tuple[int, int, bytes]]
    """(channel, log time, data) of every message."""
    data_end: int
    """Offset where complete data ends."""
    serialized_metadata: str | None
    """The ``rosbag2`` metadata record's serialized_metadata (the last one)."""


def _scan_mcap(data: bytes) -> _McapScan:
    """What an mcap file holds, reading records from the start (no summary needed)."""
    if not data.startswith(MCAP_MAGIC):
        raise BagError("not an mcap file (bad magic)")
    schemas: dict[int, tuple[str, str, str]] = {}
    channels: dict[int, _McapChannel] = {}
    found: list[tuple[int, int, bytes]] = []
    serialized: list[str] = []

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
        elif opcode == 0x0C:
            name, offset = _string(body, 0)
            if name == "rosbag2":
                (length,) = struct.unpack_from("<I", body, offset)
                offset += 4
                end = offset + length
                while offset < end:
                    key, offset = _string(body, offset)
                    value, offset = _string(body, offset)
                    if key == "serialized_metadata":
                        serialized.append(value)

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
    return _McapScan(channels, found, data_end, serialized[-1] if serialized else None)


def _reindex_mcap(path: Path, storage_file: Path, listed: dict[str, Any]) -> ReindexResult:
    data = storage_file.read_bytes()
    try:
        scan = _scan_mcap(data)
    except (struct.error, UnicodeDecodeError) as exc:
        raise BagError(f"bag {str(path)!r}: {storage_file.name} is unreadable: {exc}") from exc
    except BagError as exc:
        raise BagError(f"bag {str(path)!r}: {storage_file.name}: {exc}") from exc
    stored_version, stored_custom = _serialized_version(scan.serialized_metadata)
    version = _rewritten_version(path, _version_of(listed.get("version"), stored_version))
    hashes = _listed_hashes(listed)
    rebuilt = path / ".reindex" / path.name
    if rebuilt.parent.exists():
        for leftover in sorted(rebuilt.parent.rglob("*"), reverse=True):
            leftover.unlink() if leftover.is_file() else leftover.rmdir()
    counts: dict[str, int] = {}
    writer = VersionedWriter(rebuilt, version=version, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    try:
        connections = {}
        for channel_id, channel in scan.channels.items():
            connections[channel_id] = writer.add_connection(
                channel.topic,
                channel.msgtype,
                msgdef=channel.msgdef,
                rihs01=hashes.get(channel.msgtype) or _type_hash(channel.msgtype, path, version),
                serialization_format=channel.encoding,
                offered_qos_profiles=get_qos(channel.metadata),
            )
            counts[channel.topic] = 0
        for channel_id, log_time, message in sorted(scan.messages, key=lambda m: m[1]):
            if channel_id in connections:
                writer.write(connections[channel_id], log_time, message)
                counts[scan.channels[channel_id].topic] += 1
        if has_custom_data(version):
            # Below version 6 the sidecar file keeps custom_data, and stays as it is.
            for key, value in {**stored_custom, **read_custom_data(path)}.items():
                writer.set_custom_data(key, value)
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
    write_metadata(path / "metadata.yaml", info)
    (rebuilt / "metadata.yaml").unlink()
    rebuilt.rmdir()
    rebuilt.parent.rmdir()
    dropped = 0 if data.endswith(MCAP_MAGIC) else len(data) - scan.data_end
    return ReindexResult("mcap", counts, dropped)


_UNWRITTEN_HASH = "RIHS01_" + "0" * 64
"""Stands in for a type hash below metadata version 7, which stores none."""


def _type_hash(msgtype: str, path: Path, version: int) -> str:
    try:
        return typestore().hash_rihs01(msgtype)
    except KeyError as exc:
        if version < 7:
            return _UNWRITTEN_HASH
        raise BagError(
            f"bag {str(path)!r}: message type {msgtype} is unknown here, so its type hash "
            "cannot be written"
        ) from exc


def _reindex_sqlite3(path: Path, storage_file: Path, listed: dict[str, Any]) -> ReindexResult:
    try:
        # A normal connection rolls a hot journal back: the last committed transaction stays.
        connection = sqlite3.connect(storage_file)
        try:
            connection.execute("PRAGMA integrity_check").fetchone()
            columns = {row[1] for row in connection.execute("PRAGMA table_info(topics)")}
            # The layouts of every distribution: offered_qos_profiles since Foxy (schema 2),
            # type_description_hash since schema 4 (after Humble).
            qos_column = "offered_qos_profiles" if "offered_qos_profiles" in columns else "''"
            has_hashes = "type_description_hash" in columns
            hash_column = "type_description_hash" if has_hashes else "''"
            topics = connection.execute(
                f"SELECT topics.id, name, type, serialization_format, {qos_column}, {hash_column}, "
                "count(messages.id), min(messages.timestamp), max(messages.timestamp) "
                "FROM topics LEFT JOIN messages ON topics.id = messages.topic_id "
                "GROUP BY topics.id ORDER BY topics.id"
            ).fetchall()
            stored = None
            if connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'metadata'"
            ).fetchone():
                row = connection.execute(
                    "SELECT metadata FROM metadata ORDER BY id DESC LIMIT 1"
                ).fetchone()
                stored = row[0] if row else None
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise BagError(f"bag {str(path)!r}: {storage_file.name} is unreadable: {exc}") from exc
    stored_version, stored_custom = _serialized_version(stored)
    layout_version = 9 if has_hashes else 5
    version = _rewritten_version(
        path, _version_of(listed.get("version"), stored_version, layout_version)
    )
    starts = [row[7] for row in topics if row[6]]
    ends = [row[8] for row in topics if row[6]]
    start = min(starts) if starts else 0
    info = bagfile_information(
        version,
        "sqlite3",
        storage_file.name,
        [
            TopicEntry(name, msgtype, serialization, parse_qos(qos or ""), type_hash or "", count)
            for _, name, msgtype, serialization, qos, type_hash, count, _, _ in topics
        ],
        start=start,
        duration=max(ends) - start if ends else 0,
        # Below version 6 custom_data stays in its sidecar file.
        custom_data={**stored_custom, **read_custom_data(path)},
    )
    write_metadata(path / "metadata.yaml", info)
    return ReindexResult("sqlite3", {row[1]: row[6] for row in topics})
