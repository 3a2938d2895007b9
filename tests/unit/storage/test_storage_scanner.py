"""Scan contexts: batches over one hash key or a whole partition, under continuing writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pegasus_kv.core.errors import BusyError, ScannerExpiredError
from pegasus_kv.core.messages import (
    ClearScannerRequest,
    ClearScannerResponse,
    DeleteRequest,
    FilterType,
    GetScannerRequest,
    MultiSetRequest,
    ScanRequest,
    ScanResponse,
    SetRequest,
)
from pegasus_kv.core.schema import PEGASUS_EPOCH_UNIX_S, encode_key
from pegasus_kv.storage import PartitionStore, StoreOptions

from .storage_fixtures import FakeClock, Writer, read

Row = tuple[bytes, bytes, bytes, int]


def scan_all(store: PartitionStore, request: GetScannerRequest, max_batches: int = 1000) -> list[list[Row]]:
    """Every batch of a scan, following its context to the end."""
    reply = read(store, request, ScanResponse)
    batches = [reply.rows]
    while reply.context_id != -1:
        assert len(batches) < max_batches, "the scan does not end"
        reply = read(store, ScanRequest(reply.context_id), ScanResponse)
        batches.append(reply.rows)
    return batches


def rows_of(batches: list[list[Row]]) -> list[Row]:
    return [row for batch in batches for row in batch]


def sort_keys(count: int) -> list[bytes]:
    return [b"sk%03d" % index for index in range(count)]


def test_a_hash_key_scan_returns_batches_in_sort_key_order(store: PartitionStore, writer: Writer) -> None:
    writer.one(MultiSetRequest(b"h", [(sort_key, b"v" + sort_key) for sort_key in sort_keys(25)]))
    writer.one(SetRequest(b"g", b"sk000", b"neighbour"))

    batches = scan_all(store, GetScannerRequest(hash_key=b"h", batch_size=10))

    assert [len(batch) for batch in batches] == [10, 10, 5]
    assert rows_of(batches) == [(b"h", sort_key, b"v" + sort_key, 0) for sort_key in sort_keys(25)]
    assert store.open_scan_contexts == 0  # a finished scan leaves no context behind


def test_a_scan_that_fits_in_one_batch_opens_no_context(store: PartitionStore, writer: Writer) -> None:
    writer.one(MultiSetRequest(b"h", [(b"a", b"1"), (b"b", b"2")]))
    reply = read(store, GetScannerRequest(hash_key=b"h", batch_size=2), ScanResponse)
    assert reply.context_id == -1
    assert reply.last_key == encode_key(b"h", b"b")
    empty = read(store, GetScannerRequest(hash_key=b"nobody"), ScanResponse)
    assert (empty.rows, empty.context_id, empty.last_key) == ([], -1, None)


def test_scan_bounds_filters_no_value_and_expire_ts(
    store: PartitionStore, writer: Writer, clock: FakeClock
) -> None:
    writer.one(MultiSetRequest(b"h", [(b"a", b"1"), (b"b1", b"2"), (b"b2", b"3"), (b"c", b"4")], ttl_s=100))
    request = GetScannerRequest(
        hash_key=b"h",
        start_sort_key=b"a",
        start_inclusive=False,
        stop_sort_key=b"c",
        stop_inclusive=True,
        sort_key_filter_type=FilterType.MATCH_POSTFIX,
        sort_key_filter_pattern=b"2",
        no_value=True,
        return_expire_ts=True,
        batch_size=1,
    )
    expire_ts = int(clock.now_s) - PEGASUS_EPOCH_UNIX_S + 100
    assert rows_of(scan_all(store, request)) == [(b"h", b"b2", b"", expire_ts)]

    inclusive = GetScannerRequest(
        hash_key=b"h", start_sort_key=b"b1", stop_sort_key=b"c", stop_inclusive=True
    )
    assert [row[1] for row in rows_of(scan_all(store, inclusive))] == [b"b1", b"b2", b"c"]


def test_a_full_scan_covers_every_hash_key_and_filters_them(store: PartitionStore, writer: Writer) -> None:
    for hash_key in (b"user1", b"user22", b"us", b"admin", b"superuser"):
        writer.one(MultiSetRequest(hash_key, [(b"name", b"n-" + hash_key), (b"mail", b"m-" + hash_key)]))

    everything = rows_of(scan_all(store, GetScannerRequest(full_scan=True, batch_size=3)))
    assert len(everything) == 10  # and never the store's own apply-state record
    assert len(set(everything)) == 10

    def hash_keys(filter_type: FilterType, pattern: bytes, sort_key_pattern: bytes = b"") -> set[bytes]:
        request = GetScannerRequest(
            full_scan=True,
            hash_key_filter_type=filter_type,
            hash_key_filter_pattern=pattern,
            sort_key_filter_type=FilterType.MATCH_PREFIX if sort_key_pattern else FilterType.NO_FILTER,
            sort_key_filter_pattern=sort_key_pattern,
            batch_size=2,
        )
        return {row[0] for row in rows_of(scan_all(store, request))}

    assert hash_keys(FilterType.MATCH_PREFIX, b"user") == {b"user1", b"user22"}
    assert hash_keys(FilterType.MATCH_POSTFIX, b"user") == {b"superuser"}
    assert hash_keys(FilterType.MATCH_ANYWHERE, b"user") == {b"user1", b"user22", b"superuser"}
    assert hash_keys(FilterType.MATCH_PREFIX, b"nobody") == set()
    sort_key_filtered = GetScannerRequest(
        full_scan=True, sort_key_filter_type=FilterType.MATCH_PREFIX, sort_key_filter_pattern=b"ma"
    )
    assert {row[1] for row in rows_of(scan_all(store, sort_key_filtered))} == {b"mail"}


def test_a_context_stays_valid_while_writes_continue(
    store: PartitionStore, writer: Writer, clock: FakeClock
) -> None:
    writer.one(MultiSetRequest(b"h", [(sort_key, b"old") for sort_key in sort_keys(10)]))
    writer.one(SetRequest(b"h", b"sk008", b"short-lived", ttl_s=5))

    first = read(store, GetScannerRequest(hash_key=b"h", batch_size=4), ScanResponse)
    assert [row[1] for row in first.rows] == sort_keys(4)

    # Behind the cursor, ahead of it, and a record that expires before the scan reaches it.
    writer.apply(
        SetRequest(b"h", b"sk001", b"rewritten behind"),
        DeleteRequest(b"h", b"sk005"),
        SetRequest(b"h", b"sk006", b"new"),
        SetRequest(b"h", b"sk0065", b"inserted ahead"),
    )
    clock.advance(5)

    rest: list[Row] = []
    reply = first
    while reply.context_id != -1:
        reply = read(store, ScanRequest(reply.context_id), ScanResponse)
        rest.extend(reply.rows)
    assert [(row[1], row[2]) for row in rest] == [
        (b"sk004", b"old"),
        (b"sk006", b"new"),
        (b"sk0065", b"inserted ahead"),
        (b"sk007", b"old"),
        (b"sk009", b"old"),
    ]


def test_start_after_resumes_a_scan_on_another_store_after_failover(tmp_path: Path, clock: FakeClock) -> None:
    path = str(tmp_path / "replica")
    primary = PartitionStore.open(path, clock=clock)
    Writer(primary, clock).one(MultiSetRequest(b"h", [(sort_key, b"v") for sort_key in sort_keys(9)]))
    first = read(primary, GetScannerRequest(hash_key=b"h", batch_size=4), ScanResponse)
    assert first.context_id != -1
    assert first.last_key is not None
    primary.close()

    # The new primary knows nothing of the old context ...
    promoted = PartitionStore.open(path, clock=clock)
    with pytest.raises(ScannerExpiredError):
        promoted.read(ScanRequest(first.context_id))
    # ... so the client reopens the scan just after the last key it was given.
    resumed = rows_of(
        scan_all(promoted, GetScannerRequest(hash_key=b"h", batch_size=4, start_after=first.last_key))
    )
    assert [row[1] for row in first.rows + resumed] == sort_keys(9)
    promoted.close()


def test_clearing_a_scanner_drops_its_context(store: PartitionStore, writer: Writer) -> None:
    writer.one(MultiSetRequest(b"h", [(sort_key, b"v") for sort_key in sort_keys(5)]))
    reply = read(store, GetScannerRequest(hash_key=b"h", batch_size=2), ScanResponse)
    assert store.open_scan_contexts == 1
    assert store.read(ClearScannerRequest(reply.context_id)) == ClearScannerResponse()
    assert store.open_scan_contexts == 0
    with pytest.raises(ScannerExpiredError):
        store.read(ScanRequest(reply.context_id))
    assert store.read(ClearScannerRequest(reply.context_id)) == ClearScannerResponse()  # idempotent


def open_store(tmp_path: Path, clock: FakeClock, **options: int | float) -> PartitionStore:
    return PartitionStore.open(str(tmp_path / "limited"), options=StoreOptions(**options), clock=clock)  # type: ignore[arg-type]


def test_open_contexts_are_bounded_and_idle_ones_expire(tmp_path: Path, clock: FakeClock) -> None:
    store = open_store(tmp_path, clock, max_scan_contexts=2, scan_context_idle_s=60.0)
    Writer(store, clock).one(MultiSetRequest(b"h", [(sort_key, b"v") for sort_key in sort_keys(5)]))
    scan = GetScannerRequest(hash_key=b"h", batch_size=1)

    first = read(store, scan, ScanResponse)
    clock.advance(30)
    second = read(store, scan, ScanResponse)
    with pytest.raises(BusyError):
        store.read(scan)

    clock.advance(31)  # the first context has now been idle for 61 s, the second for 31 s
    third = read(store, scan, ScanResponse)
    with pytest.raises(ScannerExpiredError):
        store.read(ScanRequest(first.context_id))
    assert read(store, ScanRequest(second.context_id), ScanResponse).rows[0][1] == b"sk001"
    assert third.context_id not in (first.context_id, second.context_id)
    store.close()


def test_the_server_caps_batch_rows_and_iterations(tmp_path: Path, clock: FakeClock) -> None:
    store = open_store(tmp_path, clock, scan_max_batch_rows=3, scan_max_iterations=4)
    writer = Writer(store, clock)
    writer.one(MultiSetRequest(b"h", [(sort_key, b"gone") for sort_key in sort_keys(6)], ttl_s=1))
    writer.one(MultiSetRequest(b"h", [(b"tail%d" % index, b"v") for index in range(5)]))
    clock.advance(1)

    batches = scan_all(store, GetScannerRequest(hash_key=b"h", batch_size=0))
    # Four expired records fill the first batch's iteration budget: an empty batch, not an end.
    assert batches[0] == []
    assert all(len(batch) <= 3 for batch in batches)
    assert [row[1] for row in rows_of(batches)] == [b"tail%d" % index for index in range(5)]
    store.close()


def test_closing_the_store_forgets_its_contexts(tmp_path: Path, clock: FakeClock) -> None:
    store = open_store(tmp_path, clock)
    Writer(store, clock).one(MultiSetRequest(b"h", [(sort_key, b"v") for sort_key in sort_keys(3)]))
    read(store, GetScannerRequest(hash_key=b"h", batch_size=1), ScanResponse)
    store.close()
    assert store.open_scan_contexts == 0
