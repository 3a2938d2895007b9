"""Semantic validation of data-API requests (pure: no I/O, no clock).

The codec only bounds the shape of a message (core/messages.py). These rules are Pegasus's
semantic limits, checked in three places with one source of truth:

- the client calls them to fail fast, before a request leaves the process;
- the primary calls them before a write is batched into a mutation, so a bad write is answered
  with a typed error and never reaches the mutation log;
- the storage applies the same per-write checks again while applying a mutation (the log may
  hold writes from an older version), so that a bad write yields the same error reply on every
  replica instead of crashing one of them.

Limits (reference/pegasus-features.md): hash_key shorter than 65535 bytes
(KeyTooLargeError); one write request's keys and values at most 1 MB, Pegasus's
`max_allowed_write_size` (ValueTooLargeError); everything else is InvalidArgumentError.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pegasus_kv.core.errors import InvalidArgumentError
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
    MutateOperation,
    ScanRequest,
    SetRequest,
    SortKeyCountRequest,
    TtlRequest,
)
from pegasus_kv.core.schema import (
    MAX_EXPIRE_TS,
    MAX_HASH_KEY_BYTES,
    MAX_WRITE_BYTES,
    check_hash_key,
    check_write_size,
    decode_key,
)

# How many keys one request may name (multi_set kvs, multi_delete / multi_get sort keys,
# batch_get keys, check_and_mutate mutations). The 1 MB write limit bounds bytes but not the
# per-key work of 1 MB of empty sort keys; Pegasus has no such bound, we put one on everything.
MAX_KEYS_PER_REQUEST = 10_000

# A TTL whose expiry does not fit the u32 expire_ts can never be stored.
MAX_TTL_S = MAX_EXPIRE_TS

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

_CHECK_TYPES = frozenset(int(t) for t in CheckType)
_FILTER_TYPES = frozenset(int(t) for t in FilterType)
_MUTATE_OPERATIONS = frozenset(int(op) for op in MutateOperation)


# --- shared rules -----------------------------------------------------------------------------


def check_put_ttl(ttl_s: int) -> None:
    """A put's TTL: 0 = none, > 0 seconds; negative makes no sense for a put."""
    if ttl_s < 0:
        raise InvalidArgumentError(f"ttl must be >= 0 seconds, got {ttl_s}")
    if ttl_s > MAX_TTL_S:
        raise InvalidArgumentError(f"ttl of {ttl_s} s does not fit the u32 expire_ts")


def check_key_count(what: str, count: int, *, allow_empty: bool = False) -> None:
    if count == 0 and not allow_empty:
        raise InvalidArgumentError(f"{what} is empty")
    if count > MAX_KEYS_PER_REQUEST:
        raise InvalidArgumentError(f"{what} names {count} keys; at most {MAX_KEYS_PER_REQUEST} allowed")


def check_filter_type(what: str, filter_type: int) -> None:
    if filter_type not in _FILTER_TYPES:
        raise InvalidArgumentError(f"{what} filter type {filter_type} is not supported")


def check_check_type(check_type: int) -> None:
    if check_type not in _CHECK_TYPES:
        raise InvalidArgumentError(f"check type {check_type} is not supported")


# --- writes -----------------------------------------------------------------------------------


def validate_set(request: SetRequest) -> None:
    # The rules of check_hash_key, check_put_ttl and check_write_size, in that order, tested inline
    # (each helper runs only to raise its error): every client set passes here on its primary.
    hash_key_bytes = len(request.hash_key)
    if hash_key_bytes > MAX_HASH_KEY_BYTES:
        check_hash_key(request.hash_key)
    ttl_s = request.ttl_s
    if ttl_s < 0 or ttl_s > MAX_TTL_S:
        check_put_ttl(ttl_s)
    size = hash_key_bytes + len(request.sort_key) + len(request.value)
    if size > MAX_WRITE_BYTES:
        check_write_size(size)


def validate_multi_set(request: MultiSetRequest) -> None:
    check_hash_key(request.hash_key)
    check_key_count("multi_set kvs", len(request.kvs))
    check_put_ttl(request.ttl_s)
    size = len(request.hash_key)
    for sort_key, value in request.kvs:
        size += len(sort_key) + len(value)
    check_write_size(size)


def validate_delete(request: DeleteRequest) -> None:
    check_hash_key(request.hash_key)
    check_write_size(len(request.hash_key) + len(request.sort_key))


def validate_multi_delete(request: MultiDeleteRequest) -> None:
    check_hash_key(request.hash_key)
    check_key_count("multi_delete sort_keys", len(request.sort_keys))
    check_write_size(len(request.hash_key) + sum(len(sort_key) for sort_key in request.sort_keys))


