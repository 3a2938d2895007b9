"""One replica's disk side: its mutation log and partition store, and the ordered work on them.

The server hands each replica's Ready (ready.py) to this object field by field; it keeps the
ordering obligations of the Ready contract per replica:

1. `persist(mutations)`: encoded and handed to the log at once (`MutationLog.submit`, in order, a
   bounded group per submit; while the log is at its pending bound they wait here, in order, and go
   when an earlier group is durable). The log's group commit fsyncs whatever was queued while the
   previous fsync ran, and calls back on the event loop; the runtime then reports the last mutation
   of each durable group to the host, which calls the core's on_log_durable. Nothing in between
   waits for a task or a pass of the event loop (profiling onebox showed the task-per-append path
   costing milliseconds per round trip under load). A group that brings a higher ballot than the
   recorded `max_ballot` (layout.py) first records it, in a worker thread, before it (and every
   group after it) counts as durable: the core must never act on a ballot a crash followed by log
   collection could forget.
2. `send_after_persist(outbounds)`: held until every mutation handed to `persist` so far is durable
   (counted by position), sent at once when nothing is pending.
3. `apply(items)`: queued behind every earlier store job, and run at once, on the event loop, when
   nothing is ahead of them: the store's apply is a RocksDB memtable insert without a WAL, cheaper
   than the thread hop it used to take (profiling onebox: the hop, its futures and the GIL hand-offs
   were about a quarter of a replica server's CPU per write). The writes go with RocksDB's
   `no_slowdown`, so a write RocksDB would stall is refused instead of blocking the loop; that
   batch and everything after it then run in a worker thread. The waiting clients are answered
   with the store's reply for each write. The same queue serialises flushes, checkpoints, sweeps
   and a checkpoint install, which run in a worker thread one at a time, with later jobs, applies
   included, waiting for them: the store sees one job at a time in the order they were asked for.
   The exception is the periodic flush: it runs in a worker thread BESIDE the applies that follow
   it (RocksDB takes every write made before the flush call into it, store.flush), and only the
   next job that is not an apply waits for it. As a job like the others it held every write of the
   partition back for the length of a memtable flush (~170 ms for 17 MB on this machine) once a
   minute.

How far recovery may re-apply: every record `persist` encodes carries the decree handed to apply
so far (log_record.py, `committed`): all of those were committed here and logged before it. That
costs nothing (eight bytes in a write the log makes anyway). It replaced an `applied_decree` file
(layout.py) rewritten every prepare_list_capacity / 4 decrees with a write, two fsyncs and a
rename: on onebox under YCSB A those were a quarter of the disk's flushes and held the log's group
commits back (A at 192 client tasks, three alternating runs each: 24,300-25,700 -> 27,400-28,500
ops/s, update p99 22.0-23.0 -> 19.3-19.7 ms). The file is still written where the store is
flushed, closed or replaced, and recovery takes the larger of the two.

Reads: `applied_through(decree)` / `wait_applied(decree)` let the server hold a read until every
apply handed out before it was admitted has reached the store (ready.py `check_read`);
`read_if_ready(request)` serves a point read at once when nothing is outstanding (the usual case).

Recovery (`open(fresh=False)`): open the store (at its last flushed decree S), open the log,
re-apply the committed log records up to the recorded commit point (the larger of the log's and
the `applied_decree` file's; layout.py says why that is safe and needed), then give the core what
is left: the store's decree and the log records after it, trimmed to what its prepare list can
hold, and the highest ballot ever durable here: the larger of the recorded `max_ballot` and the
log's (the records of that ballot may have been collected), so the core never accepts a ballot the
log already moved past.

A failure of the log or the store (StorageError, a refused append) ends this replica's usefulness:
the host is told once (the core becomes ERROR) and waiting clients get STORAGE.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import heapq
import itertools
import logging
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Protocol, TypeVar, cast

from pegasus_kv.core.errors import (
    BusyError,
    ErrorCode,
    NotPrimaryError,
    PegasusError,
    ShuttingDownError,
    StorageError,
)
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.pacifica.ready import Apply, ClientToken, Outbound
from pegasus_kv.replication.replica.invariants import invariant, violated
from pegasus_kv.replication.replica.layout import (
    AppliedDecreeFile,
    ReplicaPaths,
    prepare_existing,
    prepare_fresh,
    read_applied_decree,
    read_max_ballot,
    write_max_ballot,
)
from pegasus_kv.replication.replica.log_writer import LogWriter
from pegasus_kv.replication.replica.mutation_log import (
    EncodedMutation,
    MutationLog,
    MutationLogOptions,
    RepairRecord,
    encode_for_log,
)
from pegasus_kv.storage import PartitionStore, StoreOptions, SweepResult, WriteStall, restore_checkpoint

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_incarnations = itertools.count(1)


class RuntimeHost(Protocol):
    """What a replica runtime needs from its server (all called on the event loop)."""

    def on_log_durable(self, runtime: ReplicaRuntime, ballot: int, decree: int) -> None: ...

    def send_to_peer(self, outbound: Outbound) -> None: ...

    # The waiting writes of one applied mutation, in order: reply i answers token i.
    def answer_writes(self, tokens: Sequence[ClientToken], replies: Sequence[Message]) -> None: ...

    def refuse_write(self, token: ClientToken, code: ErrorCode, reason: str) -> None: ...

    def on_local_failure(self, runtime: ReplicaRuntime, reason: str) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class RuntimeSettings:
    log_options: MutationLogOptions
    store_options: StoreOptions
    # The core's prepare list capacity: recovery hands it at most this many records after its decree.
    prepare_list_capacity: int
    # Bounds of one persist batch (kept below the log's own pending bounds, see the module doc).
    max_persist_batch_records: int = 1024
    max_persist_batch_bytes: int = 16 * 1024 * 1024
    # Mutations applied per hop to a worker thread.
    max_apply_batch: int = 64
    # Bytes of mutations one ReadLog answer may carry (a learn response must fit in one frame).
    max_log_read_bytes: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        invariant(self.prepare_list_capacity >= 1, "prepare_list_capacity must be positive")
        invariant(
            self.max_persist_batch_records * 2 <= self.log_options.max_pending_records,
            "a persist batch must stay below the log's pending record bound",
        )
        invariant(
            self.max_persist_batch_bytes * 2 <= self.log_options.max_pending_bytes,
            "a persist batch must stay below the log's pending byte bound",
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Recovered:
    """What a reopened replica hands to ReplicaNode.load_replica."""

    last_committed_decree: int
    log: list[Mutation]
    log_start_decree: int
    reapplied: int  # log records re-applied to the store because the recorded commit point covers them
    # The highest ballot of any mutation ever durable in the log, collected records included
    # (load_replica's `ballot`).
    ballot: int


@dataclasses.dataclass(slots=True)
class _CallJob:
    function: Callable[[PartitionStore], object]
    done: asyncio.Future[object]


@dataclasses.dataclass(slots=True)
class _FlushJob(_CallJob):
    """A store flush (with the applied decree record): applies need not wait for it."""


@dataclasses.dataclass(slots=True)
class _InstallJob:
    checkpoint_dir: str
    checkpoint_decree: int
    done: asyncio.Future[None]


@dataclasses.dataclass(slots=True)
class _ThreadApplyJob:
    """Applies RocksDB refused to take without stalling: they run in a worker thread."""

    items: list[Apply]


# A committed mutation to apply is queued as the Apply itself (one per mutation: no wrapper).
_StoreJob = Apply | _CallJob | _FlushJob | _InstallJob | _ThreadApplyJob


class ReplicaRuntime:
    def __init__(
        self,
        gpid: Gpid,
        paths: ReplicaPaths,
        settings: RuntimeSettings,
        host: RuntimeHost,
        *,
        executor: Executor,
        log_executor: Executor,
        log_writer: LogWriter | None = None,
    ) -> None:
        self.gpid = gpid
        self.paths = paths
        self.settings = settings
        self.incarnation = next(_incarnations)
        self._host = host
        self._executor = executor
        self._log_executor = log_executor
        self._log_writer = log_writer  # the server's log thread (log_writer.py); else the executor
        self._loop = asyncio.get_running_loop()
        self._store: PartitionStore | None = None
        self._log: MutationLog | None = None
        self._opened: asyncio.Future[None] = self._loop.create_future()
        self._is_open = False  # _opened has its result: read on every apply and read, so kept apart
        # Persist side.
        self._persist_queue: collections.deque[EncodedMutation] = collections.deque()  # log is full
        self._persisted_count = 0  # mutations handed to persist, ever
        self._durable_count = 0  # of those, durable in the log
        # Groups the log made durable, not reported yet (waiting for a ballot record), in order.
        self._durable_groups: collections.deque[list[Mutation]] = collections.deque()
        self._recording_ballot = False
        self._held: collections.deque[tuple[int, Outbound]] = collections.deque()
        self._recorded_ballot = 0  # the value of the max_ballot file (layout.py)
        # Store side.
        self._store_jobs: collections.deque[_StoreJob] = collections.deque()
        # The store job running in a worker thread (later jobs wait for it), if any.
        self._store_task: asyncio.Task[None] | None = None
        # The flush running beside the applies (_FlushJob), if any: later non-apply jobs wait for it.
        self._beside_task: asyncio.Task[None] | None = None
        self._applied_file = AppliedDecreeFile(paths)
        self._store_stopped = False  # close() took the store away: no job starts any more
        self._apply_handed_decree = 0  # highest decree handed to apply
        self._applied_decree = 0  # highest decree the store has applied (seen from the loop)
        self._applied_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_seq = itertools.count()
        self._failure: str | None = None
        self._closing = False
        self.applied_mutations = 0  # counters for operators and tests
        self.persisted_batches = 0

    def __repr__(self) -> str:
        return f"ReplicaRuntime({self.gpid}#{self.incarnation})"

    # --- state --------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._is_open

    @property
    def failed(self) -> bool:
        return self._failure is not None

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def log(self) -> MutationLog:
        if self._log is None:
            violated(f"{self}: log used before open")
        return self._log

    @property
    def store(self) -> PartitionStore:
        if self._store is None:
            violated(f"{self}: store used before open")
        return self._store

    @property
    def applied_decree(self) -> int:
        return self._applied_decree

    @property
    def durable_pending(self) -> int:
        """Mutations handed to persist and not durable yet."""
        return self._persisted_count - self._durable_count

    # --- opening ------------------------------------------------------------------------------

    async def open(
        self, *, fresh: bool, shared_records: Callable[[int], Sequence[RepairRecord]] | None = None
    ) -> Recovered:
        """Open (fresh: create empty) the store and log, start the workers; see the module doc.

        `shared_records` (SharedLog.recovered, at a server's start) gives what the server's shared
        log kept for the log: written back into it before its replay (mutation_log.py)."""
        try:
            recovered = await self._open(fresh=fresh, shared_records=shared_records)
        except BaseException as exc:
            if not self._opened.done():
                self._opened.set_exception(
                    exc if isinstance(exc, PegasusError) else StorageError(f"{self}: open failed: {exc!r}")
                )
                self._opened.exception()  # retrieved: the workers never start
            await self._close_files()
            raise
        if not fresh:
            # A recovered runtime gets no apply before it is loaded into the core; a fresh one may
            # already have applies queued (handed out while its files were being created).
            self._apply_handed_decree = recovered.last_committed_decree
        self._applied_decree = recovered.last_committed_decree
        self._opened.set_result(None)
        self._is_open = True
        self._submit_queued()  # what was persisted while the files were being opened
        self._run_store_jobs()  # and what was applied meanwhile
        return recovered

    async def _open(
        self, *, fresh: bool, shared_records: Callable[[int], Sequence[RepairRecord]] | None
    ) -> Recovered:
        paths = self.paths
        await self._in_thread(prepare_fresh if fresh else prepare_existing, paths)
        store_options = self.settings.store_options
        self._store = await self._in_thread(
            lambda: PartitionStore.open(str(paths.store_dir), options=store_options)
        )
        self._log = await MutationLog.open(
            paths.log_dir,
            self.settings.log_options,
            executor=self._log_executor,
            writer=self._log_writer,
            shared_records=None if fresh else shared_records,
        )
        self._applied_decree = self._store.last_applied_decree
        if fresh:
            self._recorded_ballot = 0
            return Recovered(last_committed_decree=0, log=[], log_start_decree=1, reapplied=0, ballot=0)
        return await self._recover()

    async def _recover(self) -> Recovered:
        store = self.store
        log = self.log
        # Both vouch that every decree up to them was committed here (module doc).
        recorded = max(await self._in_thread(read_applied_decree, self.paths), log.replayed_commit_point)
        recorded_ballot = await self._in_thread(read_max_ballot, self.paths)
        ballot = max(recorded_ballot, log.max_ballot)
        if ballot > recorded_ballot:
            # A log written before the file existed, or a crash between an fsync and the record:
            # record it now, before log collection can take the records away.
            await self._in_thread(write_max_ballot, self.paths, ballot)
        self._recorded_ballot = ballot
        store_decree = store.last_applied_decree
        reapply: list[Mutation] = []
        tail: list[Mutation] = []
        reapplied = 0
        # The core holds at most capacity decrees after its commit point (prepare_list.py recover).
        async for mutation in log.replay(log.first_decree or 1):
            decree = mutation.decree
            committed = store_decree + reapplied + len(reapply)
            if decree <= committed:
                continue
            if decree == committed + 1 and decree <= recorded and not tail:
                reapply.append(mutation)
                if len(reapply) >= self.settings.max_apply_batch:
                    reapplied += await self._reapply(reapply)
                    reapply = []
                continue
            if decree <= committed + self.settings.prepare_list_capacity:
                tail.append(mutation)
        if reapply:
            reapplied += await self._reapply(reapply)
        committed = store.last_applied_decree
        self._applied_decree = committed
        first = log.first_decree
        log_start = first if first else committed + 1
        if reapplied:
            logger.info(
                "%s: re-applied %d committed log record(s) the store had lost (now at decree %d)",
                self.gpid,
                reapplied,
                committed,
            )
        return Recovered(
            last_committed_decree=committed,
            log=tail,
            log_start_decree=max(1, min(log_start, committed + 1)),
            reapplied=reapplied,
            ballot=ballot,
        )

    async def _reapply(self, mutations: list[Mutation]) -> int:
        store = self.store

        def run() -> int:
            for mutation in mutations:
                store.apply(mutation)
            return len(mutations)

        return await self._in_thread(run)

    # --- 1. persist, 2./3. sends ----------------------------------------------------------------

    def persist(self, mutations: Sequence[Mutation]) -> None:
        if not mutations or self._failure is not None or self._closing:
            return
        # Each record vouches for the decrees handed to apply so far (module doc).
        committed = self._apply_handed_decree
        self._persist_queue.extend([encode_for_log(mutation, committed) for mutation in mutations])
        self._persisted_count += len(mutations)
        self._submit_queued()

    def send_after_persist(self, outbounds: Sequence[Outbound]) -> None:
        if self._failure is not None:
            return  # nothing it promises is true any more
        for outbound in outbounds:
            if self._durable_count >= self._persisted_count:
                self._host.send_to_peer(outbound)
            else:
                self._held.append((self._persisted_count, outbound))

    def _submit_queued(self) -> None:
        """Hand queued mutations to the log, in order, a bounded group per submit, while it has room."""
        log = self._log
        queue = self._persist_queue
        if not queue or log is None or not self._is_open:
            return  # nothing queued (a durable group calls this too), or open() submits later
        settings = self.settings
        max_records = settings.max_persist_batch_records
        max_bytes = settings.max_persist_batch_bytes
        while queue and self._failure is None:
            group: list[EncodedMutation] = []
            group_bytes = 0
            while queue and len(group) < max_records:
                size = len(queue[0].record)
                if group and group_bytes + size > max_bytes:
                    break
                if not log.has_room_for(len(group) + 1, group_bytes + size):
                    break
                group.append(queue.popleft())
                group_bytes += size
            if not group:
                return  # the log is at its bound: a durable group calls this again
            mutations = [item.mutation for item in group]
            try:
                log.submit(group, functools.partial(self._group_durable, mutations))
            except PegasusError as exc:  # failed or closed log, or a ballot below one logged
                self._fail(f"log append failed: {exc}")
                return

    def _group_durable(self, group: list[Mutation], error: StorageError | None) -> None:
        """The log made `group` durable (called in submit order), or failed."""
        if self._failure is not None:
            return
        if error is not None:
            self._fail(f"log append failed: {error}")
            return
        self._durable_groups.append(group)
        self._report_durable()
        if self._persist_queue:  # usually empty: each persist submits at once (a call per mutation)
            self._submit_queued()

    def _report_durable(self) -> None:
        """Report durable groups in order; one with a ballot above the recorded one waits for it to be
        recorded (layout.py), and so does every group after it."""
        while self._durable_groups and not self._recording_ballot and self._failure is None:
            group = self._durable_groups[0]
            # The log takes a group only if its ballots never go down (MutationLog refuses a lower
            # one), so the last mutation carries the group's highest ballot.
            ballot = group[-1].ballot
            if ballot > self._recorded_ballot:
                self._recording_ballot = True
                # On the log's threads: it is part of making the group durable, and must not queue
                # behind store work.
                recorded = self._loop.run_in_executor(
                    self._log_executor, write_max_ballot, self.paths, ballot
                )
                recorded.add_done_callback(functools.partial(self._ballot_recorded, ballot))
                return
            self._durable_groups.popleft()
            self._durable_count += len(group)
            self.persisted_batches += 1
            while self._held and self._held[0][0] <= self._durable_count:
                self._host.send_to_peer(self._held.popleft()[1])
            if len(group) == 1:  # _durable_reports' usual case, without the call: once per mutation
                mutation = group[0]
                self._host.on_log_durable(self, mutation.ballot, mutation.decree)
            else:
                for mutation in _durable_reports(group):
                    self._host.on_log_durable(self, mutation.ballot, mutation.decree)

    def _ballot_recorded(self, ballot: int, recorded: asyncio.Future[None]) -> None:
        self._recording_ballot = False
        if self._failure is not None:
            return
        error = None if recorded.cancelled() else recorded.exception()
        if recorded.cancelled() or error is not None:
            self._fail(f"recording ballot {ballot} failed: {error}")
            return
        invariant(ballot > self._recorded_ballot, f"{self}: ballot record went back to {ballot}")
        self._recorded_ballot = ballot
        self._report_durable()

    @property
    def recorded_ballot(self) -> int:
        """The highest ballot recorded durably (survives log collection)."""
        return self._recorded_ballot

    # --- 4. apply, and every other store job ----------------------------------------------------

    def apply(self, items: Sequence[Apply]) -> None:
        jobs = self._store_jobs
        for item in items:
            decree = item.mutation.decree
            if self._failure is not None or self._closing:
                for token in item.tokens:
                    self._host.refuse_write(token, ErrorCode.STORAGE, self._failure or "replica closing")
                continue
            if decree != self._apply_handed_decree + 1:  # per apply: the message only on failure
                violated(f"{self}: apply of decree {decree} after {self._apply_handed_decree}")
            self._apply_handed_decree = decree
            jobs.append(item)
        self._run_store_jobs()

    async def call_store(self, function: Callable[[PartitionStore], _T]) -> _T:
        """Run function(store) in a worker thread, after every store job queued before it."""
        self._check_usable()
        done: asyncio.Future[object] = self._loop.create_future()
        self._store_jobs.append(_CallJob(function, done))
        self._run_store_jobs()
        return await done  # type: ignore[return-value]

    async def install_checkpoint(self, checkpoint_dir: str, checkpoint_decree: int) -> None:
        """Replace the store with the checkpoint copy in checkpoint_dir (a learner; see layout.py)."""
        self._check_usable()
        done: asyncio.Future[None] = self._loop.create_future()
        self._store_jobs.append(_InstallJob(checkpoint_dir, checkpoint_decree, done))
        self._run_store_jobs()
        await done

    def _run_store_jobs(self) -> None:
        """Run queued store jobs in order until one has to go to a worker thread (see the module doc)."""
        jobs = self._store_jobs
        max_batch = self.settings.max_apply_batch
        while (
            jobs
            and self._store_task is None
            and self._failure is None
            and self._is_open  # the property, read directly: twice per mutation
            and not self._store_stopped
        ):
            job = jobs[0]
            if isinstance(job, Apply):
                batch: list[Apply] = []
                while jobs and len(batch) < max_batch:
                    head = jobs[0]
                    if not isinstance(head, Apply):
                        break
                    jobs.popleft()
                    batch.append(head)
                self._apply_on_loop(batch)
                continue
            if self._beside_task is not None:
                return  # this job has the store to itself: it waits for the flush beside
            jobs.popleft()
            if isinstance(job, _FlushJob):
                beside = self._loop.create_task(self._run_call(job), name=f"{self} flush")
                self._beside_task = beside
                beside.add_done_callback(self._store_job_done)
                continue
            if isinstance(job, _CallJob):
                work = self._run_call(job)
            elif isinstance(job, _InstallJob):
                work = self._run_install(job)
            else:
                work = self._apply_in_thread(job.items)
            task = self._loop.create_task(work, name=f"{self} store job")
            self._store_task = task
            task.add_done_callback(self._store_job_done)

    def _store_job_done(self, task: asyncio.Task[None]) -> None:
        if self._store_task is task:
            self._store_task = None
        elif self._beside_task is task:
            self._beside_task = None
        if not task.cancelled() and (error := task.exception()) is not None:
            self._fail(f"store job failed: {error!r}")
            return
        self._run_store_jobs()

    def _apply_on_loop(self, batch: list[Apply]) -> None:
        store = self.store
        replies: list[list[Message]] = []
        error: BaseException | None = None
        stalled = False
        for item in batch:
            try:
                replies.append(store.apply(item.mutation, no_stall=True))
            except WriteStall:
                stalled = True
                break
            except Exception as exc:
                error = exc
                break
        self._answer_applied(batch, replies)
        if error is not None:
            self._refuse_unapplied(batch[len(replies) :], error)
            return
        if stalled:
            # The rest of the batch, and everything queued after it, waits for a worker thread.
            self._store_jobs.appendleft(_ThreadApplyJob(batch[len(replies) :]))
            logger.info("%s: RocksDB would stall a write: applying in a worker thread", self.gpid)

    async def _apply_in_thread(self, batch: list[Apply]) -> None:
        store = self.store

        def run() -> tuple[list[list[Message]], BaseException | None]:
            replies: list[list[Message]] = []
            for item in batch:
                try:
                    replies.append(store.apply(item.mutation))
                except Exception as exc:
                    return replies, exc
            return replies, None

        replies, error = await self._in_thread(run)
        self._answer_applied(batch, replies)
        if error is not None:
            self._refuse_unapplied(batch[len(replies) :], error)

    def _answer_applied(self, batch: list[Apply], replies: list[list[Message]]) -> None:
        answer_writes = self._host.answer_writes
        for item, item_replies in zip(batch, replies, strict=False):
            if item.tokens:  # only the primary that queued the writes has tokens (ready.py)
                answer_writes(item.tokens, item_replies)  # a call per mutation, not per write
        self.applied_mutations += len(replies)
        self._applied_decree = self.store.last_applied_decree
        if self._applied_waiters:
            self._wake_readers()

    def _refuse_unapplied(self, items: list[Apply], error: BaseException) -> None:
        for item in items:
            for token in item.tokens:
                self._host.refuse_write(token, ErrorCode.STORAGE, str(error))
        self._fail(f"apply failed: {error}")

    async def _run_call(self, job: _CallJob) -> None:
        store = self.store
        try:
            result = await self._in_thread(job.function, store)
        except BaseException as exc:
            if not job.done.done():
                job.done.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        if not job.done.done():
            job.done.set_result(result)

    async def _run_install(self, job: _InstallJob) -> None:
        old_store = self.store
        paths = self.paths
        options = self.settings.store_options
        applied_file = self._applied_file

        def run() -> PartitionStore:
            old_store.close()
            shutil.rmtree(paths.store_new_dir, ignore_errors=True)
            restore_checkpoint(job.checkpoint_dir, str(paths.store_new_dir))
            shutil.rmtree(paths.store_old_dir, ignore_errors=True)
            paths.store_dir.rename(paths.store_old_dir)
            paths.store_new_dir.rename(paths.store_dir)
            shutil.rmtree(paths.store_old_dir, ignore_errors=True)
            shutil.rmtree(job.checkpoint_dir, ignore_errors=True)
            new_store = PartitionStore.open(str(paths.store_dir), options=options)
            if new_store.last_applied_decree != job.checkpoint_decree:
                decree = new_store.last_applied_decree
                new_store.close()
                raise StorageError(
                    f"checkpoint stands at decree {decree}, the primary announced {job.checkpoint_decree}"
                )
            applied_file.reset(job.checkpoint_decree)
            return new_store

        try:
            self._store = await self._in_thread(run)
        except BaseException as exc:
            if not job.done.done():
                job.done.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            # The old store is closed and its directory may be gone: this replica is lost.
            self._store = None
            self._fail(f"checkpoint install failed: {exc}")
            return
        self._applied_decree = job.checkpoint_decree
        self._apply_handed_decree = job.checkpoint_decree
        logger.info("%s: installed a checkpoint at decree %d", self.gpid, job.checkpoint_decree)
        if not job.done.done():
            job.done.set_result(None)

    # --- reads --------------------------------------------------------------------------------

    @property
    def apply_handed_decree(self) -> int:
        return self._apply_handed_decree

    def applied_through(self, decree: int) -> bool:
        return self._applied_decree >= decree

    async def wait_applied(self, decree: int) -> None:
        """Return once the store applied `decree` (raises if the replica fails or closes first)."""
        self._check_usable()
        if self._applied_decree >= decree:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        heapq.heappush(self._applied_waiters, (decree, next(self._waiter_seq), waiter))
        await waiter

    def _wake_readers(self) -> None:
        waiters = self._applied_waiters
        while waiters and waiters[0][0] <= self._applied_decree:
            _, _, waiter = heapq.heappop(waiters)
            if not waiter.done():
                waiter.set_result(None)

    def read_if_ready(self, request: Message) -> Message | None:
        """Serve a validated point read now if the store has applied every apply handed out so far
        (what `apply_handed_decree`, `is_open`, `applied_through` and `read_now` check, in one call:
        the server asks on every client read); None when it has to wait for that (or for the
        files to open): then `wait_applied(apply_handed_decree)` and `read_now`. Raises what
        read_now raises for a closing or failed replica."""
        if not self._is_open or self._applied_decree < self._apply_handed_decree:
            return None
        if self._closing or self._failure is not None:
            self._check_usable()  # raises; open is known (_is_open)
        store = self._store
        if store is None:
            raise NotPrimaryError(f"{self.gpid} has no store right now")
        return store.read(request, validated=True)

    def read_now(self, request: Message, *, validated: bool = False) -> Message:
        """Serve a read on the event loop (point reads only; client_requests.py). validated=True:
        the caller ran validate_read on it already."""
        self._check_usable()
        store = self._store
        if store is None:
            raise NotPrimaryError(f"{self.gpid} has no store right now")
        return store.read(request, validated=validated)

    async def read_in_thread(self, request: Message) -> Message:
        self._check_usable()
        store = self._store
        if store is None:
            raise NotPrimaryError(f"{self.gpid} has no store right now")
        return await self._in_thread(store.read, request)

    async def read_log(self, from_decree: int, to_decree: int) -> list[Mutation]:
        """Contiguous live log records from from_decree (stops early at a gap or the byte bound)."""
        self._check_usable()
        mutations = await self.log.read(from_decree, to_decree, self.settings.max_log_read_bytes)
        contiguous: list[Mutation] = []
        for expected, mutation in enumerate(mutations, start=from_decree):
            if mutation.decree != expected:
                break
            contiguous.append(mutation)
        return contiguous

    # --- maintenance --------------------------------------------------------------------------

    async def flush_and_collect(self, keep_from_decree: int) -> int:
        """Flush the store, record the applied decree, and collect log segments below both the
        flushed decree + 1 and keep_from_decree. Returns the log's first decree after (0: empty).
        Applies go on while the store flushes (module doc, point 3)."""
        self._check_usable()
        applied_file = self._applied_file

        def flush(store: PartitionStore) -> int:
            durable = store.flush()
            # Every applied decree was committed here (layout.py); the store may be past `durable`.
            applied_file.record(max(durable, store.last_applied_decree))
            return durable

        done: asyncio.Future[object] = self._loop.create_future()
        self._store_jobs.append(_FlushJob(flush, done))
        self._run_store_jobs()
        durable = cast(int, await done)  # what flush() returned
        self._check_usable()  # it may have closed while the flush ran
        log = self.log
        below = min(durable + 1, keep_from_decree)
        if below > 1:
            await log.gc(below)
        return log.first_decree

    async def sweep(self, max_keys: int) -> SweepResult:
        return await self.call_store(lambda store: store.sweep_expired(max_keys))

    # --- failure and closing ------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closing:
            raise ShuttingDownError(f"replica {self.gpid} is closing")
        if self._failure is not None:
            raise StorageError(f"replica {self.gpid} failed: {self._failure}")
        if not self._opened.done():
            raise BusyError(f"replica {self.gpid} is still opening")

    def _fail(self, reason: str) -> None:
        if self._failure is not None:
            return
        self._failure = reason
        logger.error("%s: %s; the replica stops (ERROR)", self.gpid, reason)
        self._abandon(ErrorCode.STORAGE, reason)
        # Not from inside this call: it may come from a Ready being executed (persist, apply), and
        # the host's failure event must not run in the middle of that execution.
        self._loop.call_soon(self._host.on_local_failure, self, reason)

    def _abandon(self, code: ErrorCode, reason: str) -> None:
        """Answer everything still waiting on this replica: clients, readers, store jobs."""
        self._persist_queue.clear()
        self._durable_groups.clear()
        self._held.clear()
        while self._store_jobs:
            job = self._store_jobs.popleft()
            if isinstance(job, Apply):
                for token in job.tokens:
                    self._host.refuse_write(token, code, reason)
            elif isinstance(job, _ThreadApplyJob):
                for item in job.items:
                    for token in item.tokens:
                        self._host.refuse_write(token, code, reason)
            elif not job.done.done():
                error: PegasusError = (
                    StorageError(reason) if code == ErrorCode.STORAGE else ShuttingDownError(reason)
                )
                job.done.set_exception(error)
                job.done.exception()
        for _, _, waiter in self._applied_waiters:
            if not waiter.done():
                waiter.set_exception(ShuttingDownError(f"replica {self.gpid}: {reason}"))
                waiter.exception()
        self._applied_waiters.clear()

    async def close(self, *, drain_s: float) -> None:
        """Stop: give queued log appends and applies up to drain_s to finish (their clients get an
        answer), then cancel the rest, close the log (it fsyncs what it took) and the store (it
        flushes). Idempotent."""
        if self._closing:
            return
        self._closing = True
        if self.is_open and self._failure is None and drain_s > 0:
            deadline = self._loop.time() + drain_s
            while (
                self.durable_pending
                or self._store_jobs
                or self._store_task is not None
                or self._beside_task is not None
            ) and self._loop.time() < deadline:
                await asyncio.sleep(0.01)
        self._store_stopped = True
        task = self._store_task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        beside = self._beside_task
        if beside is not None:  # not cancelled: its thread would go on flushing the store anyway
            await asyncio.wait({beside})
        self._abandon(ErrorCode.SHUTTING_DOWN, "the replica is closing")
        await self._close_files()

    async def _close_files(self) -> None:
        log, self._log = self._log, None
        store, self._store = self._store, None
        if log is not None:
            try:
                await log.close()
            except PegasusError as exc:
                logger.warning("%s: closing the log: %s", self.gpid, exc)
        if store is not None:
            applied_file = self._applied_file
            failed = self._failure is not None

            def close_store() -> None:
                store.close()
                if not failed:
                    applied_file.record(store.last_applied_decree)

            try:
                await self._in_thread(close_store)
            except PegasusError as exc:
                logger.warning("%s: closing the store: %s", self.gpid, exc)

    def _in_thread(self, function: Callable[..., _T], *args: object) -> asyncio.Future[_T]:
        return self._loop.run_in_executor(self._executor, function, *args)


def _durable_reports(batch: list[Mutation]) -> list[Mutation]:
    """Which mutations of a durable batch to report to on_log_durable, in append order.

    The last one covers the whole batch (ready.py), except that the core matches a report with the
    FIRST unsynced append of that (ballot, decree): a learner appends a held prepare again once it
    continues its prepare list (replica.py _merge_held), so a key may occur twice in one batch. An
    earlier occurrence of a key that occurs again later is reported first, so that every report
    pops exactly up to its own append.
    """
    if len(batch) == 1:
        return batch  # one mutation per group: the usual case at one write per mutation
    last_index = {(m.ballot, m.decree): i for i, m in enumerate(batch)}
    return [m for i, m in enumerate(batch) if last_index[(m.ballot, m.decree)] != i or i == len(batch) - 1]
