"""Invariant checks that survive `python -O` (plain `assert` statements do not)."""

from __future__ import annotations


class InvariantViolation(AssertionError):
    """A condition the storage relies on does not hold: a bug, never a user error."""


def invariant(condition: bool, message: str) -> None:
    if not condition:
        raise InvariantViolation(message)
