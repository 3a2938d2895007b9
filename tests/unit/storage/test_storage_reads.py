"""Reads: multi_get by sort keys and by range, sort_key_count, batch_get, and their limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from pegasus_kv.core.errors import InvalidArgumentError, KeyTooLargeError
from pegasus_kv.core.messages import (
    BatchGetRequest,
    BatchGetResponse,
    FilterType,
    MultiGetRequest,
    MultiSetRequest,
    SetRequest,
    SortKeyCountRequest,
    SortKeyCountResponse,
    TtlRequest,
    TtlResponse,
)
from pegasus_kv.core.schema import MAX_HASH_KEY_BYTES
from pegasus_kv.storage import PartitionStore, StoreOptions

from .storage_fixtures import FakeClock, Writer, multi_get, read

SORT_KEYS = [b"a", b"b", b"ba", b"bb", b"c", b"cab", b"d"]


def value_of(sort_key: bytes) -> bytes:
    return b"v-" + sort_key


@pytest.fixture
def hash_key_h(writer: Writer) -> None:
    """Hash key "h" holds SORT_KEYS; its neighbours "g" and "hh" must never leak into its reads."""
    writer.one(MultiSetRequest(b"h", [(sort_key, value_of(sort_key)) for sort_key in SORT_KEYS]))
    writer.one(MultiSetRequest(b"g", [(b"a", b"other"), (b"z", b"other")]))
    writer.one(MultiSetRequest(b"hh", [(b"", b"other"), (b"a", b"other")]))


def sort_keys_of(request: MultiGetRequest, store: PartitionStore) -> list[bytes]:
    reply = multi_get(store, request)
    for sort_key, value in reply.kvs:
        assert value == (b"" if request.no_value else value_of(sort_key))
    return [sort_key for sort_key, _ in reply.kvs]


# --- multi_get by range -----------------------------------------------------------------------


@pytest.mark.usefixtures("hash_key_h")
def test_the_default_range_is_the_whole_hash_key_in_order(store: PartitionStore) -> None:
    reply = multi_get(store, MultiGetRequest(b"h"))
    assert reply.kvs == [(sort_key, value_of(sort_key)) for sort_key in SORT_KEYS]
    assert reply.complete is True


@pytest.mark.usefixtures("hash_key_h")
@pytest.mark.parametrize(
    ("start_inclusive", "stop_inclusive", "expected"),
    [
        (True, False, [b"b", b"ba", b"bb"]),
        (False, False, [b"ba", b"bb"]),
        (True, True, [b"b", b"ba", b"bb", b"c"]),
        (False, True, [b"ba", b"bb", b"c"]),
    ],
)
@pytest.mark.parametrize("reverse", [False, True])
def test_inclusive_flags_bound_the_range(
    store: PartitionStore, start_inclusive: bool, stop_inclusive: bool, expected: list[bytes], reverse: bool
) -> None:
    request = MultiGetRequest(
        b"h",
        start_sort_key=b"b",
        stop_sort_key=b"c",
        start_inclusive=start_inclusive,
        stop_inclusive=stop_inclusive,
        reverse=reverse,
    )
    assert sort_keys_of(request, store) == (expected[::-1] if reverse else expected)


@pytest.mark.usefixtures("hash_key_h")
def test_empty_and_single_key_ranges(store: PartitionStore) -> None:
    def keys(start: bytes, stop: bytes, start_inclusive: bool, stop_inclusive: bool) -> list[bytes]:
        request = MultiGetRequest(
            b"h",
            start_sort_key=start,
            stop_sort_key=stop,
            start_inclusive=start_inclusive,
            stop_inclusive=stop_inclusive,
        )
        reply = multi_get(store, request)
        assert reply.complete is True
        return [sort_key for sort_key, _ in reply.kvs]

    assert keys(b"c", b"c", True, True) == [b"c"]
    assert keys(b"c", b"c", True, False) == []
    assert keys(b"c", b"c", False, True) == []
    assert keys(b"d", b"a", True, True) == []  # start after stop
    assert keys(b"bz", b"", True, False) == [b"c", b"cab", b"d"]  # empty stop: to the end
    assert keys(b"e", b"", True, False) == []


@pytest.mark.usefixtures("hash_key_h")
@pytest.mark.parametrize(
    ("filter_type", "pattern", "expected"),
    [
        (FilterType.MATCH_PREFIX, b"b", [b"b", b"ba", b"bb"]),
        (FilterType.MATCH_PREFIX, b"ca", [b"cab"]),
        (FilterType.MATCH_PREFIX, b"x", []),
        (FilterType.MATCH_POSTFIX, b"b", [b"b", b"bb", b"cab"]),
        (FilterType.MATCH_ANYWHERE, b"a", [b"a", b"ba", b"cab"]),
        (FilterType.MATCH_ANYWHERE, b"", SORT_KEYS),  # an empty pattern matches everything
        (FilterType.NO_FILTER, b"ignored", SORT_KEYS),
    ],
)
@pytest.mark.parametrize("reverse", [False, True])
def test_sort_key_filters(
    store: PartitionStore, filter_type: FilterType, pattern: bytes, expected: list[bytes], reverse: bool
) -> None:
    request = MultiGetRequest(
        b"h", sort_key_filter_type=filter_type, sort_key_filter_pattern=pattern, reverse=reverse
    )
    assert sort_keys_of(request, store) == (expected[::-1] if reverse else expected)


@pytest.mark.usefixtures("hash_key_h")
def test_a_prefix_filter_combines_with_the_range_bounds(store: PartitionStore) -> None:
    def keys(start: bytes, stop: bytes, stop_inclusive: bool) -> list[bytes]:
        request = MultiGetRequest(
            b"h",
            start_sort_key=start,
            stop_sort_key=stop,
            stop_inclusive=stop_inclusive,
            sort_key_filter_type=FilterType.MATCH_PREFIX,
            sort_key_filter_pattern=b"b",
        )
        return sort_keys_of(request, store)

    assert keys(b"ba", b"", False) == [b"ba", b"bb"]
    assert keys(b"a", b"bb", False) == [b"b", b"ba"]
    assert keys(b"a", b"bb", True) == [b"b", b"ba", b"bb"]
    assert keys(b"c", b"", False) == []


def test_a_prefix_of_high_bytes_finds_its_keys(store: PartitionStore, writer: Writer) -> None:
    high = [b"\xfe", b"\xff", b"\xff\x00", b"\xff\xff", b"\xff\xff\x01"]
    writer.one(MultiSetRequest(b"h", [(sort_key, value_of(sort_key)) for sort_key in high]))
    writer.one(SetRequest(b"i", b"", b"neighbour"))
    request = MultiGetRequest(
        b"h", sort_key_filter_type=FilterType.MATCH_PREFIX, sort_key_filter_pattern=b"\xff\xff"
    )
    assert sort_keys_of(request, store) == [b"\xff\xff", b"\xff\xff\x01"]
    assert sort_keys_of(MultiGetRequest(b"h", reverse=True), store) == high[::-1]


@pytest.mark.usefixtures("hash_key_h")
def test_no_value_returns_the_sort_keys_only(store: PartitionStore) -> None:
    assert sort_keys_of(MultiGetRequest(b"h", no_value=True), store) == SORT_KEYS
    assert sort_keys_of(MultiGetRequest(b"h", sort_keys=[b"c", b"a"], no_value=True), store) == [b"a", b"c"]


# --- limits and the complete flag -------------------------------------------------------------


@pytest.mark.usefixtures("hash_key_h")
def test_max_kv_count_cuts_the_result_short_and_marks_it_incomplete(store: PartitionStore) -> None:
    forward = multi_get(store, MultiGetRequest(b"h", max_kv_count=2))
    assert [sort_key for sort_key, _ in forward.kvs] == [b"a", b"b"]
    assert forward.complete is False

    backward = multi_get(store, MultiGetRequest(b"h", max_kv_count=2, reverse=True))
    assert [sort_key for sort_key, _ in backward.kvs] == [b"d", b"cab"]
    assert backward.complete is False

    # A limit met exactly by the last record of the range cut nothing off.
    exact = multi_get(store, MultiGetRequest(b"h", max_kv_count=len(SORT_KEYS)))
    assert len(exact.kvs) == len(SORT_KEYS)
    assert exact.complete is True

    unlimited = multi_get(store, MultiGetRequest(b"h", max_kv_count=0, max_kv_size=-1))
    assert len(unlimited.kvs) == len(SORT_KEYS)
    assert unlimited.complete is True


@pytest.mark.usefixtures("hash_key_h")
def test_max_kv_size_stops_after_the_record_that_reaches_it(store: PartitionStore) -> None:
    # Each record counts len(sort_key) + len(value): a=4, b=4, ba=6 ... The record that reaches
    # the limit is still returned (Pegasus checks the size before taking the next record).
    reply = multi_get(store, MultiGetRequest(b"h", max_kv_size=5))
    assert [sort_key for sort_key, _ in reply.kvs] == [b"a", b"b"]
    assert reply.complete is False

    no_value = multi_get(store, MultiGetRequest(b"h", max_kv_size=3, no_value=True))
    assert [sort_key for sort_key, _ in no_value.kvs] == [b"a", b"b", b"ba"]  # 1 + 1 + 2 bytes
    assert no_value.complete is False


def test_expired_records_are_skipped_and_do_not_count_against_limits(
    store: PartitionStore, writer: Writer, clock: FakeClock
) -> None:
    writer.one(MultiSetRequest(b"h", [(b"a", value_of(b"a")), (b"c", value_of(b"c"))]))
    writer.one(MultiSetRequest(b"h", [(b"b", value_of(b"b")), (b"bb", value_of(b"bb"))], ttl_s=10))
    clock.advance(10)

    reply = multi_get(store, MultiGetRequest(b"h", max_kv_count=2))
    assert [sort_key for sort_key, _ in reply.kvs] == [b"a", b"c"]
    assert reply.complete is True
    listed = multi_get(store, MultiGetRequest(b"h", sort_keys=[b"a", b"b", b"bb", b"c"], max_kv_count=2))
    assert [sort_key for sort_key, _ in listed.kvs] == [b"a", b"c"]
    assert listed.complete is True


# --- multi_get by a list of sort keys ---------------------------------------------------------


@pytest.mark.usefixtures("hash_key_h")
def test_a_sort_key_list_returns_only_those_that_exist_in_order(store: PartitionStore) -> None:
    request = MultiGetRequest(
        b"h",
        sort_keys=[b"d", b"missing", b"a", b"d", b"ba"],
        sort_key_filter_type=FilterType.MATCH_PREFIX,  # filters apply to ranges only
        sort_key_filter_pattern=b"zzz",
        start_sort_key=b"x",  # and so do range bounds
    )
    reply = multi_get(store, request)
    assert reply.kvs == [(b"a", b"v-a"), (b"ba", b"v-ba"), (b"d", b"v-d")]
    assert reply.complete is True


@pytest.mark.usefixtures("hash_key_h")
def test_limits_cut_a_sort_key_list_short(store: PartitionStore) -> None:
    by_count = multi_get(store, MultiGetRequest(b"h", sort_keys=[b"a", b"b", b"c"], max_kv_count=2))
    assert [sort_key for sort_key, _ in by_count.kvs] == [b"a", b"b"]
    assert by_count.complete is False
    by_size = multi_get(store, MultiGetRequest(b"h", sort_keys=[b"a", b"b", b"c"], max_kv_size=4))
    assert [sort_key for sort_key, _ in by_size.kvs] == [b"a"]
    assert by_size.complete is False
    # Nothing left out when the only record over the limit does not exist.
    missing_tail = multi_get(store, MultiGetRequest(b"h", sort_keys=[b"a", b"b", b"zz"], max_kv_count=2))
    assert missing_tail.complete is True


# --- the server's own caps --------------------------------------------------------------------


def open_store(tmp_path: Path, clock: FakeClock | TickingClock, **options: int | float) -> PartitionStore:
    return PartitionStore.open(str(tmp_path / "capped"), options=StoreOptions(**options), clock=clock)  # type: ignore[arg-type]


def test_the_iteration_cap_counts_expired_records_too(tmp_path: Path, clock: FakeClock) -> None:
    store = open_store(tmp_path, clock, multi_get_max_iterations=3)
    writer = Writer(store, clock)
    writer.one(MultiSetRequest(b"h", [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], ttl_s=5))
    writer.one(MultiSetRequest(b"h", [(b"d", b"4"), (b"e", b"5")]))
    clock.advance(5)

    reply = multi_get(store, MultiGetRequest(b"h", max_kv_count=100))
    assert reply.kvs == []
    assert reply.complete is False  # the client continues after its last key (or here, from the start)
    resumed = multi_get(store, MultiGetRequest(b"h", start_sort_key=b"c", start_inclusive=False))
    assert resumed.kvs == [(b"d", b"4"), (b"e", b"5")]
    assert resumed.complete is True
    store.close()


def test_the_server_caps_the_record_count_whatever_the_request_asks(tmp_path: Path, clock: FakeClock) -> None:
    store = open_store(tmp_path, clock, multi_get_max_iterations=2)
    Writer(store, clock).one(MultiSetRequest(b"h", [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]))
    for max_kv_count in (0, 100):
        reply = multi_get(store, MultiGetRequest(b"h", max_kv_count=max_kv_count))
        assert [sort_key for sort_key, _ in reply.kvs] == [b"a", b"b"]
        assert reply.complete is False
    store.close()


class TickingClock(FakeClock):
    """A clock that moves one second every time somebody looks at it."""

    def __call__(self) -> float:
        self.now_s += 1.0
        return self.now_s


def test_the_time_cap_stops_a_slow_pass(tmp_path: Path) -> None:
    clock = TickingClock()
    store = open_store(tmp_path, clock, iteration_time_limit_s=4.0)
    Writer(store, clock).one(MultiSetRequest(b"h", [(bytes([key]), b"v") for key in range(20)]))

    reply = multi_get(store, MultiGetRequest(b"h"))
    assert 0 < len(reply.kvs) < 20
    assert reply.complete is False
    counted = read(store, SortKeyCountRequest(b"h"), SortKeyCountResponse)
    assert counted.count == -1  # Pegasus: -1 when counting took too long
    store.close()


# --- sort_key_count, batch_get, exist ---------------------------------------------------------


@pytest.mark.usefixtures("hash_key_h")
def test_sort_key_count_counts_the_live_records_of_one_hash_key(
    store: PartitionStore, writer: Writer, clock: FakeClock
) -> None:
    assert read(store, SortKeyCountRequest(b"h"), SortKeyCountResponse).count == len(SORT_KEYS)
    assert read(store, SortKeyCountRequest(b"nobody"), SortKeyCountResponse).count == 0
    writer.one(SetRequest(b"h", b"temporary", b"v", ttl_s=1))
    assert read(store, SortKeyCountRequest(b"h"), SortKeyCountResponse).count == len(SORT_KEYS) + 1
    clock.advance(1)
    assert read(store, SortKeyCountRequest(b"h"), SortKeyCountResponse).count == len(SORT_KEYS)


def test_sort_key_count_gives_up_past_its_iteration_cap(tmp_path: Path, clock: FakeClock) -> None:
    store = open_store(tmp_path, clock, sort_key_count_max_iterations=2)
    Writer(store, clock).one(MultiSetRequest(b"h", [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]))
    assert read(store, SortKeyCountRequest(b"h"), SortKeyCountResponse).count == -1
    store.close()


def test_batch_get_answers_each_key_in_request_order(
    store: PartitionStore, writer: Writer, clock: FakeClock
) -> None:
    writer.one(SetRequest(b"user1", b"name", b"ann"))
    writer.one(SetRequest(b"user2", b"name", b"bob"))
    writer.one(SetRequest(b"user3", b"name", b"cy", ttl_s=1))
    clock.advance(1)
    request = BatchGetRequest(
        [(b"user2", b"name"), (b"user1", b"name"), (b"user3", b"name"), (b"user4", b"x")]
    )
    assert read(store, request, BatchGetResponse).values == [b"bob", b"ann", None, None]


def test_exist_is_a_ttl_that_is_not_none(store: PartitionStore, writer: Writer) -> None:
    writer.one(SetRequest(b"h", b"there", b""))
    assert read(store, TtlRequest(b"h", b"there"), TtlResponse).ttl_s is not None
    assert read(store, TtlRequest(b"h", b"absent"), TtlResponse).ttl_s is None


# --- malformed reads --------------------------------------------------------------------------


def test_malformed_reads_raise_typed_errors(store: PartitionStore) -> None:
    with pytest.raises(KeyTooLargeError):
        store.read(MultiGetRequest(b"k" * (MAX_HASH_KEY_BYTES + 1)))
    with pytest.raises(InvalidArgumentError):
        store.read(MultiGetRequest(b"h", sort_key_filter_type=7))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        store.read(BatchGetRequest([]))
    with pytest.raises(InvalidArgumentError):
        store.read(SetRequest(b"h", b"s", b"v"))  # a write is not a read
