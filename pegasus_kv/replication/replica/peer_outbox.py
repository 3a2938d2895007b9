"""One-way messages to other replica servers: in order per peer, bounded, never in the caller's way.

The replica core hands out messages (prepares, acks, group checks, learn answers) from inside an
event; the tick loop must not wait for a slow or dead peer. A message to a peer with a live
connection that can take it now, and nothing queued ahead of it, is written at once (no task, no
pass of the event loop: on onebox that hop was on the critical path of every prepare and ack).
Otherwise the peer gets a bounded queue and one task that drains it through the connection pool,
dialling if needed. Either way messages to one peer leave in the order the cores produced them
(a secondary then sees prepares in decree order and rarely answers GAP). A full
queue drops the new message and counts it: PacificA tolerates loss (prepares are resent on GAP and
timeouts, group checks repeat, learners retry), and an unbounded queue behind a dead peer would not.
A peer that cannot be reached drops what is queued for it (the pool is in redial backoff).
"""

from __future__ import annotations

import asyncio
import collections
import logging

from pegasus_kv.core.errors import CodecError, PegasusError
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.connection_pool import ConnectionPool
from pegasus_kv.replication.pacifica.config import NodeAddress
from pegasus_kv.replication.replica.invariants import invariant

logger = logging.getLogger(__name__)

# Peers with a queue at once (one replica server talks to at most the servers sharing partitions).
MAX_PEERS = 10_000


class PeerOutbox:
    def __init__(self, pool: ConnectionPool, *, max_queued_per_peer: int, timeout_s: float) -> None:
        invariant(max_queued_per_peer >= 1, "a peer queue holds at least one message")
        self._pool = pool
        self._max_queued = max_queued_per_peer
        self._timeout_s = timeout_s
        self._queues: dict[NodeAddress, collections.deque[Message]] = {}
        self._tasks: dict[NodeAddress, asyncio.Task[None]] = {}
        self._closed = False
        self.dropped = 0  # messages not sent: queue full, peer unreachable, or too many peers
        self.sent = 0

    def send(self, to: NodeAddress, message: Message) -> None:
        """Queue `message` for `to`; returns at once."""
        if self._closed:
            return
        queue = self._queues.get(to)
        if queue is None:
            try:
                if self._pool.try_send_oneway(to, message):
                    self.sent += 1
                    return
            except CodecError as exc:
                self.dropped += 1
                logger.error("cannot send %s to %s: %s", type(message).__name__, to, exc)
                return
            if len(self._queues) >= MAX_PEERS:
                self.dropped += 1
                return
            queue = self._queues[to] = collections.deque()
        if len(queue) >= self._max_queued:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                logger.warning("queue to %s is full (%d messages): dropping", to, len(queue))
            return
        queue.append(message)
        if to not in self._tasks:
            task = asyncio.get_running_loop().create_task(self._drain(to, queue), name=f"to peer {to}")
            self._tasks[to] = task

    def queued(self, to: NodeAddress) -> int:
        queue = self._queues.get(to)
        return len(queue) if queue is not None else 0

    async def _drain(self, to: NodeAddress, queue: collections.deque[Message]) -> None:
        try:
            while queue and not self._closed:
                message = queue[0]
                try:
                    await self._pool.send_oneway(to, message, timeout_s=self._timeout_s)
                except CodecError as exc:
                    # This one message cannot be framed (over the frame limit): a bug or a bound
                    # the core does not know; the peer is fine, the rest of the queue goes on.
                    queue.popleft()
                    self.dropped += 1
                    logger.error("cannot send %s to %s: %s", type(message).__name__, to, exc)
                    continue
                except PegasusError as exc:
                    # Unreachable (or in backoff): what waits for it is stale by the time it is back.
                    self.dropped += len(queue)
                    logger.debug("dropping %d message(s) to %s: %s", len(queue), to, exc)
                    queue.clear()
                    break
                queue.popleft()
                self.sent += 1
        finally:
            # Runs without yielding after the last send, so `send` never sees a task that is about
            # to stop with messages left in its queue.
            del self._tasks[to]
            if not queue:
                self._queues.pop(to, None)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._queues.clear()
