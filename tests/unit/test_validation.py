"""Semantic validation of data-API requests: what the client and the primary refuse up front."""

from __future__ import annotations

import pytest

from pegasus_kv.core.errors import InvalidArgumentError, KeyTooLargeError, PegasusError, ValueTooLargeError
from pegasus_kv.core.messages import (
    BatchGetRequest,
    CheckAndMutateRequest,
    CheckAndSetRequest,
    CheckType,
    ClearScannerRequest,
    DeleteRequest,
    FilterType,
    GetRequest,
    GetScannerRequest,
    IncrRequest,
    MultiDeleteRequest,
    MultiGetRequest,
    MultiSetRequest,
    Mutate,
    MutateOperation,
    ScanRequest,
    SetRequest,
    SortKeyCountRequest,
    TtlRequest,
)
from pegasus_kv.core.registry import Message
from pegasus_kv.core.schema import MAX_HASH_KEY_BYTES, MAX_WRITE_BYTES, encode_key
from pegasus_kv.core.validation import (
    INT64_MAX,
    INT64_MIN,
    MAX_KEYS_PER_REQUEST,
    MAX_TTL_S,
    validate_read,
    validate_write,
)

TOO_LONG = b"k" * (MAX_HASH_KEY_BYTES + 1)
LONGEST = b"k" * MAX_HASH_KEY_BYTES

VALID_WRITES: list[Message] = [
    SetRequest(b"h", b"s", b"v"),
    SetRequest(LONGEST, b"", b"", ttl_s=MAX_TTL_S),
    SetRequest(b"", b"s", b"v" * (MAX_WRITE_BYTES - 1)),  # exactly 1 MB with its keys
    MultiSetRequest(b"h", [(b"a", b"1")] * MAX_KEYS_PER_REQUEST),
    DeleteRequest(b"h", b"s"),
    MultiDeleteRequest(b"h", [b"a", b"b"]),
    IncrRequest(b"h", b"s", INT64_MIN, ttl_s=-1),
    IncrRequest(b"h", b"s", INT64_MAX, ttl_s=MAX_TTL_S),
    CheckAndSetRequest(b"h", b"c", CheckType.VALUE_INT_LESS, b"not checked here", b"s", b"v", set_ttl_s=5),
    CheckAndMutateRequest(
        b"h",
        b"c",
        CheckType.NO_CHECK,
        b"",
        [Mutate(MutateOperation.PUT, b"s", b"v", 5), Mutate(MutateOperation.DELETE, b"s")],
    ),
]

