"""A replica server's shared log: one file that makes every replica's group-commit round durable at once.

Why (Pegasus's "shared log"): under policy `group` each replica's log used to end its batch with an
fdatasync of its own, so a server with N logs paid N device flushes per group-commit round; on
onebox (24 logs on one disk, ~0.8 ms a flush under load) a round took ~12 ms. Here the log-writer
thread (log_writer.py) writes each log's batch into its private log WITHOUT syncing
(log_store.py, deferred sync), then appends a copy of every record of the round to this log in ONE
O_DSYNC write: one flush per round, whatever the number of logs.

    shared = SharedLog.open(data_dir / "slog")      # reads what is there, truncates a torn tail
    shared.recovered(log_id)                         # [(segment seq, offset, record bytes)], in order
    shared.drop_recovered()                          # once every private log was repaired from them
    shared.append(records, collect)                  # one synced write; may rotate (below)
    shared.delete_collected(segments)                # by the collector, once private logs synced
    shared.close()

Format: segments `slog.<seq, 10 digits>` in the directory. A record is

    u32 magic | u32 crc32 | u32 payload_length | u32 segment_seq | u64 log_id | u64 offset | payload

little-endian, where the payload is the exact bytes of the private log's record (log_record.py) and
(log_id, segment_seq, offset) is where it lies in that private log (the log's LOG_ID file, its
segment `mlog.<segment_seq>.*`, the byte offset there). The CRC-32 (zlib's, as log_record.py) covers
everything after the crc field: the other header fields and the payload.

Invariant: every acknowledged record is durable in this log or in its (synced) private log. A
record is acknowledged only after the shared append of its round returned; segments of this log
are deleted only (a) after a rotation, once every private log that wrote since the previous
rotation was synced (`delete_collected`, called by shared_log_collector.py), or (b) by
`drop_recovered`, after every private log was repaired from them and fsynced. Private logs still
fsync their own segment at rotation and at close.

Collection: when an append would take the active segment past `segment_bytes`, the append starts a
new segment (directory fsynced) and hands every older segment written since open to `collect`,
whose thread syncs the private logs and then deletes them (directory fsynced); the append does not
wait for it. So a few segments written since open exist (the collector's queue is bounded), plus
those found at open until `drop_recovered`; a segment holds at most `segment_bytes`, or one round
when a single round is larger (a round is one write, never split). What `open` reads is therefore
bounded by a few segments.

Recovery: `open` scans every segment. A torn record at the very tail of the last segment (a crash
mid-write: never acknowledged) is truncated; a damaged record followed by a valid one, in the same
or a later segment, raises StorageError (acknowledged data is damaged). New appends go to a fresh
segment, never to one found at open.

Any I/O error in an append leaves the log in an unknown state: it fails for good, and so does every
log that would write through it (the log writer fails each job of the round).
"""

from __future__ import annotations

import collections
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from pegasus_kv.core.errors import StorageError
from pegasus_kv.core.scanning import first_valid_offset
from pegasus_kv.replication.replica import log_store
from pegasus_kv.replication.replica.invariants import invariant
from pegasus_kv.replication.replica.log_record import MAX_PAYLOAD_BYTES, RecordFraming
from pegasus_kv.replication.replica.log_segment import fsync_directory, lock_directory, write_all
from pegasus_kv.replication.replica.log_store import RepairRecord

MiB = 1024 * 1024
DEFAULT_SEGMENT_BYTES = 32 * MiB
SHARED_LOG_DIR = "slog"
LOCK_FILE_NAME = "LOCK"
MAGIC = 0x4C534B50  # b"PKSL" little-endian: "Pegasus-Kv Shared Log"
_FRAMING = RecordFraming(MAGIC, "IQQ")  # private segment seq, log id, offset in that segment
HEADER = _FRAMING.header
HEADER_BYTES = _FRAMING.header_bytes
MAX_SEGMENT_SEQ = (1 << 32) - 1  # a private segment seq is stored in 32 bits
_SEGMENT_NAME = re.compile(r"^slog\.(\d{10})$")
# Where the platform has no O_DSYNC, an append is written and then fdatasynced as two calls.
_O_DSYNC: int = getattr(os, "O_DSYNC", 0)


class SharedRecord(NamedTuple):
    """One private-log record as the shared log keeps it."""

    log_id: int
    segment_seq: int
    offset: int
    payload: bytes


def segment_file_name(seq: int) -> str:
    return f"slog.{seq:010d}"


