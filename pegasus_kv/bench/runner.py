"""Running a bench phase: P spawned worker processes, each with its share of N client tasks on
uvloop; the parent merges their histograms and prints a progress line every second.

Mapping of YCSB onto the data model: a record is a hash key ("user" + FNV-64 of the key number),
its fields f0..f(n-1) are sort keys. READ = multi_get of every field (get of one random
field with read_one_field); UPDATE = set of one random
field; INSERT = multi_set of all fields of a new key; READ-MODIFY-WRITE = that read, then that
update. SCAN: YCSB scans records in key order, but hash keys are spread over partitions and have
no cluster-wide order, so a scan of length L is a sort-key range read (multi_get from the first
field, at most L values) of the chosen record — the server's range-read path, bounded by L.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass
from multiprocessing.sharedctypes import SynchronizedArray
from time import perf_counter, perf_counter_ns
from typing import Any

from pegasus_kv.bench.generators import record_key
from pegasus_kv.bench.histogram import LatencyHistogram
from pegasus_kv.bench.workloads import WORKLOADS, KeyChooser, Operation, Workload

PROGRESS_INTERVAL_S = 1.0
PUBLISH_INTERVAL_S = 0.25
WORKER_START_TIMEOUT_S = 60.0
OPERATION_TIMEOUT_S = 10.0
MAX_FIELD_COUNT = 1000
MAX_FIELD_LENGTH = 1 << 20
# The operations, looked up once: reading an enum member off its class costs ~80 ns (measured,
# Python 3.11), against ~10 ns for a module global, and the loop tests two or three per operation.
_OP_READ = Operation.READ
_OP_UPDATE = Operation.UPDATE
_OP_INSERT = Operation.INSERT
_OP_SCAN = Operation.SCAN
# Histogram names, looked up once (an enum's .value is a property call).
_READ = Operation.READ.value
_UPDATE = Operation.UPDATE.value
_INSERT = Operation.INSERT.value
_SCAN = Operation.SCAN.value
_READ_MODIFY_WRITE = Operation.READ_MODIFY_WRITE.value


class BenchError(Exception):
    """The benchmark itself failed (a worker died), as opposed to an operation it measured."""


@dataclass(frozen=True)
class BenchConfig:
    meta: str = "127.0.0.1:34601"
    table: str = "temp"
    workload: str = "a"
    record_count: int = 1000
    operation_count: int | None = 1000  # None: run for duration_s
    duration_s: float | None = None
    field_count: int = 1
    field_length: int = 100
    threads: int = 8
    processes: int = 1
    warmup_s: float = 0.0
    read_one_field: bool = False  # READ = get of one random field instead of multi_get of all
    seed: int | None = None

    def validate(self) -> None:
        if self.workload not in WORKLOADS:
            raise ValueError(f"unknown workload {self.workload!r}; one of {', '.join(WORKLOADS)}")
        if self.record_count < 1:
            raise ValueError("--record-count must be >= 1")
        if (self.operation_count is None) == (self.duration_s is None):
            raise ValueError("give exactly one of --operation-count and --duration-s")
        if self.operation_count is not None and self.operation_count < 0:
            raise ValueError("--operation-count must be >= 0")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError("--duration-s must be > 0")
        if not 1 <= self.field_count <= MAX_FIELD_COUNT:
            raise ValueError(f"--field-count must be in 1..{MAX_FIELD_COUNT}")
        if not 1 <= self.field_length <= MAX_FIELD_LENGTH:
            raise ValueError(f"--field-length must be in 1..{MAX_FIELD_LENGTH}")
        if self.processes < 1 or self.threads < self.processes:
            raise ValueError("need --processes >= 1 and --threads >= --processes")
        if self.warmup_s < 0:
            raise ValueError("--warmup-s must be >= 0")


@dataclass
class PhaseResult:
    duration_s: float
    histograms: dict[str, LatencyHistogram]
    errors: dict[str, int]


def share(total: int, parts: int, index: int) -> int:
    """Part `index` of `total` split as evenly as possible into `parts`."""
    return total // parts + (1 if index < total % parts else 0)


class _Worker:
    """One process's part of a phase: its tasks, its histograms, its errors."""

    def __init__(self, config: BenchConfig, worker_index: int, rng: random.Random) -> None:
        self.config = config
        self.workload: Workload = WORKLOADS[config.workload]
        self.worker_index = worker_index
        self.rng = rng
        self.fields = [b"f%d" % i for i in range(config.field_count)]
        self.histograms: dict[str, LatencyHistogram] = {}
        self.errors: Counter[str] = Counter()
        self.measured_ops = 0
        self.recording = False
        self._next_insert = 0  # this worker's j-th insert gets key record_count + index + P * j
        expected_inserts = int((config.operation_count or 0) * self.workload.proportion(Operation.INSERT) * 2)
        self.keys = KeyChooser(self.workload, config.record_count, expected_inserts, rng)
        # A mix of one operation needs no draw per operation (C: all reads, write-only: all updates).
        self._only_operation = self.workload.mix[0][0] if len(self.workload.mix) == 1 else None
        self._next_key = self.keys.drawer
        self._getrandbits = rng.getrandbits
        self._value_bytes = config.field_length
        self._value_bits = 8 * config.field_length

    def value(self) -> bytes:
        # Random.randbytes(n) itself, without its Python-level frame (once per update).
        return self._getrandbits(self._value_bits).to_bytes(self._value_bytes, "little")

    def new_key_number(self) -> int:
        key_number = self.config.record_count + self.worker_index + self.config.processes * self._next_insert
        self._next_insert += 1
        return key_number

    async def timed(self, operation: str, call: Awaitable[Any]) -> bool:
        """Await one operation's call (made, not yet started) and record it; True if it succeeded."""
        start_ns = perf_counter_ns()
        try:
            await call
        except Exception as exc:  # counted by class: a benchmark reports failures, it does not stop
            self._failed(exc)
            return False
        self._succeeded(operation, start_ns)
        return True

    def _succeeded(self, operation: str, start_ns: int) -> None:
        if self.recording:
            latency_us = (perf_counter_ns() - start_ns) // 1000
            histogram = self.histograms.get(operation)
            if histogram is None:  # not setdefault: that would build a histogram per operation
                histogram = self.histograms[operation] = LatencyHistogram()
            histogram.record(latency_us)
            self.measured_ops += 1

    def _failed(self, exc: Exception) -> None:
        if self.recording:
            self.errors[type(exc).__name__] += 1

    async def insert(self, table: Any, key_number: int) -> None:
        kvs = {field: self.value() for field in self.fields}
        if await self.timed(
            _INSERT, table.multi_set(record_key(key_number), kvs, timeout=OPERATION_TIMEOUT_S)
        ):
            self.keys.inserted(key_number)

    async def operations(self, table: Any, *, end: float | None, budget: list[int] | None) -> None:
        """Run operations one after another: until perf_counter() reaches `end`, or while the
        shared budget (a one-item list of operations left to issue) lasts.

        One loop per task, the operation inlined: a coroutine per operation (one_operation awaited
        in a loop) cost a frame and two resumptions per operation.
        """
        fields = self.fields
        one_field = fields[0] if len(fields) == 1 else None
        rng = self.rng
        next_key = self._next_key
        mix = self.workload.mix
        # Read once, not per operation (attributes of self are dict lookups).
        only_operation = self._only_operation
        read_one_field = self.config.read_one_field
        getrandbits = self._getrandbits
        value_bits = self._value_bits
        value_bytes = self._value_bytes
        histograms = self.histograms
        while True:
            if budget is not None:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            elif end is not None and perf_counter() >= end:
                return
            operation = only_operation
            if operation is None:  # choose_operation(self.workload, rng), inlined
                draw = rng.random()
                for choice, share in mix:
                    if draw < share:
                        operation = choice
                        break
                    draw -= share
                else:
                    operation = mix[-1][0]  # float rounding at the very top of the range
            if operation is _OP_INSERT:
                await self.insert(table, self.new_key_number())
                continue
            hash_key = record_key(next_key())
            field = fields[rng.randrange(len(fields))] if one_field is None else one_field
            # The call is made here and timed below (making a coroutine runs none of it): what
            # timed() does, inlined, as this runs once per operation.
            call: Awaitable[Any]
            if operation is _OP_READ:
                name = _READ
                if read_one_field:
                    call = table.get(hash_key, field, timeout=OPERATION_TIMEOUT_S)
                else:
                    call = table.multi_get(hash_key, fields, timeout=OPERATION_TIMEOUT_S)
            elif operation is _OP_UPDATE:
                name = _UPDATE
                value = getrandbits(value_bits).to_bytes(value_bytes, "little")  # value()
                call = table.set(hash_key, field, value, timeout=OPERATION_TIMEOUT_S)
            elif operation is _OP_SCAN:
                name = _SCAN
                length = rng.randint(1, self.workload.max_scan_length)
                call = table.multi_get(hash_key, max_kv_count=length, timeout=OPERATION_TIMEOUT_S)
            else:
                name = _READ_MODIFY_WRITE
                call = _read_modify_write(table, hash_key, fields, field, self.value())
            start_ns = perf_counter_ns()
            try:
                await call
            except Exception as exc:  # counted by class: a benchmark reports failures, it does not stop
                self._failed(exc)
                continue
            if self.recording:  # _succeeded(name, start_ns), inlined
                latency_us = (perf_counter_ns() - start_ns) // 1000
                histogram = histograms.get(name)
                if histogram is None:
                    histogram = histograms[name] = LatencyHistogram()
                histogram.record(latency_us)
                self.measured_ops += 1