# (request, the error it must raise)
INVALID_WRITES: list[tuple[Message, type[PegasusError]]] = [
    (SetRequest(TOO_LONG, b"s", b"v"), KeyTooLargeError),
    (SetRequest(b"", b"s", b"v" * MAX_WRITE_BYTES), ValueTooLargeError),  # one byte over
    (SetRequest(b"h", b"s", b"v", ttl_s=-1), InvalidArgumentError),
    (SetRequest(b"h", b"s", b"v", ttl_s=MAX_TTL_S + 1), InvalidArgumentError),
    # A set breaking several rules reports the first: hash key, then TTL, then size.
    (SetRequest(TOO_LONG, b"s", b"v" * MAX_WRITE_BYTES, ttl_s=-1), KeyTooLargeError),
    (SetRequest(b"h", b"s", b"v" * MAX_WRITE_BYTES, ttl_s=-1), InvalidArgumentError),
    (MultiSetRequest(b"h", []), InvalidArgumentError),
    (MultiSetRequest(b"h", [(b"a", b"1")] * (MAX_KEYS_PER_REQUEST + 1)), InvalidArgumentError),
    (MultiSetRequest(b"h", [(b"a", b"v" * (MAX_WRITE_BYTES // 2))] * 2), ValueTooLargeError),
    (MultiSetRequest(TOO_LONG, [(b"a", b"1")]), KeyTooLargeError),
    (MultiSetRequest(b"h", [(b"a", b"1")], ttl_s=-5), InvalidArgumentError),
    (DeleteRequest(TOO_LONG, b"s"), KeyTooLargeError),
    (MultiDeleteRequest(b"h", []), InvalidArgumentError),
    (MultiDeleteRequest(b"h", [b"s" * (MAX_WRITE_BYTES // 2)] * 3), ValueTooLargeError),
    (IncrRequest(b"h", b"s", INT64_MAX + 1), InvalidArgumentError),
    (IncrRequest(b"h", b"s", INT64_MIN - 1), InvalidArgumentError),
    (IncrRequest(b"h", b"s", 1, ttl_s=MAX_TTL_S + 1), InvalidArgumentError),
    (IncrRequest(TOO_LONG, b"s", 1), KeyTooLargeError),
    (CheckAndSetRequest(b"h", b"c", 18, b"", b"s", b"v"), InvalidArgumentError),  # type: ignore[arg-type]
    (CheckAndSetRequest(b"h", b"c", CheckType.NO_CHECK, b"", b"s", b"v", set_ttl_s=-1), InvalidArgumentError),
    (
        CheckAndSetRequest(b"h", b"c", CheckType.NO_CHECK, b"x" * MAX_WRITE_BYTES, b"s", b"v"),
        ValueTooLargeError,
    ),
    (CheckAndMutateRequest(b"h", b"c", CheckType.NO_CHECK, b"", []), InvalidArgumentError),
    (
        CheckAndMutateRequest(b"h", b"c", CheckType.NO_CHECK, b"", [Mutate(7, b"s")]),  # type: ignore[arg-type]
        InvalidArgumentError,
    ),
    (
        CheckAndMutateRequest(
            b"h", b"c", CheckType.NO_CHECK, b"", [Mutate(MutateOperation.PUT, b"s", b"v", -1)]
        ),
        InvalidArgumentError,
    ),
    (
        CheckAndMutateRequest(
            b"h",
            b"c",
            CheckType.NO_CHECK,
            b"",
            [Mutate(MutateOperation.PUT, b"s", b"v" * (MAX_WRITE_BYTES // 2))] * 2,
        ),
        ValueTooLargeError,
    ),
    (GetRequest(b"h", b"s"), InvalidArgumentError),  # a read is not a write
]


@pytest.mark.parametrize("request_", VALID_WRITES, ids=lambda r: type(r).__name__)
def test_valid_writes_pass(request_: Message) -> None:
    validate_write(request_)


@pytest.mark.parametrize(("request_", "error"), INVALID_WRITES, ids=lambda r: type(r).__name__)
def test_invalid_writes_raise_their_typed_error(request_: Message, error: type[PegasusError]) -> None:
    with pytest.raises(error) as raised:
        validate_write(request_)
    assert type(raised.value) is error


def test_key_and_value_errors_are_invalid_arguments_with_their_own_codes() -> None:
    # Callers that only care "was my input bad" can catch InvalidArgumentError.
    assert issubclass(KeyTooLargeError, InvalidArgumentError)
    assert issubclass(ValueTooLargeError, InvalidArgumentError)
    assert KeyTooLargeError.code != ValueTooLargeError.code != InvalidArgumentError.code


VALID_READS: list[Message] = [
    GetRequest(LONGEST, b"s"),
    TtlRequest(b"h", b"s"),
    MultiGetRequest(b"h", sort_keys=[b"a"] * MAX_KEYS_PER_REQUEST),
    MultiGetRequest(b"h", sort_key_filter_type=FilterType.MATCH_POSTFIX, max_kv_count=-1, max_kv_size=0),
    SortKeyCountRequest(b"h"),
    BatchGetRequest([(b"h", b"s"), (LONGEST, b"t")]),
    GetScannerRequest(full_scan=True, hash_key_filter_type=FilterType.MATCH_ANYWHERE, batch_size=0),
    GetScannerRequest(hash_key=b"h", start_after=encode_key(b"h", b"s")),
    ScanRequest(12345),
    ClearScannerRequest(-1),
]

INVALID_READS: list[tuple[Message, type[PegasusError]]] = [
    (GetRequest(TOO_LONG, b"s"), KeyTooLargeError),
    (TtlRequest(TOO_LONG, b"s"), KeyTooLargeError),
    (MultiGetRequest(TOO_LONG), KeyTooLargeError),
    (MultiGetRequest(b"h", sort_keys=[b"a"] * (MAX_KEYS_PER_REQUEST + 1)), InvalidArgumentError),
    (MultiGetRequest(b"h", sort_key_filter_type=4), InvalidArgumentError),  # type: ignore[arg-type]
    (SortKeyCountRequest(TOO_LONG), KeyTooLargeError),
    (BatchGetRequest([]), InvalidArgumentError),
    (BatchGetRequest([(b"h", b"s")] * (MAX_KEYS_PER_REQUEST + 1)), InvalidArgumentError),
    (BatchGetRequest([(b"h", b"s"), (TOO_LONG, b"s")]), KeyTooLargeError),
    (GetScannerRequest(hash_key=TOO_LONG), KeyTooLargeError),
    (GetScannerRequest(hash_key_filter_type=9), InvalidArgumentError),  # type: ignore[arg-type]
    (GetScannerRequest(sort_key_filter_type=-1), InvalidArgumentError),  # type: ignore[arg-type]
    (GetScannerRequest(start_after=b"\x00"), InvalidArgumentError),  # not a stored key
    (GetScannerRequest(start_after=b"\x00\x09abc"), InvalidArgumentError),  # header longer than the key
    (SetRequest(b"h", b"s", b"v"), InvalidArgumentError),  # a write is not a read
]


@pytest.mark.parametrize("request_", VALID_READS, ids=lambda r: type(r).__name__)
def test_valid_reads_pass(request_: Message) -> None:
    validate_read(request_)


@pytest.mark.parametrize(("request_", "error"), INVALID_READS, ids=lambda r: type(r).__name__)
def test_invalid_reads_raise_their_typed_error(request_: Message, error: type[PegasusError]) -> None:
    with pytest.raises(error) as raised:
        validate_read(request_)
    assert type(raised.value) is error
