"""Invariant checks of the replica side that survive `python -O`.

A broken replica invariant means a lost or diverged write, so the checks raise ReplicaInvariantError
explicitly instead of using `assert` (which -O strips). One condition per call, with a message that
names what broke (TigerBeetle style, DESIGN.md section 10). The cores never catch it: a runtime that
sees it must stop the replica (its state can no longer be trusted).
"""

from __future__ import annotations

from pegasus_kv.core.invariants import InvariantViolation, check_invariant


class ReplicaInvariantError(InvariantViolation):
    """A replica invariant does not hold: a bug, or a runtime that broke the Ready contract."""


def require(condition: bool, message: str) -> None:
    """Raise ReplicaInvariantError(message) unless condition holds (kept under python -O)."""
    check_invariant(condition, message, ReplicaInvariantError)
