"""One data request to the primary of one partition, retried within the call's deadline.

The loop of every point operation and of each partition of batch_get: send to the primary the
cached configuration names; on a retriable error refresh the configuration (once for all callers
that saw the same stale one) and go again, at once when the refresh named a new primary for the
partition, else after a backoff. Scanners run their own loop (scanner.py) since what they send
depends on what happened before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn, TypeVar

from pegasus_kv.client.retry import (
    AttemptFailed,
    Deadline,
    may_retry,
    needs_refresh,
    outcome_unknown,
    timed_out,
)
from pegasus_kv.client.routing import RouteCache, TableRoute
from pegasus_kv.client.session import ClientSession, expect_reply, invariant
from pegasus_kv.core.errors import NotPrimaryError, PegasusError
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.pacifica.config import PartitionConfiguration

R = TypeVar("R", bound=Message)

# Which partition a request goes to under a configuration (recomputed after every refresh: the
# partition count may have changed).
Locate = Callable[[TableRoute], int]


def raise_final(failed: AttemptFailed, what: str) -> NoReturn:
    """End the call with the error of an attempt that may not be retried."""
    error = failed.error
    if failed.maybe_applied:
        raise outcome_unknown(what, failed) from error
    raise error from error.__cause__


async def refreshed(routes: RouteCache, seen: TableRoute, deadline: Deadline) -> TableRoute:
    """The configuration after a refresh; a refresh that failed retriably changes nothing.

    Non-retriable failures (the table was dropped) end the call.
    """
    try:
        return await routes.refresh(seen, deadline)
    except PegasusError as exc:
        if not exc.retriable:
            raise
        return routes.current


def _config(route: TableRoute, locate: Locate) -> PartitionConfiguration:
    return route.configs[locate(route)]


async def call_partition(
    session: ClientSession,
    routes: RouteCache,
    locate: Locate,
    request: Message,
    response_type: type[R],
    *,
    deadline: Deadline,
    idempotent: bool,
    write: bool,
    what: str,
) -> R:
    failures = 0
    follow_ups = 0
    while True:
        route = routes.current
        index = locate(route)
        if not 0 <= index < route.partition_count:  # checked on every call: format only on failure
            invariant(False, f"{what}: located partition {index} out of range")
        primary = route.primary(index)
        try:
            if primary is None:
                raise AttemptFailed(
                    NotPrimaryError(f"partition {route.gpid(index)} of {route.name!r} has no primary now"),
                    maybe_applied=False,
                )
            reply = await session.attempt(primary, request, gpid=route.gpid(index), deadline=deadline)
            return expect_reply(reply, response_type, what)
        except AttemptFailed as failed:
            if not may_retry(failed, idempotent=idempotent):
                raise_final(failed, what)
            error = failed.error
        failures += 1
        if deadline.expired:
            raise timed_out(what, deadline, error, write=write) from error
        if needs_refresh(error):
            fresh = await refreshed(routes, route, deadline)
            if (
                _config(fresh, locate) != _config(route, locate)
                and follow_ups < session.options.max_follow_ups
            ):
                follow_ups += 1  # meta named a new primary: go there now
                continue
        await session.pacer.pause(failures, deadline)
        if deadline.expired:
            raise timed_out(what, deadline, error, write=write) from error
