"""The synchronous half of the mutation log: segment files, replay, reads and garbage collection.

Every method blocks on the disk, so the async `MutationLog` calls them from a worker thread; a lock
serialises them (the group-commit writer runs at most one batch at a time, reads and garbage
collection may come from other tasks). Properties are plain attribute reads, safe from the loop.

Durability (pacifica.md, "Log and checkpoints"): a record is acknowledged only after the fsync that
the policy asks for. A crash mid-write leaves a torn record at the very tail; replay truncates it
because it was never acknowledged. A bad record with valid records after it is not a crash
artifact (a process crash cannot reorder writes that already reached the page cache, and segment
rotation fsyncs the old segment first), so replay refuses to guess and raises StorageError. After
a power loss under policy `none`, anything unsynced may be lost or mangled: that policy is for
tests and for operators who accept it.

The fsync of appended records is an fdatasync where the platform has one: it makes the data and the
file size durable (all a replay needs), skipping only timestamps. On onebox (ext4) it took about
half the time of an fsync per append batch (~0.2 against ~0.4 ms), and one thread fsyncs every
log of a server in turn (log_writer.py), so that is latency on every write. Segment creation,
rotation and directories still get a full fsync.

Under the policies that sync (`group`, `always`) the active segment is opened with O_DSYNC where the
platform has it, so the write of a batch is its fdatasync: one system call instead of two. That
matters more than the syscall: the log-writer thread gives up the GIL for each call and, while the
event loop is busy, waits for it afterwards (server_process.py), so each call saved is a wait saved
on every log of every group-commit round. The cost on the disk is the same (O_DSYNC write 220-250 µs
against write + fdatasync 210-230 µs for 3 KB on this ext4).

Deferred sync (`defer_sync=True`, a replica server under policy `group`): the server's shared log
(shared_log.py) makes every log's batch of a group-commit round durable with one write, so this log
writes its batches without syncing (`write_unsynced`, which returns where each record went) and
syncs only when asked (`sync_written`, before the shared log deletes a segment), at segment rotation
and at close. After a power loss its tail may be missing or mangled; `open` first writes back the
records the shared log kept for it (`_repair`), then replays as usual.

Identity: each log directory holds a `LOG_ID` file with a random 64-bit id, made at the first open;
the shared log names the log its records belong to by it. A replica made afresh gets a new id, so
the records of a dropped replica of the same gpid never match it.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import itertools
import os
import secrets
import struct
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from pegasus_kv.core.errors import StorageError
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.replication.replica.invariants import invariant
from pegasus_kv.replication.replica.log_index import LiveIndex, Location
from pegasus_kv.replication.replica.log_record import (
    decode_record,
    find_valid_record,
    parse_record_at,
    scan_records,
)
from pegasus_kv.replication.replica.log_segment import (
    Segment,
    fsync_directory,
    lock_directory,
    parse_segment_file_name,
    read_exactly,
    segment_file_name,
    write_all,
)

LOCK_FILE_NAME = "LOCK"
LOG_ID_FILE_NAME = "LOG_ID"
_LOG_ID = struct.Struct("<Q")


def sync_data(fd: int) -> None:
    """Make the file's data and size durable (fdatasync; fsync where there is none, as on macOS)."""
    getattr(os, "fdatasync", os.fsync)(fd)


def write_synced(fd: int, data: bytes) -> None:
    """Append `data` through a descriptor opened with O_DSYNC: returns once data and size are durable,
    as write + sync_data would."""
    write_all(fd, data)


# Where the platform has no O_DSYNC, appends are written and then fdatasynced as two calls.
_O_DSYNC: int = getattr(os, "O_DSYNC", 0)


class FsyncPolicy(enum.StrEnum):
    GROUP = "group"  # one fsync per batch of appends; each append is acknowledged after it
    ALWAYS = "always"  # one fsync per append
    NONE = "none"  # never fsync: acknowledged once written to the OS (lost on power failure)


@dataclasses.dataclass(slots=True)
class LogCounters:
    """Monotonic counters for metrics; read a copy with `snapshot()`."""

    appended_records: int = 0
    appended_bytes: int = 0
    batches: int = 0
    fsyncs: int = 0  # of segment files (directory fsyncs are counted apart)
    fsync_ns_total: int = 0
    fsync_ns_max: int = 0
    directory_fsyncs: int = 0
    segments_created: int = 0
    segments_deleted: int = 0
    superseded_records: int = 0  # discarded by rule 3 of the supersede rule (log_index.py)
    torn_tail_bytes_truncated: int = 0  # by the replay at open
    repaired_records: int = 0  # written back from the shared log at open
    read_records: int = 0
    read_bytes: int = 0

    def snapshot(self) -> LogCounters:
        return dataclasses.replace(self)


