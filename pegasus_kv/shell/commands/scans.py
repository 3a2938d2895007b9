"""Scans of the current table: hash_scan (one hash key), full_scan (every partition), count_data.

Long work reports progress through `out.progress` (rows so far, partitions done) and stops cleanly
when cancelled (Ctrl-C cancels the task running the command): every scanner is closed on the way
out, which asks its server to drop the scan context, and count_data's worker tasks are awaited by
their TaskGroup before asyncio.CancelledError leaves the command. Scans only read, so stopping one
half-way leaves nothing to undo in the cluster.

Value filters (-v/-z) are checked here, on the records the scan returns, as Pegasus's shell does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

from pegasus_kv.client import Scanner, Table
from pegasus_kv.client.arguments import MAX_SCAN_BATCH
from pegasus_kv.shell.commands.base import Command, Context
from pegasus_kv.shell.commands.common import (
    DEFAULT_MAX_COUNT,
    HASH_KEY_FILTER,
    MAX_SCAN_COUNT,
    NO_VALUE,
    SORT_KEY_FILTER,
    START_INCLUSIVE,
    STOP_INCLUSIVE,
    TIMEOUT_MS,
    VALUE_FILTER,
    ValueFilter,
    key_filter,
    max_count_option,
    record_json,
    record_line,
    timeout_s,
)
from pegasus_kv.shell.output import MAX_JSON_CHARS, OutputTooLargeError, format_table, json_document
from pegasus_kv.shell.parsing import CommandSpec, Kind, Option, Positional, UsageError

GROUP = "scans"

PROGRESS_INTERVAL_S = 0.5  # at most this often a progress line while rows stream in
FLUSH_LINES = 200  # human output is written in chunks of this many rows
SCAN_BATCH = 1000  # rows per scan request (the server caps it at its own maximum)
MAX_CONCURRENCY = 64  # count_data's scanners working at once
DEFAULT_CONCURRENCY = 4


class Progress:
    """Progress lines of a long scan: when a partition finishes, and while rows stream in (at most
    every PROGRESS_INTERVAL_S)."""

    def __init__(self, ctx: Context, what: str, partition_total: int) -> None:
        self._ctx = ctx
        self._what = what
        self._partition_total = partition_total
        self.rows = 0
        self.partitions_done = 0
        self._last_report = time.monotonic()

    def row(self) -> None:
        self.rows += 1
        if self.rows % 256 == 0 and time.monotonic() - self._last_report >= PROGRESS_INTERVAL_S:
            self._report()

    def partition_done(self) -> None:
        self.partitions_done += 1
        self._report()

    def _report(self) -> None:
        self._last_report = time.monotonic()
        self._ctx.out.progress(
            f"{self._what}: {self.rows} rows scanned, "
            f"{self.partitions_done}/{self._partition_total} partitions done"
        )


class RowSink:
    """Where matching rows go: streamed lines for humans, one bounded JSON document with --json."""

    def __init__(self, ctx: Context, max_count: int, *, no_value: bool) -> None:
        self._ctx = ctx
        self._max_count = max_count
        self._no_value = no_value
        self._lines: list[str] = []
        self._documents: list[dict[str, str | None]] = []
        self._json_chars = 0
        self.count = 0

    @property
    def full(self) -> bool:
        return self.count >= self._max_count

    def add(self, hash_key: bytes, sort_key: bytes, value: bytes) -> None:
        shown = None if self._no_value else value
        self.count += 1
        if self._ctx.json:
            document = record_json(hash_key, sort_key, shown)
            # Escaping at most quadruples a byte; this estimate stops before building a huge list.
            self._json_chars += 4 * (len(hash_key) + len(sort_key) + len(value)) + 48
            if self._json_chars > MAX_JSON_CHARS:
                raise OutputTooLargeError(
                    f"the JSON output would pass {MAX_JSON_CHARS} characters after {self.count} rows; "
                    f"ask for fewer rows (-n) or keys only (-i)"
                )
            self._documents.append(document)
            return
        self._lines.append(record_line(hash_key, sort_key, shown))
        if len(self._lines) >= FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            self._ctx.out.write("".join(self._lines))
            self._lines.clear()

    def finish(self, complete: bool) -> None:
        more = "" if complete else f" (stopped at -n {self._max_count}; more rows may match)"
        if self._ctx.json:
            self._ctx.out.write(
                json_document({"count": self.count, "complete": complete, "rows": self._documents})
            )
            return
        self.flush()
        self._ctx.out.write(f"\n{self.count} key-value pairs got{more}.\n")


async def interruption_point() -> None:
    """Let a pending cancellation (Ctrl-C) land before a new partition's scan is opened.

    A scan context is opened by a request whose reply carries its id. If the command is cancelled
    while that reply is in flight, the client never learns the id and cannot ask the server to drop
    the context (the server drops it once idle). Yielding to the loop first lets a cancellation
    requested meanwhile (the task running the command is already scheduled to receive it, and with
    count_data, abort its workers) stop the command before it sends the request.
    """
    await asyncio.sleep(0)


async def _close_all(scanners: list[Scanner]) -> None:
    for scanner in scanners:
        await scanner.aclose()


def _row_options(ctx: Context) -> tuple[ValueFilter, bool, int, RowSink]:
    """What hash_scan and full_scan share: the value filter, -i (no values), -n and the row sink."""
    args = ctx.args
    value_filter = ValueFilter.of(args)
    no_value = args.flag("no_value")
    if no_value and value_filter.active:
        raise UsageError("a value filter needs the values; drop -i")
    max_count = args.integer("max_count", DEFAULT_MAX_COUNT)
    return value_filter, no_value, max_count, RowSink(ctx, max_count, no_value=no_value)


async def run_hash_scan(ctx: Context) -> None:
    args = ctx.args
    value_filter, no_value, max_count, sink = _row_options(ctx)
    scanner = ctx.table().scan(
        args.data("hash_key"),
        args.data("start_sort_key"),
        args.data("stop_sort_key"),
        start_inclusive=args.boolean("start_inclusive", True),
        stop_inclusive=args.boolean("stop_inclusive", False),
        sort_key_filter=key_filter(args, "sort_key"),
        batch_size=min(SCAN_BATCH, max_count),
        no_value=no_value,
        timeout=timeout_s(args),
    )
    complete = True
    async with scanner:
        async for hash_key, sort_key, value in scanner:
            if not value_filter.matches(value):
                continue
            if sink.full:
                complete = False
                break
            sink.add(hash_key, sort_key, value)
    sink.finish(complete)


async def _partition_scanners(
    ctx: Context, table: Table, *, no_value: bool, batch_size: int
) -> list[Scanner]:
    """One scanner per partition (or only the one -p names), with the key filters of the line."""
    args = ctx.args
    partition = args.optional_integer("partition")
    if partition is not None and partition >= table.partition_count:
        raise UsageError(f"-p: the table has partitions 0..{table.partition_count - 1}, not {partition}")
    scanners = await table.unordered_scanners(
        table.partition_count,
        hash_key_filter=key_filter(args, "hash_key"),
        sort_key_filter=key_filter(args, "sort_key"),
        batch_size=batch_size,
        no_value=no_value,
        timeout=timeout_s(args),
    )
    if partition is None:
        return scanners
    chosen = [scanner for scanner in scanners if scanner.partitions == (partition,)]
    await _close_all([scanner for scanner in scanners if scanner.partitions != (partition,)])
    return chosen


async def run_full_scan(ctx: Context) -> None:
    value_filter, no_value, max_count, sink = _row_options(ctx)
    table = ctx.table()
    scanners = await _partition_scanners(ctx, table, no_value=no_value, batch_size=min(SCAN_BATCH, max_count))
    progress = Progress(ctx, "full_scan", len(scanners))
    complete = True
    try:
        for scanner in scanners:
            await interruption_point()
            async with scanner:
                async for hash_key, sort_key, value in scanner:
                    progress.row()
                    if not value_filter.matches(value):
                        continue
                    if sink.full:
                        complete = False
                        break
                    sink.add(hash_key, sort_key, value)
            if not complete:
                break
            progress.partition_done()
            sink.flush()
    finally:
        await _close_all(scanners)
    sink.finish(complete)


@dataclass
class PartitionCount:
    partition: int
    rows: int = 0
    hash_keys: int = 0
    key_bytes: int = 0
    value_bytes: int = 0


async def run_count_data(ctx: Context) -> None:
    args = ctx.args
    value_filter = ValueFilter.of(args)
    stat_size = args.flag("stat_size")
    diff_hash_key = args.flag("diff_hash_key")
    table = ctx.table()
    # Values travel only when something looks at them.
    no_value = not (stat_size or value_filter.active)
    batch_size = args.integer("max_batch_count", SCAN_BATCH)
    scanners = await _partition_scanners(ctx, table, no_value=no_value, batch_size=batch_size)
    counts = [PartitionCount(scanner.partitions[0]) for scanner in scanners]
    progress = Progress(ctx, "count_data", len(scanners))
    pending: Iterator[int] = iter(range(len(scanners)))  # shared by the workers: each takes the next

    async def count_partitions() -> None:
        for position in pending:
            await interruption_point()
            tally = counts[position]
            previous_hash_key: bytes | None = None
            async with scanners[position] as scanner:
                async for hash_key, sort_key, value in scanner:
                    progress.row()
                    if not value_filter.matches(value):
                        continue
                    tally.rows += 1
                    # Rows of one partition come in stored-key order, so the records of a hash
                    # key are contiguous: a new hash key is one that differs from the last.
                    if hash_key != previous_hash_key:
                        tally.hash_keys += 1
                        previous_hash_key = hash_key
                    tally.key_bytes += len(hash_key) + len(sort_key)
                    tally.value_bytes += len(value)
            progress.partition_done()

    concurrency = min(args.integer("concurrency", DEFAULT_CONCURRENCY), max(1, len(scanners)))
    try:
        async with asyncio.TaskGroup() as workers:
            for worker in range(concurrency):
                workers.create_task(count_partitions(), name=f"count_data worker {worker}")
    finally:
        await _close_all(scanners)
    _emit_counts(ctx, table.name, counts, diff_hash_key=diff_hash_key, stat_size=stat_size)


def _emit_counts(
    ctx: Context, table_name: str, counts: list[PartitionCount], *, diff_hash_key: bool, stat_size: bool
) -> None:
    headers = ["partition", "rows"]
    if diff_hash_key:
        headers.append("hash_keys")
    if stat_size:
        headers += ["key_bytes", "value_bytes"]

    def cells(name: str, rows: int, hash_keys: int, key_bytes: int, value_bytes: int) -> list[str]:
        row = [name, str(rows)]
        if diff_hash_key:
            row.append(str(hash_keys))
        if stat_size:
            row += [str(key_bytes), str(value_bytes)]
        return row

    total = PartitionCount(-1)
    for count in counts:
        total.rows += count.rows
        total.hash_keys += count.hash_keys
        total.key_bytes += count.key_bytes
        total.value_bytes += count.value_bytes
    rows = [cells(str(c.partition), c.rows, c.hash_keys, c.key_bytes, c.value_bytes) for c in counts]
    rows.append(cells("total", total.rows, total.hash_keys, total.key_bytes, total.value_bytes))

    def document_of(count: PartitionCount) -> dict[str, int]:
        document = {"rows": count.rows}
        if diff_hash_key:
            document["hash_keys"] = count.hash_keys
        if stat_size:
            document["key_bytes"] = count.key_bytes
            document["value_bytes"] = count.value_bytes
        return document

    document = {
        "table": table_name,
        "partitions": [{"partition": c.partition, **document_of(c)} for c in counts],
        "total": document_of(total),
    }
    ctx.emit(format_table(headers, rows) + f"\ncount done, {total.rows} rows in all.\n", document)


# --- specs -------------------------------------------------------------------------------------

PARTITION = Option(
    ("-p", "--partition"), "partition", Kind.INT, "only this partition", metavar="INDEX", minimum=0
)

COMMANDS = (
    Command(
        CommandSpec(
            "hash_scan",
            GROUP,
            "scan the records of one hash key in sort-key order",
            positionals=(
                Positional("HASH_KEY", "hash_key", Kind.BYTES, "the hash key"),
                Positional("START_SORT_KEY", "start_sort_key", Kind.BYTES, "start of the range ('' = first)"),
                Positional("STOP_SORT_KEY", "stop_sort_key", Kind.BYTES, "end of the range ('' = last)"),
            ),
            options=(
                START_INCLUSIVE,
                STOP_INCLUSIVE,
                *SORT_KEY_FILTER,
                *VALUE_FILTER,
                max_count_option(DEFAULT_MAX_COUNT, MAX_SCAN_COUNT),
                TIMEOUT_MS,
                NO_VALUE,
            ),
            prints_data=True,
        ),
        run_hash_scan,
    ),
    Command(
        CommandSpec(
            "full_scan",
            GROUP,
            "scan the whole table, partition by partition (hash keys in no particular order)",
            options=(
                *HASH_KEY_FILTER,
                *SORT_KEY_FILTER,
                *VALUE_FILTER,
                max_count_option(DEFAULT_MAX_COUNT, MAX_SCAN_COUNT),
                TIMEOUT_MS,
                NO_VALUE,
                PARTITION,
            ),
            prints_data=True,
            description="shows progress while it runs; Ctrl-C stops it cleanly",
        ),
        run_full_scan,
    ),
    Command(
        CommandSpec(
            "count_data",
            GROUP,
            "count the records of the table, per partition",
            options=(
                Option(
                    ("-c", "--concurrency"),
                    "concurrency",
                    Kind.INT,
                    f"partitions scanned at once (default {DEFAULT_CONCURRENCY})",
                    metavar="N",
                    minimum=1,
                    maximum=MAX_CONCURRENCY,
                ),
                PARTITION,
                Option(
                    ("-b", "--max_batch_count"),
                    "max_batch_count",
                    Kind.INT,
                    f"rows per scan request (default {SCAN_BATCH}; the server may cap it)",
                    metavar="N",
                    minimum=1,
                    maximum=MAX_SCAN_BATCH,
                ),
                TIMEOUT_MS,
                *HASH_KEY_FILTER,
                *SORT_KEY_FILTER,
                *VALUE_FILTER,
                Option(
                    ("-d", "--diff_hash_key"), "diff_hash_key", Kind.FLAG, "also count distinct hash keys"
                ),
                Option(
                    ("-a", "--stat_size"), "stat_size", Kind.FLAG, "also sum the bytes of keys and values"
                ),
            ),
            prints_data=True,
            description="shows progress while it runs; Ctrl-C stops it cleanly",
        ),
        run_count_data,
    ),
)
