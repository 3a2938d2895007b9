"""The simulated meta server: the pure MetaCore driven by ticks and messages, its event log on a
simulated disk, executing every MetaReady in the order meta_ready.py demands.

A crash loses the core (soft state: liveness, learner requests, reports) and the unsynced tail of
the event log; a restart folds the durable log into a new MetaState and builds a new core from it,
as the real meta server does (DESIGN.md section 5). Each persisted batch is one disk record, so a
batch is durable whole or not at all.
"""

from __future__ import annotations

import dataclasses
import random

from pegasus_kv.core.codec import Decoded, FrameKind
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.pacifica.meta_core import MetaCore
from pegasus_kv.replication.pacifica.meta_events import MetaEvent, decode_event, encode_event
from pegasus_kv.replication.pacifica.meta_options import MetaOptions
from pegasus_kv.replication.pacifica.meta_ready import MetaReady, Outgoing, Reply
from pegasus_kv.replication.pacifica.meta_requests import CreateTableRequest
from pegasus_kv.replication.pacifica.meta_state import MetaState
from tests.sim.disk import Disk
from tests.sim.network import Network, NodeName
from tests.sim.scheduler import Scheduler, Timer, require

EVENT_LOG = "meta-events"
# Requests waiting for an answer at once; beyond this meta drops new ones (clients time out).
MAX_WAITING_REQUESTS = 10_000


@dataclasses.dataclass(frozen=True)
class _Batch:
    """One persisted MetaReady batch: the unit that is durable whole or not at all."""

    seq: int
    events: tuple[bytes, ...]


@dataclasses.dataclass
class _Held:
    """Messages that may go only once batch `seq` is durable."""

    seq: int
    sends: tuple[Outgoing, ...]
    replies: tuple[Reply, ...]


class SimMetaServer:
    def __init__(
        self,
        name: NodeName,
        scheduler: Scheduler,
        network: Network,
        options: MetaOptions,
        tick_ms: int,
    ) -> None:
        self.name = name
        self.scheduler = scheduler
        self.network = network
        self.options = options
        self.tick_ms = tick_ms
        self.disk = Disk(name, scheduler)
        self.core: MetaCore | None = None
        self.incarnation = 0
        self._log = self.disk.file(EVENT_LOG, _Batch)
        self._callers: dict[int, tuple[NodeName, int]] = {}
        self._next_token = 0
        self._held: list[_Held] = []
        self._tick_timer: Timer | None = None
        self._batch_end: dict[int, int] = {}  # batch seq -> log end just after it

    @property
    def up(self) -> bool:
        return self.core is not None

    def tick_now(self) -> int:
        return self.scheduler.now_ms // self.tick_ms

    # --- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        require(self.core is None, f"{self.name} started twice")
        self.incarnation += 1
        events: list[MetaEvent] = [
            decode_event(data) for batch in self._log.durable_records() for data in batch.events
        ]
        state = MetaState.from_events(events)
        rng = random.Random(self.scheduler.rng.getrandbits(64))
        self.core = MetaCore(state, self.options, rng, now_tick=self.tick_now())
        self._batch_end = {}
        self._held = []
        self._callers = {}
        self.network.attach(self.name, self.on_frame)
        self._schedule_tick()

    def crash(self) -> None:
        if self.core is None:
            return
        self.core = None
        self.network.detach(self.name)
        self.disk.crash()
        if self._tick_timer is not None:
            self._tick_timer.cancel()
            self._tick_timer = None

    def create_table(self, name: str, partition_count: int, replica_count: int) -> None:
        """The operator's DDL at the start of a run (the answer is not needed)."""
        core = self._core()
        request = CreateTableRequest(name=name, partition_count=partition_count, replica_count=replica_count)
        self._execute(core.on_request(request, self._token(self.name, 0), self.tick_now()))

    def table_created(self, name: str) -> bool:
        return self.core is not None and self.core.state.table_by_name(name) is not None

    # --- events ----------------------------------------------------------------------------------

    def _core(self) -> MetaCore:
        require(self.core is not None, f"{self.name} is down")
        assert self.core is not None
        return self.core

    def _schedule_tick(self) -> None:
        next_ms = (self.tick_now() + 1) * self.tick_ms
        self._tick_timer = self.scheduler.at(next_ms, f"{self.name} tick", self._on_tick)

    def _on_tick(self) -> None:
        core = self._core()
        self._execute(core.on_tick(self.tick_now()))
        self._schedule_tick()

    def _token(self, caller: NodeName, request_id: int) -> int:
        self._next_token += 1
        if len(self._callers) >= MAX_WAITING_REQUESTS:
            self._callers.pop(next(iter(self._callers)))
        self._callers[self._next_token] = (caller, request_id)
        return self._next_token

    def on_frame(self, src: NodeName, frame: Decoded) -> None:
        core = self._core()
        if frame.kind is FrameKind.RESPONSE:
            return  # meta asks nobody anything
        token = self._token(src, frame.request_id)
        self._execute(core.on_request(frame.message, token, self.tick_now()))

    # --- executing a MetaReady (meta_ready.py) ---------------------------------------------------

    def _execute(self, ready: MetaReady) -> None:
        core = self._core()
        # 1. What reveals nothing new goes at once.
        self._send_all(ready.send, ready.replies)
        # 2. Persist the batch as one record; 3. on_persisted when durable; 4. then the rest.
        if ready.persist:
            record = _Batch(ready.persist_seq, tuple(encode_event(event) for event in ready.persist))
            self._log.append(record)
            self._batch_end[ready.persist_seq] = self._log.end
            incarnation = self.incarnation
            self.disk.fsync(EVENT_LOG, lambda synced_end: self._on_fsync(incarnation, synced_end))
        if ready.send_after_persist or ready.replies_after_persist:
            require(ready.persist_seq > 0, "after-persist messages with no batch to wait for")
            if ready.persist_seq <= core.durable_seq:
                self._send_all(ready.send_after_persist, ready.replies_after_persist)
            else:
                self._held.append(
                    _Held(ready.persist_seq, ready.send_after_persist, ready.replies_after_persist)
                )

    def _on_fsync(self, incarnation: int, synced_end: int) -> None:
        if self.core is None or incarnation != self.incarnation:
            return
        durable_end = synced_end
        durable_seqs = [seq for seq, end in self._batch_end.items() if end <= durable_end]
        if not durable_seqs:
            return
        seq = max(durable_seqs)
        for done in durable_seqs:
            del self._batch_end[done]
        self.core.on_persisted(seq)
        ready_now = [held for held in self._held if held.seq <= seq]
        self._held = [held for held in self._held if held.seq > seq]
        for held in ready_now:
            self._send_all(held.sends, held.replies)

    def _send_all(self, sends: tuple[Outgoing, ...], replies: tuple[Reply, ...]) -> None:
        for outgoing in sends:
            self.network.send(self.name, outgoing.to, outgoing.message)
        for reply in replies:
            caller = self._callers.pop(reply.reply_to, None)
            if caller is None:
                continue
            node, request_id = caller
            if node == self.name:
                continue  # the operator's own DDL
            self._reply(node, request_id, reply.message)

    def _reply(self, node: NodeName, request_id: int, message: Message) -> None:
        self.network.send(self.name, node, message, request_id=request_id, kind=FrameKind.RESPONSE)
