"""A replica server's admission of client reads (client_requests.admit_read) and writes
(admit_write): one pass that must answer exactly as validation, the partition check and (for reads)
the inline-or-thread choice do one after the other, for every request shape, good or bad."""

from __future__ import annotations

import pytest

from pegasus_kv.core.errors import PegasusError
from pegasus_kv.core.hashing import partition_index
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import (
    BatchGetRequest,
    ClearScannerRequest,
    DeleteRequest,
    FilterType,
    GetRequest,
    GetScannerRequest,
    IncrRequest,
    MultiGetRequest,
    MultiSetRequest,
    ScanRequest,
    SetRequest,
    SortKeyCountRequest,
    TtlRequest,
)
from pegasus_kv.core.registry import Message
from pegasus_kv.core.schema import MAX_HASH_KEY_BYTES, MAX_WRITE_BYTES
from pegasus_kv.core.validation import MAX_KEYS_PER_REQUEST, MAX_TTL_S, validate_read, validate_write
from pegasus_kv.replication.replica.client_requests import (
    admit_read,
    admit_write,
    check_partition,
    reads_inline,
)

PARTITIONS = 8
HOME = Gpid(3, partition_index(b"alice", b"", PARTITIONS))
TOO_LONG = b"k" * (MAX_HASH_KEY_BYTES + 1)

READS: list[Message] = [
    GetRequest(b"alice", b"city"),
    GetRequest(b"bob", b"city"),  # hashes elsewhere (checked below)
    GetRequest(b"", b"alice"),  # an empty hash key routes by the sort key
    GetRequest(TOO_LONG, b"s"),
    TtlRequest(b"alice", b"city"),
    TtlRequest(b"bob", b"city"),
    MultiGetRequest(b"alice", [b"f0"]),
    MultiGetRequest(b"alice", [b"f%d" % i for i in range(16)]),
    MultiGetRequest(b"alice", [b"f%d" % i for i in range(17)]),  # too many to serve inline
    MultiGetRequest(b"alice"),  # by range
    MultiGetRequest(b"bob", [b"f0"]),
    MultiGetRequest(TOO_LONG, [b"f0"]),
    MultiGetRequest(b"bob", [b"f"] * (MAX_KEYS_PER_REQUEST + 1)),  # invalid AND elsewhere
    MultiGetRequest(b"alice", [b"f0"], sort_key_filter_type=99),  # type: ignore[arg-type]
    MultiGetRequest(b"alice", sort_key_filter_type=FilterType.MATCH_PREFIX, sort_key_filter_pattern=b"f"),
    SortKeyCountRequest(b"alice"),
    SortKeyCountRequest(b"bob"),
    BatchGetRequest([(b"alice", b"a"), (b"bob", b"b")]),
    BatchGetRequest([(b"alice", b"a")]),
    GetScannerRequest(b"alice"),
    GetScannerRequest(full_scan=True),
    ScanRequest(7),
    ClearScannerRequest(7),
]


def _one_after_the_other(gpid: Gpid, request: Message, partition_count: int) -> bool | PegasusError:
    try:
        validate_read(request)
        check_partition(gpid, request, partition_count)
    except PegasusError as error:
        return error
    return reads_inline(request)


def _admitted(gpid: Gpid, request: Message, partition_count: int) -> bool | PegasusError:
    try:
        return admit_read(gpid, request, partition_count)
    except PegasusError as error:
        return error


def test_the_reads_of_the_story_cover_every_answer() -> None:
    answers = [_one_after_the_other(HOME, read, PARTITIONS) for read in READS]
    assert partition_index(b"bob", b"", PARTITIONS) != HOME.partition_index
    assert True in answers and False in answers
    assert {type(answer).__name__ for answer in answers} >= {
        "PartitionMismatchError",
        "KeyTooLargeError",
        "InvalidArgumentError",
    }


@pytest.mark.parametrize("request_", READS, ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("partition_count", [PARTITIONS, 1, 6, 0])
def test_admitting_a_read_answers_as_the_three_checks_in_turn(
    request_: Message, partition_count: int
) -> None:
    expected = _one_after_the_other(HOME, request_, partition_count)
    got = _admitted(HOME, request_, partition_count)
    if isinstance(expected, PegasusError):
        assert type(got) is type(expected) and str(got) == str(expected)
    else:
        assert got == expected


WRITES: list[Message] = [
    SetRequest(b"alice", b"city", b"paris"),
    SetRequest(b"bob", b"city", b"paris"),  # hashes elsewhere
    SetRequest(b"", b"alice", b"v"),  # an empty hash key routes by the sort key
    SetRequest(TOO_LONG, b"s", b"v"),
    SetRequest(b"bob", b"s", b"v", ttl_s=-1),  # invalid AND elsewhere
    SetRequest(b"alice", b"s", b"v", ttl_s=MAX_TTL_S + 1),
    SetRequest(b"alice", b"s", b"v" * (MAX_WRITE_BYTES + 1)),
    MultiSetRequest(b"alice", [(b"a", b"1")]),
    MultiSetRequest(b"bob", [(b"a", b"1")]),
    MultiSetRequest(b"alice", []),
    DeleteRequest(b"alice", b"city"),
    DeleteRequest(b"bob", b"city"),
    IncrRequest(b"alice", b"n", 1),
    IncrRequest(b"alice", b"n", 1 << 63),
]


def _write_one_check_after_the_other(
    gpid: Gpid, request: Message, partition_count: int
) -> PegasusError | None:
    try:
        validate_write(request)
        check_partition(gpid, request, partition_count)
    except PegasusError as error:
        return error
    return None


def test_the_writes_of_the_story_cover_every_answer() -> None:
    answers = [_write_one_check_after_the_other(HOME, write, PARTITIONS) for write in WRITES]
    assert None in answers
    assert {type(answer).__name__ for answer in answers} >= {
        "PartitionMismatchError",
        "KeyTooLargeError",
        "ValueTooLargeError",
        "InvalidArgumentError",
    }


@pytest.mark.parametrize("request_", WRITES, ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("partition_count", [PARTITIONS, 1, 6, 0])
def test_admitting_a_write_answers_as_validation_then_the_partition_check(
    request_: Message, partition_count: int
) -> None:
    expected = _write_one_check_after_the_other(HOME, request_, partition_count)
    try:
        admit_write(HOME, request_, partition_count)
        got: PegasusError | None = None
    except PegasusError as error:
        got = error
    if expected is None:
        assert got is None
    else:
        assert type(got) is type(expected) and str(got) == str(expected)
