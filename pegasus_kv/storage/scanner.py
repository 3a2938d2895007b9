"""Scan contexts: batched iteration over one hash key, or over a whole partition.

A context remembers what is left of its key range, not a RocksDB iterator or snapshot: every
batch opens a fresh iterator and seeks just after the last key the previous batch visited.
Pegasus keeps the iterator in the context instead (one point-in-time view for the whole scan).
We resume by key because a context may sit idle for minutes between batches, and a pinned
iterator holds memtables and SST files for that long (with rocksdict it also keeps the database
open past close()); resuming costs one seek per batch, stays valid while writes continue, and is
exactly what a client does after a failover with `start_after`. The price: each batch is a
consistent view, but across batches a scan sees the writes made ahead of its position and not
those behind it. Contexts are bounded in number and dropped when idle (Pegasus drops them after
5 minutes).

Rows are (hash_key, sort_key, value, expire_ts); value is b"" with no_value, expire_ts 0 unless
return_expire_ts. `last_key` of a batch is the stored key the scan has covered up to: the last
row's key, or a later key the batch visited and skipped (expired, filtered); resuming after it
misses nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from pegasus_kv.core.errors import BusyError, ScannerExpiredError
from pegasus_kv.core.messages import (
    ClearScannerRequest,
    ClearScannerResponse,
    FilterType,
    GetScannerRequest,
    ScanRequest,
    ScanResponse,
)
from pegasus_kv.core.schema import VALUE_HEADER_BYTES, decode_key, epoch_now
from pegasus_kv.storage.checks import matches_filter
from pegasus_kv.storage.engine import Engine
from pegasus_kv.storage.invariants import invariant
from pegasus_kv.storage.options import StoreOptions
from pegasus_kv.storage.ranges import IterationBudget, KeyRange, partition_range, sort_key_range
from pegasus_kv.storage.reads import live_expire_ts

SCAN_FINISHED = -1  # the context id of a reply that ends the scan

ScanRow = tuple[bytes, bytes, bytes, int]
_NO_BYTE_LIMIT = 1 << 62


@dataclass(slots=True)
class ScanContext:
    key_range: KeyRange  # what is left to scan
    hash_key_filter_type: FilterType
    hash_key_filter_pattern: bytes
    sort_key_filter_type: FilterType
    sort_key_filter_pattern: bytes
    batch_rows: int
    no_value: bool
    return_expire_ts: bool
    context_id: int = SCAN_FINISHED
    last_used_s: float = 0.0


class ScanBatch(NamedTuple):
    rows: list[ScanRow]
    last_key: bytes | None
    finished: bool


class ScannerRegistry:
    """The open contexts of one store, bounded, least recently used first."""

    def __init__(self, max_contexts: int, idle_s: float) -> None:
        self._max_contexts = max_contexts
        self._idle_s = idle_s
        self._contexts: OrderedDict[int, ScanContext] = OrderedDict()
        self._next_id = 1
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._contexts)

    def _purge_idle(self, now_s: float) -> None:
        while self._contexts:
            oldest = next(iter(self._contexts.values()))
            if now_s - oldest.last_used_s <= self._idle_s:
                break
            del self._contexts[oldest.context_id]

    def ensure_room(self, now_s: float) -> None:
        with self._lock:
            self._purge_idle(now_s)
            if len(self._contexts) >= self._max_contexts:
                raise BusyError(f"{len(self._contexts)} scan contexts are open; retry later")

    def register(self, context: ScanContext, now_s: float) -> int:
        with self._lock:
            self._purge_idle(now_s)
            if len(self._contexts) >= self._max_contexts:
                raise BusyError(f"{len(self._contexts)} scan contexts are open; retry later")
            context.context_id = self._next_id
            self._next_id += 1
            context.last_used_s = now_s
            self._contexts[context.context_id] = context
            return context.context_id

    def checkout(self, context_id: int, now_s: float) -> ScanContext:
        """Take a context out while one batch runs (a second request for it meanwhile fails)."""
        with self._lock:
            self._purge_idle(now_s)
            context = self._contexts.pop(context_id, None)
        if context is None:
            raise ScannerExpiredError(f"scan context {context_id} is unknown, finished or expired")
        return context

    def checkin(self, context: ScanContext, now_s: float) -> None:
        invariant(context.context_id > 0, "only registered contexts are checked back in")
        with self._lock:
            context.last_used_s = now_s
            self._contexts[context.context_id] = context

    def discard(self, context_id: int) -> None:
        with self._lock:
            self._contexts.pop(context_id, None)

    def clear(self) -> None:
        with self._lock:
            self._contexts.clear()


def context_for(request: GetScannerRequest, options: StoreOptions) -> ScanContext:
    if request.full_scan:
        key_range = partition_range(request.hash_key_filter_type, request.hash_key_filter_pattern)
    else:
        key_range = sort_key_range(
            request.hash_key,
            request.start_sort_key,
            request.start_inclusive,
            request.stop_sort_key,
            request.stop_inclusive,
            request.sort_key_filter_type,
            request.sort_key_filter_pattern,
        )
    if request.start_after is not None:
        key_range = key_range.after(request.start_after)
    batch_rows = options.scan_max_batch_rows
    if 0 < request.batch_size < batch_rows:
        batch_rows = request.batch_size
    return ScanContext(
        key_range=key_range,
        hash_key_filter_type=request.hash_key_filter_type,
        hash_key_filter_pattern=request.hash_key_filter_pattern,
        sort_key_filter_type=request.sort_key_filter_type,
        sort_key_filter_pattern=request.sort_key_filter_pattern,
        batch_rows=batch_rows,
        no_value=request.no_value,
        return_expire_ts=request.return_expire_ts,
    )


def scan_batch(engine: Engine, context: ScanContext, budget: IterationBudget, now_epoch_s: int) -> ScanBatch:
    """One batch of live, matching rows from what is left of the context's range."""
    key_range = context.key_range
    if key_range.is_empty():
        return ScanBatch([], None, True)
    rows: list[ScanRow] = []
    last_key: bytes | None = None
    finished = True
    filter_hash_key = context.hash_key_filter_type != FilterType.NO_FILTER
    filter_sort_key = context.sort_key_filter_type != FilterType.NO_FILTER
    with engine.iterate(key_range.upper_bound()) as iterator:
        iterator.seek(key_range.start)
        while iterator.valid():
            key = iterator.key()
            if not key_range.before_stop(key):
                break
            if not key_range.after_start(key):  # the excluded start key itself
                iterator.next()
                continue
            if len(rows) >= context.batch_rows or budget.exhausted():
                finished = False
                break
            budget.visit()
            last_key = key
            raw = iterator.value()
            expire_ts = live_expire_ts(raw, now_epoch_s)
            if expire_ts is not None:
                hash_key, sort_key = decode_key(key)
                if (
                    not filter_hash_key
                    or matches_filter(context.hash_key_filter_type, context.hash_key_filter_pattern, hash_key)
                ) and (
                    not filter_sort_key
                    or matches_filter(context.sort_key_filter_type, context.sort_key_filter_pattern, sort_key)
                ):
                    rows.append(
                        (
                            hash_key,
                            sort_key,
                            b"" if context.no_value else raw[VALUE_HEADER_BYTES:],
                            expire_ts if context.return_expire_ts else 0,
                        )
                    )
            iterator.next()
    return ScanBatch(rows, last_key, finished)