def encode_shared_record(record: SharedRecord) -> bytes:
    payload = record.payload
    if len(payload) > MAX_PAYLOAD_BYTES or not 0 <= record.segment_seq <= MAX_SEGMENT_SEQ:
        raise StorageError(
            f"a record of {len(payload)} bytes in private segment {record.segment_seq} "
            "does not fit the shared log"
        )
    return _FRAMING.encode(payload, record.segment_seq, record.log_id, record.offset)


def parse_shared_record_at(data: bytes, offset: int) -> tuple[SharedRecord, int] | None:
    """The valid record at `offset` and its size, or None (short, wrong magic, too long, bad CRC)."""
    parsed = _FRAMING.parse_at(data, offset)
    if parsed is None:
        return None
    (segment_seq, log_id, private_offset), end = parsed
    return SharedRecord(log_id, segment_seq, private_offset, data[offset + HEADER_BYTES : end]), end - offset


def _find_valid_record(data: bytes, start: int) -> int | None:
    return first_valid_offset(data, start, _FRAMING.magic_bytes, parse_shared_record_at)


class SharedLog:
    """A replica server's shared log. Blocking: used from the log-writer thread, and opened and
    dropped from a worker thread. A lock serialises appends (a writer with several threads)."""

    def __init__(self, directory: Path, segment_bytes: int, lock_fd: int) -> None:
        invariant(segment_bytes > 0, "segment_bytes must be positive")
        self.directory = directory
        self.segment_bytes = segment_bytes
        # Told each synced append's duration in ns, on the thread that ran it (metrics).
        self.fsync_observer: Callable[[int], None] | None = None
        self._lock = threading.Lock()
        self._lock_fd: int | None = lock_fd
        self._recovered_seqs: list[int] = []  # segments found at open, until drop_recovered
        self._recovered: dict[int, list[RepairRecord]] = collections.defaultdict(list)
        self._written_seqs: list[int] = []  # segments written since open, the last one active
        self._next_seq = 1  # above every segment ever found or written, so names never repeat
        self._active_fd: int | None = None
        self._active_bytes = 0
        self._failed: str | None = None
        self.appends = 0  # counters for operators and tests
        self.appended_bytes = 0
        self.collections = 0
        self.torn_tail_bytes_truncated = 0

    # --- open -----------------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> SharedLog:
        """Open (creating if needed) the shared log in `directory` and read every record in it.

        Truncates a torn tail; raises StorageError for a damaged record followed by valid ones, and
        when another process holds the directory.
        """
        lock_fd = lock_directory(directory, LOCK_FILE_NAME, "shared log")
        log = cls(directory, segment_bytes, lock_fd)
        try:
            log._read_all()
        except BaseException:
            log._close_files()
            raise
        return log

    def _read_all(self) -> None:
        try:
            found = sorted(
                (int(match.group(1)), entry)
                for entry in self.directory.iterdir()
                if (match := _SEGMENT_NAME.match(entry.name)) is not None
            )
        except OSError as exc:
            raise StorageError(f"cannot list shared log {self.directory}: {exc}") from exc
        for position, (seq, path) in enumerate(found):
            data = self._read_whole(path)
            offset = 0
            while offset < len(data):
                parsed = parse_shared_record_at(data, offset)
                if parsed is None:
                    break
                record, size = parsed
                self._recovered[record.log_id].append(
                    RepairRecord(record.segment_seq, record.offset, record.payload)
                )
                offset += size
            self._recovered_seqs.append(seq)
            self._next_seq = seq + 1
            if offset < len(data):  # the segments after this one are deleted with the torn tail
                self._truncate_torn_tail(found, position, data, offset)
                break

    def _truncate_torn_tail(
        self, found: list[tuple[int, Path]], position: int, data: bytes, end: int
    ) -> None:
        path = found[position][1]
        if _find_valid_record(data, end) is not None:
            raise StorageError(
                f"{path}: damaged record at offset {end} is followed by valid records; "
                "refusing to drop acknowledged mutations"
            )
        later = found[position + 1 :]
        for _, other in later:
            if _find_valid_record(self._read_whole(other), 0) is not None:
                raise StorageError(
                    f"{path}: damaged record at offset {end} is followed by valid records "
                    f"in {other}; refusing to drop acknowledged mutations"
                )
        torn_bytes = len(data) - end
        try:
            with open(path, "r+b") as handle:
                handle.truncate(end)
                handle.flush()
                os.fsync(handle.fileno())
            for _, other in later:
                torn_bytes += other.stat().st_size
                other.unlink()
            if later:
                fsync_directory(self.directory)
        except OSError as exc:
            raise StorageError(f"cannot truncate the torn tail of {path}: {exc}") from exc
        self.torn_tail_bytes_truncated += torn_bytes

    def _read_whole(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc}") from exc

    # --- recovery -------------------------------------------------------------------------------

    def recovered(self, log_id: int) -> list[RepairRecord]:
        """The records found at open for the private log `log_id`, in append order (empty after
        `drop_recovered`)."""
        return list(self._recovered.get(log_id, ()))

    @property
    def recovered_segment_count(self) -> int:
        return len(self._recovered_seqs)

    def drop_recovered(self) -> None:
        """Delete the segments found at open: call it once every private log they hold records for
        was repaired and fsynced (SegmentedLog.open with them). A crash before this only means the
        next open finds them again and the repair is done again."""
        with self._lock:
            self._check_usable()
            doomed, self._recovered_seqs = self._recovered_seqs, []
            self._recovered.clear()
            self._delete_segments(doomed)

    # --- appending ------------------------------------------------------------------------------

    def append(self, records: Sequence[SharedRecord], collect: Callable[[list[int]], None]) -> None:
        """Make `records` durable with one synced write (one round of the log writer).

        When they would take the active segment past segment_bytes, rotates first (module doc) and
        calls `collect(older segments)`: the caller must sync every private log that wrote since the
        previous rotation and only then `delete_collected` them (shared_log_collector.py). Any
        failure fails this log for good.
        """
        invariant(bool(records), "an empty shared append")
        data = b"".join(encode_shared_record(record) for record in records)
        with self._lock:
            self._check_usable()
            try:
                if self._active_fd is None:
                    self._start_segment()
                elif self._active_bytes > 0 and self._active_bytes + len(data) > self.segment_bytes:
                    self._start_segment()
                    older, self._written_seqs = self._written_seqs[:-1], self._written_seqs[-1:]
                    self.collections += 1
                    collect(older)
                self._write(data)
            except (OSError, StorageError) as exc:
                self._failed = f"append failed: {exc}"
                raise StorageError(f"shared log {self.directory}: {self._failed}") from exc
            except BaseException as exc:
                self._failed = f"append failed: {exc!r}"
                raise
            self.appends += 1
            self.appended_bytes += len(data)

    def delete_collected(self, seqs: list[int]) -> None:
        """Delete segments handed to `collect` once the private logs that wrote into them are synced
        (from the collector's thread). Nothing is deleted once the log has failed."""
        with self._lock:
            self._check_usable()
            self._delete_segments(seqs)

    def fail(self, reason: str) -> None:
        """Fail the log for good (a collection could not make its segments' records durable)."""
        with self._lock:
            self._failed = self._failed or reason

    def _write(self, data: bytes) -> None:
        assert self._active_fd is not None  # _start_segment made one
        started_ns = time.perf_counter_ns()
        if _O_DSYNC:  # the write is the fdatasync (log_store.py module doc)
            log_store.write_synced(self._active_fd, data)
        else:
            write_all(self._active_fd, data)
            log_store.sync_data(self._active_fd)
        self._active_bytes += len(data)
        if self.fsync_observer is not None:
            self.fsync_observer(time.perf_counter_ns() - started_ns)

    def _start_segment(self) -> None:
        """A fresh segment after every one on disk, its creation durable before anything is in it."""
        seq = self._next_seq
        invariant(seq < 10**10, "shared log segment numbers ran out")
        path = self.directory / segment_file_name(seq)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | _O_DSYNC, 0o644)
        if self._active_fd is not None:
            os.close(self._active_fd)  # every write to it was synced
        self._active_fd = fd
        self._active_bytes = 0
        self._written_seqs.append(seq)
        self._next_seq = seq + 1
        fsync_directory(self.directory)

    def _delete_segments(self, seqs: list[int]) -> None:
        if not seqs:
            return
        try:
            for seq in seqs:
                (self.directory / segment_file_name(seq)).unlink(missing_ok=True)
            fsync_directory(self.directory)
        except OSError as exc:
            self._failed = f"deleting segments failed: {exc}"
            raise StorageError(f"shared log {self.directory}: {self._failed}") from exc

    # --- closing --------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the files (every append was synced already). Idempotent."""
        with self._lock:
            self._close_files()
            self._failed = self._failed or "closed"

    def _close_files(self) -> None:
        if self._active_fd is not None:
            os.close(self._active_fd)
            self._active_fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise StorageError(f"shared log {self.directory} is unusable: {self._failed}")
