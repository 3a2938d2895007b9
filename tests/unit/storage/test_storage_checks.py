"""check_and_set and check_and_mutate: the 18 check types and what a passed or failed check does."""

from __future__ import annotations

import pytest

from pegasus_kv.core.errors import ErrorCode
from pegasus_kv.core.messages import (
    CheckAndMutateRequest,
    CheckAndMutateResponse,
    CheckAndSetRequest,
    CheckType,
    IncrRequest,
    IncrResponse,
    Mutate,
    MutateOperation,
    SetRequest,
    WriteResponse,
)
from pegasus_kv.storage import PartitionStore
from pegasus_kv.storage.checks import evaluate_check, parse_int64

from .storage_fixtures import FakeClock, Writer, error_code, expect, get, ttl

MISSING = None
EXPIRED = b"<expired>"
INVALID = "invalid"

C = CheckType
# (check type, stored value (MISSING, EXPIRED or bytes), operand, expected: True / False / INVALID)
CASES: list[tuple[CheckType, bytes | None, bytes, bool | str]] = [
    (C.NO_CHECK, MISSING, b"", True),
    (C.NO_CHECK, b"x", b"whatever", True),
    (C.VALUE_NOT_EXIST, MISSING, b"", True),
    (C.VALUE_NOT_EXIST, EXPIRED, b"", True),
    (C.VALUE_NOT_EXIST, b"", b"", False),
    (C.VALUE_NOT_EXIST, b"x", b"", False),
    (C.VALUE_NOT_EXIST_OR_EMPTY, MISSING, b"", True),
    (C.VALUE_NOT_EXIST_OR_EMPTY, EXPIRED, b"", True),
    (C.VALUE_NOT_EXIST_OR_EMPTY, b"", b"", True),
    (C.VALUE_NOT_EXIST_OR_EMPTY, b"x", b"", False),
    (C.VALUE_EXIST, MISSING, b"", False),
    (C.VALUE_EXIST, EXPIRED, b"", False),
    (C.VALUE_EXIST, b"", b"", True),
    (C.VALUE_EXIST, b"x", b"", True),
    (C.VALUE_NOT_EMPTY, MISSING, b"", False),
    (C.VALUE_NOT_EMPTY, b"", b"", False),
    (C.VALUE_NOT_EMPTY, b"x", b"", True),
    (C.VALUE_MATCH_ANYWHERE, MISSING, b"", False),  # an empty operand needs an existing value
    (C.VALUE_MATCH_ANYWHERE, b"", b"", True),
    (C.VALUE_MATCH_ANYWHERE, b"hello", b"ell", True),
    (C.VALUE_MATCH_ANYWHERE, b"hello", b"xyz", False),
    (C.VALUE_MATCH_ANYWHERE, b"hi", b"hello", False),
    (C.VALUE_MATCH_PREFIX, b"hello", b"he", True),
    (C.VALUE_MATCH_PREFIX, b"hello", b"ll", False),
    (C.VALUE_MATCH_PREFIX, b"hello", b"", True),
    (C.VALUE_MATCH_PREFIX, EXPIRED, b"", False),
    (C.VALUE_MATCH_POSTFIX, b"hello", b"lo", True),
    (C.VALUE_MATCH_POSTFIX, b"hello", b"he", False),
    (C.VALUE_MATCH_POSTFIX, b"lo", b"hello", False),
    (C.VALUE_BYTES_LESS, b"abc", b"abd", True),
    (C.VALUE_BYTES_LESS, b"abc", b"abc", False),
    (C.VALUE_BYTES_LESS, b"abc", b"ab", False),  # a longer value sorts after its prefix
    (C.VALUE_BYTES_LESS, b"\x01", b"\xff", True),  # bytes compare unsigned
    (C.VALUE_BYTES_LESS, MISSING, b"zzz", False),
    (C.VALUE_BYTES_LESS_OR_EQUAL, b"abc", b"abc", True),
    (C.VALUE_BYTES_LESS_OR_EQUAL, b"abd", b"abc", False),
    (C.VALUE_BYTES_EQUAL, b"abc", b"abc", True),
    (C.VALUE_BYTES_EQUAL, b"abc", b"abcd", False),
    (C.VALUE_BYTES_EQUAL, b"", b"", True),
    (C.VALUE_BYTES_EQUAL, MISSING, b"", False),
    (C.VALUE_BYTES_GREATER_OR_EQUAL, b"abc", b"abc", True),
    (C.VALUE_BYTES_GREATER_OR_EQUAL, b"abb", b"abc", False),
    (C.VALUE_BYTES_GREATER, b"b", b"abc", True),
    (C.VALUE_BYTES_GREATER, b"abc", b"abc", False),
    (C.VALUE_INT_LESS, b"9", b"10", True),  # numeric, where bytes would say otherwise
    (C.VALUE_INT_LESS, b"10", b"10", False),
    (C.VALUE_INT_LESS, b"-5", b"3", True),
    (C.VALUE_INT_LESS, MISSING, b"not a number", False),  # a missing value fails before parsing
    (C.VALUE_INT_LESS, b"abc", b"1", INVALID),
    (C.VALUE_INT_LESS, b"5", b"x", INVALID),
    (C.VALUE_INT_LESS, b"", b"1", INVALID),  # empty is not an integer here (unlike incr)
    (C.VALUE_INT_LESS_OR_EQUAL, b"10", b"10", True),
    (C.VALUE_INT_LESS_OR_EQUAL, b"11", b"10", False),
    (C.VALUE_INT_LESS_OR_EQUAL, b"1.0", b"10", INVALID),
    (C.VALUE_INT_EQUAL, b"007", b"7", True),
    (C.VALUE_INT_EQUAL, b"7", b"8", False),
    (C.VALUE_INT_EQUAL, b"99999999999999999999", b"1", INVALID),  # beyond int64
    (C.VALUE_INT_GREATER_OR_EQUAL, b"10", b"9", True),
    (C.VALUE_INT_GREATER_OR_EQUAL, b"-10", b"9", False),
    (C.VALUE_INT_GREATER_OR_EQUAL, b"10", b" 9", INVALID),
    (C.VALUE_INT_GREATER, b"10", b"9", True),
    (C.VALUE_INT_GREATER, b"9", b"10", False),
    (C.VALUE_INT_GREATER, b"9223372036854775807", b"-9223372036854775808", True),
]


