"""Invariant checks of the replica side that survive `python -O`.

A broken replica invariant means a lost or diverged write, so the checks raise ReplicaInvariantError
explicitly instead of using `assert` (which -O strips). One condition per call, with a message that
names what broke (TigerBeetle style, DESIGN.md section 10). The cores never catch it: a runtime that
sees it must stop the replica (its state can no longer be trusted).
"""

from __future__ import annotations

from typing import NoReturn

from pegasus_kv.core.invariants import InvariantViolation, check_invariant


class ReplicaInvariantError(InvariantViolation):
    """A replica invariant does not hold: a bug, or a runtime that broke the Ready contract."""


def require(condition: bool, message: str) -> None:
    """Raise ReplicaInvariantError(message) unless condition holds (kept under python -O)."""
    check_invariant(condition, message, ReplicaInvariantError)


def violated(message: str) -> NoReturn:
    """Raise ReplicaInvariantError(message). For checks on hot paths, written
    `if not condition: violated(f"...")`, so that the message (often with the replica's repr) is
    formatted only when the check fails: formatting it for every passing check cost several percent
    of a replica server's CPU under load."""
    raise ReplicaInvariantError(message)
