"""Periodic upkeep of every replica on a server: flush + log collection, and the expiry sweep.

- Every flush_interval_s each replica's store is flushed (its applied decree becomes durable in
  RocksDB) and its log is collected below the flushed decree + 1 - but never below what a learner is
  still reading or fetching a checkpoint for (learning.py holds). The core is told the log's new
  first decree (on_log_truncated) so it stops offering those decrees to learners from the log.
- Every sweep_interval_s each replica runs one bounded step of the expiry sweep (storage/sweep.py),
  resuming where the previous step stopped. Expired records are invisible to reads already; the
  sweep only reclaims their space, so it needs no log record and runs on every replica alike.

Replicas are visited one at a time, so upkeep never takes more than one worker thread from the
server's pool and never competes with itself for a store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pegasus_kv.core.errors import PegasusError
from pegasus_kv.replication.replica.learning import CheckpointShelf
from pegasus_kv.replication.replica.replica_runtime import ReplicaRuntime

logger = logging.getLogger(__name__)


class Maintenance:
    def __init__(
        self,
        *,
        runtimes: Callable[[], list[ReplicaRuntime]],
        shelf: CheckpointShelf,
        on_log_truncated: Callable[[ReplicaRuntime, int], None],
        flush_interval_s: float,
        sweep_interval_s: float,
        sweep_max_keys: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runtimes = runtimes
        self._shelf = shelf
        self._on_log_truncated = on_log_truncated
        self._flush_interval_s = flush_interval_s
        self._sweep_interval_s = sweep_interval_s
        self._sweep_max_keys = sweep_max_keys
        self._clock = clock
        self.flushes = 0  # counters for operators and tests
        self.sweeps = 0
        self.swept_records = 0

    async def run(self) -> None:
        """Loop until cancelled."""
        next_flush = self._clock() + self._flush_interval_s
        next_sweep = self._clock() + self._sweep_interval_s
        while True:
            await asyncio.sleep(max(0.0, min(next_flush, next_sweep) - self._clock()))
            now = self._clock()
            if now >= next_flush:
                await self.flush_all()
                next_flush = self._clock() + self._flush_interval_s
            if now >= next_sweep:
                await self.sweep_all()
                next_sweep = self._clock() + self._sweep_interval_s

    async def flush_all(self) -> None:
        for runtime in self._runtimes():
            if not runtime.is_open or runtime.failed or runtime.closing:
                continue
            before = runtime.log.first_decree
            try:
                first = await runtime.flush_and_collect(self._shelf.keep_from_decree(runtime.gpid))
            except PegasusError as exc:
                logger.warning("%s: flush and log collection failed: %s", runtime.gpid, exc)
                continue
            self.flushes += 1
            if first > before:
                self._on_log_truncated(runtime, first)

    async def sweep_all(self) -> None:
        for runtime in self._runtimes():
            if not runtime.is_open or runtime.failed or runtime.closing:
                continue
            try:
                result = await runtime.sweep(self._sweep_max_keys)
            except PegasusError as exc:
                logger.warning("%s: expiry sweep failed: %s", runtime.gpid, exc)
                continue
            self.sweeps += 1
            self.swept_records += result.deleted