def test_the_table_covers_all_18_check_types() -> None:
    assert {case[0] for case in CASES} == set(CheckType)
    assert len(CheckType) == 18


def describe(case: tuple[CheckType, bytes | None, bytes, bool | str]) -> str:
    check_type, stored, operand, expected = case
    return f"{check_type.name}-{stored!r}-{operand!r}-{expected}"


def store_checked_value(writer: Writer, clock: FakeClock, stored: bytes | None) -> None:
    if stored is EXPIRED:
        writer.one(SetRequest(b"h", b"checked", b"10", ttl_s=1))
        clock.advance(1)
    elif stored is not None:
        writer.one(SetRequest(b"h", b"checked", stored))


@pytest.mark.parametrize("case", CASES, ids=describe)
def test_check_and_set_sets_only_when_the_check_passes(
    store: PartitionStore,
    writer: Writer,
    clock: FakeClock,
    case: tuple[CheckType, bytes | None, bytes, bool | str],
) -> None:
    check_type, stored, operand, expected = case
    store_checked_value(writer, clock, stored)

    reply = writer.one(CheckAndSetRequest(b"h", b"checked", check_type, operand, b"target", b"written"))

    if expected == INVALID:
        assert error_code(reply) == ErrorCode.INVALID_ARGUMENT
        assert get(store, b"h", b"target") is None
    else:
        assert expect(reply, CheckAndMutateResponse).passed is expected
        assert get(store, b"h", b"target") == (b"written" if expected else None)


@pytest.mark.parametrize("case", CASES, ids=describe)
def test_check_and_mutate_applies_all_its_mutations_only_when_the_check_passes(
    store: PartitionStore,
    writer: Writer,
    clock: FakeClock,
    case: tuple[CheckType, bytes | None, bytes, bool | str],
) -> None:
    check_type, stored, operand, expected = case
    writer.one(SetRequest(b"h", b"doomed", b"old"))
    store_checked_value(writer, clock, stored)

    reply = writer.one(
        CheckAndMutateRequest(
            b"h",
            b"checked",
            check_type,
            operand,
            [Mutate(MutateOperation.PUT, b"target", b"written"), Mutate(MutateOperation.DELETE, b"doomed")],
        )
    )

    if expected == INVALID:
        assert error_code(reply) == ErrorCode.INVALID_ARGUMENT
    else:
        assert expect(reply, CheckAndMutateResponse).passed is expected
    applied = expected is True
    assert get(store, b"h", b"target") == (b"written" if applied else None)
    assert get(store, b"h", b"doomed") == (None if applied else b"old")


@pytest.mark.parametrize("case", CASES, ids=describe)
def test_evaluate_check_agrees_with_the_table(
    case: tuple[CheckType, bytes | None, bytes, bool | str],
) -> None:
    check_type, stored, operand, expected = case
    exists = stored is not None and stored is not EXPIRED
    outcome = evaluate_check(check_type, operand, exists, stored if exists and stored is not None else b"")
    if expected == INVALID:
        assert outcome.invalid_reason is not None
        assert outcome.passed is False
    else:
        assert outcome == (expected, None)


