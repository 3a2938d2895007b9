"""The replica-server core: every replica one server hosts, its lease, and its talk with meta. No I/O.

    node = ReplicaNode("host:port", NodeOptions(), rng=None)
    node.load_replica(gpid, last_committed_decree=..., log=[...], log_start_decree=..., ballot=...)
    ready = node.on_tick(tick)            # and the other events below; each returns a NodeReady

Events (each returns a NodeReady):
    on_tick(tick)                         beacons, config syncs, every replica's timers
    on_message(sender, message)           meta messages (BeaconResponse, ConfigSyncResponse,
                                          ConfigProposalResponse, ConfigCommand) and replica
                                          messages (messages.py), routed by gpid
    on_client_write(gpid, token, write, timestamp_us, size_bytes=None)
    on_client_writes(gpid, writes)        several writes of one partition at once (QueuedWrite)
    on_log_durable(gpid, ballot, decree)
    on_log_read(gpid, request_id, mutations)
    on_checkpoint_made(gpid, request_id, checkpoint_decree, checkpoint_ref)
    on_checkpoint_installed(gpid, request_id)
    on_request_failed(gpid, request_id, reason)
    on_log_truncated(gpid, start_decree)
    on_local_failure(gpid, reason)
Queries: check_read(gpid[, real_tick]) -> ErrorCode (at the node's current tick), replica(gpid), gpids(),
lease_valid_until, replica_infos().

Failure detection (Pegasus, PacificA primary invariant): the node sends BeaconRequest(sent_tick)
every beacon period; an answer with alive=True extends the lease to sent_tick + lease_ticks (it
runs from when the beacon was SENT, so meta's grace period, counted from when it RECEIVED the
beacon, always ends after the lease). Without a valid lease every primary here stops serving reads
and writes and commits nothing. alive=False (meta declared this server dead) drops the lease at once
and triggers a config sync.

Configuration sync: every config_sync_period_ticks (and when a replica suspects a stale config) the
node reports its replicas (ConfigSyncRequest). Only the answer to the request in flight is used:
- each configuration in it goes to its replica (on_config);
- a replica that is primary or secondary here, whose ballot has not moved since the request was
  sent, and that the answer does not name, is no longer a member: it becomes inactive;
- a gc'ed gpid is dropped only if its replica is inactive or in error and was so, under the same
  ballot, when the request was sent (never a member or a learner: a stale answer must not delete a
  member's data).

Replica creation (listed in NodeReady.created): a GroupCheck inviting this node to learn, and any
configuration (a ConfigCommand such as ASSIGN_PRIMARY, or one in a sync answer) that names this node
primary of a group with no secondaries and no committed decree, i.e. a new partition (this repairs a
lost ASSIGN_PRIMARY; with min_replica_count >= 2 such a group never committed anything). A
ConfigCommand REMOVE (with a ballot not older than the replica's, not naming it a member) drops it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Protocol

from pegasus_kv.core.errors import ErrorCode
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import WriteRequest
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.pacifica.config import (
    ConfigType,
    NodeAddress,
    PartitionConfiguration,
    PartitionStatus,
)
from pegasus_kv.replication.pacifica.invariant import require, violated
from pegasus_kv.replication.pacifica.messages import (
    GroupCheck,
    GroupCheckAck,
    LearnCompletionNotice,
    LearnKind,
    LearnRequest,
    LearnResponse,
    Prepare,
    PrepareAck,
    PrepareOutcome,
)
from pegasus_kv.replication.pacifica.meta_messages import (
    BeaconRequest,
    BeaconResponse,
    ConfigCommand,
    ConfigProposalRequest,
    ConfigProposalResponse,
    ConfigSyncRequest,
    ConfigSyncResponse,
    ReplicaInfo,
)
from pegasus_kv.replication.pacifica.options import NodeOptions
from pegasus_kv.replication.pacifica.ready import ClientReply, ClientToken, Outbound, Ready
from pegasus_kv.replication.pacifica.replica import NO_LEASE, Replica
from pegasus_kv.replication.pacifica.write_queue import QueuedWrite

# Read on every client read (check_read): module globals, not enum class attribute lookups.
_READ_OK = ErrorCode.OK
_NOT_PRIMARY = ErrorCode.NOT_PRIMARY


class RandomSource(Protocol):
    """The part of random.Random the node uses (inject a seeded instance; never the module)."""

    def randrange(self, stop: int, /) -> int: ...


@dataclasses.dataclass(slots=True, init=False)
class NodeReady:
    """What one node event asks the runtime to do. Execute in this order:

    1. `created`: open an empty log and store for each gpid before executing its Ready.
    2. `replicas`: each replica's Ready, as ready.py prescribes (each replica has its own log, so
       the persist / send_after_persist ordering holds per gpid). Their `propose` lists are always
       empty: the node moved the proposals into `to_meta`.
    3. `to_meta`: BeaconRequest, ConfigSyncRequest, ConfigProposalRequest, for the meta leader; may go
       at once (nothing in them waits for a persist).
    4. `send`: answers of the node itself (a replica message for a partition not hosted here).
    5. `dropped`: after executing their Readies, close these replicas and delete their data.
    """

    created: list[Gpid]
    replicas: dict[Gpid, Ready]
    to_meta: list[Message]
    send: list[Outbound]
    dropped: list[Gpid]

    def __init__(
        self,
        *,
        created: list[Gpid] | None = None,
        replicas: dict[Gpid, Ready] | None = None,
        to_meta: list[Message] | None = None,
        send: list[Outbound] | None = None,
        dropped: list[Gpid] | None = None,
    ) -> None:
        # Written out (not default factories): every node event builds one.
        self.created = [] if created is None else created
        self.replicas = {} if replicas is None else replicas
        self.to_meta = [] if to_meta is None else to_meta
        self.send = [] if send is None else send
        self.dropped = [] if dropped is None else dropped

    @property
    def is_empty(self) -> bool:
        return not (
            self.created
            or self.to_meta
            or self.send
            or self.dropped
            or any(not ready.is_empty for ready in self.replicas.values())
        )

    def extend(self, later: NodeReady) -> None:
        self.created.extend(later.created)
        for gpid, ready in later.replicas.items():
            self.add(gpid, ready)
        self.to_meta.extend(later.to_meta)
        self.send.extend(later.send)
        self.dropped.extend(later.dropped)

    def add(self, gpid: Gpid, ready: Ready) -> None:
        if not (  # ready.is_empty, inlined: once per replica event
            ready.persist
            or ready.send
            or ready.send_after_persist
            or ready.apply
            or ready.replies
            or ready.propose
            or ready.requests
            or ready.request_config_sync
        ):
            return
        if gpid in self.replicas:
            self.replicas[gpid].extend(ready)
        else:
            self.replicas[gpid] = ready


@dataclasses.dataclass(frozen=True, slots=True)
class _SyncInFlight:
    sent_tick: int
    # gpid -> (ballot, status) of every replica when the request was sent.
    snapshot: dict[Gpid, tuple[int, PartitionStatus]]


class ReplicaNode:
    def __init__(
        self, address: NodeAddress, options: NodeOptions | None = None, rng: RandomSource | None = None
    ):
        self.address = address
        self.options = options or NodeOptions()
        self._replicas: dict[Gpid, Replica] = {}
        self._now = 0
        self._lease_until = NO_LEASE
        self._last_beacon_tick: int | None = None
        # A seeded rng spreads the syncs of many servers; without one the first sync goes at once.
        self._next_sync_tick = rng.randrange(self.options.config_sync_period_ticks) if rng else 0
        self._sync: _SyncInFlight | None = None
        self._out: NodeReady | None = None

    def __repr__(self) -> str:
        return f"ReplicaNode({self.address})"

    # --- queries ------------------------------------------------------------------------------

    @property
    def now(self) -> int:
        return self._now

    @property
    def lease_valid_until(self) -> int:
        return self._lease_until

    def lease_valid(self) -> bool:
        return self._now < self._lease_until

    def replica(self, gpid: Gpid) -> Replica | None:
        return self._replicas.get(gpid)

    def gpids(self) -> list[Gpid]:
        return sorted(self._replicas)

    def replica_infos(self) -> list[ReplicaInfo]:
        return [self._replicas[gpid].info() for gpid in self.gpids()]

    def check_read(self, gpid: Gpid, real_tick: int | None = None) -> ErrorCode:
        """Replica.check_read at the current tick. With `real_tick` (the host's clock, which may be
        ahead of the last tick event) an OK also needs the node's lease to hold at real_tick, else
        NOT_PRIMARY: the tick loop has not noticed yet, but the lease has lapsed in real time. One
        call for both checks: the server asks on every client read."""
        replica = self._replicas.get(gpid)
        if replica is None:
            return _NOT_PRIMARY
        code = replica.check_read(self._now)
        if real_tick is not None and code is _READ_OK and real_tick >= self._lease_until:
            return _NOT_PRIMARY
        return code

    # --- start-up -----------------------------------------------------------------------------

    def load_replica(
        self,
        gpid: Gpid,
        *,
        last_committed_decree: int,
        log: Iterable[Mutation] = (),
        log_start_decree: int = 1,
        ballot: int = 0,
    ) -> Replica:
        """Host a replica found on disk at start: its store stands at last_committed_decree and
        `log` is its log in append order. It starts INACTIVE; meta's configurations take it on.

        `ballot`: the highest ballot of any mutation this replica's log ever held durably,
        INCLUDING records collected since (keep it in the log's metadata when collecting). Without
        it a replica could be named primary again under a ballot it already used and hand out a
        decree twice (see ready.py, `persist`)."""
        require(gpid not in self._replicas, f"{self}: {gpid} loaded twice")
        require(len(self._replicas) < self.options.max_replicas, f"{self}: too many replicas")
        replica = Replica(
            gpid,
            self.address,
            self.options.replica,
            last_committed_decree=last_committed_decree,
            log=log,
            log_start_decree=log_start_decree,
            ballot=ballot,
        )
        self._replicas[gpid] = replica
        return replica

    # --- events -------------------------------------------------------------------------------

    def on_tick(self, tick: int) -> NodeReady:
        if tick < self._now:  # every tick: the message is formatted only on failure
            violated(f"{self}: time went back from {self._now} to {tick}")
        out = self._begin()
        self._now = tick
        options = self.options
        if self._last_beacon_tick is None or tick - self._last_beacon_tick >= options.beacon_period_ticks:
            self._last_beacon_tick = tick
            out.to_meta.append(BeaconRequest(node=self.address, sent_tick=tick))
        if tick >= self._next_sync_tick:
            self._send_config_sync()
        for gpid in self.gpids():
            self._collect(gpid, self._replicas[gpid].on_tick(tick))
        return self._end()

    def on_client_write(
        self,
        gpid: Gpid,
        token: ClientToken,
        write: WriteRequest,
        timestamp_us: int,
        size_bytes: int | None = None,
    ) -> NodeReady:
        out = self._begin()
        replica = self._replicas.get(gpid)
        if replica is None:
            ready = Ready()
            ready.replies.append(ClientReply(token, ErrorCode.NOT_PRIMARY))
            out.add(gpid, ready)
        else:
            self._collect(gpid, replica.on_client_write(token, write, timestamp_us, size_bytes))
        return self._end()

    def on_client_writes(self, gpid: Gpid, writes: Sequence[QueuedWrite]) -> NodeReady:
        if self._out is not None:
            violated(f"{self}: event entered while another event runs")
        replica = self._replicas.get(gpid)
        if replica is not None and replica.queue_writes(writes):
            return NodeReady()  # only queued behind the round in flight: nothing to execute
        out = self._begin()
        if replica is None:
            ready = Ready()
            ready.replies.extend(ClientReply(write.token, ErrorCode.NOT_PRIMARY) for write in writes)
            out.add(gpid, ready)
        else:
            self._collect(gpid, replica.on_client_writes(writes))
        return self._end()

    def on_message(self, sender: NodeAddress, message: Message) -> NodeReady:
        self._begin()
        if type(message) in _REPLICA_MESSAGES:  # the common case, tested first (prepares and acks)
            self._on_replica_message(sender, message)  # type: ignore[arg-type]
        elif isinstance(message, BeaconResponse):
            self._on_beacon_response(message)
        elif isinstance(message, ConfigSyncResponse):
            self._on_config_sync_response(message)
        elif isinstance(message, ConfigProposalResponse):
            replica = self._replicas.get(message.config.gpid)
            if replica is not None:
                self._collect(replica.gpid, replica.on_config_proposal_response(message))
        elif isinstance(message, ConfigCommand):
            self._on_config_command(message)
        elif isinstance(
            message,
            Prepare
            | PrepareAck
            | GroupCheck
            | GroupCheckAck
            | LearnRequest
            | LearnResponse
            | LearnCompletionNotice,
        ):
            self._on_replica_message(sender, message)
        else:
            require(False, f"{self}: unexpected message {type(message).__name__}")
        return self._end()

    def on_log_durable(self, gpid: Gpid, ballot: int, decree: int) -> NodeReady:
        # _route, inlined: once per durable log group of every replica.
        if self._out is not None:
            violated(f"{self}: event entered while another event runs")
        replica = self._replicas.get(gpid)
        if replica is not None and replica.log_durable_quietly(ballot, decree):
            return NodeReady()  # a secondary's (or learner's): nothing to execute
        self._begin()
        if replica is not None:
            self._collect(gpid, replica.on_log_durable(ballot, decree))
        return self._end()

    def on_log_read(self, gpid: Gpid, request_id: int, mutations: Sequence[Mutation]) -> NodeReady:
        return self._route(gpid, lambda replica: replica.on_log_read(request_id, mutations))

    def on_checkpoint_made(
        self, gpid: Gpid, request_id: int, checkpoint_decree: int, checkpoint_ref: str
    ) -> NodeReady:
        return self._route(
            gpid, lambda replica: replica.on_checkpoint_made(request_id, checkpoint_decree, checkpoint_ref)
        )

    def on_checkpoint_installed(self, gpid: Gpid, request_id: int) -> NodeReady:
        return self._route(gpid, lambda replica: replica.on_checkpoint_installed(request_id))

    def on_request_failed(self, gpid: Gpid, request_id: int, reason: str) -> NodeReady:
        return self._route(gpid, lambda replica: replica.on_request_failed(request_id, reason))

    def on_log_truncated(self, gpid: Gpid, start_decree: int) -> NodeReady:
        return self._route(gpid, lambda replica: replica.on_log_truncated(start_decree))

    def on_local_failure(self, gpid: Gpid, reason: str) -> NodeReady:
        return self._route(gpid, lambda replica: replica.on_local_failure(reason))

    # --- meta ---------------------------------------------------------------------------------

    def _on_beacon_response(self, response: BeaconResponse) -> None:
        if not response.alive:
            # Meta declared this server dead: its replicas have been or will be replaced.
            self._set_lease(NO_LEASE)
            self._send_config_sync(force=True)
            return
        if response.sent_tick > self._now:
            return  # not a beacon this node sent
        valid_until = response.sent_tick + self.options.lease_ticks
        if valid_until > self._lease_until:
            self._set_lease(valid_until)

    def _set_lease(self, valid_until: int) -> None:
        self._lease_until = valid_until
        for gpid in self.gpids():
            self._collect(gpid, self._replicas[gpid].on_lease(valid_until))

    def _send_config_sync(self, *, force: bool = False) -> None:
        sync = self._sync
        if (
            sync is not None
            and not force
            and self._now - sync.sent_tick < self.options.config_sync_timeout_ticks
        ):
            return
        snapshot = {gpid: (r.ballot, r.status) for gpid, r in self._replicas.items()}
        self._sync = _SyncInFlight(self._now, snapshot)
        self._next_sync_tick = self._now + self.options.config_sync_period_ticks
        self._o.to_meta.append(ConfigSyncRequest(node=self.address, replicas=self.replica_infos()))

    def _on_config_sync_response(self, response: ConfigSyncResponse) -> None:
        sync = self._sync
        if sync is None:
            return  # not an answer to the request in flight (duplicate or late)
        self._sync = None
        named = set()
        for config in response.configs:
            named.add(config.gpid)
            replica = self._replicas.get(config.gpid)
            if replica is None and self._names_me_primary_of_a_new_group(config):
                replica = self._create(config.gpid)  # its ASSIGN_PRIMARY was lost
            if replica is not None:
                self._collect(config.gpid, replica.on_config(config))
        for gpid, replica in list(self._replicas.items()):
            before = sync.snapshot.get(gpid)
            unchanged = before is not None and before == (replica.ballot, replica.status)
            if (
                gpid not in named
                and unchanged
                and replica.status in (PartitionStatus.PRIMARY, PartitionStatus.SECONDARY)
            ):
                # Meta (durable at least as far as this ballot) no longer counts it as a member.
                self._collect(gpid, replica.on_removed())
        for gpid in response.gc_gpids:
            replica = self._replicas.get(gpid)
            before = sync.snapshot.get(gpid)
            if (
                replica is not None
                and replica.status in (PartitionStatus.INACTIVE, PartitionStatus.ERROR)
                and before == (replica.ballot, replica.status)
            ):
                self._drop(gpid)

    def _on_config_command(self, command: ConfigCommand) -> None:
        config = command.config
        gpid = config.gpid
        replica = self._replicas.get(gpid)
        if replica is None:
            if self._names_me_primary_of_a_new_group(config):
                # ASSIGN_PRIMARY of a new partition, or any later command about it (ADD_SECONDARY)
                # that overtook or outlived a lost ASSIGN_PRIMARY.
                replica = self._create(gpid)
            if replica is None:
                return
        if command.config_type == ConfigType.REMOVE:
            if (
                command.node == self.address
                and config.ballot >= replica.ballot
                and self.address not in config.members
            ):
                self._collect(gpid, replica.on_config_command(command))
                self._drop(gpid)
            return
        self._collect(gpid, replica.on_config_command(command))

    # --- replicas -----------------------------------------------------------------------------

    def _on_replica_message(
        self,
        sender: NodeAddress,
        message: Prepare
        | PrepareAck
        | GroupCheck
        | GroupCheckAck
        | LearnRequest
        | LearnResponse
        | LearnCompletionNotice,
    ) -> None:
        gpid = message.gpid
        replica = self._replicas.get(gpid)
        if replica is None:
            if isinstance(message, GroupCheck) and message.learner_signature:
                replica = self._create(gpid)
            else:
                self._answer_unhosted(sender, message)
                return
        if replica is not None:
            self._collect(gpid, replica.on_message(sender, message))

    def _answer_unhosted(self, sender: NodeAddress, message: Message) -> None:
        """Tell a primary this node has no such replica, so it stops waiting for it."""
        if isinstance(message, Prepare):
            answer: Message = PrepareAck(
                gpid=message.gpid,
                ballot=0,
                decree=message.mutation.decree,
                outcome=PrepareOutcome.NOT_MEMBER,
                confirmed_decree=0,
                last_committed_decree=0,
            )
        elif isinstance(message, GroupCheck):
            answer = GroupCheckAck(
                gpid=message.gpid,
                ballot=0,
                outcome=PrepareOutcome.NOT_MEMBER,
                last_committed_decree=0,
                confirmed_decree=0,
            )
        elif isinstance(message, LearnRequest | LearnCompletionNotice):
            answer = LearnResponse(
                gpid=message.gpid,
                ballot=0,
                signature=message.signature,
                attempt=message.attempt,
                outcome=PrepareOutcome.NOT_LEARNER,
                kind=LearnKind.PREPARE_LIST,
                mutations=[],
                primary_committed_decree=0,
                prepare_start_decree=0,
            )
        else:
            return
        self._o.send.append(Outbound(sender, answer))

    def _names_me_primary_of_a_new_group(self, config: PartitionConfiguration) -> bool:
        """A configuration that makes this node primary of a group that cannot hold data yet.

        No secondaries and no committed decree known to meta: with min_replica_count >= 2 such a
        group never committed a write, so an empty replica loses nothing. Any other configuration
        naming a replica this node does not hold is for meta to repair (the sync reports it missing).
        """
        return (
            config.primary == self.address
            and not config.secondaries
            and config.last_committed_decree == 0
            and self.options.replica.min_replica_count >= 2
        )

    def _create(self, gpid: Gpid) -> Replica | None:
        if len(self._replicas) >= self.options.max_replicas:
            return None
        replica = Replica(gpid, self.address, self.options.replica)
        self._replicas[gpid] = replica
        self._o.created.append(gpid)
        self._collect(gpid, replica.on_tick(self._now))
        self._collect(gpid, replica.on_lease(self._lease_until))
        return replica

    def _drop(self, gpid: Gpid) -> None:
        del self._replicas[gpid]
        self._o.dropped.append(gpid)

    def _route(self, gpid: Gpid, event: _ReplicaEvent) -> NodeReady:
        self._begin()
        replica = self._replicas.get(gpid)
        if replica is not None:
            self._collect(gpid, event(replica))
        return self._end()

    # --- plumbing -----------------------------------------------------------------------------

    @property
    def _o(self) -> NodeReady:
        out = self._out
        if out is None:
            violated(f"{self}: output outside an event")
        return out

    def _begin(self) -> NodeReady:
        if self._out is not None:
            violated(f"{self}: event entered while another event runs")
        self._out = NodeReady()
        return self._out

    def _end(self) -> NodeReady:
        out = self._out  # _o, inlined here and in _collect: both run for every event
        if out is None:
            violated(f"{self}: output outside an event")
        self._out = None
        return out

    def _collect(self, gpid: Gpid, ready: Ready) -> None:
        out = self._out
        if out is None:
            violated(f"{self}: output outside an event")
        if ready.propose:
            for proposal in ready.propose:
                out.to_meta.append(ConfigProposalRequest(proposal=proposal))
            ready.propose = []
        if ready.request_config_sync:
            ready.request_config_sync = False
            self._send_config_sync()
        out.add(gpid, ready)


# The replica messages (messages.py) on_message routes to a replica, by exact type.
_REPLICA_MESSAGES: frozenset[type[Message]] = frozenset(
    {Prepare, PrepareAck, GroupCheck, GroupCheckAck, LearnRequest, LearnResponse, LearnCompletionNotice}
)


class _ReplicaEvent(Protocol):
    def __call__(self, replica: Replica, /) -> Ready: ...
