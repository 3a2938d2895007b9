"""Invariant checks for the replica runtime that survive `python -O` (plain `assert` does not)."""

from __future__ import annotations

from pegasus_kv.core.invariants import InvariantViolation, check_invariant


class ReplicaInvariantError(InvariantViolation):
    """A condition the replica runtime relies on does not hold: a bug, never a user error."""


def invariant(condition: bool, message: str) -> None:
    check_invariant(condition, message, ReplicaInvariantError)
