"""Invariant checks that survive `python -O` (DESIGN.md section 10, TigerBeetle's style).

Every subsystem raises its own subclass of InvariantViolation, so a report names where the broken
assumption lives, while callers (tests, the simulator, a server's last-resort handler) can catch
them all by the base class. A violation is a bug, never bad input: bad input gets a PegasusError.
"""

from __future__ import annotations


class InvariantViolation(AssertionError):
    """A broken internal assumption."""


def check_invariant(
    condition: bool, message: str, error: type[InvariantViolation] = InvariantViolation
) -> None:
    # An explicit raise, unlike `assert`, is kept under `python -O`.
    if not condition:
        raise error(message)
