"""Tunables of one partition store, with Pegasus's defaults where Pegasus has one."""

from __future__ import annotations

from dataclasses import dataclass

from pegasus_kv.core.errors import InvalidArgumentError


@dataclass(frozen=True, slots=True)
class StoreOptions:
    # RocksDB memtable size. With the WAL off, a memtable is the unit that becomes durable.
    write_buffer_bytes: int = 64 * 1024 * 1024

    # multi_get caps, whatever the request asks (Pegasus: multi_get_max_iteration_count 3000,
    # multi_get_max_iteration_size 30 MB, rocksdb_iteration_threshold_time_ms 30 s).
    multi_get_max_iterations: int = 3000
    multi_get_max_bytes: int = 30 * 1024 * 1024
    iteration_time_limit_s: float = 30.0

    # Scanners: rows per batch at most (Pegasus: rocksdb_max_iteration_count 1000), entries one
    # batch may visit (expired and filtered ones included), open contexts, idle lifetime
    # (Pegasus drops a context after 5 minutes).
    scan_max_batch_rows: int = 1000
    scan_max_iterations: int = 10_000
    max_scan_contexts: int = 1000
    scan_context_idle_s: float = 300.0

    # sort_key_count visits every record of one hash key; past this many it answers -1.
    sort_key_count_max_iterations: int = 1_000_000

    # The expiry sweep deletes a record only once it expired this long before the newest applied
    # mutation's timestamp (see sweep.py for why the mutation time, not the local clock).
    sweep_safety_margin_s: int = 300
    sweep_max_keys_per_step: int = 100_000

    def __post_init__(self) -> None:
        for name in (
            "write_buffer_bytes",
            "multi_get_max_iterations",
            "multi_get_max_bytes",
            "scan_max_batch_rows",
            "scan_max_iterations",
            "max_scan_contexts",
            "sort_key_count_max_iterations",
            "sweep_max_keys_per_step",
        ):
            if getattr(self, name) <= 0:
                raise InvalidArgumentError(f"StoreOptions.{name} must be positive")
        if self.iteration_time_limit_s <= 0 or self.scan_context_idle_s <= 0:
            raise InvalidArgumentError("StoreOptions time limits must be positive")
        if self.sweep_safety_margin_s < 0:
            raise InvalidArgumentError("StoreOptions.sweep_safety_margin_s must be >= 0")