async def _read_modify_write(
    table: Any, hash_key: bytes, fields: list[bytes], field: bytes, value: bytes
) -> None:
    await table.multi_get(hash_key, fields, timeout=OPERATION_TIMEOUT_S)
    await table.set(hash_key, field, value, timeout=OPERATION_TIMEOUT_S)


async def _publish(progress: SynchronizedArray[int], worker_index: int, worker: _Worker) -> None:
    while True:
        progress[worker_index] = worker.measured_ops
        await asyncio.sleep(PUBLISH_INTERVAL_S)


async def _run_worker(
    config: BenchConfig, phase: str, worker_index: int, progress: SynchronizedArray[int]
) -> PhaseResult:
    from pegasus_kv import Client

    seed = None if config.seed is None else config.seed * 1000 + worker_index
    worker = _Worker(config, worker_index, random.Random(seed))
    tasks = share(config.threads, config.processes, worker_index)
    publisher = asyncio.create_task(_publish(progress, worker_index, worker))
    try:
        async with Client(config.meta) as client:
            table = await client.open_table(config.table)
            if phase == "load":
                worker.recording = True
                keys = iter(range(worker_index, config.record_count, config.processes))

                async def loader() -> None:
                    for key_number in keys:  # the tasks share one iterator: each key once
                        await worker.insert(table, key_number)

                start = time.perf_counter()
                await asyncio.gather(*(loader() for _ in range(tasks)))
                duration_s = time.perf_counter() - start
            else:
                duration_s = await _run_phase(config, worker, table, worker_index, tasks)
            progress[worker_index] = worker.measured_ops
    finally:
        publisher.cancel()
    return PhaseResult(duration_s, worker.histograms, dict(worker.errors))


