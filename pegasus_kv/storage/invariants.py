"""Invariant checks that survive `python -O` (plain `assert` statements do not)."""

from __future__ import annotations

from pegasus_kv.core.invariants import InvariantViolation, check_invariant

__all__ = ["InvariantViolation", "invariant"]


def invariant(condition: bool, message: str) -> None:
    """A condition the storage relies on does not hold: a bug, never a user error."""
    check_invariant(condition, message)
