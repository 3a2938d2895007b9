"""The mutation log of one replica, for the asyncio runtime: group commit over a segmented file log.

    log = await MutationLog.open(directory)          # replays, truncates a torn tail
    async for mutation in log.replay(applied_decree + 1): ...
    await log.append(mutation)                         # returns once durable per the fsync policy
    await log.read(from_decree, to_decree, max_bytes)  # learning, duplication
    await log.gc(below_decree)                         # after a durable checkpoint
    await log.close()

Group commit (policy `group`, the default): appends queue up while the writer is busy; the writer
takes everything queued (up to a batch bound), writes it and fsyncs once, then acknowledges every
append of the batch. So appends that arrive while an fsync runs share the next one. The queue is
bounded in records and bytes; an append waits for room (back-pressure on the primary's batching).
Writes and fsyncs run in a worker thread, never on the event loop.

Which record is live for a decree that was logged more than once is the supersede rule of
log_index.py; the on-disk format is log_record.py; replay and torn tails are log_store.py.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
from collections.abc import AsyncIterator, Callable
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
from pegasus_kv.replication.replica.invariants import invariant
from pegasus_kv.replication.replica.log_record import encode_record
from pegasus_kv.replication.replica.log_store import EncodedMutation, FsyncPolicy, LogCounters, SegmentedLog

__all__ = ["FsyncPolicy", "LogCounters", "MutationLog", "MutationLogOptions"]

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


@dataclasses.dataclass(slots=True)
class _PendingAppend:
    item: EncodedMutation
    acknowledged: asyncio.Future[None]


class MutationLog:
    """One replica's mutation log. Open it with `await MutationLog.open(directory)`."""

    def __init__(self, store: SegmentedLog, options: MutationLogOptions, executor: Executor | None) -> None:
        self._store = store
        self.options = options
        self._executor = executor
        self._pending: collections.deque[_PendingAppend] = collections.deque()
        self._pending_bytes = 0
        self._changed = asyncio.Condition()  # pending grew, shrank, or the log is closing
        self._max_queued_ballot = store.max_ballot
        self._closing = False
        self._failure: StorageError | None = None
        self._writer = asyncio.get_running_loop().create_task(
            self._write_batches(), name=f"mutation-log {store.directory}"
        )

    @classmethod
    async def open(
        cls,
        directory: str | os.PathLike[str],
        options: MutationLogOptions | None = None,
        *,
        executor: Executor | None = None,
    ) -> MutationLog:
        """Open the log in `directory` (created if missing), replaying what is there.

        A torn record at the tail (a crash mid-write: never acknowledged) is truncated. A damaged
        record followed by valid ones raises StorageError: that is corruption of acknowledged data.
        Use `replay()` afterwards to read the live mutations in decree order.
        """
        options = options or MutationLogOptions()
        loop = asyncio.get_running_loop()
        store = await loop.run_in_executor(
            executor, SegmentedLog.open, Path(directory), options.segment_bytes, options.fsync_policy
        )
        return cls(store, options, executor)

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

    async def append(self, mutation: Mutation) -> None:
        """Log a mutation; returns once it is durable as the fsync policy says.

        Raises StaleBallotError for a ballot below one already queued or logged (a replica never
        accepts an older ballot, see log_index.py rule 1), StorageError once the log has failed, and
        InvalidStateError after close. If the caller is cancelled, the record may still be logged.
        """
        if mutation.decree <= 0:
            raise InvalidArgumentError(f"a logged decree must be positive, not {mutation.decree}")
        item = EncodedMutation(mutation, encode_record(mutation))
        async with self._changed:
            while self._pending and self._no_room_for(len(item.record)):
                self._check_accepting()
                await self._changed.wait()
            self._check_accepting()
            # Checked under the condition, in queue order, so the log's ballots never go down.
            if mutation.ballot < self._max_queued_ballot:
                raise StaleBallotError(
                    f"mutation of decree {mutation.decree} has ballot {mutation.ballot}, "
                    f"below ballot {self._max_queued_ballot} already logged"
                )
            self._max_queued_ballot = mutation.ballot
            acknowledged: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._pending.append(_PendingAppend(item, acknowledged))
            self._pending_bytes += len(item.record)
            self._changed.notify_all()
        await acknowledged

    def _no_room_for(self, record_bytes: int) -> bool:
        return (
            len(self._pending) >= self.options.max_pending_records
            or self._pending_bytes + record_bytes > self.options.max_pending_bytes
        )

    def _check_accepting(self) -> None:
        if self._failure is not None:
            raise StorageError(f"mutation log {self.directory} has failed: {self._failure.message}")
        if self._closing:
            raise InvalidStateError(f"mutation log {self.directory} is closed")

    async def _write_batches(self) -> None:
        """The single writer: one batch in flight at a time, so records reach the file in queue order."""
        while True:
            async with self._changed:
                while not self._pending and not self._closing:
                    await self._changed.wait()
                if not self._pending:
                    return  # closing, and everything queued is written
                batch = self._take_batch()
                self._changed.notify_all()  # room for waiting appends
            try:
                await self._in_thread(self._store.write_batch, [pending.item for pending in batch])
            except PegasusError as exc:
                await self._fail(batch, StorageError(f"mutation log {self.directory}: {exc.message}"), exc)
                return
            except Exception as exc:  # a bug: still never leave an append waiting forever
                failure = StorageError(f"mutation log {self.directory}: unexpected {exc!r}")
                await self._fail(batch, failure, exc)
                raise
            for pending in batch:
                if not pending.acknowledged.done():  # its caller may have been cancelled
                    pending.acknowledged.set_result(None)

    def _take_batch(self) -> list[_PendingAppend]:
        batch: list[_PendingAppend] = []
        batch_bytes = 0
        while self._pending and len(batch) < self.options.max_batch_records:
            size = len(self._pending[0].item.record)
            if batch and batch_bytes + size > self.options.max_batch_bytes:
                break
            batch.append(self._pending.popleft())
            batch_bytes += size
        self._pending_bytes -= batch_bytes
        invariant(bool(batch), "the writer took an empty batch")
        invariant(self._pending_bytes >= 0, "pending bytes went negative")
        return batch

    async def _fail(self, batch: list[_PendingAppend], failure: StorageError, cause: BaseException) -> None:
        """Fail the batch, everything queued behind it, and every later append: after a failed write
        or fsync nobody knows what reached the disk (the kernel may drop dirty pages on fsync error)."""
        failure.__cause__ = cause
        async with self._changed:
            self._failure = failure
            for pending in [*batch, *self._pending]:
                if not pending.acknowledged.done():
                    pending.acknowledged.set_exception(failure)
            self._pending.clear()
            self._pending_bytes = 0
            self._changed.notify_all()  # appends waiting for room see the failure

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
        async with self._changed:
            self._closing = True
            self._changed.notify_all()
        try:
            await asyncio.shield(self._writer)
        finally:
            if self._writer.done():
                await self._in_thread(self._store.close)

    def _in_thread(self, function: Callable[..., _T], *args: object) -> asyncio.Future[_T]:
        return asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
