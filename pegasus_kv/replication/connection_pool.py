"""One connection per peer address, dialled lazily and redialled with capped, jittered backoff.

A call to an address without a live connection dials it (callers arriving meanwhile share that one
attempt). A failed attempt puts the address in backoff: until the next attempt is due, calls fail
at once with NetworkError instead of queueing behind a dead peer, and the caller's own retry loop
(the client refreshes its configuration on NETWORK, which is retriable) decides what to do. The
delay doubles with every consecutive failure up to `max_s`, and a random part keeps many clients
that lost the same server from redialling in lockstep. Randomness is injected (DESIGN.md section 10).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Protocol

from pegasus_kv.core.errors import (
    BusyError,
    InvalidArgumentError,
    NetworkError,
    PegasusError,
    PegasusTimeoutError,
    ShuttingDownError,
)
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.transport import (
    Connection,
    ConnectionLimits,
    check_timeout,
    invariant,
    parse_address,
)

logger = logging.getLogger(__name__)

# Backoff exponents beyond this add nothing (the cap is reached long before) and would overflow.
_MAX_EXPONENT = 64


class RandomSource(Protocol):
    def random(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before redialling after `failures` consecutive failed attempts.

    delay = min(max_s, initial_s * multiplier ** (failures - 1)), of which the fraction `jitter`
    is random: the result lies in [delay * (1 - jitter), delay].
    """

    initial_s: float = 0.05
    max_s: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise InvalidArgumentError("backoff needs 0 < initial_s <= max_s")
        if self.multiplier < 1:
            raise InvalidArgumentError("backoff multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise InvalidArgumentError("backoff jitter is a fraction in [0, 1]")

    def delay_s(self, failures: int, rng: RandomSource) -> float:
        invariant(failures >= 1, "backoff is for a failed attempt")
        exponent = min(failures - 1, _MAX_EXPONENT)
        delay = min(self.max_s, self.initial_s * self.multiplier**exponent)
        draw = rng.random()
        invariant(0.0 <= draw <= 1.0, "random source must return a number in [0, 1]")
        return delay * (1.0 - self.jitter * draw)


@dataclass(slots=True)
class _Peer:
    """Dialling state of one address."""

    address: str
    dialling: asyncio.Task[Connection] | None = None
    failures: int = 0  # consecutive failed attempts
    retry_at: float = 0.0  # loop time before which we do not dial again
    last_error: str = ""


class ConnectionPool:
    """Connections keyed by `host:port` (host may be a DNS name), shared by every caller."""

    def __init__(
        self,
        *,
        limits: ConnectionLimits | None = None,
        backoff: Backoff | None = None,
        rng: RandomSource | None = None,
        connect_timeout_s: float = 3.0,
        max_peers: int = 4096,
    ) -> None:
        check_timeout(connect_timeout_s)
        if max_peers <= 0:
            raise InvalidArgumentError("max_peers must be positive")
        self._limits = limits or ConnectionLimits()
        self._backoff = backoff or Backoff()
        self._rng: RandomSource = rng if rng is not None else random.Random()
        self._connect_timeout_s = connect_timeout_s
        self._max_peers = max_peers
        self._connections: dict[str, Connection] = {}  # live ones only
        self._peers: dict[str, _Peer] = {}
        self._dials: set[asyncio.Task[Connection]] = set()
        self._closed = False
        self.dial_attempts = 0  # for operators and tests: how often we knocked

    # --- calls ---

    async def call(
        self, address: str, message: Message, *, gpid: Gpid | None = None, timeout_s: float
    ) -> Message:
        """Send a request to `address` and return its reply (see Connection.call for the errors)."""
        connection = self._connections.get(address)
        if connection is not None and not connection.closed:
            return await connection.call(message, gpid=gpid, timeout_s=timeout_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        connection = await self.connection(address, timeout_s=timeout_s)
        return await connection.call(message, gpid=gpid, timeout_s=_remaining_s(deadline, loop, address))

    async def send_oneway(
        self, address: str, message: Message, *, gpid: Gpid | None = None, timeout_s: float
    ) -> None:
        connection = self._connections.get(address)
        if connection is None or connection.closed:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            connection = await self.connection(address, timeout_s=timeout_s)
            timeout_s = _remaining_s(deadline, loop, address)
        await connection.send_oneway(message, gpid=gpid, timeout_s=timeout_s)

    def try_send_oneway(self, address: str, message: Message, *, gpid: Gpid | None = None) -> bool:
        """Send at once over a live connection with room (Connection.try_send_oneway); False, having
        sent nothing, when there is none or it would have to wait: then use send_oneway."""
        connection = self._connections.get(address)
        if connection is None or connection.closed:
            return False
        return connection.try_send_oneway(message, gpid=gpid)

    def live(self, address: str) -> Connection | None:
        """The open connection to `address` if there is one now (no dialling, no waiting)."""
        connection = self._connections.get(address)
        # Connection.closed, inlined: once per client call.
        if connection is None or connection._closed_as is not None:
            return None
        return connection

    async def connection(self, address: str, *, timeout_s: float) -> Connection:
        """The live connection to `address`, dialling it if needed (NetworkError while in backoff)."""
        check_timeout(timeout_s)
        if self._closed:
            raise ShuttingDownError("the connection pool is closed")
        connection = self._connections.get(address)
        if connection is not None and not connection.closed:
            return connection
        parse_address(address)  # a malformed address is the caller's error, not the peer's
        peer = self._peer(address)
        dial = peer.dialling
        if dial is None:
            loop = asyncio.get_running_loop()
            wait_s = peer.retry_at - loop.time()
            if wait_s > 0:
                raise NetworkError(
                    f"{address} is unreachable ({peer.last_error}); next attempt in {wait_s * 1000:.0f} ms"
                )
            dial = peer.dialling = loop.create_task(self._dial(peer), name=f"dial {address}")
            self._dials.add(dial)
            dial.add_done_callback(self._dial_done)
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(dial)
        except TimeoutError:
            raise PegasusTimeoutError(f"connecting to {address} took longer than {timeout_s}s") from None

    def is_connected(self, address: str) -> bool:
        return address in self._connections

    def is_dialling(self, address: str) -> bool:
        peer = self._peers.get(address)
        return peer is not None and peer.dialling is not None

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Fail every pending call with ShuttingDownError, close every socket, leave no task behind."""
        if self._closed:
            return
        self._closed = True
        dials = list(self._dials)
        for dial in dials:
            dial.cancel()
        connections = list(self._connections.values())
        self._connections.clear()
        await asyncio.gather(
            *(connection.close() for connection in connections), *dials, return_exceptions=True
        )
        invariant(not self._dials, "a dial outlived the pool")

    # --- internals ---

    def _peer(self, address: str) -> _Peer:
        peer = self._peers.get(address)
        if peer is not None:
            return peer
        if len(self._peers) >= self._max_peers:
            # Forget addresses we are neither connected to nor dialling (their backoff goes too).
            for stale in [
                a for a, p in self._peers.items() if p.dialling is None and a not in self._connections
            ]:
                del self._peers[stale]
            if len(self._peers) >= self._max_peers:
                raise BusyError(f"the pool already tracks {len(self._peers)} peers")
        peer = self._peers[address] = _Peer(address)
        return peer

    async def _dial(self, peer: _Peer) -> Connection:
        loop = asyncio.get_running_loop()
        current = self._connections.get(peer.address)
        invariant(current is None or current.closed, "dialling a peer we hold a live connection to")
        self.dial_attempts += 1
        try:
            connection = await Connection.open(
                peer.address,
                connect_timeout_s=self._connect_timeout_s,
                limits=self._limits,
                on_lost=self._connection_lost,
            )
        except PegasusError as exc:
            peer.failures += 1
            delay_s = self._backoff.delay_s(peer.failures, self._rng)
            peer.retry_at = loop.time() + delay_s
            peer.last_error = exc.message
            logger.info(
                "dialling %s failed %d time(s) in a row (%s); next attempt in %.0f ms",
                peer.address,
                peer.failures,
                exc.message,
                delay_s * 1000,
            )
            raise
        except asyncio.CancelledError:
            if self._closed:
                # Callers sharing this dial see the pool's reason, not a bare cancellation.
                raise ShuttingDownError("the connection pool is closed") from None
            raise
        finally:
            peer.dialling = None
        if self._closed:
            connection.close_nowait()
            raise ShuttingDownError("the connection pool is closed")
        peer.failures = 0
        peer.retry_at = 0.0
        self._connections[peer.address] = connection
        return connection

    def _dial_done(self, dial: asyncio.Task[Connection]) -> None:
        self._dials.discard(dial)
        if not dial.cancelled():
            dial.exception()  # retrieved here: every caller may have timed out already

    def _connection_lost(self, connection: Connection) -> None:
        # The next call redials at once: only failed dials back off.
        if self._connections.get(connection.address) is connection:
            del self._connections[connection.address]


def _remaining_s(deadline: float, loop: asyncio.AbstractEventLoop, address: str) -> float:
    remaining_s = deadline - loop.time()
    if remaining_s <= 0:
        raise PegasusTimeoutError(f"the timeout ran out while connecting to {address}")
    return remaining_s
