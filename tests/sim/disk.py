"""The simulated disk of one server: append-only files whose tail is lost in a crash until fsynced.

A write lands in the page cache at once; an fsync makes everything written before it durable and
completes later, as an event. A crash keeps the durable prefix and a random prefix of the
unsynced tail (the kernel may have written some pages back on its own), never a hole: a torn
record at the tail is truncated on restart (pacifica.md, "Log and checkpoints").

A test-only fault, `lies_about_fsync`, makes fsync report success without making anything
durable: a disk that acknowledges what it will lose. The invariant checkers must catch what follows.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

from tests.sim.scheduler import Scheduler, require

T = TypeVar("T")

# Records one file may hold; the cores truncate their logs long before this.
MAX_RECORDS_PER_FILE = 1_000_000


class DurableLog(Generic[T]):
    """One append-only file of records. `base` counts records removed from the front (log GC)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.records: list[T] = []
        self.base = 0
        self.durable_end = 0  # absolute index: records [base, durable_end) survive a crash

    @property
    def end(self) -> int:
        return self.base + len(self.records)

    def append(self, record: T) -> int:
        require(len(self.records) < MAX_RECORDS_PER_FILE, f"file {self.name} over its bound")
        self.records.append(record)
        return self.end - 1

    def durable_records(self) -> list[T]:
        return self.records[: self.durable_end - self.base]

    def unsynced_count(self) -> int:
        return self.end - self.durable_end

    def mark_durable(self, end: int) -> None:
        self.durable_end = max(self.durable_end, min(end, self.end))

    def truncate_front(self, new_base: int) -> None:
        """Drop records below `new_base` (garbage collection below a durable checkpoint)."""
        require(self.base <= new_base <= self.durable_end, f"file {self.name}: bad front truncation")
        del self.records[: new_base - self.base]
        self.base = new_base

    def rewrite(self, records: list[T]) -> None:
        """Atomically replace the whole file (write a new file, fsync it, rename): durable at once."""
        self.records = list(records)
        self.base = 0
        self.durable_end = len(self.records)

    def crash(self, rng: random.Random) -> int:
        """Lose a random suffix of the unsynced tail; returns how many records were lost."""
        unsynced = self.end - self.durable_end
        if unsynced == 0:
            return 0
        survivors = rng.randint(0, unsynced)
        lost = unsynced - survivors
        if lost:
            del self.records[len(self.records) - lost :]
        self.durable_end = self.end
        return lost


class Disk:
    """The files of one server and the fsyncs in flight on them."""

    def __init__(self, name: str, scheduler: Scheduler, min_fsync_ms: int = 1, max_fsync_ms: int = 6) -> None:
        require(0 <= min_fsync_ms <= max_fsync_ms, "bad fsync latency range")
        self.name = name
        self.scheduler = scheduler
        self.min_fsync_ms = min_fsync_ms
        self.max_fsync_ms = max_fsync_ms
        self.files: dict[str, DurableLog[Any]] = {}
        # Bumped by a crash: fsyncs issued before it never complete.
        self.generation = 0
        self.lies_about_fsync = False
        self.fsyncs = 0
        self.records_lost = 0

    def file(self, name: str, record_type: type[T]) -> DurableLog[T]:
        """The file `name`, created empty on first use; every record in it is a `record_type`."""
        log = self.files.get(name)
        if log is None:
            log = DurableLog[record_type](f"{self.name}/{name}")  # type: ignore[valid-type]
            self.files[name] = log
        return cast(DurableLog[T], log)

    def has_file(self, name: str) -> bool:
        return name in self.files

    def remove(self, name: str) -> None:
        self.files.pop(name, None)

    def fsync(self, name: str, on_done: Callable[[int], None]) -> None:
        """Make everything written to file `name` so far durable; `on_done(end)` runs when it is,
        with the file position the fsync covered (what the runtime may now believe durable)."""
        log = self.files.get(name)
        require(log is not None, f"fsync of a file that does not exist: {self.name}/{name}")
        assert log is not None
        target = log.end
        generation = self.generation
        self.fsyncs += 1

        def complete() -> None:
            if generation != self.generation:
                return  # the server crashed before the fsync finished: no completion
            if not self.lies_about_fsync:
                self.files.get(name, log).mark_durable(target)
            on_done(target)

        delay_ms = self.scheduler.rng.randint(self.min_fsync_ms, self.max_fsync_ms)
        self.scheduler.after(delay_ms, f"fsync {self.name}/{name}", complete)

    def crash(self) -> None:
        self.generation += 1
        for log in self.files.values():
            self.records_lost += log.crash(self.scheduler.rng)
