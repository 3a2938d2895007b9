"""The thread that writes and fsyncs the mutation logs of one replica server.

Every replica has its own log (mutation_log.py), and each log writes one batch at a time. Handing
each batch to a thread pool cost, per batch, a pool submit, a concurrent future chained to an
asyncio future, a wake-up of the event loop and GIL hand-offs between up to io_threads workers:
profiling onebox under a write load showed that machinery, not the fsyncs, as the larger part of
the log's CPU. Here one thread takes every batch queued (from any log), runs them in queue order,
and reports all the results to the event loop in one wake-up.

    writer = LogWriter("replica-log")      # starts the thread
    writer.submit(job, done)               # on the event loop: job() runs on the thread, then
                                           # done(None) or done(exception) runs on the loop
    await writer.close()                   # after every log using it is closed

Jobs of one log stay in order because the log submits its next batch only after the previous one
is done. Jobs block on the disk (write + fsync), so they run one after the other: a round of N
batches takes N fsyncs, each acknowledging everything its log queued meanwhile (group commit).
The queue is bounded by the logs: each has at most one batch in it.

With a shared log (shared_log.py; a replica server under policy `group`) a round costs ONE flush,
not N: every log hands its batch as (its SegmentedLog, the records) through `submit_shared`; the
thread writes each batch into its private log without syncing, gathers where every record went, and
appends them all to the shared log in one synced write; only then is every job of the round done. A
failed private write fails its own job; a failed shared append fails every shared job of the round
(and the shared log stays failed, so every later one fails too: the logs fail for good, as after a
failed fsync). The thread keeps the private logs that wrote since the shared log's last collection
(weakly: a closed, dropped log goes by itself) and syncs them when the shared log asks, before it
deletes a segment.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import weakref
from collections.abc import Callable, Sequence

from pegasus_kv.replication.replica.invariants import invariant, violated
from pegasus_kv.replication.replica.log_store import EncodedMutation, SegmentedLog
from pegasus_kv.replication.replica.shared_log import SharedLog, SharedRecord
from pegasus_kv.replication.replica.shared_log_collector import SharedLogCollector

logger = logging.getLogger(__name__)

Job = Callable[[], None]
JobDone = Callable[[BaseException | None], None]

# At most this many jobs wait at once (one batch per log; a server hosts at most this many logs).
MAX_QUEUED_JOBS = 100_000


class _SharedBatch:
    """A batch for a private log with deferred sync, made durable by the shared log's append."""

    __slots__ = ("items", "store")

    def __init__(self, store: SegmentedLog, items: Sequence[EncodedMutation]) -> None:
        # A plain class: one is made per batch on the event loop (a frozen dataclass costs twice).
        self.store = store
        self.items = items


# Put in the job queue by close(), one per thread: a thread that takes it stops after its round.
_STOP = None


