"""Key ranges of multi_get and scans, and the budget that bounds one pass over a range.

A range is a pair of stored keys with inclusive flags. Pegasus builds them the same way
(pegasus_server_impl.cpp on_multi_get / on_get_scanner): an empty stop sort key means "to the end
of the hash key", and a prefix filter on the sort key (or on the hash key, for a full scan)
narrows the range before iterating, since matching keys are contiguous.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pegasus_kv.core.messages import FilterType
from pegasus_kv.core.schema import MAX_HASH_KEY_BYTES, hash_key_prefix, prefix_successor
from pegasus_kv.storage.invariants import InvariantViolation
from pegasus_kv.storage.layout import USER_KEYS_END


@dataclass(frozen=True, slots=True)
class KeyRange:
    start: bytes
    start_inclusive: bool
    stop: bytes
    stop_inclusive: bool

    def is_empty(self) -> bool:
        if self.start > self.stop:
            return True
        return self.start == self.stop and not (self.start_inclusive and self.stop_inclusive)

    def before_stop(self, key: bytes) -> bool:
        return key < self.stop or (self.stop_inclusive and key == self.stop)

    def after_start(self, key: bytes) -> bool:
        return key > self.start or (self.start_inclusive and key == self.start)

    def upper_bound(self) -> bytes:
        """The exclusive bound to give RocksDB (the smallest key after an inclusive stop)."""
        return self.stop + b"\x00" if self.stop_inclusive else self.stop

    def after(self, key: bytes) -> KeyRange:
        """What is left of this range once every key up to `key` has been seen."""
        if key < self.start:
            return self
        return KeyRange(key, False, self.stop, self.stop_inclusive)


EMPTY_RANGE = KeyRange(b"", False, b"", False)


def _successor(prefix: bytes) -> bytes:
    successor = prefix_successor(prefix)
    # A stored-key prefix starts with a u16 length below 0xFFFF, so it is never all 0xFF.
    if successor is None:
        raise InvariantViolation(f"stored-key prefix {prefix[:8]!r}... has no successor")
    return successor


def sort_key_range(
    hash_key: bytes,
    start_sort_key: bytes,
    start_inclusive: bool,
    stop_sort_key: bytes,
    stop_inclusive: bool,
    sort_key_filter_type: FilterType,
    sort_key_filter_pattern: bytes,
) -> KeyRange:
    """The stored keys of one hash key between two sort keys (empty stop = to the end)."""
    prefix = hash_key_prefix(hash_key)
    start = prefix + start_sort_key
    if stop_sort_key:
        stop = prefix + stop_sort_key
    else:
        stop, stop_inclusive = _successor(prefix), False
    if sort_key_filter_type == FilterType.MATCH_PREFIX and sort_key_filter_pattern:
        pattern_start = prefix + sort_key_filter_pattern
        pattern_stop = _successor(pattern_start)
        if pattern_start > start:
            start, start_inclusive = pattern_start, True
        if pattern_stop <= stop:
            stop, stop_inclusive = pattern_stop, False
    return KeyRange(start, start_inclusive, stop, stop_inclusive)


def partition_range(hash_key_filter_type: FilterType, hash_key_filter_pattern: bytes) -> KeyRange:
    """Every user key of the partition, or those that can match a hash-key prefix filter.

    Stored keys order hash keys by length first, so a hash-key prefix does not make a contiguous
    range; but no matching key sorts before `len(pattern) | pattern` (Pegasus narrows the start
    only, for the same reason).
    """
    start = b""
    if hash_key_filter_type == FilterType.MATCH_PREFIX and hash_key_filter_pattern:
        if len(hash_key_filter_pattern) > MAX_HASH_KEY_BYTES:
            return EMPTY_RANGE
        start = hash_key_prefix(hash_key_filter_pattern)
    return KeyRange(start, True, USER_KEYS_END, False)


class IterationBudget:
    """Bounds one pass over a range: entries visited, bytes returned, time on the store's clock.

    Like Pegasus's range_read_limiter, the byte bound is checked before taking the next entry, so
    the entry that crosses it is still returned.
    """

    __slots__ = ("_clock", "bytes", "deadline_s", "iterations", "max_bytes", "max_iterations")

    def __init__(self, max_iterations: int, max_bytes: int, time_limit_s: float, clock: Callable[[], float]):
        self.max_iterations = max_iterations
        self.max_bytes = max_bytes
        self._clock = clock
        self.deadline_s = clock() + time_limit_s
        self.iterations = 0
        self.bytes = 0

    def exhausted(self) -> bool:
        return (
            self.iterations >= self.max_iterations
            or self.bytes >= self.max_bytes
            or self._clock() >= self.deadline_s
        )

    def visit(self) -> None:
        self.iterations += 1

    def add_bytes(self, size: int) -> None:
        self.bytes += size
