"""The mutation log of one replica, for the asyncio runtime: group commit over a segmented file log.

    log = await MutationLog.open(directory)          # replays, truncates a torn tail
    async for mutation in log.replay(applied_decree + 1): ...
    await log.append(mutation)                         # returns once durable per the fsync policy
    log.submit(mutations, done)                        # no waiting: done(None) on the loop once durable
    await log.read(from_decree, to_decree, max_bytes)  # learning, duplication
    await log.gc(below_decree)                         # after a durable checkpoint
    await log.close()

Group commit (policy `group`, the default): appends queue up while a batch is being written; once
it is durable, the next batch takes everything queued (up to a batch bound), writes it and fsyncs
once, then acknowledges every append of the batch. So appends that arrive while an fsync runs share
the next one. The queue is bounded in records and bytes; an append waits for room (back-pressure on
the primary's batching), a submit must not be made without room (`has_room`). Writes and fsyncs run
in a worker thread, never on the event loop.

The writer is driven by callbacks, not by a task: queueing starts a batch when none is being written,
and the end of a batch starts the next one at once and then acknowledges the batch it wrote. So an
append costs no task, no lock and no extra pass of the event loop between its fsync and its
acknowledgement (profiling onebox: the task-and-condition writer put about eight loop passes, several
milliseconds under load, between a prepare and its durability report).

With a log writer that has a shared log (log_writer.py, shared_log.py) and policy `group`, the
batch is written into this log without syncing and made durable by the server's shared log, one
flush for every log's batch of a round: the log is opened with deferred sync (log_store.py) and
hands the writer its store and records instead of a job. `open(..., shared_records=...)` first
writes back what the shared log kept for this log (recovery after a power loss).

Which record is live for a decree that was logged more than once is the supersede rule of
log_index.py; the on-disk format is log_record.py; replay and torn tails are log_store.py.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from pegasus_kv.core.errors import (
    InvalidArgumentError,
    InvalidStateError,
    PegasusError,
    StaleBallotError,
    StorageError,
)
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.replication.replica.invariants import violated
from pegasus_kv.replication.replica.log_record import encode_record
from pegasus_kv.replication.replica.log_store import (
    EncodedMutation,
    FsyncPolicy,
    LogCounters,
    RepairRecord,
    SegmentedLog,
)
from pegasus_kv.replication.replica.log_writer import LogWriter

__all__ = [
    "DurableCallback",
    "EncodedMutation",
    "FsyncPolicy",
    "LogCounters",
    "MutationLog",
    "MutationLogOptions",
    "RepairRecord",
    "encode_for_log",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

MiB = 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class MutationLogOptions:
    segment_bytes: int = 32 * MiB  # a segment rotates once the next record would take it past this
    fsync_policy: FsyncPolicy = FsyncPolicy.GROUP
    max_batch_bytes: int = 4 * MiB  # one write + fsync takes at most this much (or one record)
    max_batch_records: int = 1024
    max_pending_bytes: int = 64 * MiB  # queued appends beyond these wait for room
    max_pending_records: int = 16384
    replay_batch_bytes: int = 4 * MiB  # how much `replay` reads from disk at a time
    # Told each segment fsync's duration in ns, on the log's worker thread (metrics).
    fsync_observer: Callable[[int], None] | None = None

    def __post_init__(self) -> None:
        for name in (
            "segment_bytes",
            "max_batch_bytes",
            "max_batch_records",
            "max_pending_bytes",
            "max_pending_records",
            "replay_batch_bytes",
        ):
            if getattr(self, name) <= 0:
                raise InvalidArgumentError(f"mutation log option {name} must be positive")


# Told, on the event loop, that the records of a submit are durable (None) or never will be (the error).
DurableCallback = Callable[[StorageError | None], None]


@dataclasses.dataclass(slots=True)
class _PendingAppend:
    item: EncodedMutation
    # Only the last record of a submit (or of an append) carries one: it is called once that record,
    # and so every record queued before it, is durable, or with the error once the log failed.
    done: DurableCallback | None


class MutationLog:
    """One replica's mutation log. Open it with `await MutationLog.open(directory)`."""

    def __init__(
        self,
        store: SegmentedLog,
        options: MutationLogOptions,
        executor: Executor | None,
        writer: LogWriter | None = None,
    ) -> None:
        self._store = store
        store.fsync_observer = options.fsync_observer
        self.options = options
        self._executor = executor
        self._writer = writer  # writes batches (else the executor does); see log_writer.py
        self._loop = asyncio.get_running_loop()
        self._pending: collections.deque[_PendingAppend] = collections.deque()
        self._pending_bytes = 0
        self._writing = False  # a batch is in the worker thread
        self._in_flight: list[_PendingAppend] = []  # that batch, when it went to submit_shared
        self._room_waiters: collections.deque[asyncio.Future[None]] = collections.deque()  # appends
        self._idle_waiters: list[asyncio.Future[None]] = []  # close(): nothing queued or being written
        self._max_queued_ballot = store.max_ballot
        self._closing = False
        self._store_closed = False
        self._failure: StorageError | None = None

    @classmethod
    async def open(
        cls,
        directory: str | os.PathLike[str],
        options: MutationLogOptions | None = None,
        *,
        executor: Executor | None = None,
        writer: LogWriter | None = None,
        shared_records: Callable[[int], Sequence[RepairRecord]] | None = None,
    ) -> MutationLog:
        """Open the log in `directory` (created if missing), replaying what is there.

        `shared_records(log_id)` (SharedLog.recovered) gives the records a shared log kept for this
        log: they are written back into it before the replay. A torn record at the tail (a crash
        mid-write: never acknowledged) is truncated. A damaged record followed by valid ones raises
        StorageError: that is corruption of acknowledged data. Use `replay()` afterwards to read the
        live mutations in decree order.
        """
        options = options or MutationLogOptions()
        loop = asyncio.get_running_loop()
        defer_sync = (
            writer is not None and writer.shared_log is not None and options.fsync_policy is FsyncPolicy.GROUP
        )
        store = await loop.run_in_executor(
            executor,
            functools.partial(
                SegmentedLog.open,
                Path(directory),
                options.segment_bytes,
                options.fsync_policy,
                defer_sync=defer_sync,
                shared_records=shared_records,
            ),
        )
        return cls(store, options, executor, writer)

    async def __aenter__(self) -> MutationLog:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- what the log holds -----------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._store.directory

    @property
    def first_decree(self) -> int:
        """The lowest decree with a live record (0 when the log is empty)."""
        return self._store.first_decree

    @property
    def last_decree(self) -> int:
        """The highest decree with a live, acknowledged record (0 when the log is empty)."""
        return self._store.last_decree

    @property
    def max_ballot(self) -> int:
        """The highest ballot logged; appends of a lower ballot are refused."""
        return self._store.max_ballot

    @property
    def replayed_commit_point(self) -> int:
        """Every decree up to this was committed here and its committed version logged, as the
        records found when the log was opened vouch (log_record.py); 0 when none does."""
        return self._store.replayed_commit_point

    @property
    def size_bytes(self) -> int:
        """Bytes in all segment files (live and superseded records)."""
        return self._store.size_bytes

    @property
    def segment_count(self) -> int:
        return self._store.segment_count

    @property
    def counters(self) -> LogCounters:
        """A copy of the metrics counters (fsyncs, fsync latency totals, bytes, batches ...)."""
        return self._store.counters.snapshot()

    # --- appending --------------------------------------------------------------------------------

    def has_room_for(self, records: int, record_bytes: int) -> bool:
        """Whether a submit of that many records and bytes stays within the pending bounds (an empty
        queue takes anything, so one record larger than the bound still goes)."""
        return not self._pending or (
            len(self._pending) + records <= self.options.max_pending_records
            and self._pending_bytes + record_bytes <= self.options.max_pending_bytes
        )

    @property
    def pending_records(self) -> int:
        """Records queued or being written, not durable yet."""
        return len(self._pending)

    async def append(self, mutation: Mutation) -> None:
        """Log a mutation; returns once it is durable as the fsync policy says.

        Raises StaleBallotError for a ballot below one already queued or logged (a replica never
        accepts an older ballot, see log_index.py rule 1), StorageError once the log has failed, and
        InvalidStateError after close. If the caller is cancelled, the record may still be logged.
        """
        item = encode_for_log(mutation)
        while not self.has_room_for(1, len(item.record)):
            self._check_accepting()
            waiter = self._loop.create_future()
            self._room_waiters.append(waiter)
            await waiter
        acknowledged: asyncio.Future[None] = self._loop.create_future()
        self._queue([item], functools.partial(_settle, acknowledged))
        await acknowledged

    def submit(self, items: Sequence[EncodedMutation], done: DurableCallback) -> None:
        """Queue records (encode_for_log) for group commit without waiting, after everything queued.

        `done(None)` is called on the event loop once all of them (and everything queued before) are
        durable as the fsync policy says; `done(error)` once the log failed instead. Done callbacks
        are called in submit order. The caller checks `has_room_for` first. Raises at once, queueing
        nothing, what `append` raises.
        """
        if not items:
            violated("an empty submit")
        self._queue(items, done, check_room=True)

    def _queue(
        self, items: Sequence[EncodedMutation], done: DurableCallback, *, check_room: bool = False
    ) -> None:
        # One pass over the items for the room check (submit) and the ballot order; the checks keep
        # their order (room, then accepting, then ballots): once per mutation on every replica.
        ballot = self._max_queued_ballot
        stale: Mutation | None = None
        stale_below = 0
        size = 0
        for item in items:
            mutation = item.mutation
            if mutation.ballot < ballot:
                if stale is None:
                    stale, stale_below = mutation, ballot
            else:
                ballot = mutation.ballot
            size += len(item.record)
        if check_room and not self.has_room_for(len(items), size):
            violated(f"mutation log {self.directory}: submit beyond the pending bounds")
        self._check_accepting()
        if stale is not None:
            # Checked before anything is queued, in queue order, so the log's ballots never go down.
            raise StaleBallotError(
                f"mutation of decree {stale.decree} has ballot {stale.ballot}, "
                f"below ballot {stale_below} already logged"
            )
        self._max_queued_ballot = ballot
        pending = self._pending
        if len(items) == 1:
            pending.append(_PendingAppend(items[0], done))
        else:
            last = len(items) - 1
            for index, item in enumerate(items):
                pending.append(_PendingAppend(item, done if index == last else None))
        self._pending_bytes += size
        if not self._writing:
            self._start_batch()

    def _check_accepting(self) -> None:
        if self._failure is not None:
            raise StorageError(f"mutation log {self.directory} has failed: {self._failure.message}")
        if self._closing:
            raise InvalidStateError(f"mutation log {self.directory} is closed")

    def _start_batch(self) -> None:
        """The single writer: one batch in flight at a time, so records reach the file in queue order."""
        if self._writing or self._failure is not None:
            return
        if not self._pending:
            if self._idle_waiters:
                self._wake(self._idle_waiters)
            return
        batch = self._take_batch()
        self._writing = True
        items = [pending.item for pending in batch]
        writer = self._writer
        if self._store.defer_sync:
            if writer is None:
                violated("a log with deferred sync needs the shared log's writer")
            # One batch in flight at a time: its done callback is a bound method reading the batch
            # from here, not a partial made per batch.
            self._in_flight = batch
            writer.submit_shared(self._store, items, self._shared_batch_written)
            return
        if writer is not None:
            writer.submit(
                functools.partial(self._store.write_batch, items),
                functools.partial(self._batch_written, batch),
            )
            return
        written = self._loop.run_in_executor(self._executor, self._store.write_batch, items)
        written.add_done_callback(functools.partial(self._batch_written_future, batch))

    def _shared_batch_written(self, error: BaseException | None) -> None:
        batch = self._in_flight
        self._in_flight = []
        self._batch_written(batch, error)

    def _batch_written_future(self, batch: list[_PendingAppend], written: asyncio.Future[None]) -> None:
        if written.cancelled():
            self._batch_written(batch, asyncio.CancelledError())
        else:
            self._batch_written(batch, written.exception())

    def _batch_written(self, batch: list[_PendingAppend], error: BaseException | None) -> None:
        self._writing = False
        if error is not None:
            if isinstance(error, PegasusError):
                failure = StorageError(f"mutation log {self.directory}: {error.message}")
            else:  # a bug, or the executor went away: still never leave an append waiting forever
                failure = StorageError(f"mutation log {self.directory}: unexpected {error!r}")
                logger.error("%s", failure.message, exc_info=error)
            failure.__cause__ = error
            self._fail(batch, failure)
            return
        # The next batch goes to the thread before this one's appends are told, so the disk is busy
        # while their callbacks run. (Nothing queued and nobody waiting for idle, the usual case at
        # a mutation in flight: _start_batch would do nothing; a call less per mutation.)
        if self._pending or self._idle_waiters:
            self._start_batch()
        if self._room_waiters:
            self._wake(self._room_waiters)
        for pending in batch:
            if pending.done is not None:
                pending.done(None)

    def _take_batch(self) -> list[_PendingAppend]:
        pending = self._pending
        max_records = self.options.max_batch_records
        max_bytes = self.options.max_batch_bytes
        batch: list[_PendingAppend] = []
        batch_bytes = 0
        while pending and len(batch) < max_records:
            size = len(pending[0].item.record)
            if batch and batch_bytes + size > max_bytes:
                break
            batch.append(pending.popleft())
            batch_bytes += size
        self._pending_bytes -= batch_bytes
        if not batch:
            violated("the writer took an empty batch")
        if self._pending_bytes < 0:
            violated("pending bytes went negative")
        return batch

    def _fail(self, batch: list[_PendingAppend], failure: StorageError) -> None:
        """Fail the batch, everything queued behind it, and every later append: after a failed write
        or fsync nobody knows what reached the disk (the kernel may drop dirty pages on fsync error)."""
        self._failure = failure
        failed = [*batch, *self._pending]
        self._pending.clear()
        self._pending_bytes = 0
        self._wake(self._room_waiters)  # appends waiting for room see the failure
        self._wake(self._idle_waiters)
        for pending in failed:
            if pending.done is not None:
                pending.done(failure)

    @staticmethod
    def _wake(waiters: collections.deque[asyncio.Future[None]] | list[asyncio.Future[None]]) -> None:
        while waiters:
            waiter = waiters.pop()
            if not waiter.done():
                waiter.set_result(None)

    # --- reading, collecting, closing -------------------------------------------------------------

    async def read(self, from_decree: int, to_decree: int, max_bytes: int) -> list[Mutation]:
        """Live mutations with from_decree <= decree <= to_decree in decree order, within max_bytes
        (but at least one when any is in range). Continue from the last decree returned plus one.
        Decrees below first_decree were collected: a learner needs a checkpoint for those."""
        if max_bytes <= 0:
            raise InvalidArgumentError("max_bytes must be positive")
        return await self._in_thread(self._store.read, from_decree, to_decree, max_bytes)

    async def replay(self, from_decree: int = 1) -> AsyncIterator[Mutation]:
        """Every live mutation from `from_decree` on, in decree order, read in bounded batches."""
        next_decree = from_decree
        while True:
            batch = await self.read(next_decree, self.last_decree, self.options.replay_batch_bytes)
            if not batch:
                return
            for mutation in batch:
                yield mutation
            next_decree = batch[-1].decree + 1

    async def gc(self, below_decree: int) -> int:
        """Delete whole segments whose decrees are all below `below_decree` (call it with the decree
        of the newest durable checkpoint, or less if a learner, backup or duplication still needs
        older mutations). Never deletes the active segment. Returns how many segments went."""
        return await self._in_thread(self._store.gc, below_decree)

    async def close(self) -> None:
        """Write and fsync everything queued, then release the directory. Idempotent."""
        self._closing = True
        self._wake(self._room_waiters)
        while self._writing or (self._pending and self._failure is None):
            waiter = self._loop.create_future()
            self._idle_waiters.append(waiter)
            await waiter
        if not self._store_closed:
            self._store_closed = True
            await self._in_thread(self._store.close)

    def _in_thread(self, function: Callable[..., _T], *args: object) -> asyncio.Future[_T]:
        return asyncio.get_running_loop().run_in_executor(self._executor, function, *args)


def encode_for_log(mutation: Mutation, committed: int = 0) -> EncodedMutation:
    """A mutation with its log record (what `submit` takes); its size is len(item.record).
    `committed`: the commit point the record vouches for (log_record.py); 0 claims nothing."""
    if mutation.decree <= 0:
        raise InvalidArgumentError(f"a logged decree must be positive, not {mutation.decree}")
    return EncodedMutation(mutation, encode_record(mutation, committed))


def _settle(future: asyncio.Future[None], error: StorageError | None) -> None:
    if future.done():  # its caller was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
