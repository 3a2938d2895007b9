"""Tunables of the async client, with the limits every call runs under."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pegasus_kv.core.errors import InvalidArgumentError
from pegasus_kv.replication.connection_pool import Backoff

DEFAULT_TIMEOUT_S = 5.0


def check_timeout_s(what: str, timeout_s: float) -> None:
    if not (isinstance(timeout_s, int | float) and timeout_s > 0 and math.isfinite(timeout_s)):
        raise InvalidArgumentError(f"{what} must be a positive number of seconds, got {timeout_s!r}")


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """How the client times, retries and bounds its calls.

    timeout_s: the default overall time of one call (every operation takes `timeout=` to override
        it). Retries happen inside it; when it runs out the call raises PegasusTimeoutError.
    attempt_timeout_s: the longest one attempt may wait for its reply before the call retries
        (after refreshing the partition configuration); None lets one attempt use all the time
        left. A cap helps a call move on from a primary that hangs (SIGSTOP, a dead host) once meta
        names a new one.
    retry_backoff: the sleep between attempts: doubles per failure up to its cap, with jitter so
        that many clients that failed together do not retry in lockstep.
    redial_backoff: how soon the connection pool dials again an address that refused it.
    connect_timeout_s: the longest one TCP connect may take.
    max_partition_fanout: how many partitions one batch_get (or unordered-scanner setup) talks to
        at the same time.
    max_follow_ups: how many times in a row a call retries at once, without backing off, because
        a refreshed configuration named a new primary (a bound against configurations flapping).
    """

    timeout_s: float = DEFAULT_TIMEOUT_S
    attempt_timeout_s: float | None = None
    retry_backoff: Backoff = field(default_factory=lambda: Backoff(initial_s=0.01, max_s=1.0, jitter=0.5))
    redial_backoff: Backoff = field(default_factory=lambda: Backoff(initial_s=0.05, max_s=1.0, jitter=0.5))
    connect_timeout_s: float = 3.0
    max_partition_fanout: int = 64
    max_follow_ups: int = 3

    def __post_init__(self) -> None:
        check_timeout_s("timeout_s", self.timeout_s)
        if self.attempt_timeout_s is not None:
            check_timeout_s("attempt_timeout_s", self.attempt_timeout_s)
        check_timeout_s("connect_timeout_s", self.connect_timeout_s)
        if self.max_partition_fanout <= 0:
            raise InvalidArgumentError("max_partition_fanout must be positive")
        if self.max_follow_ups < 0:
            raise InvalidArgumentError("max_follow_ups must be >= 0")
