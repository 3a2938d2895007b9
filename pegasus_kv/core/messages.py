"""Messages of the client data API (requests and replies) as msgspec Structs.

Semantics follow reference/pegasus-features.md. Write requests are also what a mutation carries
(see core/mutation.py): the mutation log stores them as the client sent them, and every replica
applies them in decree order with the mutation's timestamp, so non-idempotent writes (incr,
check_and_set, check_and_mutate) reach the same result everywhere.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from pegasus_kv.core.registry import Message, message

# Generous structural bounds enforced while decoding (a frame is bounded as a whole too). The
# semantic limits (hash_key < 65535 bytes, 1 MB per write) are checked separately so that a
# request over them gets a typed error reply instead of a codec error.
MAX_FIELD_BYTES = 8 * 1024 * 1024
MAX_LIST_ITEMS = 1_000_000
Bytes = Annotated[bytes, msgspec.Meta(max_length=MAX_FIELD_BYTES)]


class CheckType(enum.IntEnum):
    """The 18 check types of check_and_set / check_and_mutate, numbered as in Pegasus."""

    NO_CHECK = 0
    VALUE_NOT_EXIST = 1
    VALUE_NOT_EXIST_OR_EMPTY = 2
    VALUE_EXIST = 3
    VALUE_NOT_EMPTY = 4
    VALUE_MATCH_ANYWHERE = 5
    VALUE_MATCH_PREFIX = 6
    VALUE_MATCH_POSTFIX = 7
    VALUE_BYTES_LESS = 8
    VALUE_BYTES_LESS_OR_EQUAL = 9
    VALUE_BYTES_EQUAL = 10
    VALUE_BYTES_GREATER_OR_EQUAL = 11
    VALUE_BYTES_GREATER = 12
    VALUE_INT_LESS = 13
    VALUE_INT_LESS_OR_EQUAL = 14
    VALUE_INT_EQUAL = 15
    VALUE_INT_GREATER_OR_EQUAL = 16
    VALUE_INT_GREATER = 17


class FilterType(enum.IntEnum):
    """Sort-key / hash-key filters of multi_get and scans."""

    NO_FILTER = 0
    MATCH_ANYWHERE = 1
    MATCH_PREFIX = 2
    MATCH_POSTFIX = 3


class MutateOperation(enum.IntEnum):
    PUT = 0
    DELETE = 1


# --- writes -----------------------------------------------------------------------------------


@message
class SetRequest(Message, tag=1):
    hash_key: Bytes
    sort_key: Bytes
    value: Bytes
    ttl_s: int = 0


@message
class MultiSetRequest(Message, tag=2):
    hash_key: Bytes
    kvs: Annotated[list[tuple[Bytes, Bytes]], msgspec.Meta(max_length=MAX_LIST_ITEMS)]
    ttl_s: int = 0


@message
class DeleteRequest(Message, tag=3):
    hash_key: Bytes
    sort_key: Bytes


@message
class MultiDeleteRequest(Message, tag=4):
    hash_key: Bytes
    sort_keys: Annotated[list[Bytes], msgspec.Meta(max_length=MAX_LIST_ITEMS)]


@message
class IncrRequest(Message, tag=5):
    """ttl_s: 0 keeps the old TTL, < 0 clears it, > 0 sets it (Pegasus's incr rule)."""

    hash_key: Bytes
    sort_key: Bytes
    increment: int
    ttl_s: int = 0


@message
class CheckAndSetRequest(Message, tag=6):
    hash_key: Bytes
    check_sort_key: Bytes
    check_type: CheckType
    check_operand: Bytes
    set_sort_key: Bytes
    set_value: Bytes
    set_ttl_s: int = 0
    return_check_value: bool = False


class Mutate(msgspec.Struct, array_like=True):
    """One mutation of check_and_mutate: a put (with its TTL) or a delete."""

    operation: MutateOperation
    sort_key: Bytes
    value: Bytes = b""
    ttl_s: int = 0


@message
class CheckAndMutateRequest(Message, tag=7):
    hash_key: Bytes
    check_sort_key: Bytes
    check_type: CheckType
    check_operand: Bytes
    mutations: Annotated[list[Mutate], msgspec.Meta(max_length=MAX_LIST_ITEMS)]
    return_check_value: bool = False


# The writes a mutation can carry, in the order the storage applies them.
WriteRequest = (
    SetRequest
    | MultiSetRequest
    | DeleteRequest
    | MultiDeleteRequest
    | IncrRequest
    | CheckAndSetRequest
    | CheckAndMutateRequest
)
WRITE_REQUEST_TYPES: tuple[type[Message], ...] = (
    SetRequest,
    MultiSetRequest,
    DeleteRequest,
    MultiDeleteRequest,
    IncrRequest,
    CheckAndSetRequest,
    CheckAndMutateRequest,
)


@message
class WriteResponse(Message, tag=21):
    """Reply to set, multi_set and delete."""

    decree: int = 0


@message
class MultiDeleteResponse(Message, tag=22):
    count: int


@message
class IncrResponse(Message, tag=23):
    new_value: int


@message
class CheckAndMutateResponse(Message, tag=24):
    """Reply to check_and_set and check_and_mutate.

    A failed check is not an error of the call: `passed` is False (Pegasus answers kTryAgain).
    `check_value` is filled only when the request asked for it.
    """

    passed: bool
    check_value_returned: bool = False
    check_value_exist: bool = False
    check_value: bytes = b""


# --- reads ------------------------------------------------------------------------------------


@message
class GetRequest(Message, tag=40):
    hash_key: Bytes
    sort_key: Bytes


@message
class GetResponse(Message, tag=41):
    value: bytes | None


@message
class TtlRequest(Message, tag=42):
    """Also serves exist(): a record exists iff ttl_s is not None."""

    hash_key: Bytes
    sort_key: Bytes


@message
class TtlResponse(Message, tag=43):
    """ttl_s: None when missing or expired, -1 when the record has no TTL, else seconds left."""

    ttl_s: int | None


@message
class MultiGetRequest(Message, tag=44):
    """multi_get by an explicit sort-key list (when `sort_keys` is not empty) or by range.

    max_kv_count / max_kv_size <= 0 mean "no limit" (the server's own caps still apply).
    """

    hash_key: Bytes
    # msgspec copies an empty-list default per instance, so sharing it is safe.
    sort_keys: Annotated[list[Bytes], msgspec.Meta(max_length=MAX_LIST_ITEMS)] = []
    start_sort_key: Bytes = b""
    stop_sort_key: Bytes = b""
    start_inclusive: bool = True
    stop_inclusive: bool = False
    sort_key_filter_type: FilterType = FilterType.NO_FILTER
    sort_key_filter_pattern: Bytes = b""
    max_kv_count: int = 100
    max_kv_size: int = 1_000_000
    no_value: bool = False
    reverse: bool = False


@message
class MultiGetResponse(Message, tag=45):
    """kvs in sort-key order (descending when reverse). complete=False: a limit cut it short."""

    kvs: list[tuple[bytes, bytes]]
    complete: bool


@message
class SortKeyCountRequest(Message, tag=46):
    hash_key: Bytes


@message
class SortKeyCountResponse(Message, tag=47):
    count: int


@message
class BatchGetRequest(Message, tag=48):
    """Many keys, possibly under many hash keys, all in the partition it is sent to."""

    keys: Annotated[list[tuple[Bytes, Bytes]], msgspec.Meta(max_length=MAX_LIST_ITEMS)]


@message
class BatchGetResponse(Message, tag=49):
    values: list[bytes | None]


# --- scans ------------------------------------------------------------------------------------


@message
class GetScannerRequest(Message, tag=60):
    """Open a scan context and return its first batch.

    A hash-key scan sets `hash_key` and bounds the sort keys; a full (unordered) scan of a
    partition sets full_scan and may filter hash keys. start_after (when set) resumes a scan just
    after a stored key, so a client can continue on a new primary after failover.
    """

    full_scan: bool = False
    hash_key: Bytes = b""
    start_sort_key: Bytes = b""
    stop_sort_key: Bytes = b""
    start_inclusive: bool = True
    stop_inclusive: bool = False
    hash_key_filter_type: FilterType = FilterType.NO_FILTER
    hash_key_filter_pattern: Bytes = b""
    sort_key_filter_type: FilterType = FilterType.NO_FILTER
    sort_key_filter_pattern: Bytes = b""
    batch_size: int = 100
    no_value: bool = False
    return_expire_ts: bool = False
    start_after: Bytes | None = None


@message
class ScanRequest(Message, tag=61):
    """Fetch the next batch of an open scan context."""

    context_id: int


@message
class ClearScannerRequest(Message, tag=62):
    context_id: int


@message
class ScanResponse(Message, tag=63):
    """One batch: (hash_key, sort_key, value, expire_ts) rows. context_id -1 = scan finished.

    last_key is the stored key of the last row, for resuming with start_after after a failover.
    """

    rows: list[tuple[bytes, bytes, bytes, int]]
    context_id: int
    last_key: bytes | None = None


@message
class ClearScannerResponse(Message, tag=64):
    """Acknowledges ClearScannerRequest."""


@message
class ErrorReply(Message, tag=99):
    """The body of any failed reply: the error code and a human-readable reason."""

    code: int
    message: str = ""
