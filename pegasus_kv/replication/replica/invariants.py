"""Invariant checks for the replica runtime that survive `python -O` (plain `assert` does not)."""

from __future__ import annotations


class ReplicaInvariantError(AssertionError):
    """A condition the replica runtime relies on does not hold: a bug, never a user error."""


def invariant(condition: bool, message: str) -> None:
    if not condition:
        raise ReplicaInvariantError(message)
