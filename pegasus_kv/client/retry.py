"""Deadlines, the classification of failed attempts, and the pause between retries.

Every client call has one deadline (its `timeout`). Inside it the call makes attempts; an attempt
that fails with a retriable error (ErrorCode.retriable) is followed, after a refresh of the
partition configuration where that can help and a capped, jittered backoff, by another attempt.
Non-retriable errors end the call at once. When the deadline passes the call raises
PegasusTimeoutError naming the last error.

Writes that are not idempotent (incr, check_and_set, check_and_mutate) are never sent twice when
the first attempt's outcome is unknown: a timeout or a lost connection after the request left may
hide a write that was applied, and applying it again would count it twice. Those calls raise at
once instead (the error says the write may or may not have taken effect). A refusal that proves
nothing was applied (NOT_PRIMARY, BUSY, a connect that failed ...) is retried for every call.
"""

from __future__ import annotations

import asyncio
from time import monotonic

from pegasus_kv.core.errors import (
    ErrorCode,
    NetworkError,
    PegasusError,
    PegasusTimeoutError,
    ShuttingDownError,
)
from pegasus_kv.replication.connection_pool import Backoff, RandomSource

MAYBE_APPLIED_NOTE = "a write that timed out or lost its connection may or may not have taken effect"

# Errors after which asking meta again cannot help (the same primary is just overloaded).
_NO_REFRESH = frozenset({ErrorCode.BUSY})

# Errors whose request may have been executed even though no reply says so.
_OUTCOME_UNKNOWN = (PegasusTimeoutError, NetworkError, ShuttingDownError)


class AttemptFailed(Exception):
    """One attempt of a call failed with `error`.

    maybe_applied is True when the request left this process and no reply proved it was refused,
    so the server may have executed it.
    """

    def __init__(self, error: PegasusError, *, maybe_applied: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.maybe_applied = maybe_applied and isinstance(error, _OUTCOME_UNKNOWN)


class Deadline:
    """The end of one call, on the monotonic clock.

    Not the event loop's clock: asyncio.get_running_loop() costs a getpid() system call (CPython
    checks that the cached loop belongs to this process), once per call. Only durations leave
    this class (remaining_s, attempt_timeout_s), so the two clocks never meet.
    """

    __slots__ = ("at", "timeout_s")

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.at = monotonic() + timeout_s

    def remaining_s(self) -> float:
        return self.at - monotonic()

    @property
    def expired(self) -> bool:
        return self.remaining_s() <= 0

    def attempt_timeout_s(self, cap_s: float | None) -> float:
        """The time one attempt may take: what is left, capped by cap_s; > 0 or raises."""
        remaining_s = self.at - monotonic()  # remaining_s(), inlined: once per attempt
        if remaining_s <= 0:
            raise PegasusTimeoutError(f"the call's {self.timeout_s}s ran out")
        return remaining_s if cap_s is None else min(remaining_s, cap_s)


def needs_refresh(error: PegasusError) -> bool:
    """Whether the partition configuration may have moved on (the primary moved, died, split)."""
    return error.code not in _NO_REFRESH


def may_retry(failure: AttemptFailed, *, idempotent: bool) -> bool:
    if not failure.error.retriable:
        return False
    return idempotent or not failure.maybe_applied


def timed_out(
    what: str, deadline: Deadline, last_error: PegasusError | None, *, write: bool
) -> PegasusTimeoutError:
    """The error a call raises when its deadline passed; names the last attempt's error."""
    reason = f"{what} did not succeed within {deadline.timeout_s}s"
    if last_error is not None:
        reason += f" (last error: {last_error})"
    if write:
        reason += f"; {MAYBE_APPLIED_NOTE}"
    return PegasusTimeoutError(reason)


def outcome_unknown(what: str, failure: AttemptFailed) -> PegasusError:
    """The error a non-idempotent write raises when it may have been applied."""
    error = failure.error
    text = f"{what}: {error.message}; {MAYBE_APPLIED_NOTE}"
    if isinstance(error, PegasusTimeoutError):
        return PegasusTimeoutError(text)
    if isinstance(error, NetworkError):
        return NetworkError(text)
    return type(error)(text)


class Pacer:
    """Sleeps between the attempts of a call: capped exponential backoff with jitter."""

    def __init__(self, backoff: Backoff, rng: RandomSource) -> None:
        self._backoff = backoff
        self._rng = rng

    async def pause(self, failures: int, deadline: Deadline) -> None:
        """Sleep before attempt number failures + 1, never past the deadline."""
        delay_s = self._backoff.delay_s(failures, self._rng)
        remaining_s = deadline.remaining_s()
        if remaining_s > 0:
            await asyncio.sleep(min(delay_s, remaining_s))