class LogWriter:
    def __init__(self, name: str, *, threads: int = 1, shared_log: SharedLog | None = None) -> None:
        invariant(threads >= 1, "a log writer needs a thread")
        self.shared_log = shared_log
        # Syncs private logs and deletes shared segments after a rotation, off this writer's thread.
        self._collector = SharedLogCollector(shared_log, f"{name}-collector") if shared_log else None
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        # The jobs, in submit order. A SimpleQueue: put and the writer's blocking get are C calls
        # (a deque under a Condition cost a Python-level notify per batch on the event loop).
        self._jobs: queue.SimpleQueue[tuple[Job | _SharedBatch, JobDone] | None] = queue.SimpleQueue()
        # Private logs that wrote through the shared log since its last collection, by id() with a
        # weak reference that tells whether that id is still the same log (under _lock).
        self._unsynced_logs: dict[int, weakref.ref[SegmentedLog]] = {}
        self._results: list[tuple[JobDone, BaseException | None]] = []  # under _lock
        self._delivery_scheduled = False  # under _lock
        self._closing = False  # set on the event loop, like every submit
        self._running = threads  # under _lock
        self._stopped = self._loop.create_future()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{index}", daemon=True)
            for index in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job, done: JobDone) -> None:
        """Run job() on the writer thread after every job submitted before; then done(error or
        None) on the event loop. Called on the event loop."""
        if self._closing:
            violated("a job submitted to a closed log writer")
        if self._jobs.qsize() >= MAX_QUEUED_JOBS:
            violated("the log writer's queue is full")
        self._jobs.put((job, done))

    def submit_shared(self, store: SegmentedLog, items: Sequence[EncodedMutation], done: JobDone) -> None:
        """Write `items` into `store` (deferred sync) and make them durable through the shared log,
        in one round with every batch queued with it; then done(error or None) on the event loop."""
        if self.shared_log is None:
            violated("a shared batch for a writer with no shared log")
        if not store.defer_sync:
            violated("a shared batch for a log that syncs its own batches")
        if self._closing:
            violated("a job submitted to a closed log writer")
        if self._jobs.qsize() >= MAX_QUEUED_JOBS:
            violated("the log writer's queue is full")
        self._jobs.put((_SharedBatch(store, items), done))

    async def close(self) -> None:
        """Run what is queued, stop the thread. Idempotent."""
        if not self._closing:
            self._closing = True
            for _ in self._threads:
                self._jobs.put(_STOP)
        await asyncio.shield(self._stopped)

    def _run(self) -> None:
        jobs_queue = self._jobs
        try:
            while True:
                first = jobs_queue.get()
                if first is _STOP:
                    return
                # One thread takes everything queued; with several, each takes its share, so
                # the fsyncs of different logs overlap.
                jobs = [first]
                share = max(1, (jobs_queue.qsize() + 1) // len(self._threads))
                stop = False
                while len(jobs) < share:
                    try:
                        job = jobs_queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is _STOP:
                        stop = True
                        break
                    jobs.append(job)
                results = self._run_round(jobs)
                with self._lock:
                    self._results.extend(results)
                    schedule = not self._delivery_scheduled
                    self._delivery_scheduled = True
                if schedule:
                    self._loop.call_soon_threadsafe(self._deliver)
                if stop:
                    return
        finally:
            with self._lock:
                self._running -= 1
                last = self._running == 0
            if last:
                if self._collector is not None:
                    self._collector.close()  # what it was handed goes first
                self._loop.call_soon_threadsafe(self._finish)

    def _run_round(
        self, jobs: list[tuple[Job | _SharedBatch, JobDone]]
    ) -> list[tuple[JobDone, BaseException | None]]:
        results: list[tuple[JobDone, BaseException | None]] = []
        shared_records: list[SharedRecord] = []
        shared_done: list[JobDone] = []
        for job, done in jobs:
            try:
                if isinstance(job, _SharedBatch):
                    store = job.store
                    placements = store.write_unsynced(job.items)
                    key = id(store)
                    with self._lock:
                        known = self._unsynced_logs.get(key)
                        if known is None or known() is not store:  # not yet, or a dead log's id
                            self._unsynced_logs[key] = weakref.ref(store)
                    log_id = store.log_id
                    shared_records.extend(
                        SharedRecord(log_id, seq, offset, record) for seq, offset, record in placements
                    )
                    shared_done.append(done)
                    continue
                job()
            except BaseException as exc:  # handed to the job's owner, who fails its log
                results.append((done, exc))
            else:
                results.append((done, None))
        if shared_done:
            shared_log = self.shared_log
            assert shared_log is not None  # submit_shared checked it
            error: BaseException | None = None
            try:
                shared_log.append(shared_records, self._collect)
            except BaseException as exc:  # every job of the round: none of them is durable
                error = exc
            results.extend((done, error) for done in shared_done)
        return results

    def _collect(self, segments: list[int]) -> None:
        """The shared log rotated: the private logs that wrote since the previous rotation (all of
        their records in `segments` were written before now) go to the collector, which syncs them
        and then deletes the segments. The registry starts over: a log that writes from now on is
        collected with the next rotation."""
        with self._lock:
            logs = [log for ref in self._unsynced_logs.values() if (log := ref()) is not None]
            self._unsynced_logs = {}
        assert self._collector is not None  # there is a shared log
        self._collector.schedule(logs, segments)

    def _deliver(self) -> None:
        with self._lock:
            results = self._results
            self._results = []
            self._delivery_scheduled = False
        for done, error in results:
            try:
                done(error)
            except Exception:  # one log's callback must not keep the others from theirs
                logger.exception("a mutation log's write callback failed")

    def _finish(self) -> None:
        self._deliver()
        if not self._stopped.done():
            self._stopped.set_result(None)
