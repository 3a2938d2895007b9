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
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable

from pegasus_kv.replication.replica.invariants import invariant

logger = logging.getLogger(__name__)

Job = Callable[[], None]
JobDone = Callable[[BaseException | None], None]

# At most this many jobs wait at once (one batch per log; a server hosts at most this many logs).
MAX_QUEUED_JOBS = 100_000


class LogWriter:
    def __init__(self, name: str, *, threads: int = 1) -> None:
        invariant(threads >= 1, "a log writer needs a thread")
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._jobs: collections.deque[tuple[Job, JobDone]] = collections.deque()  # under _lock
        self._results: list[tuple[JobDone, BaseException | None]] = []  # under _lock
        self._delivery_scheduled = False  # under _lock
        self._closing = False  # under _lock
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
        with self._lock:
            invariant(not self._closing, "a job submitted to a closed log writer")
            invariant(len(self._jobs) < MAX_QUEUED_JOBS, "the log writer's queue is full")
            self._jobs.append((job, done))
            self._wakeup.notify()

    async def close(self) -> None:
        """Run what is queued, stop the thread. Idempotent."""
        with self._lock:
            self._closing = True
            self._wakeup.notify_all()
        await asyncio.shield(self._stopped)

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._jobs and not self._closing:
                        self._wakeup.wait()
                    if not self._jobs:
                        return
                    # One thread takes everything queued; with several, each takes its share, so
                    # the fsyncs of different logs overlap.
                    share = max(1, len(self._jobs) // len(self._threads))
                    jobs = [self._jobs.popleft() for _ in range(share)]
                results: list[tuple[JobDone, BaseException | None]] = []
                for job, done in jobs:
                    try:
                        job()
                    except BaseException as exc:  # handed to the job's owner, who fails its log
                        results.append((done, exc))
                    else:
                        results.append((done, None))
                with self._lock:
                    self._results.extend(results)
                    schedule = not self._delivery_scheduled
                    self._delivery_scheduled = True
                if schedule:
                    self._loop.call_soon_threadsafe(self._deliver)
        finally:
            with self._lock:
                self._running -= 1
                last = self._running == 0
            if last:
                self._loop.call_soon_threadsafe(self._finish)

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
