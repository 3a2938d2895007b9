"""Requests from a replica server to the meta servers: find the leader, follow redirects, stay bounded.

Several metas may run with one leader (DESIGN.md section 5). A meta that does not lead answers
NotLeaderError whose message is the leader's "host:port" (or something else when it does not know).
`call` asks the last leader first, follows a redirect at once, and otherwise walks the list of meta
addresses, each attempt with its own timeout. `submit` runs a call in the background and hands the
answer to a callback: beacons, config syncs and proposals must never hold up the tick loop. Nothing
is retried here: the node core repeats beacons, syncs and proposals on its own timers, so a lost
request only costs one period.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from pegasus_kv.core.errors import InvalidArgumentError, NetworkError, NotLeaderError, PegasusError
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.connection_pool import ConnectionPool
from pegasus_kv.replication.replica.invariants import invariant
from pegasus_kv.replication.transport import parse_address

logger = logging.getLogger(__name__)


def leader_named_by(error: NotLeaderError) -> str | None:
    try:
        parse_address(error.message)
    except InvalidArgumentError:
        return None
    return error.message


class MetaLink:
    def __init__(
        self,
        pool: ConnectionPool,
        addresses: Sequence[str],
        *,
        timeout_s: float,
        max_in_flight: int,
    ) -> None:
        invariant(len(addresses) > 0, "a meta link needs at least one meta address")
        invariant(max_in_flight >= 1, "max_in_flight must be positive")
        self._pool = pool
        self.addresses = tuple(addresses)
        self._timeout_s = timeout_s
        self._max_in_flight = max_in_flight
        self._leader: str | None = None
        self._cursor = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.dropped = 0  # submissions refused because max_in_flight calls were running
        self.failures = 0  # calls that reached no leader

    @property
    def leader(self) -> str | None:
        """The meta that answered last (None until one did)."""
        return self._leader

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def call(self, message: Message) -> Message:
        """The leader's answer to `message`; raises the last error when no meta answered."""
        error: PegasusError = NetworkError("no meta server was tried")
        redirects = 0
        attempts = 0
        max_attempts = len(self.addresses) + 2
        while attempts < max_attempts:
            attempts += 1
            address = self._leader or self.addresses[self._cursor]
            try:
                reply = await self._pool.call(address, message, timeout_s=self._timeout_s)
            except NotLeaderError as exc:
                error = exc
                leader = leader_named_by(exc)
                if leader is not None and leader != address and redirects < max_attempts:
                    redirects += 1
                    attempts -= 1  # a redirect is not a failed attempt
                    self._leader = leader
                    continue
                self._move_on_from(address)
                continue
            except PegasusError as exc:
                if not exc.retriable:
                    raise  # meta refused the request itself (an invalid proposal, say)
                error = exc
                self._move_on_from(address)
                continue
            self._leader = address
            return reply
        self.failures += 1
        raise error

    def submit(self, message: Message, on_reply: Callable[[Message], None]) -> bool:
        """Run `call(message)` in the background and pass the answer to on_reply (not on failure).

        Returns False (and drops the request) when max_in_flight calls are already running.
        """
        if len(self._tasks) >= self._max_in_flight:
            self.dropped += 1
            return False
        task = asyncio.get_running_loop().create_task(
            self._call_then(message, on_reply), name=f"meta {type(message).__name__}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _call_then(self, message: Message, on_reply: Callable[[Message], None]) -> None:
        try:
            reply = await self.call(message)
        except PegasusError as exc:
            logger.debug("%s to meta failed: %s", type(message).__name__, exc)
            return
        on_reply(reply)

    def _move_on_from(self, address: str) -> None:
        if self._leader == address:
            self._leader = None
        if self.addresses[self._cursor] == address:
            self._cursor = (self._cursor + 1) % len(self.addresses)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