def validate_incr(request: IncrRequest) -> None:
    check_hash_key(request.hash_key)
    if not INT64_MIN <= request.increment <= INT64_MAX:
        raise InvalidArgumentError(f"increment {request.increment} is not an int64")
    # incr's ttl: 0 keeps the old TTL, < 0 clears it, > 0 sets it (Pegasus's rule).
    if request.ttl_s > MAX_TTL_S:
        raise InvalidArgumentError(f"ttl of {request.ttl_s} s does not fit the u32 expire_ts")
    check_write_size(len(request.hash_key) + len(request.sort_key))


def validate_check_and_set(request: CheckAndSetRequest) -> None:
    check_hash_key(request.hash_key)
    check_check_type(request.check_type)
    check_put_ttl(request.set_ttl_s)
    check_write_size(
        len(request.hash_key)
        + len(request.check_sort_key)
        + len(request.check_operand)
        + len(request.set_sort_key)
        + len(request.set_value)
    )


def validate_check_and_mutate(request: CheckAndMutateRequest) -> None:
    check_hash_key(request.hash_key)
    check_check_type(request.check_type)
    check_key_count("check_and_mutate mutations", len(request.mutations))
    size = len(request.hash_key) + len(request.check_sort_key) + len(request.check_operand)
    for index, mutate in enumerate(request.mutations):
        if mutate.operation not in _MUTATE_OPERATIONS:
            raise InvalidArgumentError(f"mutation {index} has unknown operation {mutate.operation}")
        if mutate.operation == MutateOperation.PUT:
            check_put_ttl(mutate.ttl_s)
        size += len(mutate.sort_key) + len(mutate.value)
    check_write_size(size)


_WRITE_VALIDATORS: dict[type, Callable[[Any], None]] = {
    SetRequest: validate_set,
    MultiSetRequest: validate_multi_set,
    DeleteRequest: validate_delete,
    MultiDeleteRequest: validate_multi_delete,
    IncrRequest: validate_incr,
    CheckAndSetRequest: validate_check_and_set,
    CheckAndMutateRequest: validate_check_and_mutate,
}


def validate_write(request: object) -> None:
    """Raise KeyTooLargeError / ValueTooLargeError / InvalidArgumentError for a bad write."""
    validator = _WRITE_VALIDATORS.get(type(request))
    if validator is None:
        raise InvalidArgumentError(f"{type(request).__name__} is not a write request")
    validator(request)


# --- reads ------------------------------------------------------------------------------------


# The reads every client read passes (get, ttl, a YCSB record's multi_get) test their rules inline
# and call the helpers, which format the error, only when one fails: one call instead of four.


def validate_key_read(request: GetRequest | TtlRequest) -> None:
    if len(request.hash_key) > MAX_HASH_KEY_BYTES:
        check_hash_key(request.hash_key)


def validate_multi_get(request: MultiGetRequest) -> None:
    if (
        len(request.hash_key) > MAX_HASH_KEY_BYTES
        or len(request.sort_keys) > MAX_KEYS_PER_REQUEST
        or request.sort_key_filter_type not in _FILTER_TYPES
    ):
        check_hash_key(request.hash_key)
        check_key_count("multi_get sort_keys", len(request.sort_keys), allow_empty=True)
        check_filter_type("sort_key", request.sort_key_filter_type)


def _validate_sort_key_count(request: SortKeyCountRequest) -> None:
    check_hash_key(request.hash_key)


def _validate_batch_get(request: BatchGetRequest) -> None:
    check_key_count("batch_get keys", len(request.keys))
    for hash_key, _sort_key in request.keys:
        check_hash_key(hash_key)


def _validate_get_scanner(request: GetScannerRequest) -> None:
    check_hash_key(request.hash_key)
    check_filter_type("hash_key", request.hash_key_filter_type)
    check_filter_type("sort_key", request.sort_key_filter_type)
    if request.start_after is not None:
        # Must be a stored key this store could have returned: a length header and a hash key.
        hash_key, _sort_key = decode_key(request.start_after)
        check_hash_key(hash_key)


def _validate_nothing(request: ScanRequest | ClearScannerRequest) -> None:
    """A context id needs no check here: an unknown one is answered with SCANNER_EXPIRED."""


_READ_VALIDATORS: dict[type, Callable[[Any], None]] = {
    GetRequest: validate_key_read,
    TtlRequest: validate_key_read,
    MultiGetRequest: validate_multi_get,
    SortKeyCountRequest: _validate_sort_key_count,
    BatchGetRequest: _validate_batch_get,
    GetScannerRequest: _validate_get_scanner,
    ScanRequest: _validate_nothing,
    ClearScannerRequest: _validate_nothing,
}


def validate_read(request: object) -> None:
    """Raise KeyTooLargeError / InvalidArgumentError for a bad read request."""
    validator = _READ_VALIDATORS.get(type(request))
    if validator is None:
        raise InvalidArgumentError(f"{type(request).__name__} is not a read request")
    validator(request)
