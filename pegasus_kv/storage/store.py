"""PartitionStore: the RocksDB projection of one partition's mutation log.

The replica applies committed mutations in decree order (`apply`), serves reads (`read`), makes
applied data durable (`flush`, `close`), hands out checkpoints for learners and backups
(`checkpoint`) and runs the expiry sweep (`sweep_expired`). Everything is synchronous: the server
runtime calls it from a worker thread, except `apply(no_stall=True)`, which refuses (WriteStall)
instead of waiting where RocksDB would stall the write, and `read` of point reads: those two are
cheap enough for the event loop.

Concurrency: one writer and any number of concurrent readers. `apply`, `flush`, `checkpoint`,
the delete half of `sweep_expired` and `close` serialize on one internal lock; reads take no lock
(RocksDB reads are thread-safe and a WriteBatch becomes visible atomically).

Durability: RocksDB's WAL is off, the mutation log is the WAL. After a crash only flushed data
survives, and the last applied decree read back on open is the decree of exactly that data
(layout.py explains why it lives in the data's column family). `last_durable_decree` is what the
replica may garbage-collect its log up to.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from pegasus_kv.core.errors import (
    InvalidArgumentError,
    InvalidStateError,
    ShuttingDownError,
    UnsupportedError,
)
from pegasus_kv.core.messages import (
    BatchGetRequest,
    ClearScannerRequest,
    GetRequest,
    GetScannerRequest,
    MultiGetRequest,
    ScanRequest,
    SortKeyCountRequest,
    TtlRequest,
)
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.core.registry import Message
from pegasus_kv.core.schema import DATA_VERSION, PEGASUS_EPOCH_UNIX_S, epoch_now
from pegasus_kv.core.validation import validate_read
from pegasus_kv.storage.apply import apply_writes
from pegasus_kv.storage.engine import Engine, is_rocksdb_error, translate
from pegasus_kv.storage.invariants import InvariantViolation
from pegasus_kv.storage.layout import (
    APPLY_STATE_KEY,
    DATA_VERSION_KEY,
    INITIAL_APPLY_STATE,
    ApplyState,
    decode_apply_state,
    encode_apply_state,
)
from pegasus_kv.storage.options import StoreOptions
from pegasus_kv.storage.reads import Reader
from pegasus_kv.storage.scanner import Scanner
from pegasus_kv.storage.sweep import SweepResult, find_expired, still_expired


class PartitionStore:
    def __init__(
        self,
        engine: Engine,
        apply_state: ApplyState,
        options: StoreOptions,
        clock: Callable[[], float],
    ) -> None:
        self._engine = engine
        self._options = options
        self._clock = clock
        self._write_lock = threading.Lock()
        # Held for a whole flush, which runs beside applies (flush): close takes it first.
        self._flush_lock = threading.Lock()
        self._closed = False
        # The apply state (layout.py), kept as two ints: apply() updates them on every mutation.
        self._applied_decree = apply_state.decree
        self._applied_timestamp_us = apply_state.timestamp_us
        # Everything read back on open is on disk already.
        self._last_durable_decree = apply_state.decree
        self._sweep_cursor = b""
        self._reader = Reader(engine, options, clock)
        self._scanner = Scanner(engine, options, clock)
        self._read_handlers: dict[type, Callable[[Any], Message]] = {
            GetRequest: self._reader.get,
            TtlRequest: self._reader.ttl,
            MultiGetRequest: self._reader.multi_get,
            SortKeyCountRequest: self._reader.sort_key_count,
            BatchGetRequest: self._reader.batch_get,
            GetScannerRequest: self._scanner.get_scanner,
            ScanRequest: self._scanner.scan,
            ClearScannerRequest: self._scanner.clear_scanner,
        }

    @classmethod
    def open(
        cls,
        path: str,
        *,
        options: StoreOptions | None = None,
        clock: Callable[[], float] | None = None,
    ) -> PartitionStore:
        """Open (or create) the store in `path`; a checkpoint directory opens the same way.

        `clock` returns Unix seconds; reads judge expiry by it (default: time.time)."""
        options = options or StoreOptions()
        engine = Engine.open(path, write_buffer_bytes=options.write_buffer_bytes)
        try:
            data_version = engine.get_meta(DATA_VERSION_KEY)
            if data_version is None:
                engine.put_meta_durably(DATA_VERSION_KEY, str(DATA_VERSION).encode())
            elif data_version != str(DATA_VERSION).encode():
                raise UnsupportedError(f"{path} holds data version {data_version!r}; only {DATA_VERSION}")
            raw_state = engine.get(APPLY_STATE_KEY)
            apply_state = INITIAL_APPLY_STATE if raw_state is None else decode_apply_state(raw_state)
        except BaseException:
            engine.close()
            raise
        return cls(engine, apply_state, options, clock or time.time)

    # --- state --------------------------------------------------------------------------------

    @property
    def last_applied_decree(self) -> int:
        return self._applied_decree

    @property
    def last_durable_decree(self) -> int:
        """Every decree up to this one survives a crash (a lower bound: RocksDB may have
        flushed more on its own)."""
        return self._last_durable_decree

    @property
    def path(self) -> str:
        return self._engine.path

    @property
    def open_scan_contexts(self) -> int:
        return len(self._scanner.registry)

    def _ensure_open(self) -> None:
        if self._closed:
            raise ShuttingDownError(f"partition store {self._engine.path} is closed")

    # --- writes -------------------------------------------------------------------------------

    def apply(self, mutation: Mutation, *, no_stall: bool = False) -> list[Message]:
        """Apply one committed mutation atomically; one reply per write, in order.

        Replies are WriteResponse / MultiDeleteResponse / IncrResponse / CheckAndMutateResponse,
        or ErrorReply for a write whose semantics failed (it changes nothing; the other writes
        still apply). An empty mutation still advances the decree. Raises InvalidStateError unless
        mutation.decree == last_applied_decree + 1, and StorageError if RocksDB fails (then
        nothing of the mutation was applied). With no_stall (a caller on an event loop), raises
        WriteStall, having applied nothing, where RocksDB would stall the write: apply it again
        without no_stall from a thread that may wait.
        """
        with self._write_lock:
            self._ensure_open()
            decree = mutation.decree
            if decree != self._applied_decree + 1:
                raise InvalidStateError(
                    f"mutation decree {mutation.decree} does not follow "
                    f"the last applied decree {self._applied_decree}"
                )
            engine = self._engine
            batch = engine.new_batch()
            replies = apply_writes(engine.get, mutation, batch)
            if len(replies) != len(mutation.writes):
                raise InvariantViolation(f"{len(replies)} replies for {len(mutation.writes)} writes")
            timestamp_us = max(self._applied_timestamp_us, mutation.timestamp_us)
            # The decree rides in the same batch as the data (layout.py).
            batch.put(APPLY_STATE_KEY, encode_apply_state(decree, timestamp_us))
            if no_stall:
                engine.commit(batch, no_slowdown=True)
            else:
                engine.commit(batch)
            self._applied_decree = decree
            self._applied_timestamp_us = timestamp_us
            return replies

    # --- reads --------------------------------------------------------------------------------

    def read(self, request: Message, *, validated: bool = False) -> Message:
        """Serve one read request; errors are raised as typed PegasusError. validated=True: the
        caller ran core.validation.validate_read on it already (a server, per client read)."""
        if self._closed:
            self._ensure_open()  # raises
        if not validated:
            validate_read(request)
        handler = self._read_handlers[type(request)]
        try:
            return handler(request)
        except Exception as exc:
            if is_rocksdb_error(exc):
                raise translate(exc, type(request).__name__) from exc
            raise

    # --- durability ---------------------------------------------------------------------------

    def flush(self) -> int:
        """Make everything applied so far durable; returns the decree that now is.

        Applies may go on meanwhile from another thread: RocksDB switches the memtable when the
        flush starts and writes every write made before it, so the decree read first is durable
        once the flush returns. Only close waits for a flush in progress."""
        with self._flush_lock:
            with self._write_lock:
                self._ensure_open()
                decree = self._applied_decree
            self._engine.flush()
            with self._write_lock:
                self._last_durable_decree = max(self._last_durable_decree, decree)
            return decree

    def checkpoint(self, dest_dir: str) -> int:
        """Write a consistent copy of the store into `dest_dir` (must not exist; its parent
        must); returns the decree the copy holds. See checkpoint.py for opening one."""
        with self._write_lock:
            self._ensure_open()
            self._engine.flush()
            self._last_durable_decree = self._applied_decree
            self._engine.checkpoint(dest_dir)
            return self._applied_decree

    def close(self) -> None:
        """Flush and close; later calls raise ShuttingDownError. Closing twice is harmless."""
        with self._flush_lock, self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._scanner.registry.clear()
            try:
                self._engine.flush()
                self._last_durable_decree = self._applied_decree
            finally:
                self._engine.close()

    # --- expiry sweep -------------------------------------------------------------------------

    def sweep_threshold_epoch_s(self) -> int:
        """Records that expired at or before this Pegasus-epoch second may be deleted (sweep.py)."""
        applied_epoch_s = self._applied_timestamp_us // 1_000_000 - PEGASUS_EPOCH_UNIX_S
        return min(epoch_now(self._clock()), applied_epoch_s) - self._options.sweep_safety_margin_s

    def sweep_expired(self, max_keys: int) -> SweepResult:
        """One bounded step of the expiry sweep, resuming where the previous step stopped."""
        if max_keys <= 0:
            raise InvalidArgumentError(f"max_keys must be positive, got {max_keys}")
        self._ensure_open()
        max_keys = min(max_keys, self._options.sweep_max_keys_per_step)
        threshold = self.sweep_threshold_epoch_s()
        try:
            found = find_expired(self._engine, self._sweep_cursor, max_keys, threshold)
        except Exception as exc:
            if is_rocksdb_error(exc):
                raise translate(exc, "sweep") from exc
            raise
        with self._write_lock:
            self._ensure_open()
            doomed = still_expired(self._engine, found.candidates, threshold)
            if doomed:
                self._engine.delete_all(doomed)
            self._sweep_cursor = found.next_cursor
        return SweepResult(examined=found.examined, deleted=len(doomed), cycle_complete=found.cycle_complete)
