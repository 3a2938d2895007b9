"""Collection of a replica server's shared log, on a thread of its own.

When the shared log rotates (shared_log.py), its older segments may go only once every private log
that wrote into them is synced. Doing those syncs on the log-writer thread stalled every write of
the server: a 32 MiB segment is ~15 s of a busy server's writes, and syncing its private logs took
tens of milliseconds (YCSB A on onebox: UPDATE p99.9 90-140 ms with the inline syncs, 36-50 ms with
no rotation at all). Here the writer only hands over (the private logs that wrote since the previous
rotation, the segments to delete) and goes on; this thread syncs each log without holding the log's
lock (`SegmentedLog.sync_written`), then deletes the segments.

Why that is enough: every record in those segments was written to its private log (page cache)
before the rotation, so before the hand-over, so before this thread's fsync of that log. A crash
before the deletion only leaves segments that the next start repairs from (idempotently). A failed
sync or deletion fails the shared log for good (`SharedLog.fail`): the next append raises and every
log of the server fails, as after a failed fsync.

Bounded: at most MAX_PENDING collections wait; beyond that `schedule` runs one inline on the
caller's thread (back-pressure; a rotation is every `shared_segment_bytes`, so this means the disk
cannot keep up anyway).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Sequence

from pegasus_kv.replication.replica.log_store import SegmentedLog
from pegasus_kv.replication.replica.shared_log import SharedLog

logger = logging.getLogger(__name__)

MAX_PENDING = 8


class SharedLogCollector:
    def __init__(self, shared_log: SharedLog, name: str) -> None:
        self._shared_log = shared_log
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._pending: collections.deque[tuple[list[SegmentedLog], list[int]]] = collections.deque()
        self._closing = False  # under _lock
        self.collected = 0  # collections done (tests, metrics)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def schedule(self, logs: Sequence[SegmentedLog], segments: Sequence[int]) -> None:
        """Sync `logs`, then delete shared-log `segments`, soon (called on the log-writer thread)."""
        with self._lock:
            if len(self._pending) < MAX_PENDING and not self._closing:
                self._pending.append((list(logs), list(segments)))
                self._wakeup.notify()
                return
        self._collect(list(logs), list(segments))

    def close(self) -> None:
        """Run what is scheduled, then stop the thread; blocks (call it off the event loop)."""
        with self._lock:
            self._closing = True
            self._wakeup.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closing:
                    self._wakeup.wait()
                if not self._pending:
                    return
                logs, segments = self._pending.popleft()
            self._collect(logs, segments)

    def _collect(self, logs: list[SegmentedLog], segments: list[int]) -> None:
        try:
            for store in logs:
                store.sync_written()
            self._shared_log.delete_collected(segments)
        except Exception as exc:  # the records of those segments may be nowhere durable but there
            logger.error("shared log %s: collection failed: %s", self._shared_log.directory, exc)
            self._shared_log.fail(f"collection failed: {exc}")
            return
        with self._lock:
            self.collected += 1