async def _run_phase(
    config: BenchConfig, worker: _Worker, table: Any, worker_index: int, tasks: int
) -> float:
    if config.warmup_s > 0:  # operations of the warm-up are neither counted nor timed
        warmup_end = time.perf_counter() + config.warmup_s
        await asyncio.gather(*(worker.operations(table, end=warmup_end, budget=None) for _ in range(tasks)))
    worker.recording = True
    # Operations left to issue, shared by the tasks (None: run for duration_s).
    budget = (
        None
        if config.operation_count is None
        else [share(config.operation_count, config.processes, worker_index)]
    )
    start = time.perf_counter()
    end = None if config.duration_s is None else start + config.duration_s
    await asyncio.gather(*(worker.operations(table, end=end, budget=budget) for _ in range(tasks)))
    return time.perf_counter() - start


def worker_main(
    config: BenchConfig,
    phase: str,
    worker_index: int,
    progress: SynchronizedArray[int],
    results: multiprocessing.Queue[tuple[int, dict[str, object]]],
) -> None:
    """The entry point of one spawned worker process."""
    import uvloop

    result = uvloop.run(_run_worker(config, phase, worker_index, progress))
    results.put(
        (
            worker_index,
            {
                "duration_s": result.duration_s,
                "histograms": {name: h.to_sparse() for name, h in result.histograms.items()},
                "errors": result.errors,
            },
        )
    )


def run_phase(config: BenchConfig, phase: str, *, progress_to: Any = sys.stderr) -> PhaseResult:
    """Run the load or run phase over config.processes spawned workers; merge what they measured."""
    if phase not in ("load", "run"):
        raise ValueError(f"unknown phase {phase!r}")
    context = multiprocessing.get_context("spawn")
    progress: SynchronizedArray[int] = context.Array("q", config.processes, lock=False)
    results: multiprocessing.Queue[tuple[int, dict[str, object]]] = context.Queue()
    workers = [
        context.Process(target=worker_main, args=(config, phase, index, progress, results), daemon=True)
        for index in range(config.processes)
    ]
    for worker in workers:
        worker.start()
    merged: dict[str, LatencyHistogram] = {}
    errors: Counter[str] = Counter()
    duration_s = 0.0
    received: set[int] = set()
    started = time.monotonic()
    last_ops, last_time = 0, started
    try:
        while len(received) < config.processes:
            try:
                index, payload = results.get(timeout=PROGRESS_INTERVAL_S)
            except queue.Empty:
                dead = [w for i, w in enumerate(workers) if i not in received and not w.is_alive()]
                if dead:
                    raise BenchError(f"{len(dead)} bench worker(s) exited without a result") from None
                now = time.monotonic()
                ops = sum(progress[index] for index in range(config.processes))
                rate = (ops - last_ops) / (now - last_time) if now > last_time else 0.0
                print(
                    f"[{phase}] {now - started:6.1f} s  {ops} ops  {rate:,.0f} ops/s",
                    file=progress_to,
                    flush=True,
                )
                last_ops, last_time = ops, now
                continue
            received.add(index)
            duration_s = max(duration_s, float(payload["duration_s"]))  # type: ignore[arg-type]
            histograms = payload["histograms"]
            if not isinstance(histograms, dict):
                raise BenchError(f"worker {index} sent histograms of type {type(histograms).__name__}")
            for name, sparse in histograms.items():
                merged.setdefault(name, LatencyHistogram()).merge(LatencyHistogram.from_sparse(sparse))
            worker_errors = payload["errors"]
            if not isinstance(worker_errors, dict):
                raise BenchError(f"worker {index} sent errors of type {type(worker_errors).__name__}")
            errors.update(worker_errors)
    finally:
        for worker in workers:
            worker.join(timeout=5.0)
            if worker.is_alive():
                worker.kill()
                worker.join()
    return PhaseResult(duration_s, merged, dict(errors))
