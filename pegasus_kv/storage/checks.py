"""The 18 check types of check_and_set / check_and_mutate, and the sort-key / hash-key filters.

Semantics follow Pegasus's server (pegasus_write_service_impl.h `validate_check`,
pegasus_server_impl.cpp `validate_filter`):
- the record is judged alive or not first (missing and expired are both "does not exist");
- value_not_exist_or_empty passes for a missing or an empty value; value_not_empty needs an
  existing non-empty one;
- match checks fail on a missing value, pass on any existing value for an empty operand, and
  otherwise look for the operand anywhere / at the start / at the end;
- bytes checks compare bytewise (memcmp, then length) and fail on a missing value;
- int checks fail on a missing value; a value, then an operand, that is not a decimal int64 makes
  the call fail with INVALID_ARGUMENT instead of answering "not passed".
Everything here is pure.
"""

from __future__ import annotations

from typing import NamedTuple

from pegasus_kv.core.messages import CheckType, FilterType
from pegasus_kv.core.validation import INT64_MAX, INT64_MIN

_DIGITS = frozenset(b"0123456789")


def parse_int64(data: bytes) -> int | None:
    """A decimal int64 with an optional sign and nothing else (no spaces, no base prefixes)."""
    digits = data[1:] if data[:1] in (b"-", b"+") else data
    if not digits or len(digits) > 19 or not _DIGITS.issuperset(digits):
        return None
    number = int(data)
    if not INT64_MIN <= number <= INT64_MAX:
        return None
    return number


class CheckOutcome(NamedTuple):
    passed: bool
    # Set when an int check met a value or operand that is not an int64: the call fails.
    invalid_reason: str | None = None


_PASSED = CheckOutcome(True)
_FAILED = CheckOutcome(False)


def _outcome(passed: bool) -> CheckOutcome:
    return _PASSED if passed else _FAILED


# Which results of comparing value to operand (-1, 0, 1) pass, for the ordered check types.
_ORDERED: dict[CheckType, frozenset[int]] = {
    CheckType.VALUE_BYTES_LESS: frozenset({-1}),
    CheckType.VALUE_BYTES_LESS_OR_EQUAL: frozenset({-1, 0}),
    CheckType.VALUE_BYTES_EQUAL: frozenset({0}),
    CheckType.VALUE_BYTES_GREATER_OR_EQUAL: frozenset({0, 1}),
    CheckType.VALUE_BYTES_GREATER: frozenset({1}),
    CheckType.VALUE_INT_LESS: frozenset({-1}),
    CheckType.VALUE_INT_LESS_OR_EQUAL: frozenset({-1, 0}),
    CheckType.VALUE_INT_EQUAL: frozenset({0}),
    CheckType.VALUE_INT_GREATER_OR_EQUAL: frozenset({0, 1}),
    CheckType.VALUE_INT_GREATER: frozenset({1}),
}
_INT_CHECKS = frozenset(t for t in _ORDERED if t >= CheckType.VALUE_INT_LESS)


def evaluate_check(check_type: CheckType, operand: bytes, exists: bool, value: bytes) -> CheckOutcome:
    """Does the checked record (alive = `exists`, user value `value`) pass the check?"""
    if check_type == CheckType.NO_CHECK:
        return _PASSED
    if check_type == CheckType.VALUE_NOT_EXIST:
        return _outcome(not exists)
    if check_type == CheckType.VALUE_NOT_EXIST_OR_EMPTY:
        return _outcome(not exists or not value)
    if check_type == CheckType.VALUE_EXIST:
        return _outcome(exists)
    if check_type == CheckType.VALUE_NOT_EMPTY:
        return _outcome(exists and bool(value))
    if not exists:
        return _FAILED
    if check_type == CheckType.VALUE_MATCH_ANYWHERE:
        return _outcome(operand in value)
    if check_type == CheckType.VALUE_MATCH_PREFIX:
        return _outcome(value.startswith(operand))
    if check_type == CheckType.VALUE_MATCH_POSTFIX:
        return _outcome(value.endswith(operand))
    passing = _ORDERED.get(check_type)
    if passing is None:
        return CheckOutcome(False, f"check type {int(check_type)} is not supported")
    if check_type not in _INT_CHECKS:
        return _outcome((value > operand) - (value < operand) in passing)
    value_int = parse_int64(value)
    if value_int is None:
        return CheckOutcome(False, f"check value {value[:64]!r} is not an int64")
    operand_int = parse_int64(operand)
    if operand_int is None:
        return CheckOutcome(False, f"check operand {operand[:64]!r} is not an int64")
    return _outcome((value_int > operand_int) - (value_int < operand_int) in passing)


def matches_filter(filter_type: FilterType, pattern: bytes, data: bytes) -> bool:
    """Pegasus's key filters: an empty pattern matches everything."""
    if filter_type == FilterType.NO_FILTER or not pattern:
        return True
    if filter_type == FilterType.MATCH_ANYWHERE:
        return pattern in data
    if filter_type == FilterType.MATCH_PREFIX:
        return data.startswith(pattern)
    return data.endswith(pattern)  # MATCH_POSTFIX (validation refuses unknown types)