def test_the_check_value_is_returned_only_when_asked(store: PartitionStore, writer: Writer) -> None:
    writer.one(SetRequest(b"h", b"checked", b"current"))

    silent = writer.one(CheckAndSetRequest(b"h", b"checked", C.VALUE_EXIST, b"", b"t", b"v"))
    assert silent == CheckAndMutateResponse(passed=True)

    telling = writer.one(
        CheckAndSetRequest(
            b"h", b"checked", C.VALUE_BYTES_EQUAL, b"other", b"t", b"v", return_check_value=True
        )
    )
    assert telling == CheckAndMutateResponse(
        passed=False, check_value_returned=True, check_value_exist=True, check_value=b"current"
    )

    absent = writer.one(
        CheckAndMutateRequest(
            b"h", b"nothing", C.VALUE_NOT_EXIST, b"", [Mutate(MutateOperation.PUT, b"t", b"v")], True
        )
    )
    assert absent == CheckAndMutateResponse(
        passed=True, check_value_returned=True, check_value_exist=False, check_value=b""
    )


def test_compare_and_swap_on_one_sort_key(store: PartitionStore, writer: Writer) -> None:
    writer.one(SetRequest(b"account", b"version", b"1"))
    swap = CheckAndSetRequest(b"account", b"version", C.VALUE_BYTES_EQUAL, b"1", b"version", b"2")

    assert expect(writer.one(swap), CheckAndMutateResponse).passed is True
    assert expect(writer.one(swap), CheckAndMutateResponse).passed is False  # lost the race
    assert get(store, b"account", b"version") == b"2"


def test_check_and_set_puts_with_its_ttl(store: PartitionStore, writer: Writer, clock: FakeClock) -> None:
    writer.one(CheckAndSetRequest(b"h", b"lock", C.VALUE_NOT_EXIST, b"", b"lock", b"owner-1", set_ttl_s=30))
    assert ttl(store, b"h", b"lock") == 30
    clock.advance(30)
    # The lease ran out: somebody else may take the lock now.
    taken = writer.one(CheckAndSetRequest(b"h", b"lock", C.VALUE_NOT_EXIST, b"", b"lock", b"owner-2"))
    assert expect(taken, CheckAndMutateResponse).passed is True
    assert get(store, b"h", b"lock") == b"owner-2"


def test_a_bad_mutation_anywhere_in_check_and_mutate_applies_none_of_them(
    store: PartitionStore, writer: Writer
) -> None:
    bad = CheckAndMutateRequest(
        b"h",
        b"checked",
        C.NO_CHECK,
        b"",
        [Mutate(MutateOperation.PUT, b"a", b"1"), Mutate(MutateOperation.PUT, b"b", b"2", ttl_s=-3)],
    )
    empty = CheckAndMutateRequest(b"h", b"checked", C.NO_CHECK, b"", [])
    assert [error_code(reply) for reply in writer.apply(bad, empty)] == [ErrorCode.INVALID_ARGUMENT] * 2
    assert get(store, b"h", b"a") is None


def test_mutations_apply_in_order_and_later_writes_see_them(store: PartitionStore, writer: Writer) -> None:
    replies = writer.apply(
        SetRequest(b"h", b"n", b"1"),
        CheckAndMutateRequest(
            b"h",
            b"n",
            C.VALUE_INT_EQUAL,
            b"1",
            [
                Mutate(MutateOperation.PUT, b"n", b"5"),
                Mutate(MutateOperation.DELETE, b"n"),
                Mutate(MutateOperation.PUT, b"n", b"40"),
            ],
        ),
        IncrRequest(b"h", b"n", 2),
        CheckAndSetRequest(b"h", b"n", C.VALUE_INT_GREATER, b"41", b"verdict", b"big"),
    )
    assert replies[0] == WriteResponse(decree=1)
    assert expect(replies[1], CheckAndMutateResponse).passed is True
    assert expect(replies[2], IncrResponse).new_value == 42
    assert expect(replies[3], CheckAndMutateResponse).passed is True
    assert get(store, b"h", b"verdict") == b"big"


@pytest.mark.parametrize(
    ("text", "number"),
    [
        (b"0", 0),
        (b"-0", 0),
        (b"+12", 12),
        (b"9223372036854775807", 2**63 - 1),
        (b"-9223372036854775808", -(2**63)),
    ],
)
def test_parse_int64_reads_signed_decimals(text: bytes, number: int) -> None:
    assert parse_int64(text) == number


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"-",
        b"+",
        b"1.0",
        b"1e5",
        b"0x1f",
        b" 1",
        b"1\n",
        b"9223372036854775808",
        b"\xd9\xa1",  # ARABIC-INDIC DIGIT ONE: a digit, but not an ASCII one
    ],
)
def test_parse_int64_refuses_anything_else(text: bytes) -> None:
    assert parse_int64(text) is None
