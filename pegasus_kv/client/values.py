"""Small values the client API takes and returns: filters, mutations, results.

Semantics follow reference/pegasus-features.md (multi_get's `complete` flag, check_and_set's
result that is not an error when the check fails, the put / delete mutations of check_and_mutate).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pegasus_kv.core.errors import InvalidArgumentError
from pegasus_kv.core.messages import FilterType, Mutate, MutateOperation
from pegasus_kv.core.validation import MAX_KEYS_PER_REQUEST, check_put_ttl

_FILTER_TYPES = frozenset(FilterType)


def require_bytes(what: str, value: object) -> bytes:
    """Keys and values are bytes: a str would only fail later, on the server, as a codec error."""
    if not isinstance(value, bytes):
        raise InvalidArgumentError(f"{what} must be bytes, got {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class Filter:
    """A hash-key or sort-key filter of multi_get and scans: `Filter.prefix(b"user:")`."""

    type: FilterType
    pattern: bytes

    def __post_init__(self) -> None:
        require_bytes("filter pattern", self.pattern)
        if self.type not in _FILTER_TYPES:
            raise InvalidArgumentError(f"unknown filter type {self.type!r}")

    @classmethod
    def prefix(cls, pattern: bytes) -> Filter:
        return cls(FilterType.MATCH_PREFIX, pattern)

    @classmethod
    def postfix(cls, pattern: bytes) -> Filter:
        return cls(FilterType.MATCH_POSTFIX, pattern)

    @classmethod
    def anywhere(cls, pattern: bytes) -> Filter:
        return cls(FilterType.MATCH_ANYWHERE, pattern)


NO_FILTER_FIELDS = (FilterType.NO_FILTER, b"")


def filter_fields(value: Filter | None) -> tuple[FilterType, bytes]:
    """The (type, pattern) pair the wire messages carry; no filter is (NO_FILTER, b"")."""
    if value is None:
        return NO_FILTER_FIELDS
    if not isinstance(value, Filter):
        raise InvalidArgumentError(f"a filter must be a Filter, got {type(value).__name__}")
    return value.type, value.pattern


class Mutations:
    """The puts and deletes check_and_mutate applies atomically when its check passes.

    mutations = Mutations().put(b"a", b"1", ttl=60).delete(b"b")
    """

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: list[Mutate] = []

    def put(self, sort_key: bytes, value: bytes, ttl: int = 0) -> Mutations:
        """Set sort_key to value; ttl in seconds, 0 = no TTL."""
        require_bytes("sort_key", sort_key)
        require_bytes("value", value)
        check_put_ttl(ttl)
        return self._add(Mutate(MutateOperation.PUT, sort_key, value, ttl))

    def delete(self, sort_key: bytes) -> Mutations:
        require_bytes("sort_key", sort_key)
        return self._add(Mutate(MutateOperation.DELETE, sort_key))

    def _add(self, mutate: Mutate) -> Mutations:
        if len(self._items) >= MAX_KEYS_PER_REQUEST:
            raise InvalidArgumentError(f"check_and_mutate takes at most {MAX_KEYS_PER_REQUEST} mutations")
        self._items.append(mutate)
        return self

    def to_list(self) -> list[Mutate]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Mutate]:
        return iter(list(self._items))

    def __repr__(self) -> str:
        return f"Mutations({self._items!r})"


@dataclass(frozen=True, slots=True)
class MultiGetResult:
    """What multi_get found: sort key -> value in sort-key order (descending when reverse).

    complete is False when a limit (max_kv_count, max_kv_size, or the server's own caps) stopped
    the read with records of the range left unread: read on from the last sort key.
    Values are b"" when the call asked for no_value.
    """

    items: dict[bytes, bytes]
    complete: bool


@dataclass(frozen=True, slots=True)
class CheckAndSetResult:
    """passed: the check held and the set was applied (a failed check is not an error).

    check_value_exist / check_value: the checked record, filled only when the call asked for
    return_check_value (otherwise False / None).
    """

    passed: bool
    check_value_exist: bool = False
    check_value: bytes | None = None


@dataclass(frozen=True, slots=True)
class CheckAndMutateResult:
    """passed: the check held and every mutation was applied, atomically (else none was).

    check_value_exist / check_value as in CheckAndSetResult.
    """

    passed: bool
    check_value_exist: bool = False
    check_value: bytes | None = None
