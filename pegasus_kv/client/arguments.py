"""Checks of the arguments of the data API, made before a request is built or sent.

Typed errors at the call site beat a codec error from the server: a str where bytes belong, a
bool where an int belongs, a bare bytes value where a list of sort keys belongs.
"""

from __future__ import annotations

from collections.abc import Iterable

from pegasus_kv.client.values import require_bytes
from pegasus_kv.core.errors import InvalidArgumentError
from pegasus_kv.core.messages import CheckType
from pegasus_kv.core.schema import check_hash_key

# Rows per scan batch a caller may ask for (the server caps it lower, at its own maximum).
MAX_SCAN_BATCH = 10_000


def require_hash_key(hash_key: bytes) -> bytes:
    """Operations on a whole hash key need one: records with an empty hash key are spread over
    partitions by their sort keys, so "all of them" is not in one place (Pegasus refuses it too)."""
    if type(hash_key) is not bytes:  # the common case skips the call
        require_bytes("hash_key", hash_key)
    if not hash_key:
        raise InvalidArgumentError("this operation needs a non-empty hash_key")
    check_hash_key(hash_key)
    return hash_key


def require_int(what: str, value: object) -> int:
    if type(value) is int:
        return value
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgumentError(f"{what} must be an int, got {type(value).__name__}")
    return value


def as_check_type(value: object) -> CheckType:
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return CheckType(value)
        except ValueError:
            pass
    raise InvalidArgumentError(f"unknown check type {value!r}")


def sort_key_list(sort_keys: object) -> list[bytes]:
    """A copy of the caller's sort keys (the request must not change if the caller's list does)."""
    if type(sort_keys) is list or type(sort_keys) is tuple:  # the common case, without an ABC check
        keys: list[bytes] = list(sort_keys)
        for key in keys:
            if type(key) is not bytes:
                return [require_bytes("sort_key", sort_key) for sort_key in keys]
        return keys
    if isinstance(sort_keys, bytes | str) or not isinstance(sort_keys, Iterable):
        raise InvalidArgumentError("sort_keys must be a collection of bytes values")
    return [require_bytes("sort_key", sort_key) for sort_key in sort_keys]


def check_batch_size(batch_size: int) -> int:
    require_int("batch_size", batch_size)
    if not 0 < batch_size <= MAX_SCAN_BATCH:
        raise InvalidArgumentError(f"batch_size must be in 1..{MAX_SCAN_BATCH}, got {batch_size}")
    return batch_size
