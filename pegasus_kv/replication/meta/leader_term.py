"""One leadership term of a meta server: a MetaCore over the state loaded from the store, driven by
real timers, its MetaReady executed in the order meta_ready.py prescribes.

    state = await load_meta_state(store)
    term = LeaderTerm(MetaCore(state, options, rng, now_tick=clock.now()), store, ...)
    term.start()
    reply = term.handle(request)          # a Message now, or a future of one (after persisting)
    await term.ended.wait()               # leadership lost, the store failed, or close()
    await term.close()

Executing a MetaReady (meta_ready.py):
1. `send` goes out at once (fire and forget, command_sender.py) and `replies` resolve their callers.
2. `persist` joins the persist queue. ONE persister task appends the queued batches to the store in
   queue order (several coalesced per append, up to max_append_records), so the durable order is the
   core's order; only after an append returned does it call `core.on_persisted(seq)`.
3. Then, and only then, the after-persist commands and replies of every batch now durable go out
   (including those of a MetaReady that persisted nothing but waits on an earlier batch).

Snapshots. After an append, once the store holds snapshot_every_records records since its last
snapshot, the persister writes `core.state` (the durable fold). Appends and snapshots are done by
that one task, one at a time, so at that point the store holds exactly the batches up to
`core.durable_seq`: batches queued behind (core.persist_in_flight may be True) are not in the store
yet, and the snapshot covers precisely what the store holds, as write_snapshot requires. An
invariant checks the event counts agree.

The end of a term. It ends when the store reports leadership lost, when an append or a snapshot
fails (the outcome of that write is unknown: the server must rebuild the core from the store,
meta_ready.py), or on close(). From that moment `active` is False, the server answers NotLeaderError,
no tick runs and no command is sent. An append in flight is allowed to finish (cancelling it could
leave the store's worker thread writing to a file being closed); if it succeeded its replies are
still delivered, since they are true. Callers still waiting get NotLeaderError("") when their batch
never reached the store (nothing was applied: retry anywhere), or ShuttingDownError when it was being
appended as the store failed (it may or may not be durable, which the client reports as such).

Bounds: at most max_pending_persists batches queued and as many callers waiting; at the bound,
requests that may change the state get BUSY (retriable) and ticks are skipped (logged), until the
store catches up. Queries, beacons and config syncs persist nothing and are always served.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

from pegasus_kv.core.errors import BusyError, NotLeaderError, PegasusError, ShuttingDownError, StorageError
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.meta.admin_messages import ClusterInfoRequest, ClusterInfoResponse
from pegasus_kv.replication.meta.command_sender import CommandSender
from pegasus_kv.replication.meta.handlers import MAY_CHANGE_STATE, cluster_info, describe_event
from pegasus_kv.replication.meta.store import MetaStore
from pegasus_kv.replication.meta.tick_clock import TickClock
from pegasus_kv.replication.pacifica.meta_core import MetaCore
from pegasus_kv.replication.pacifica.meta_events import MetaEvent, decode_event, encode_event
from pegasus_kv.replication.pacifica.meta_invariants import invariant
from pegasus_kv.replication.pacifica.meta_ready import MetaReady, Reply
from pegasus_kv.replication.pacifica.meta_state import MetaState, decode_snapshot, encode_snapshot

logger = logging.getLogger(__name__)

# How long close() lets an append or snapshot in flight finish before cancelling it.
CLOSE_PERSIST_GRACE_S = 10.0


class MetaLogCorruptError(StorageError):
    """A snapshot or record of the meta log does not decode: damage, not a crash (never retried)."""


async def load_meta_state(store: MetaStore) -> MetaState:
    """Fold the store's snapshot and the records after it (MetaInvariantError if they do not fit)."""
    log = await store.load()
    if log.snapshot is None:
        state = MetaState()
    else:
        try:
            snapshot = decode_snapshot(log.snapshot)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise MetaLogCorruptError(f"the meta snapshot does not decode: {exc}") from exc
        state = MetaState.restore(snapshot)
    for index, record in enumerate(log.records):
        try:
            event = decode_event(record)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise MetaLogCorruptError(
                f"meta log record {index} after the snapshot does not decode: {exc}"
            ) from exc
        state.apply(event)
    return state


@dataclasses.dataclass(frozen=True, slots=True)
class TermSettings:
    """What a term needs from the server's configuration."""

    cluster_name: str
    address: str  # this meta's advertised host:port
    meta_servers: list[str]
    snapshot_every_records: int
    max_pending_persists: int
    max_append_records: int


@dataclasses.dataclass(frozen=True, slots=True)
class _Batch:
    seq: int
    events: tuple[MetaEvent, ...]


