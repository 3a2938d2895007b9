"""ConfigCommands to replica servers: fire and forget, bounded, never in the caller's way.

Meta tells a replica server to act on a configuration it has already persisted (meta_messages.py).
A command is a one-way frame: the replica server's core takes it as a message and answers nothing.
Losing one is harmless: every server syncs its configuration with meta periodically
(ConfigSyncRequest) and learns the durable configuration from the answer. So a command that cannot
be sent within `timeout_s` (peer down, in redial backoff, buffer full) is logged and dropped, and
so is one that arrives while `max_in_flight` others are still being sent.
"""

from __future__ import annotations

import asyncio
import logging

from pegasus_kv.core.errors import PegasusError
from pegasus_kv.replication.connection_pool import ConnectionPool
from pegasus_kv.replication.pacifica.meta_messages import ConfigCommand
from pegasus_kv.replication.pacifica.meta_ready import Outgoing

logger = logging.getLogger(__name__)


class CommandSender:
    def __init__(self, pool: ConnectionPool, *, timeout_s: float, max_in_flight: int) -> None:
        self._pool = pool
        self._timeout_s = timeout_s
        self._max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()
        self.dropped = 0  # commands not sent because too many were in flight (for operators, tests)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def send(self, outgoing: Outgoing) -> None:
        """Start sending; returns at once."""
        if len(self._tasks) >= self._max_in_flight:
            self.dropped += 1
            logger.warning(
                "dropping %s to %s: %d commands in flight (config sync will repair it)",
                type(outgoing.message).__name__,
                outgoing.to,
                len(self._tasks),
            )
            return
        task = asyncio.get_running_loop().create_task(self._send(outgoing), name=f"command to {outgoing.to}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, outgoing: Outgoing) -> None:
        message = outgoing.message
        gpid = message.config.gpid if isinstance(message, ConfigCommand) else None
        try:
            await self._pool.send_oneway(outgoing.to, message, gpid=gpid, timeout_s=self._timeout_s)
        except PegasusError as exc:
            logger.info("%s to %s not sent: %s", type(message).__name__, outgoing.to, exc)

    async def close(self) -> None:
        """Cancel the sends in flight and wait for them to unwind."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
