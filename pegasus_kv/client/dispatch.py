"""One data request to the primary of one partition, retried within the call's deadline.

The loop of every point operation and of each partition of batch_get: send to the primary the
cached configuration names; on a retriable error refresh the configuration (once for all callers
that saw the same stale one) and go again, at once when the refresh named a new primary for the
partition, else after a backoff. Scanners run their own loop (scanner.py) since what they send
depends on what happened before.
"""

from __future__ import annotations

from collections.abc import Callable
from time import monotonic
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
from pegasus_kv.core.errors import NotPrimaryError, PegasusError, PegasusTimeoutError, ShuttingDownError
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.pacifica.config import PartitionConfiguration

R = TypeVar("R", bound=Message)

# Which partition a request goes to under a configuration (recomputed after every refresh: the
# partition count may have changed).
Locate = Callable[[TableRoute], int]
# Where a call goes: the partition of a record key (hash_key, sort_key), or a Locate. Most calls
# name a key, and a pair costs less than a closure per call.
Target = tuple[bytes, bytes] | Locate


def partition_of(route: TableRoute, target: Target) -> int:
    if isinstance(target, tuple):
        return route.partition_of(target[0], target[1])
    return target(route)


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


def describe(what: str, routes: RouteCache) -> str:
    """ "<operation> on table <name>", for errors only: formatting it per call would cost more than
    the rest of the bookkeeping of a successful call."""
    return f"{what} on table {routes.current.name!r}"


def _config(route: TableRoute, target: Target) -> PartitionConfiguration:
    return route.configs[partition_of(route, target)]


async def call_partition(
    session: ClientSession,
    routes: RouteCache,
    target: Target,
    request: Message,
    response_type: type[R],
    *,
    deadline: Deadline,
    idempotent: bool,
    write: bool,
    what: str,
) -> R:
    """Send `request` to its partition's primary until it succeeds, fails for good or runs out of
    time. `what` names the operation (e.g. "get") in errors, which add the table's name."""
    failures = 0
    follow_ups = 0
    while True:
        route = routes.current
        # partition_of(), inlined with the route's memo of routing keys (TableRoute.partition_of
        # hashes on a miss): once per call.
        if isinstance(target, tuple):
            hash_key, sort_key = target
            index = route._partitions.get(hash_key or sort_key)  # the routing key key_hash hashes
            if index is None:
                index = route.partition_of(hash_key, sort_key)
        else:
            index = target(route)
        if not 0 <= index < route.partition_count:  # checked on every call: format only on failure
            invariant(False, f"{describe(what, routes)}: located partition {index} out of range")
        config = route.configs[index]
        primary = config.primary
        try:
            if primary is None:
                raise AttemptFailed(
                    NotPrimaryError(f"partition {config.gpid} of {route.name!r} has no primary now"),
                    maybe_applied=False,
                )
            # session.attempt(primary, ...), inlined for a live connection (nearly every call): the
            # same checks in the same order and the same failures, one coroutine frame less per call.
            if session._closed:  # not the property: once per call
                raise ShuttingDownError("the client is closed")
            # deadline.attempt_timeout_s(), inlined for a call with time left and no cap per attempt
            # (the client's default); the method otherwise, which raises when the time ran out.
            cap_s = session.options.attempt_timeout_s
            timeout_s = deadline.at - monotonic()
            if timeout_s <= 0 or cap_s is not None:
                try:
                    timeout_s = deadline.attempt_timeout_s(cap_s)
                except PegasusTimeoutError as exc:
                    raise AttemptFailed(exc, maybe_applied=False) from exc
            connection = session.pool.live(primary)
            if connection is None:  # dials: the whole attempt
                reply = await session.attempt(primary, request, gpid=config.gpid, deadline=deadline)
            else:
                # connection.call(), inlined: its future awaited here, one coroutine less per call.
                try:
                    future, request_id, entries = connection.start_call(request, config.gpid, timeout_s)
                    try:
                        reply = await future
                    except BaseException:
                        connection.abandon_call(request_id, entries)
                        raise
                    entries.pop(request_id, None)  # the reply came: forget its deadline
                except PegasusError as exc:
                    session.ensure_open()
                    raise AttemptFailed(exc, maybe_applied=True) from exc
            if type(reply) is response_type:
                return reply  # the check expect_reply makes, inlined
            return expect_reply(reply, response_type, describe(what, routes))
        except AttemptFailed as failed:
            if not may_retry(failed, idempotent=idempotent):
                raise_final(failed, describe(what, routes))
            error = failed.error
        failures += 1
        if deadline.expired:
            raise timed_out(describe(what, routes), deadline, error, write=write) from error
        if needs_refresh(error):
            fresh = await refreshed(routes, route, deadline)
            if (
                _config(fresh, target) != _config(route, target)
                and follow_ups < session.options.max_follow_ups
            ):
                follow_ups += 1  # meta named a new primary: go there now
                continue
        await session.pacer.pause(failures, deadline)
        if deadline.expired:
            raise timed_out(describe(what, routes), deadline, error, write=write) from error