class Placement(NamedTuple):
    """Where `write_unsynced` put one record: its segment (by sequence number), offset and bytes."""

    segment_seq: int
    offset: int
    record: bytes


class RepairRecord(NamedTuple):
    """A record a shared log kept for a log (shared_log.py): where it goes, and its bytes."""

    segment_seq: int
    offset: int
    payload: bytes  # one whole mutation-log record (log_record.py)


@dataclasses.dataclass(frozen=True, slots=True)
class EncodedMutation:
    """A mutation with its record bytes (encoded on the event loop, written in the worker thread)."""

    mutation: Mutation
    record: bytes


def _same_mutation(a: Mutation, b: Mutation) -> bool:
    """Same content, whatever the ballot: what a re-prepare under a new ballot looks like."""
    return (
        a.decree == b.decree
        and a.timestamp_us == b.timestamp_us
        and a.cluster_id == b.cluster_id
        and (a.writes == b.writes)
    )


def _itself(mutation: Mutation) -> Mutation:
    return mutation


class SegmentedLog:
    """A directory of segment files holding one replica's mutation log."""

    def __init__(
        self,
        directory: Path,
        segment_bytes: int,
        fsync_policy: FsyncPolicy,
        lock_fd: int,
        *,
        log_id: int = 0,
        defer_sync: bool = False,
    ) -> None:
        invariant(segment_bytes > 0, "segment_bytes must be positive")
        invariant(not defer_sync or fsync_policy is FsyncPolicy.GROUP, "deferred sync is for policy group")
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.fsync_policy = fsync_policy
        self.log_id = log_id  # what the shared log knows this log by (the LOG_ID file)
        # Batches are written unsynced: a shared log makes them durable (see the module doc).
        self.defer_sync = defer_sync
        # Opening flag of the active segment: O_DSYNC when the policy syncs every batch anyway.
        self._sync_flag = 0 if fsync_policy is FsyncPolicy.NONE or defer_sync else _O_DSYNC
        self.counters = LogCounters()
        # Told each segment fsync's duration in ns, on the thread that ran it (metrics).
        self.fsync_observer: Callable[[int], None] | None = None
        self._lock_fd: int | None = lock_fd
        self._lock = threading.Lock()
        self._index = LiveIndex()
        self._segments: list[Segment] = []
        self._readers: dict[int, int] = {}  # segment seq -> read-only fd
        self._active_fd: int | None = None  # the last segment, opened for append
        self._unsynced_bytes = 0
        self._size_bytes = 0
        self._failed: str | None = None
        self._replayed_commit_point = 0

    # --- open and replay ------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path,
        segment_bytes: int,
        fsync_policy: FsyncPolicy,
        *,
        defer_sync: bool = False,
        shared_records: Callable[[int], Sequence[RepairRecord]] | None = None,
    ) -> SegmentedLog:
        """Open (creating if needed) the log in `directory` and replay it into the index.

        `shared_records(log_id)`, when given, returns what a shared log kept for this log: those
        records are written back first (`_repair`). Truncates a torn tail; raises StorageError for a
        damaged record followed by valid ones, and when another process holds the directory.
        """
        lock_fd = lock_directory(directory, LOCK_FILE_NAME, "mutation log")
        try:
            log_id = _read_or_make_log_id(directory, durable=fsync_policy is not FsyncPolicy.NONE)
        except BaseException:
            os.close(lock_fd)
            raise
        log = cls(directory, segment_bytes, fsync_policy, lock_fd, log_id=log_id, defer_sync=defer_sync)
        try:
            if shared_records is not None:
                log._repair(shared_records(log_id))
            log._replay()
        except BaseException:
            log._close_files()
            raise
        return log

    def _repair(self, records: Sequence[RepairRecord]) -> None:
        """Write back, at their places, the records a shared log kept for this log (shared_log.py).

        A record of a segment below the lowest one on disk is skipped: this log's own collection
        deleted that segment (synced at rotation, and wholly below a durable checkpoint). A missing
        segment is created, named after the decree of its record at offset 0, which must be among
        the records (else acknowledged records before them are gone: a hole, StorageError). Writing
        the same bytes again is harmless, so a repair cut short by a crash is simply done again at
        the next open. Every repaired file, then the directory, is fsynced before the replay.

        Then the log is cut right after the last repaired record: a later segment file is deleted
        and the segment of that record truncated at its end. Nothing there was acknowledged (an
        append under the shared log is acknowledged once its round's shared append is durable, and
        every later round that wrote to this log would be in the shared log too), but after a power
        loss the page cache may have written those bytes back in any order, leaving damaged records
        followed by valid ones, which the replay refuses as corruption.
        """
        if not records:
            return
        by_seq = {segment.seq: segment.path for segment in self._list_segments()}
        lowest = min(by_seq) if by_seq else None
        writes: dict[int, list[tuple[int, bytes]]] = {}
        end: tuple[int, int] | None = None  # (segment seq, offset) just after the last record
        for seq, offset, payload in records:
            if lowest is not None and seq < lowest:
                continue
            record = parse_record_at(payload, 0)
            if record is None or record.size_bytes != len(payload) or offset < 0:
                raise StorageError(
                    f"{self.directory}: the shared log's record for segment {seq} offset {offset} is not "
                    "one whole mutation-log record"
                )
            writes.setdefault(seq, []).append((offset, payload))
            end = (seq, offset + len(payload))
        for seq, placed in writes.items():
            path = by_seq.get(seq)
            if path is None:
                first = next((payload for offset, payload in placed if offset == 0), None)
                first_record = parse_record_at(first, 0) if first is not None else None
                if first_record is None:
                    raise StorageError(
                        f"{self.directory}: segment {seq} is missing and the shared log does not hold its "
                        "first record; refusing to replay a log with a hole"
                    )
                path = self.directory / segment_file_name(seq, first_record.decree)
            try:
                segment_fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
                try:
                    for offset, payload in placed:
                        _pwrite_all(segment_fd, payload, offset)
                    if end is not None and seq == end[0]:
                        os.ftruncate(segment_fd, end[1])
                    os.fsync(segment_fd)
                finally:
                    os.close(segment_fd)
            except OSError as exc:
                raise StorageError(f"cannot repair {path} from the shared log: {exc}") from exc
            self.counters.repaired_records += len(placed)
        if end is not None:
            for seq, path in sorted(by_seq.items()):
                if seq > end[0]:
                    try:
                        path.unlink()
                    except OSError as exc:
                        raise StorageError(
                            f"cannot delete {path}, written after the shared log: {exc}"
                        ) from exc
        if writes:
            self._fsync_directory()

    def _list_segments(self) -> list[Segment]:
        try:
            found: list[Segment] = []
            for entry in self.directory.iterdir():
                parsed = parse_segment_file_name(entry.name)
                if parsed is not None:
                    found.append(Segment(seq=parsed[0], first_decree=parsed[1], path=entry))
        except OSError as exc:
            raise StorageError(f"cannot list mutation log {self.directory}: {exc}") from exc
        return found

    def _replay(self) -> None:
        found = self._list_segments()
        found.sort(key=lambda segment: segment.seq)
        for previous, segment in itertools.pairwise(found):
            if previous.seq == segment.seq:
                raise StorageError(f"two segments with sequence number {segment.seq} in {self.directory}")
        for position, segment in enumerate(found):
            data = self._read_whole(segment.path)
            self._segments.append(segment)
            records, valid_end = scan_records(data)
            for record in records:
                if record.decree <= 0 or record.ballot < self._index.max_ballot:
                    raise StorageError(
                        f"{segment.path} offset {record.offset}: record of ballot {record.ballot} decree "
                        f"{record.decree} after ballot {self._index.max_ballot}: the log is inconsistent"
                    )
                segment.note_record(record.decree, record.size_bytes)
                self._size_bytes += record.size_bytes
                if record.committed > self._replayed_commit_point:
                    self._replayed_commit_point = record.committed
                location = Location(record.ballot, segment.seq, record.offset, record.size_bytes)
                raw = data[record.offset : record.offset + record.size_bytes]
                where = f"{segment.path} offset {record.offset}"
                # Decoded only if the supersede rule needs to compare it with an earlier record.
                self._take_into_index(record.decree, location, functools.partial(decode_record, raw, where))
            if valid_end < len(data):
                self._truncate_torn_tail(found, position, data, valid_end)
                break
        for segment in [s for s in self._segments if s.size_bytes == 0]:
            self._delete_segment_file(segment)  # created just before a crash, never written
        self._segments = [s for s in self._segments if s.size_bytes > 0]
        if self._segments:
            active = self._segments[-1]
            try:
                self._active_fd = os.open(active.path, os.O_WRONLY | os.O_APPEND | self._sync_flag)
            except OSError as exc:
                raise StorageError(f"cannot open {active.path} for append: {exc}") from exc

    def _truncate_torn_tail(self, found: list[Segment], position: int, data: bytes, valid_end: int) -> None:
        segment = found[position]
        if find_valid_record(data, valid_end) is not None:
            raise StorageError(
                f"{segment.path}: damaged record at offset {valid_end} is followed by valid records; "
                "refusing to drop acknowledged mutations"
            )
        later = found[position + 1 :]
        for other in later:
            if find_valid_record(self._read_whole(other.path), 0) is not None:
                raise StorageError(
                    f"{segment.path}: damaged record at offset {valid_end} is followed by valid records "
                    f"in {other.path}; refusing to drop acknowledged mutations"
                )
        torn_bytes = len(data) - valid_end
        try:
            with open(segment.path, "r+b") as handle:
                handle.truncate(valid_end)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise StorageError(f"cannot truncate the torn tail of {segment.path}: {exc}") from exc
        for other in later:
            torn_bytes += other.path.stat().st_size
            self._delete_segment_file(other)
        self.counters.torn_tail_bytes_truncated += torn_bytes
        self._fsync_directory()

    def _read_whole(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc}") from exc

    # --- properties -----------------------------------------------------------------------------

    @property
    def first_decree(self) -> int:
        return self._index.first_decree

    @property
    def last_decree(self) -> int:
        return self._index.last_decree

    @property
    def max_ballot(self) -> int:
        return self._index.max_ballot

    @property
    def replayed_commit_point(self) -> int:
        """The highest commit point a record found at open vouches for (log_record.py), 0 if none."""
        return self._replayed_commit_point

    @property
    def size_bytes(self) -> int:
        return self._size_bytes

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    # --- writing --------------------------------------------------------------------------------

    def write_batch(self, batch: Sequence[EncodedMutation]) -> None:
        """Write a batch in order and fsync it as the policy says; returns once it is acknowledgeable.

        Any I/O error leaves the files in an unknown state (after a failed fsync the kernel may have
        dropped the dirty pages), so the log fails for good and every later call raises.
        """
        invariant(not self.defer_sync, "a log with deferred sync writes through write_unsynced")
        self._write(batch, sync=True)

    def write_unsynced(self, batch: Sequence[EncodedMutation]) -> list[Placement]:
        """Write a batch in order without syncing it (deferred sync, see the module doc) and return
        where each record went: it is acknowledgeable once a shared log holds those placements.
        Fails for good on an I/O error, as write_batch does."""
        invariant(self.defer_sync, "write_unsynced on a log that syncs its own batches")
        return self._write(batch, sync=False)

    def sync_written(self) -> None:
        """Make everything written so far durable WITHOUT holding the log's lock during the flush, so
        the log writer may append meanwhile (the shared log's collector, shared_log_collector.py).

        The flush goes through a duplicate of the active segment's descriptor: a rotation meanwhile
        closes the original after syncing it, and what the duplicate syncs covers every byte written
        before this call. The unsynced count is left as it is (close and rotation sync again)."""
        with self._lock:
            if self._active_fd is None or self._unsynced_bytes == 0:
                return
            fd = os.dup(self._active_fd)
        try:
            sync_data(fd)
        except OSError as exc:
            with self._lock:
                self._failed = f"fsync failed: {exc}"
            raise StorageError(f"mutation log {self.directory}: {self._failed}") from exc
        finally:
            os.close(fd)

    def _write(self, batch: Sequence[EncodedMutation], *, sync: bool) -> list[Placement]:
        with self._lock:
            self._check_usable()
            try:
                placed = self._write_and_sync(batch, sync=sync)
            except OSError as exc:
                self._failed = f"write failed: {exc}"
                raise StorageError(f"mutation log {self.directory}: {self._failed}") from exc
            placements: list[Placement] = []
            for item, location in placed:
                self._take_into_index(
                    item.mutation.decree, location, functools.partial(_itself, item.mutation)
                )
                placements.append(Placement(location.segment_seq, location.offset, item.record))
            self.counters.batches += 1
            self.counters.appended_records += len(batch)
            return placements

    def _write_and_sync(
        self, batch: Sequence[EncodedMutation], *, sync: bool
    ) -> list[tuple[EncodedMutation, Location]]:
        placed: list[tuple[EncodedMutation, Location]] = []
        buffered: list[bytes] = []
        for item in batch:
            size = len(item.record)
            active = self._segments[-1] if self._active_fd is not None else None
            if active is None or (active.size_bytes > 0 and active.size_bytes + size > self.segment_bytes):
                self._write_buffered(buffered)
                active = self._rotate(item.mutation.decree)
            placed.append((item, Location(item.mutation.ballot, active.seq, active.size_bytes, size)))
            active.note_record(item.mutation.decree, size)
            buffered.append(item.record)
            if self.fsync_policy is FsyncPolicy.ALWAYS:
                self._write_buffered(buffered)
                self._fsync_active()
        self._write_buffered(buffered)
        if sync and self.fsync_policy is FsyncPolicy.GROUP:
            self._fsync_active()
        return placed

    def _write_buffered(self, buffered: list[bytes]) -> None:
        if not buffered:
            return
        invariant(self._active_fd is not None, "writing with no active segment")
        assert self._active_fd is not None  # for the type checker; the invariant above holds under -O
        data = b"".join(buffered) if len(buffered) > 1 else buffered[0]
        buffered.clear()
        if self._sync_flag:  # the write is the fdatasync (see the module doc)
            started_ns = time.perf_counter_ns()
            write_synced(self._active_fd, data)
            self._count_sync(time.perf_counter_ns() - started_ns)
        else:
            write_all(self._active_fd, data)
            self._unsynced_bytes += len(data)
        self._size_bytes += len(data)
        self.counters.appended_bytes += len(data)

    def _fsync_active(self) -> None:
        if self._active_fd is None or self._unsynced_bytes == 0:
            return
        started_ns = time.perf_counter_ns()
        sync_data(self._active_fd)
        self._unsynced_bytes = 0
        self._count_sync(time.perf_counter_ns() - started_ns)

    def _count_sync(self, elapsed_ns: int) -> None:
        self.counters.fsyncs += 1
        self.counters.fsync_ns_total += elapsed_ns
        self.counters.fsync_ns_max = max(self.counters.fsync_ns_max, elapsed_ns)
        if self.fsync_observer is not None:
            self.fsync_observer(elapsed_ns)

    def _rotate(self, first_decree: int) -> Segment:
        """Close the active segment (durable first, so only the newest segment can have a torn tail)."""
        if self._active_fd is not None:
            if self.fsync_policy is not FsyncPolicy.NONE:
                self._fsync_active()
            os.close(self._active_fd)
            self._active_fd = None
        seq = self._segments[-1].seq + 1 if self._segments else 1
        path = self.directory / segment_file_name(seq, first_decree)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | self._sync_flag
        self._active_fd = os.open(path, flags, 0o644)
        self._unsynced_bytes = 0
        segment = Segment(seq=seq, first_decree=first_decree, path=path)
        self._segments.append(segment)
        self.counters.segments_created += 1
        if self.fsync_policy is not FsyncPolicy.NONE:
            self._fsync_directory()
        return segment

    def _take_into_index(self, decree: int, location: Location, new_mutation: Callable[[], Mutation]) -> None:
        def same_mutation(earlier: Location) -> bool:
            return _same_mutation(self._read_mutation(earlier), new_mutation())

        discarded = self._index.record(decree, location, same_mutation)
        self.counters.superseded_records += len(discarded)

    # --- reading --------------------------------------------------------------------------------

    def read(self, from_decree: int, to_decree: int, max_bytes: int) -> list[Mutation]:
        """Live mutations with from_decree <= decree <= to_decree, ascending, within max_bytes.

        At least one mutation is returned when any is in range, even one larger than max_bytes, so a
        reader always makes progress; it continues from the last decree returned plus one. Decrees
        missing from the log (collected, or never logged) are skipped: compare with first_decree.
        """
        invariant(max_bytes > 0, "max_bytes must be positive")
        with self._lock:
            mutations: list[Mutation] = []
            total_bytes = 0
            for decree in self._index.decrees_between(from_decree, to_decree):
                location = self._index.get(decree)
                invariant(location is not None, f"decree {decree} listed but not indexed")
                assert location is not None
                if mutations and total_bytes + location.size_bytes > max_bytes:
                    break
                mutations.append(self._read_mutation(location))
                total_bytes += location.size_bytes
            self.counters.read_records += len(mutations)
            self.counters.read_bytes += total_bytes
            return mutations

    def _read_mutation(self, location: Location) -> Mutation:
        segment_fd = self._reader(location.segment_seq)
        where = f"{self.directory} segment {location.segment_seq} offset {location.offset}"
        try:
            data = read_exactly(segment_fd, location.size_bytes, location.offset)
        except OSError as exc:
            raise StorageError(f"{where}: read failed: {exc}") from exc
        if parse_record_at(data, 0) is None:  # checksummed again: the disk may have rotted since replay
            raise StorageError(f"{where}: record fails its checksum")
        return decode_record(data, where)

    def _reader(self, segment_seq: int) -> int:
        segment_fd = self._readers.get(segment_seq)
        if segment_fd is None:
            segment = next((s for s in self._segments if s.seq == segment_seq), None)
            invariant(segment is not None, f"segment {segment_seq} is not in the log")
            assert segment is not None
            try:
                segment_fd = os.open(segment.path, os.O_RDONLY)
            except OSError as exc:
                raise StorageError(f"cannot open {segment.path}: {exc}") from exc
            self._readers[segment_seq] = segment_fd
        return segment_fd

    # --- garbage collection ---------------------------------------------------------------------

    def gc(self, below_decree: int) -> int:
        """Delete the oldest segments whose every record has a decree below `below_decree`.

        Only a prefix of segments goes, and never the active one. A prefix is what keeps replay
        faithful: whether a record is live depends only on records logged after it, which all lie
        in the same or later segments. Returns the number of segments deleted.
        """
        with self._lock:
            self._check_usable()
            doomed: list[Segment] = []
            for segment in self._segments[:-1]:
                if segment.max_decree >= below_decree:
                    break
                doomed.append(segment)
            for segment in doomed:
                self._delete_segment_file(segment)
                self._size_bytes -= segment.size_bytes
            self._segments = self._segments[len(doomed) :]
            self._index.forget_segments({segment.seq for segment in doomed})
            if doomed and self.fsync_policy is not FsyncPolicy.NONE:
                self._fsync_directory()
            return len(doomed)

    def _delete_segment_file(self, segment: Segment) -> None:
        reader = self._readers.pop(segment.seq, None)
        if reader is not None:
            os.close(reader)
        try:
            segment.path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete {segment.path}: {exc}") from exc
        self.counters.segments_deleted += 1

    # --- closing --------------------------------------------------------------------------------

    def close(self) -> None:
        """Make everything written durable (unless the policy is `none`) and release the directory."""
        with self._lock:
            try:
                if self._failed is None and self.fsync_policy is not FsyncPolicy.NONE:
                    self._fsync_active()
            except OSError as exc:
                raise StorageError(f"mutation log {self.directory}: final fsync failed: {exc}") from exc
            finally:
                self._close_files()
                self._failed = self._failed or "closed"

    def _close_files(self) -> None:
        for segment_fd in self._readers.values():
            os.close(segment_fd)
        self._readers.clear()
        if self._active_fd is not None:
            os.close(self._active_fd)
            self._active_fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise StorageError(f"mutation log {self.directory} is unusable: {self._failed}")

    def _fsync_directory(self) -> None:
        fsync_directory(self.directory)
        self.counters.directory_fsyncs += 1


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _read_or_make_log_id(directory: Path, *, durable: bool) -> int:
    """The log's id from its LOG_ID file; made (random, non-zero) when there is none: written to a
    temporary file, fsynced, renamed, the directory fsynced (skipped under policy `none`)."""
    path = directory / LOG_ID_FILE_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    else:
        if len(data) != _LOG_ID.size:
            raise StorageError(f"{path} holds {len(data)} bytes, not a log id")
        (log_id,) = _LOG_ID.unpack(data)
        return int(log_id)
    log_id = 0
    while log_id == 0:  # 0 stands for "no id"
        log_id = secrets.randbits(64)
    temporary = directory / (LOG_ID_FILE_NAME + ".tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(_LOG_ID.pack(log_id))
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
        if durable:
            fsync_directory(directory)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc}") from exc
    return log_id
