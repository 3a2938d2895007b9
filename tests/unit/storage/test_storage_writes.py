"""Applying mutations: plain writes, incr, TTLs, decree order, errors that do not abort a batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import rocksdict

from pegasus_kv.core.errors import ErrorCode, InvalidStateError
from pegasus_kv.core.messages import (
    DeleteRequest,
    GetRequest,
    GetScannerRequest,
    IncrRequest,
    IncrResponse,
    MultiDeleteRequest,
    MultiDeleteResponse,
    MultiSetRequest,
    ScanResponse,
    SetRequest,
    WriteRequest,
    WriteResponse,
)
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.core.schema import (
    MAX_HASH_KEY_BYTES,
    MAX_WRITE_BYTES,
    PEGASUS_EPOCH_UNIX_S,
    decode_value,
    encode_key,
    make_timetag,
)
from pegasus_kv.core.validation import INT64_MAX, INT64_MIN
from pegasus_kv.storage import PartitionStore

from .storage_fixtures import FakeClock, Writer, error_code, expect, get, read, ttl

# --- plain writes -----------------------------------------------------------------------------


def test_set_get_overwrite_and_delete(store: PartitionStore, writer: Writer) -> None:
    assert get(store, b"user1", b"name") is None
    assert writer.one(SetRequest(b"user1", b"name", b"ann")) == WriteResponse(decree=1)
    assert get(store, b"user1", b"name") == b"ann"

    writer.one(SetRequest(b"user1", b"name", b"bob"))
    assert get(store, b"user1", b"name") == b"bob"

    assert writer.one(DeleteRequest(b"user1", b"name")) == WriteResponse(decree=3)
    assert get(store, b"user1", b"name") is None


def test_empty_keys_and_values_are_ordinary_records(store: PartitionStore, writer: Writer) -> None:
    writer.one(SetRequest(b"", b"", b""))
    writer.one(SetRequest(b"h", b"", b"v"))
    assert get(store, b"", b"") == b""
    assert get(store, b"h", b"") == b"v"
    assert ttl(store, b"", b"") == -1


def test_multi_set_writes_every_sort_key_with_one_ttl(
    store: PartitionStore, writer: Writer, clock: FakeClock
) -> None:
    writer.one(MultiSetRequest(b"user1", [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], ttl_s=60))
    assert [get(store, b"user1", sk) for sk in (b"a", b"b", b"c")] == [b"1", b"2", b"3"]
    assert {ttl(store, b"user1", sk) for sk in (b"a", b"b", b"c")} == {60}


def test_multi_delete_counts_the_records_that_were_alive(
    store: PartitionStore, writer: Writer, clock: FakeClock
) -> None:
    writer.one(MultiSetRequest(b"h", [(b"a", b"1"), (b"b", b"2")]))
    writer.one(SetRequest(b"h", b"short-lived", b"x", ttl_s=5))
    clock.advance(5)

    reply = writer.one(MultiDeleteRequest(b"h", [b"a", b"b", b"b", b"missing", b"short-lived"]))

    # a and b existed (b is named twice), "missing" never did, "short-lived" had expired.
    assert expect(reply, MultiDeleteResponse).count == 2
    assert get(store, b"h", b"a") is None
    assert get(store, b"h", b"b") is None


# --- decrees ----------------------------------------------------------------------------------


def test_mutations_apply_in_decree_order_only(store: PartitionStore, writer: Writer) -> None:
    writer.one(SetRequest(b"h", b"s", b"v"))
    assert store.last_applied_decree == 1

    skipping = Mutation(ballot=1, decree=3, timestamp_us=writer.mutation().timestamp_us, writes=[])
    with pytest.raises(InvalidStateError):
        store.apply(skipping)
    replaying = Mutation(ballot=1, decree=1, timestamp_us=writer.mutation().timestamp_us, writes=[])
    with pytest.raises(InvalidStateError):
        store.apply(replaying)
    assert store.last_applied_decree == 1


def test_an_empty_mutation_still_advances_the_decree(store: PartitionStore, writer: Writer) -> None:
    assert writer.apply() == []
    assert writer.apply() == []
    assert store.last_applied_decree == 2


def test_every_reply_carries_the_decree_of_its_mutation(store: PartitionStore, writer: Writer) -> None:
    writer.apply(SetRequest(b"h", b"a", b"1"))
    replies = writer.apply(
        SetRequest(b"h", b"b", b"2"), DeleteRequest(b"h", b"a"), SetRequest(b"h", b"c", b"3")
    )
    assert replies == [WriteResponse(decree=2)] * 3


# --- failures inside a mutation ---------------------------------------------------------------


def test_a_failed_write_does_not_abort_the_others(store: PartitionStore, writer: Writer) -> None:
    writer.one(SetRequest(b"h", b"word", b"hello"))

    replies = writer.apply(
        SetRequest(b"h", b"a", b"1"),
        IncrRequest(b"h", b"word", 1),  # "hello" is not an integer
        SetRequest(b"h", b"b", b"2"),
    )

    assert replies[0] == WriteResponse(decree=2)
    assert error_code(replies[1]) == ErrorCode.INVALID_ARGUMENT
    assert replies[2] == WriteResponse(decree=2)
    assert (get(store, b"h", b"a"), get(store, b"h", b"word"), get(store, b"h", b"b")) == (
        b"1",
        b"hello",
        b"2",
    )
    assert store.last_applied_decree == 2


def test_oversized_and_malformed_writes_are_refused_with_typed_errors(
    store: PartitionStore, writer: Writer
) -> None:
    huge_hash_key = b"k" * (MAX_HASH_KEY_BYTES + 1)
    replies = writer.apply(
        SetRequest(huge_hash_key, b"s", b"v"),
        SetRequest(b"h", b"s", b"v" * MAX_WRITE_BYTES),
        MultiSetRequest(b"h", [(b"a", b"v" * (MAX_WRITE_BYTES // 2)), (b"b", b"v" * (MAX_WRITE_BYTES // 2))]),
        SetRequest(b"h", b"s", b"v", ttl_s=-1),
        MultiSetRequest(b"h", []),
        MultiDeleteRequest(b"h", []),
        IncrRequest(b"h", b"n", INT64_MAX + 1),
        SetRequest(b"h", b"ok", b"v"),
    )
    assert [error_code(reply) for reply in replies[:7]] == [
        ErrorCode.KEY_TOO_LARGE,
        ErrorCode.VALUE_TOO_LARGE,
        ErrorCode.VALUE_TOO_LARGE,
        ErrorCode.INVALID_ARGUMENT,
        ErrorCode.INVALID_ARGUMENT,
        ErrorCode.INVALID_ARGUMENT,
        ErrorCode.INVALID_ARGUMENT,
    ]
    assert replies[7] == WriteResponse(decree=1)
    assert get(store, b"h", b"s") is None
    assert get(store, b"h", b"a") is None


def test_a_read_smuggled_into_a_mutation_is_answered_with_an_error(
    store: PartitionStore, writer: Writer
) -> None:
    replies = writer.apply(GetRequest(b"h", b"s"), SetRequest(b"h", b"s", b"v"))  # type: ignore[arg-type]
    assert error_code(replies[0]) == ErrorCode.INVALID_ARGUMENT
    assert replies[1] == WriteResponse(decree=1)


def test_a_hash_key_just_under_the_limit_is_accepted(store: PartitionStore, writer: Writer) -> None:
    longest = b"k" * MAX_HASH_KEY_BYTES
    assert writer.one(SetRequest(longest, b"s", b"v")) == WriteResponse(decree=1)
    assert get(store, longest, b"s") == b"v"


def test_a_mutation_stamped_before_2016_fails_every_write_but_takes_its_decree(
    store: PartitionStore, writer: Writer
) -> None:
    replies = writer.apply(SetRequest(b"h", b"s", b"v"), IncrRequest(b"h", b"n", 1), at_s=1_000_000_000.0)
    assert [error_code(reply) for reply in replies] == [ErrorCode.INVALID_ARGUMENT] * 2
    assert store.last_applied_decree == 1
    assert get(store, b"h", b"s") is None


# --- TTL, judged by the injected clock --------------------------------------------------------


def test_ttl_counts_down_and_the_record_vanishes_at_its_expiry_second(
    store: PartitionStore, writer: Writer, clock: FakeClock
) -> None:
    writer.one(SetRequest(b"h", b"session", b"token", ttl_s=10))
    writer.one(SetRequest(b"h", b"forever", b"v"))
    assert ttl(store, b"h", b"session") == 10
    assert ttl(store, b"h", b"forever") == -1

    clock.advance(9)
    assert ttl(store, b"h", b"session") == 1
    assert get(store, b"h", b"session") == b"token"

    clock.advance(1)  # Pegasus: expired once now >= expire_ts
    assert ttl(store, b"h", b"session") is None
    assert get(store, b"h", b"session") is None
    assert ttl(store, b"h", b"forever") == -1


def test_a_new_set_without_ttl_revives_an_expired_key_for_good(
    store: PartitionStore, writer: Writer, clock: FakeClock
) -> None:
    writer.one(SetRequest(b"h", b"s", b"old", ttl_s=1))
    clock.advance(1)
    assert get(store, b"h", b"s") is None
    writer.one(SetRequest(b"h", b"s", b"new"))
    clock.advance(10_000)
    assert get(store, b"h", b"s") == b"new"
    assert ttl(store, b"h", b"s") == -1


def test_ttl_is_computed_from_the_mutation_time_not_the_local_clock(
    store: PartitionStore, writer: Writer, clock: FakeClock
) -> None:
    # A replica applies a mutation the primary stamped 30 s ago: the TTL runs from the stamp.
    writer.one(SetRequest(b"h", b"s", b"v", ttl_s=100), at_s=clock.now_s - 30)
    assert ttl(store, b"h", b"s") == 70


# --- incr -------------------------------------------------------------------------------------


def incr(writer: Writer, sort_key: bytes, increment: int, ttl_s: int = 0) -> int:
    return expect(writer.one(IncrRequest(b"counter", sort_key, increment, ttl_s)), IncrResponse).new_value


def test_incr_of_a_missing_key_starts_from_zero(store: PartitionStore, writer: Writer) -> None:
    assert incr(writer, b"n", 5) == 5
    assert incr(writer, b"n", -7) == -2
    assert get(store, b"counter", b"n") == b"-2"  # stored as decimal ASCII
    assert ttl(store, b"counter", b"n") == -1


def test_incr_of_an_empty_value_starts_from_zero(store: PartitionStore, writer: Writer) -> None:
    writer.one(SetRequest(b"counter", b"n", b""))
    assert incr(writer, b"n", 3) == 3


def test_incr_of_an_expired_value_starts_from_zero_without_the_old_ttl(
    store: PartitionStore, writer: Writer, clock: FakeClock
) -> None:
    writer.one(SetRequest(b"counter", b"n", b"41", ttl_s=5))
    clock.advance(5)
    assert incr(writer, b"n", 1) == 1
    assert ttl(store, b"counter", b"n") == -1


def test_incr_ttl_zero_keeps_negative_clears_positive_sets(
    store: PartitionStore, writer: Writer, clock: FakeClock
) -> None:
    writer.one(SetRequest(b"counter", b"n", b"10", ttl_s=100))
    clock.advance(10)

    assert incr(writer, b"n", 1, ttl_s=0) == 11
    assert ttl(store, b"counter", b"n") == 90  # kept, still counting down from the set

    assert incr(writer, b"n", 1, ttl_s=30) == 12
    assert ttl(store, b"counter", b"n") == 30

    assert incr(writer, b"n", 1, ttl_s=-1) == 13
    assert ttl(store, b"counter", b"n") == -1


def test_incr_of_a_missing_key_with_ttl(store: PartitionStore, writer: Writer) -> None:
    assert incr(writer, b"fresh", 1, ttl_s=20) == 1
    assert ttl(store, b"counter", b"fresh") == 20
    assert incr(writer, b"cleared", 1, ttl_s=-5) == 1
    assert ttl(store, b"counter", b"cleared") == -1


@pytest.mark.parametrize(
    "stored", [b"abc", b"1.5", b" 1", b"1 ", b"0x10", b"+", b"-", b"1e3", b"99999999999999999999"]
)
def test_incr_of_a_value_that_is_not_a_decimal_int64_fails_and_keeps_it(
    store: PartitionStore, writer: Writer, stored: bytes
) -> None:
    writer.one(SetRequest(b"counter", b"n", stored))
    assert error_code(writer.one(IncrRequest(b"counter", b"n", 1))) == ErrorCode.INVALID_ARGUMENT
    assert get(store, b"counter", b"n") == stored


def test_incr_accepts_signed_decimals_up_to_the_int64_edges(store: PartitionStore, writer: Writer) -> None:
    writer.apply(
        SetRequest(b"counter", b"max", str(INT64_MAX - 1).encode()),
        SetRequest(b"counter", b"min", str(INT64_MIN + 1).encode()),
        SetRequest(b"counter", b"plus", b"+5"),
        SetRequest(b"counter", b"zeros", b"-007"),
    )
    assert incr(writer, b"max", 1) == INT64_MAX
    assert incr(writer, b"min", -1) == INT64_MIN
    assert incr(writer, b"plus", 1) == 6
    assert incr(writer, b"zeros", 0) == -7
    assert get(store, b"counter", b"zeros") == b"-7"


@pytest.mark.parametrize(("start", "increment"), [(INT64_MAX, 1), (INT64_MIN, -1), (INT64_MAX - 5, 6)])
def test_incr_overflow_fails_and_keeps_the_old_value(
    store: PartitionStore, writer: Writer, start: int, increment: int
) -> None:
    writer.one(SetRequest(b"counter", b"n", str(start).encode(), ttl_s=50))
    reply = writer.one(IncrRequest(b"counter", b"n", increment, ttl_s=-1))
    assert error_code(reply) == ErrorCode.INVALID_ARGUMENT
    assert get(store, b"counter", b"n") == str(start).encode()
    assert ttl(store, b"counter", b"n") == 50  # the failed incr did not clear the TTL either


def test_writes_later_in_a_mutation_see_the_earlier_ones(store: PartitionStore, writer: Writer) -> None:
    replies = writer.apply(
        IncrRequest(b"counter", b"n", 2),
        IncrRequest(b"counter", b"n", 3),
        SetRequest(b"counter", b"m", b"100"),
        IncrRequest(b"counter", b"m", 1),
        DeleteRequest(b"counter", b"m"),
        IncrRequest(b"counter", b"m", 7),
        SetRequest(b"counter", b"x", b"1"),
        MultiDeleteRequest(b"counter", [b"x", b"y"]),
    )
    assert [expect(reply, IncrResponse).new_value for reply in replies[:2]] == [2, 5]
    assert expect(replies[3], IncrResponse).new_value == 101
    assert expect(replies[5], IncrResponse).new_value == 7
    assert expect(replies[7], MultiDeleteResponse).count == 1
    assert (get(store, b"counter", b"n"), get(store, b"counter", b"m"), get(store, b"counter", b"x")) == (
        b"5",
        b"7",
        None,
    )


# --- every replica computes the same bytes ----------------------------------------------------


def all_rows(store: PartitionStore) -> list[tuple[bytes, bytes, bytes, int]]:
    reply = read(
        store, GetScannerRequest(full_scan=True, batch_size=1000, return_expire_ts=True), ScanResponse
    )
    assert reply.context_id == -1
    return reply.rows


def test_replicas_applying_the_same_mutations_at_different_times_agree(tmp_path: Path) -> None:
    stamp_s = 1_700_000_000.0
    mutations_writes: list[list[WriteRequest]] = [
        [SetRequest(b"h", b"n", b"10", ttl_s=30), SetRequest(b"h", b"word", b"abc", ttl_s=60)],
        [IncrRequest(b"h", b"n", 1), IncrRequest(b"h", b"fresh", 1, ttl_s=100)],
    ]
    # The primary applies at once; a lagging secondary applies the same log 45 s later, when
    # by its own clock the record "n" has expired. It must still compute 11, not 1.
    results = []
    for name, lag_s in (("primary", 0.0), ("secondary", 45.0)):
        clock = FakeClock(stamp_s + lag_s)
        store = PartitionStore.open(str(tmp_path / name), clock=clock)
        writer = Writer(store, clock)
        replies = [
            writer.apply(*writes, at_s=stamp_s + index) for index, writes in enumerate(mutations_writes)
        ]
        clock.now_s = stamp_s  # read both at the same moment
        results.append((replies, all_rows(store)))
        store.close()
    assert results[0] == results[1]
    assert expect(results[0][0][1][0], IncrResponse).new_value == 11


def test_stored_records_use_the_pegasus_v1_encoding_with_the_mutation_timetag(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = str(tmp_path / "replica")
    store = PartitionStore.open(path, clock=clock)
    writer = Writer(store, clock, cluster_id=5)
    mutation = writer.mutation(SetRequest(b"hk", b"sk", b"value", ttl_s=100))
    store.apply(mutation)
    store.close()

    db = rocksdict.Rdict(
        path,
        rocksdict.Options(raw_mode=True),
        column_families={"meta": rocksdict.Options(raw_mode=True)},
        access_type=rocksdict.AccessType.read_only(),
    )
    try:
        raw = db.get(encode_key(b"hk", b"sk"))
    finally:
        db.close()
    assert raw is not None
    expire_ts, timetag, user_value = decode_value(raw)
    assert user_value == b"value"
    assert expire_ts == int(clock.now_s) - PEGASUS_EPOCH_UNIX_S + 100
    assert timetag == make_timetag(mutation.timestamp_us, 5, deleted=False)