class LeaderTerm:
    def __init__(
        self,
        core: MetaCore,
        store: MetaStore,
        *,
        clock: TickClock,
        sender: CommandSender,
        settings: TermSettings,
        on_event: Callable[[MetaEvent], None] | None = None,
    ) -> None:
        """`on_event` is told each event once it is durable, in log order (metrics)."""
        invariant(store.is_leader, "a leader term over a store that does not lead")
        self._on_event = on_event
        self.core = core
        self.store = store
        self._clock = clock
        self._sender = sender
        self._settings = settings
        self._lost = store.leadership_lost  # the store replaces it after a new campaign: keep ours
        self._loop = asyncio.get_running_loop()
        self._replies: dict[int, asyncio.Future[Message]] = {}
        self._next_reply_to = 1
        self._queue: collections.deque[_Batch] = collections.deque()
        self._wakeup = asyncio.Event()
        self._after_persist: dict[int, list[MetaReady]] = {}  # batch seq -> readies waiting on it
        self._appending_seq = 0  # the newest batch of the append in flight (0: none)
        # Events in the store: the loaded fold plus every event appended since (checked at snapshots).
        self._stored_events = core.state.event_count
        self._tasks: list[asyncio.Task[None]] = []
        self._persister: asyncio.Task[None] | None = None
        self.ended = asyncio.Event()
        self.end_error: BaseException | None = None
        self.skipped_ticks = 0

    # ------------------------------------------------------------------ lifetime

    def start(self) -> None:
        invariant(not self._tasks, "a term starts once")
        self._persister = self._spawn(self._persist_loop(), "meta persister")
        self._spawn(self._tick_loop(), "meta ticks")
        self._spawn(self._watch_leadership(), "meta leadership watch")
        logger.info(
            "meta %s leads: %d tables, %d events folded, tick %d",
            self._settings.address,
            len(self.core.state.tables()),
            self.core.state.event_count,
            self.core.now_tick,
        )

    @property
    def active(self) -> bool:
        """Serving: neither ended nor told by the store that leadership is gone."""
        return not self.ended.is_set() and not self._lost.is_set()

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = self._loop.create_task(self._guarded(coroutine), name=name)
        self._tasks.append(task)
        return task

    async def _guarded(self, coroutine: Coroutine[Any, Any, None]) -> None:
        try:
            await coroutine
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._end(exc)

    def _end(self, error: BaseException | None) -> None:
        if self.ended.is_set():
            return
        self.end_error = error
        self.ended.set()
        if error is None:
            logger.info("meta %s: leader term closed", self._settings.address)
        elif isinstance(error, PegasusError):
            logger.warning("meta %s: leader term ends: %s", self._settings.address, error)
        else:
            logger.error("meta %s: leader term ends on a bug", self._settings.address, exc_info=error)

    async def close(self) -> None:
        """End the term (if it has not ended), let an append in flight finish, fail waiting callers."""
        self._end(None)
        self._wakeup.set()  # the persister sees the end and returns
        persister = self._persister
        for task in self._tasks:
            if task is not persister:
                task.cancel()
        if persister is not None and not persister.done():
            try:
                await asyncio.wait_for(asyncio.shield(persister), CLOSE_PERSIST_GRACE_S)
            except TimeoutError:
                logger.warning(
                    "meta persister did not finish within %ss: cancelling it", CLOSE_PERSIST_GRACE_S
                )
                persister.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._fail_waiting_callers()

    def _fail_waiting_callers(self) -> None:
        unknown_up_to = self._appending_seq  # nonzero only if an append failed or was cancelled
        for seq, readies in sorted(self._after_persist.items()):
            for ready in readies:
                for reply in ready.replies_after_persist:
                    if seq <= unknown_up_to:
                        error: PegasusError = ShuttingDownError(
                            "meta lost the store while persisting this change: it may or may not have "
                            "taken effect"
                        )
                    else:
                        error = NotLeaderError("")
                    self._resolve(reply.reply_to, error)
        self._after_persist.clear()
        for future in self._replies.values():  # none is expected: every token waits on a batch
            if not future.done():
                future.set_exception(NotLeaderError(""))
        self._replies.clear()
        self._queue.clear()

    # ------------------------------------------------------------------ requests

    def handle(self, message: Message) -> Message | asyncio.Future[Message]:
        """The reply to `message`, or a future of it when it waits for a batch to be durable."""
        if not self.active:
            raise NotLeaderError("")
        if isinstance(message, ClusterInfoRequest):
            return self.cluster_info()
        if isinstance(message, MAY_CHANGE_STATE) and self._backlog_full():
            raise BusyError(f"meta has {len(self._queue)} changes waiting to be persisted; retry in a moment")
        reply_to = self._next_reply_to
        self._next_reply_to += 1
        future: asyncio.Future[Message] = self._loop.create_future()
        self._replies[reply_to] = future
        try:
            ready = self.core.on_request(message, reply_to, self._clock.now())
        except Exception as exc:
            # on_request turns operating errors into replies: anything escaping it is a bug, and the
            # core may be half-way through a change. Stop using it.
            del self._replies[reply_to]
            self._end(exc)
            raise
        self._execute(ready)
        if future.done():
            return future.result()
        return future

    def cluster_info(self) -> ClusterInfoResponse:
        """The cluster as this leader sees it (durable state, failure detector)."""
        return cluster_info(
            self.core,
            cluster_name=self._settings.cluster_name,
            leader=self._settings.address,
            meta_servers=self._settings.meta_servers or [self._settings.address],
            tick_ms=self._clock.tick_ms,
        )

    def _backlog_full(self) -> bool:
        limit = self._settings.max_pending_persists
        return len(self._queue) >= limit or len(self._replies) >= limit

    # ------------------------------------------------------------------ executing MetaReady

    def _execute(self, ready: MetaReady) -> None:
        for outgoing in ready.send:
            self._sender.send(outgoing)
        for reply in ready.replies:
            self._deliver(reply)
        if ready.persist:
            # The core numbers its batches 1, 2, 3 ...: each one follows the newest handed out.
            newest = self._queue[-1].seq if self._queue else max(self.core.durable_seq, self._appending_seq)
            invariant(
                ready.persist_seq == newest + 1, f"batch {ready.persist_seq} queued after batch {newest}"
            )
            self._queue.append(_Batch(ready.persist_seq, ready.persist))
            self._wakeup.set()
        if ready.send_after_persist or ready.replies_after_persist:
            if ready.persist_seq <= self.core.durable_seq:
                invariant(not ready.persist, "a batch to persist is already durable")
                self._release(ready)
            else:
                self._after_persist.setdefault(ready.persist_seq, []).append(ready)

    def _release(self, ready: MetaReady) -> None:
        """The batch `ready` waited on is durable: its commands and replies may go."""
        if self.active:
            for outgoing in ready.send_after_persist:
                self._sender.send(outgoing)
        for reply in ready.replies_after_persist:
            self._deliver(reply)

    def _deliver(self, reply: Reply) -> None:
        self._resolve(reply.reply_to, reply.message)

    def _resolve(self, reply_to: int, outcome: Message | PegasusError) -> None:
        future = self._replies.pop(reply_to, None)
        invariant(future is not None, f"a reply to unknown token {reply_to}")
        assert future is not None  # for mypy
        if future.done():  # the caller's connection went away and someone cancelled it
            return
        if isinstance(outcome, PegasusError):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    # ------------------------------------------------------------------ ticks

    async def _tick_loop(self) -> None:
        next_tick = self._clock.now() + 1
        while True:
            await asyncio.sleep(self._clock.seconds_until_tick(next_tick))
            if not self.active:
                return
            tick = self._clock.now()
            next_tick = tick + 1
            if self._backlog_full():
                self.skipped_ticks += 1
                logger.warning("meta tick %d skipped: %d batches wait for the store", tick, len(self._queue))
                continue
            self._execute(self.core.on_tick(tick))

    async def _watch_leadership(self) -> None:
        await self._lost.wait()
        self._end(NotLeaderError("the store reports that this meta server no longer leads"))

    # ------------------------------------------------------------------ persisting

    async def _persist_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            # A term that ended starts no new write: its leadership (or its store) is gone.
            while self._queue and self.active:
                await self._append_next()
                if self.active and self.store.records_since_snapshot >= self._settings.snapshot_every_records:
                    await self._snapshot()
            if not self.active:
                return

    async def _append_next(self) -> None:
        batches: list[_Batch] = []
        records: list[bytes] = []
        limit = self._settings.max_append_records
        while self._queue and (not batches or len(records) + len(self._queue[0].events) <= limit):
            batch = self._queue.popleft()
            batches.append(batch)
            records.extend(encode_event(event) for event in batch.events)
        newest = batches[-1].seq
        self._appending_seq = newest
        await self.store.append(records)
        self._appending_seq = 0
        self._stored_events += len(records)
        for batch in batches:
            for event in batch.events:
                logger.info("meta: %s", describe_event(event))
                if self._on_event is not None:
                    self._on_event(event)
        self.core.on_persisted(newest)
        invariant(
            self.core.durable_seq == newest, f"durable seq {self.core.durable_seq} after batch {newest}"
        )
        for seq in sorted(seq for seq in self._after_persist if seq <= newest):
            for ready in self._after_persist.pop(seq):
                self._release(ready)

    async def _snapshot(self) -> None:
        state = self.core.state
        invariant(
            state.event_count == self._stored_events,
            f"the durable state folds {state.event_count} events but the store holds {self._stored_events}",
        )
        data = encode_snapshot(state.snapshot())
        await self.store.write_snapshot(data)
        logger.info("meta snapshot written: %d events, %d bytes", state.event_count, len(data))
