"""The local meta store: an fsynced append-only event file plus snapshots (one meta, embedded default).

Files in the store's directory:

    LOCK                     flock'ed while a meta server has the store open
    snapshot                 one frame: u64 generation | snapshot bytes
    events.<generation>.log  frames of records appended since that snapshot

A snapshot of generation g covers every event file of a lower generation. Writing one: write
`snapshot.tmp`, fsync, rename over `snapshot`, fsync the directory (now it counts), create
`events.<g>.log`, then delete the older event file. A crash at any point leaves either the old
snapshot with its complete event file, or the new snapshot (whose older event files are ignored and
deleted at the next open, and whose own event file is created if missing). Nothing is applied twice.

All file work runs in a worker thread; an asyncio.Lock keeps one operation at a time.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import struct
from collections.abc import Sequence
from pathlib import Path

from pegasus_kv.core.errors import InvalidStateError, StorageError
from pegasus_kv.replication.meta.record_file import encode_frame, frame_at, read_frames_truncating_torn_tail
from pegasus_kv.replication.meta.store import MetaLog, MetaStore, check_append, check_snapshot

SNAPSHOT_FILE = "snapshot"
SNAPSHOT_TEMP_FILE = "snapshot.tmp"
LOCK_FILE = "LOCK"
EVENTS_FILE = re.compile(r"^events\.(\d{10})\.log$")
_GENERATION = struct.Struct("<Q")


def _events_file_name(generation: int) -> str:
    return f"events.{generation:010d}.log"


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Files:
    """The synchronous file work of the local store (called from a worker thread, one at a time)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.generation = 1
        self.records_since_snapshot = 0
        self._lock_fd: int | None = None
        self._events_fd: int | None = None
        self._failed: str | None = None

    @property
    def events_path(self) -> Path:
        return self.directory / _events_file_name(self.generation)

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise StorageError(f"meta store {self.directory} is in use by another process") from exc
        (self.directory / SNAPSHOT_TEMP_FILE).unlink(missing_ok=True)  # a snapshot cut short
        snapshot = self._read_snapshot()
        names = [entry.name for entry in self.directory.iterdir()]
        generations = sorted(int(match.group(1)) for name in names if (match := EVENTS_FILE.match(name)))
        if snapshot is not None:
            self.generation = snapshot[0]
        elif generations:
            self.generation = generations[0]
            if len(generations) > 1:
                raise StorageError(f"meta store {self.directory}: several event files and no snapshot")
        directory_changed = False
        for generation in generations:
            if generation > self.generation:
                raise StorageError(
                    f"meta store {self.directory}: event file {generation} is newer than the snapshot"
                )
            if generation < self.generation:  # covered by the snapshot; its deletion was cut short
                (self.directory / _events_file_name(generation)).unlink()
                directory_changed = True
        records, valid_end = self._read_events()
        self.records_since_snapshot = len(records)
        directory_changed |= not self.events_path.exists()
        self._events_fd = os.open(self.events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if valid_end < os.fstat(self._events_fd).st_size:  # torn tail: never acknowledged
            os.ftruncate(self._events_fd, valid_end)
            os.fsync(self._events_fd)
        if directory_changed:
            _fsync_directory(self.directory)

    def _read_snapshot(self) -> tuple[int, bytes] | None:
        path = self.directory / SNAPSHOT_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        found = frame_at(data, 0)
        if found is None or found[1] != len(data) or found[1] - found[0] < _GENERATION.size:
            # It was fsynced before being renamed into place: a bad one is damage, not a crash.
            raise StorageError(f"meta snapshot {path} is damaged")
        (generation,) = _GENERATION.unpack_from(data, found[0])
        return generation, data[found[0] + _GENERATION.size : found[1]]

    def _read_events(self) -> tuple[list[bytes], int]:
        try:
            data = self.events_path.read_bytes()
        except FileNotFoundError:
            return [], 0
        return read_frames_truncating_torn_tail(data, str(self.events_path))

    def load(self) -> MetaLog:
        self._check_usable()
        snapshot = self._read_snapshot()
        records, _ = self._read_events()
        return MetaLog(None if snapshot is None else snapshot[1], records)

    def append(self, records: Sequence[bytes]) -> None:
        self._check_usable()
        if self._events_fd is None:
            raise StorageError(f"meta store {self.directory} is not open")
        try:
            _write_all(self._events_fd, b"".join(encode_frame(record) for record in records))
            os.fsync(self._events_fd)
        except OSError as exc:
            # After a failed write or fsync nobody knows what reached the disk: stop writing.
            self._failed = f"append failed: {exc}"
            raise StorageError(f"meta store {self.directory}: {self._failed}") from exc
        self.records_since_snapshot += len(records)

    def write_snapshot(self, snapshot: bytes) -> None:
        self._check_usable()
        new_generation = self.generation + 1
        temp = self.directory / SNAPSHOT_TEMP_FILE
        try:
            with open(temp, "wb") as handle:
                handle.write(encode_frame(_GENERATION.pack(new_generation) + snapshot))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.directory / SNAPSHOT_FILE)
            _fsync_directory(self.directory)  # the snapshot now counts
            old_events = self.events_path
            old_fd = self._events_fd
            self.generation = new_generation
            # Nothing of the new generation can exist yet (open refuses files newer than the snapshot).
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC
            self._events_fd = os.open(self.events_path, flags, 0o644)
            if old_fd is not None:
                os.close(old_fd)
            old_events.unlink(missing_ok=True)
            _fsync_directory(self.directory)
        except OSError as exc:
            self._failed = f"snapshot failed: {exc}"
            raise StorageError(f"meta store {self.directory}: {self._failed}") from exc
        self.records_since_snapshot = 0

    def close(self) -> None:
        for fd in (self._events_fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._events_fd = self._lock_fd = None
        self._failed = self._failed or "closed"

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise StorageError(f"meta store {self.directory} is unusable: {self._failed}")


class LocalMetaStore(MetaStore):
    """One meta server, its state in a local directory. It is always the leader."""

    def __init__(self, files: _Files) -> None:
        super().__init__()
        self._files = files
        self._lock = asyncio.Lock()
        self._address: str | None = None
        self._closed = False

    @classmethod
    async def open(cls, directory: str | os.PathLike[str]) -> LocalMetaStore:
        """Open (creating if needed) the store; truncates a torn tail of the event file."""
        files = _Files(Path(directory))
        try:
            await asyncio.to_thread(files.open)
        except OSError as exc:
            await asyncio.to_thread(files.close)
            raise StorageError(f"cannot open meta store {directory}: {exc}") from exc
        except BaseException:
            await asyncio.to_thread(files.close)
            raise
        return cls(files)

    @property
    def directory(self) -> Path:
        return self._files.directory

    @property
    def is_leader(self) -> bool:
        return not self._closed

    @property
    def records_since_snapshot(self) -> int:
        return self._files.records_since_snapshot

    async def campaign(self, my_address: str) -> None:
        self._address = my_address

    async def leader_address(self) -> str | None:
        return None if self._closed else self._address

    async def load(self) -> MetaLog:
        async with self._lock:
            self._check_open()
            return await asyncio.to_thread(self._files.load)

    async def append(self, records: Sequence[bytes]) -> None:
        check_append(records)
        async with self._lock:
            self._check_open()
            if records:
                await asyncio.to_thread(self._files.append, list(records))

    async def write_snapshot(self, snapshot: bytes) -> None:
        check_snapshot(snapshot)
        async with self._lock:
            self._check_open()
            await asyncio.to_thread(self._files.write_snapshot, snapshot)

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidStateError(f"meta store {self.directory} is closed")

    async def close(self) -> None:
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            await asyncio.to_thread(self._files.close)
        self.leadership_lost.set()
