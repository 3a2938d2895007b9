"""Invariant checks for the replica runtime that survive `python -O` (plain `assert` does not)."""

from __future__ import annotations

from typing import NoReturn

from pegasus_kv.core.invariants import InvariantViolation, check_invariant


class ReplicaInvariantError(InvariantViolation):
    """A condition the replica runtime relies on does not hold: a bug, never a user error."""


def invariant(condition: bool, message: str) -> None:
    check_invariant(condition, message, ReplicaInvariantError)


def violated(message: str) -> NoReturn:
    """Raise ReplicaInvariantError(message): for checks on hot paths, written
    `if not condition: violated(f"...")` so the message is formatted only when the check fails."""
    raise ReplicaInvariantError(message)