class Scanner:
    """Serves GetScannerRequest, ScanRequest and ClearScannerRequest for one store."""

    def __init__(self, engine: Engine, options: StoreOptions, clock: Callable[[], float]) -> None:
        self._engine = engine
        self._options = options
        self._clock = clock
        self.registry = ScannerRegistry(options.max_scan_contexts, options.scan_context_idle_s)

    def _next_batch(self, context: ScanContext) -> ScanBatch:
        budget = IterationBudget(
            self._options.scan_max_iterations,
            _NO_BYTE_LIMIT,
            self._options.iteration_time_limit_s,
            self._clock,
        )
        batch = scan_batch(self._engine, context, budget, epoch_now(self._clock()))
        if batch.last_key is not None:
            context.key_range = context.key_range.after(batch.last_key)
        return batch

    def get_scanner(self, request: GetScannerRequest) -> ScanResponse:
        context = context_for(request, self._options)
        self.registry.ensure_room(self._clock())
        batch = self._next_batch(context)
        if batch.finished:
            return ScanResponse(rows=batch.rows, context_id=SCAN_FINISHED, last_key=batch.last_key)
        context_id = self.registry.register(context, self._clock())
        return ScanResponse(rows=batch.rows, context_id=context_id, last_key=batch.last_key)

    def scan(self, request: ScanRequest) -> ScanResponse:
        context = self.registry.checkout(request.context_id, self._clock())
        try:
            batch = self._next_batch(context)
        except BaseException:
            self.registry.checkin(context, self._clock())
            raise
        if batch.finished:
            return ScanResponse(rows=batch.rows, context_id=SCAN_FINISHED, last_key=batch.last_key)
        self.registry.checkin(context, self._clock())
        return ScanResponse(rows=batch.rows, context_id=context.context_id, last_key=batch.last_key)

    def clear_scanner(self, request: ClearScannerRequest) -> ClearScannerResponse:
        self.registry.discard(request.context_id)
        return ClearScannerResponse()
