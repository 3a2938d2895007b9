"""The meta server's core: PacificA's configuration manager as a pure state machine.

    core = MetaCore(state, options, rng, now_tick=t)   # state: MetaState rebuilt from the meta log

Events in, MetaReady out (meta_ready.py says how to execute one). No I/O, no clock, no random
module: time is the `tick` argument, randomness the injected `rng` (a seeded random.Random).

Events:
- on_tick(tick) -> MetaReady: failure detection, purge of expired dropped tables, cure (level
  STEADY and up), balancing (LIVELY).
- on_beacon(BeaconRequest, tick) -> BeaconResponse: immediate; alive=True (a lease) only for a
  node that has config-synced with this meta incarnation and is not declared dead.
- on_config_sync(ConfigSyncRequest, tick) -> ConfigSyncResponse: immediate, from durable state;
  records the replicas the node reports, and (re)admits a PENDING or DEAD node when safe.
- on_config_proposal(ConfigProposalRequest, reply_to) -> MetaReady: compare-and-set on the ballot.
- operator_proposal(OperatorProposalRequest, reply_to) -> MetaReady: the shell's `propose` and
  `balance`, decided by operator_proposals.py; refusals are answered at once, accepted changes
  after they are durable.
- DDL: create_table / drop_table / recall_table / rename_table / set_app_envs / del_app_envs /
  clear_app_envs / set_meta_level (request, reply_to) -> MetaReady; they raise the typed errors of
  core/errors.py on bad input, before changing anything.
- Queries (durable state, immediate): list_tables, query_config, get_meta_level, list_nodes.
- on_request(message, reply_to, tick) -> MetaReady: one entry point for all of the above that
  turns a PegasusError into an ErrorReply.
- on_persisted(seq): the runtime made every batch up to `seq` durable.

Durability. The core keeps two folds of the log: `state` (durable: what the store holds) and
`projected_state` (durable plus the batches handed out for persisting). Requests are validated,
and cure decides, against the projected state; everything anyone is told (replies, commands,
config sync answers, queries) comes from the durable state or waits in the *_after_persist lists
of MetaReady. Hence:
- nothing is sent to a replica or answered to a client about a change before it is durable;
- two conflicting proposals cannot both win: the second is checked against the projected ballot,
  which the first already moved, and at most one configuration change per partition is in flight
  (asserted);
- a crash loses only batches never reported durable, and nobody has heard of those.

After a restart (or a new leader in ZooKeeper) build a new core from the store: liveness, learner
requests and reports are soft and start over; nodes named in the state are PENDING with a fresh
grace period (failure_detector.py).

Ticks. `now_tick` and every tick argument come from one non-decreasing clock (asserted). Ticks
recorded in events (create_tick, a dropped table's expire_tick) are compared with later ticks, also
after a restart: a runtime whose tick counter restarts from zero only makes dropped tables wait
longer before their purge, which is the safe direction.

"""

from __future__ import annotations

import collections
import dataclasses
from collections import Counter

from pegasus_kv.core.errors import BusyError, PegasusError, UnsupportedError
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import ErrorReply
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.pacifica.balancer import plan_role_switch
from pegasus_kv.replication.pacifica.config import (
    ConfigType,
    NodeAddress,
    PartitionConfiguration,
    PartitionStatus,
)
from pegasus_kv.replication.pacifica.cure import (
    ChangeDecision,
    ClusterView,
    CureBook,
    LearnerDecision,
    LearnerRequest,
    PreferredPrimary,
    awaiting_step_down,
    cure_partition,
    is_gone,
)
from pegasus_kv.replication.pacifica.failure_detector import FailureDetector
from pegasus_kv.replication.pacifica.meta_ddl import (
    available_table,
    check_ddl_allowed,
    plan_create,
    plan_drop,
    plan_envs,
    plan_recall,
    plan_rename,
)
from pegasus_kv.replication.pacifica.meta_events import (
    ConfigurationChanged,
    MetaEvent,
    MetaLevelChanged,
    TableCreated,
    TablePurged,
)
from pegasus_kv.replication.pacifica.meta_invariants import invariant
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
from pegasus_kv.replication.pacifica.meta_options import MetaOptions
from pegasus_kv.replication.pacifica.meta_ready import MetaReady, Outgoing, Reply, ReplyTo
from pegasus_kv.replication.pacifica.meta_requests import (
    AppEnvsResponse,
    ClearAppEnvsRequest,
    CreateTableRequest,
    CreateTableResponse,
    DelAppEnvsRequest,
    DropTableRequest,
    DropTableResponse,
    GetMetaLevelRequest,
    ListNodesRequest,
    ListNodesResponse,
    ListTablesRequest,
    ListTablesResponse,
    MetaLevelResponse,
    QueryConfigRequest,
    QueryConfigResponse,
    RecallTableRequest,
    RecallTableResponse,
    RenameTableRequest,
    RenameTableResponse,
    SetAppEnvsRequest,
    SetMetaLevelRequest,
)
from pegasus_kv.replication.pacifica.meta_state import MetaState, PartitionRecord
from pegasus_kv.replication.pacifica.meta_transitions import (
    DOWNGRADES,
    REPLICA_PROPOSABLE,
    next_configuration,
    same_group,
)
from pegasus_kv.replication.pacifica.meta_types import (
    MetaLevel,
    NodeInfo,
    NodeLiveness,
    RandomSource,
    TableInfo,
    TableStatus,
)
from pegasus_kv.replication.pacifica.operator_messages import (
    OperatorProposalRequest,
    OperatorProposalResponse,
)
from pegasus_kv.replication.pacifica.operator_proposals import (
    ProposalSituation,
    Refusal,
    operator_follow_up,
    plan_operator_proposal,
    record_plan,
)


@dataclasses.dataclass(frozen=True, slots=True)
class _Batch:
    seq: int
    events: tuple[MetaEvent, ...]


@dataclasses.dataclass
class _Out:
    """What one event handler has decided so far (becomes its MetaReady)."""

    seq: int = 0  # the batch number of `events`, reserved at the first event
    wait_seq: int = 0  # an earlier batch the after-persist lists wait on (when `events` is empty)
    events: list[MetaEvent] = dataclasses.field(default_factory=list)
    send: list[Outgoing] = dataclasses.field(default_factory=list)
    replies: list[Reply] = dataclasses.field(default_factory=list)
    send_after: list[Outgoing] = dataclasses.field(default_factory=list)
    replies_after: list[Reply] = dataclasses.field(default_factory=list)


class MetaCore:
    def __init__(
        self, state: MetaState, options: MetaOptions, rng: RandomSource, *, now_tick: int = 0
    ) -> None:
        """`state` is the durable fold of the meta log; the core owns it from now on."""
        self._options = options
        self._rng = rng
        self._now = now_tick
        self._durable = state
        self._projected = state.copy()
        self._detector = FailureDetector(options, state.nodes(), now_tick)
        self._book = CureBook()
        # The replicas each node reported in its latest config sync (bounded per node).
        self._reports: dict[NodeAddress, dict[Gpid, ReplicaInfo]] = {}
        self._pending: collections.deque[_Batch] = collections.deque()
        self._pending_gpids: dict[Gpid, int] = {}  # partition -> batch holding its change
        self._pending_apps: dict[int, int] = {}  # app id -> latest batch changing the table
        self._pending_level_seq = 0
        self._last_seq = 0
        self._durable_seq = 0

    # ================================================================== readers

    @property
    def state(self) -> MetaState:
        """The durable state (what the store holds). Read only."""
        return self._durable

    @property
    def projected_state(self) -> MetaState:
        """Durable state plus the batches being persisted. Read only; never tell anyone about it."""
        return self._projected

    @property
    def now_tick(self) -> int:
        return self._now

    @property
    def options(self) -> MetaOptions:
        return self._options

    @property
    def effective_level(self) -> MetaLevel:
        """The level meta acts at: the operator's, lowered to FREEZED while too few nodes live."""
        return self._effective(self._projected.level)

    def _effective(self, level: MetaLevel) -> MetaLevel:
        if level > MetaLevel.FREEZED and self._detector.too_few_alive():
            return MetaLevel.FREEZED
        return level

    def liveness(self, node: NodeAddress) -> NodeLiveness | None:
        return self._detector.liveness(node)

    @property
    def durable_seq(self) -> int:
        """The newest batch reported durable."""
        return self._durable_seq

    @property
    def last_seq(self) -> int:
        """The newest batch handed out for persisting."""
        return self._last_seq

    @property
    def persist_in_flight(self) -> bool:
        """Some batch was handed out and not yet reported durable (no snapshot now)."""
        return self._durable_seq < self._last_seq

    def has_pending_change(self, gpid: Gpid) -> bool:
        return gpid in self._pending_gpids

    # ================================================================== persistence

    def on_persisted(self, seq: int) -> None:
        """Every batch up to `seq` is durable: fold them into the durable state."""
        invariant(seq <= self._last_seq, f"batch {seq} reported durable but only {self._last_seq} handed out")
        if seq <= self._durable_seq:
            return
        touched_apps: set[int] = set()
        while self._pending and self._pending[0].seq <= seq:
            batch = self._pending.popleft()
            for event in batch.events:
                self._durable.apply(event)
        self._durable_seq = seq
        for gpid, batch_seq in list(self._pending_gpids.items()):
            if batch_seq <= seq:
                del self._pending_gpids[gpid]
                durable = self._durable.config(gpid)
                projected = self._projected.config(gpid)
                if projected is None:
                    continue  # its table is purged by a later batch still in flight
                invariant(
                    durable is not None and same_group(durable, projected),
                    f"{gpid}: durable configuration {durable} differs from projected {projected}",
                )
        for app_id, batch_seq in list(self._pending_apps.items()):
            if batch_seq <= seq:
                del self._pending_apps[app_id]
                touched_apps.add(app_id)
        for app_id in touched_apps:
            invariant(
                self._durable.table(app_id) == self._projected.table(app_id),
                f"app {app_id}: durable table differs from projected",
            )
        if self._pending_level_seq <= seq:
            self._pending_level_seq = 0
        if not self._pending:
            invariant(
                self._durable.event_count == self._projected.event_count,
                "nothing pending, yet durable and projected states folded different event counts",
            )

    def _persist(self, out: _Out, event: MetaEvent) -> None:
        """Fold `event` into the projected state and queue it for persisting in this handler's batch."""
        if isinstance(event, ConfigurationChanged):
            gpid = event.config.gpid
            invariant(gpid not in self._pending_gpids, f"{gpid}: a second configuration change in flight")
            before = self._projected.config(gpid)
            if before is None or before.primary != event.config.primary:
                # A learner request is held by one primary incarnation (its learner sessions live
                # only while it stays primary). When primacy ends or moves, even back to the same
                # node after a restart, the request is void: cure must ask the new primary, not
                # wait for an answer to a command that went to the old one (or was lost with it).
                self._book.learner_requests.pop(gpid, None)
        self._projected.apply(event)
        if out.seq == 0:
            self._last_seq += 1
            out.seq = self._last_seq
        out.events.append(event)
        if isinstance(event, ConfigurationChanged):
            self._pending_gpids[event.config.gpid] = out.seq
        elif isinstance(event, MetaLevelChanged):
            self._pending_level_seq = out.seq
        else:
            self._pending_apps[event.app_id] = out.seq

    def _ready(self, out: _Out) -> MetaReady:
        if out.events:
            self._pending.append(_Batch(out.seq, tuple(out.events)))
            seq = out.seq
        elif out.send_after or out.replies_after:
            seq = out.wait_seq
            invariant(seq > 0, "after-persist messages with nothing to wait for")
        else:
            seq = 0
        return MetaReady(
            send=tuple(out.send),
            replies=tuple(out.replies),
            persist=tuple(out.events),
            persist_seq=seq,
            send_after_persist=tuple(out.send_after),
            replies_after_persist=tuple(out.replies_after),
        )

    def _answer(self, out: _Out, reply: Reply, wait_seq: int) -> None:
        """Reply at once if what it says is durable, else after batch `wait_seq` (0: durable)."""
        if wait_seq <= self._durable_seq:
            out.replies.append(reply)
        else:
            out.replies_after.append(reply)
            out.wait_seq = max(out.wait_seq, wait_seq)

    def _store_behind(self) -> bool:
        return len(self._pending) >= self._options.max_batches_in_flight

    def _check_store_keeps_up(self) -> None:
        if self._store_behind():
            raise BusyError(f"{len(self._pending)} meta log batches are waiting to be persisted")

    def _advance(self, tick: int) -> None:
        invariant(tick >= self._now, f"tick went backwards: {tick} after {self._now}")
        self._now = tick

    # ================================================================== failure detection

    def on_beacon(self, request: BeaconRequest, tick: int) -> BeaconResponse:
        self._advance(tick)
        alive = self._detector.on_beacon(request.node, tick)
        return BeaconResponse(sent_tick=request.sent_tick, alive=alive)

    def on_config_sync(self, request: ConfigSyncRequest, tick: int) -> ConfigSyncResponse:
        """Record what `node` holds; answer with the durable configurations it is a member of and
        the replicas it should delete.

        This is also how a PENDING or DEAD node becomes ALIVE (and gets leases again), unless
        - a change about its partitions is still being persisted: the answer would not show it;
        - it still reports itself primary of a partition that the durable state gives to another
          primary or ballot: with a lease it could serve stale reads. It applies this answer
          (which shows it is no longer primary there) and syncs again.
        """
        self._advance(tick)
        node = request.node
        replicas = request.replicas[: self._options.max_replicas_per_sync]
        may_revive = not self._pending_about(node) and not self._claims_stale_primary(node, replicas)
        alive = self._detector.on_sync(node, tick, may_revive=may_revive)
        if self._detector.liveness(node) is not None:
            self._reports[node] = {info.gpid: info for info in replicas}
        self._void_learner_requests_lost_by(node, replicas)
        configs: list[PartitionConfiguration] = []
        for gpid in self._durable.gpids_of(node):
            table = self._durable.table(gpid.app_id)
            config = self._durable.config(gpid)
            # Dropped tables are left out: their replicas stop serving but stay until the purge.
            if table is not None and table.status == TableStatus.AVAILABLE and config is not None:
                configs.append(config)
        garbage = self._garbage(node, replicas) if alive and self.effective_level.allows_cure else []
        return ConfigSyncResponse(configs=configs, gc_gpids=garbage)

    def _void_learner_requests_lost_by(self, node: NodeAddress, replicas: list[ReplicaInfo]) -> None:
        """Forget the learner requests addressed to `node` that it reports it cannot be serving.

        ADD_SECONDARY is fire-and-forget: one sent while the primary was down (before meta noticed)
        or restarting is lost, and the restarted replica holds no learner sessions. A replica it
        still hosts but reports as not PRIMARY has no session either way, so the request is void
        and cure asks again (a duplicate only re-sends the primary's group check). A replica it does
        not report yet (a new partition still opening) says nothing about the request.
        """
        reported = {info.gpid: info for info in replicas}
        for gpid, request in list(self._book.learner_requests.items()):
            info = reported.get(gpid)
            if request.primary == node and info is not None and info.status != PartitionStatus.PRIMARY:
                del self._book.learner_requests[gpid]

    def _pending_about(self, node: NodeAddress) -> bool:
        for gpid in self._pending_gpids:
            durable = self._durable.config(gpid)
            projected = self._projected.config(gpid)
            if (durable is not None and node in durable.members) or (
                projected is not None and node in projected.members
            ):
                return True
        return False

    def _claims_stale_primary(self, node: NodeAddress, replicas: list[ReplicaInfo]) -> bool:
        for info in replicas:
            if info.status != PartitionStatus.PRIMARY:
                continue
            config = self._durable.config(info.gpid)
            if config is None or config.primary != node or config.ballot != info.ballot:
                return True
        return False

    def _garbage(self, node: NodeAddress, replicas: list[ReplicaInfo]) -> list[Gpid]:
        """Replicas `node` may delete: of tables that were purged, or stale copies of a partition
        whose group is full without them. Learners, members, recently dropped members (data for an
        all-down recovery), dropped tables (recall) and unknown app ids are kept."""
        garbage: list[Gpid] = []
        for info in replicas:
            gpid = info.gpid
            if gpid in self._pending_gpids:
                continue
            table = self._durable.table(gpid.app_id)
            if table is None:
                # A purged table. An app id meta never handed out is kept instead: it points at a
                # meta store that lost data (or another cluster's server), and deleting is forever.
                if gpid.app_id < self._durable.next_app_id and self._projected.table(gpid.app_id) is None:
                    garbage.append(gpid)
                continue
            if not 0 <= gpid.partition_index < table.partition_count:
                garbage.append(gpid)
                continue
            config = self._durable.config(gpid)
            if table.status != TableStatus.AVAILABLE or config is None:
                continue
            if node in config.members or node in config.last_drops:
                continue
            if info.status not in (PartitionStatus.INACTIVE, PartitionStatus.ERROR):
                continue
            if len(config.members) < config.max_replica_count:
                continue
            request = self._book.learner_requests.get(gpid)
            if request is not None and request.node == node:
                continue
            garbage.append(gpid)
        return garbage

    # ================================================================== ticks: cure and balance

    def on_tick(self, tick: int) -> MetaReady:
        self._advance(tick)
        out = _Out()
        self._detector.check(tick)
        if self._store_behind():
            return self._ready(out)
        budget = self._options.max_changes_per_tick
        if self._projected.level.allows_ddl:
            budget = self._purge_expired(out, budget)
        level = self.effective_level
        if level.allows_cure and budget > 0:
            view = self._view()
            budget = self._cure(out, view, budget)
            if level.allows_balance and budget > 0:
                self._balance(out, view)
        return self._ready(out)

    def _purge_expired(self, out: _Out, budget: int) -> int:
        for table in self._projected.tables():
            if budget <= 0:
                break
            if table.status == TableStatus.DROPPED and table.expire_tick <= self._now:
                for config in self._projected.configs(table.app_id):
                    self._book.forget(config.gpid)
                self._persist(out, TablePurged(app_id=table.app_id))
                budget -= 1
        return budget

    def _view(self) -> ClusterView:
        primary_load: Counter[NodeAddress] = Counter()
        replica_load: Counter[NodeAddress] = Counter()
        for record in self._projected.records():
            config = record.config
            if config.primary is not None:
                primary_load[config.primary] += 1
            for node in config.members:
                replica_load[node] += 1
        for request in self._book.learner_requests.values():
            replica_load[request.node] += 1
        return ClusterView(
            detector=self._detector,
            reports=self._reports,
            options=self._options,
            rng=self._rng,
            now_tick=self._now,
            primary_load=primary_load,
            replica_load=replica_load,
        )

    def _cure(self, out: _Out, view: ClusterView, budget: int) -> int:
        book = self._book
        for record in list(self._projected.records()):
            if budget <= 0:
                break
            config = record.config
            gpid = config.gpid
            table = self._projected.table(gpid.app_id)
            if table is None or table.status != TableStatus.AVAILABLE or gpid in self._pending_gpids:
                continue
            if len(config.members) >= config.max_replica_count:
                book.short_since.pop(gpid, None)
                book.learner_requests.pop(gpid, None)
            preferred = book.preferred_primary.get(gpid)
            if preferred is not None and (
                config.primary is not None
                or self._now - preferred.tick >= self._options.role_switch_timeout_ticks
            ):
                del book.preferred_primary[gpid]
            decision = operator_follow_up(record, view, book) or cure_partition(record, view, book)
            if decision is None:
                continue
            if isinstance(decision, ChangeDecision):
                self._change(out, decision, view)
            else:
                self._ask_for_learner(out, decision, view)
            budget -= 1
        return budget

    def _change(self, out: _Out, decision: ChangeDecision, view: ClusterView) -> PartitionConfiguration:
        current = self._projected.config(decision.gpid)
        invariant(current is not None, f"{decision.gpid}: change for a partition that does not exist")
        assert current is not None  # for mypy; the invariant above raised otherwise
        new = next_configuration(
            current,
            decision.config_type,
            decision.node,
            last_committed_decree=self._known_decree(current),
        )
        self._persist(
            out, ConfigurationChanged(config=new, config_type=decision.config_type, node=decision.node)
        )
        if decision.notify is not None:
            command = ConfigCommand(config=new, config_type=decision.config_type, node=decision.node)
            out.send_after.append(Outgoing(decision.notify, command))
        _move_load(view, current, new)
        return new

    def _known_decree(self, config: PartitionConfiguration) -> int:
        """The highest last committed decree a node reported for this partition (informational)."""
        best = config.last_committed_decree
        for node in (*config.members, *config.last_drops):
            report = self._reports.get(node, {}).get(config.gpid)
            if report is not None and report.last_committed_decree > best:
                best = report.last_committed_decree
        return best

    def _ask_for_learner(self, out: _Out, decision: LearnerDecision, view: ClusterView) -> None:
        durable = self._durable.config(decision.gpid)
        projected = self._projected.config(decision.gpid)
        # The command carries the durable configuration: with no change in flight it is the
        # projected one too.
        invariant(
            durable is not None and projected is not None and same_group(durable, projected),
            f"{decision.gpid}: learner request while the configuration is changing",
        )
        assert durable is not None  # for mypy
        invariant(durable.primary == decision.primary, f"{decision.gpid}: learner request to a non-primary")
        command = ConfigCommand(config=durable, config_type=ConfigType.ADD_SECONDARY, node=decision.node)
        out.send.append(Outgoing(decision.primary, command))
        previous = self._book.learner_requests.get(decision.gpid)
        if previous is not None and (previous.node, previous.primary) == (decision.node, decision.primary):
            # The same request sent again: its timeout still counts from the first time.
            self._book.learner_requests[decision.gpid] = dataclasses.replace(previous, sent_tick=self._now)
            return
        self._book.learner_requests[decision.gpid] = LearnerRequest(
            decision.node, decision.primary, self._now
        )
        view.replica_load[decision.node] += 1

    def _balance(self, out: _Out, view: ClusterView) -> None:
        if self._book.preferred_primary:
            return  # one role switch at a time
        for table in self._projected.tables():
            if table.status != TableStatus.AVAILABLE:
                continue
            records = [
                self._projected.record(config.gpid) for config in self._projected.configs(table.app_id)
            ]
            switch = plan_role_switch(
                [record for record in records if record is not None],
                lambda record: self._healthy(record, view),
                self._rng,
            )
            if switch is None:
                continue
            decision = ChangeDecision(
                switch.gpid, ConfigType.DOWNGRADE_TO_SECONDARY, switch.from_node, switch.from_node, "balance"
            )
            self._change(out, decision, view)
            self._book.preferred_primary[switch.gpid] = PreferredPrimary(switch.to_node, self._now)
            return

    def _healthy(self, record: PartitionRecord, view: ClusterView) -> bool:
        config = record.config
        return (
            config.primary is not None
            and config.gpid not in self._pending_gpids
            and config.gpid not in self._book.learner_requests
            and config.gpid not in self._book.planned_removal
            and len(config.members) == config.max_replica_count
            and all(self._detector.is_alive(node) for node in config.members)
            and not any(is_gone(config, node, view) for node in config.members)
            and not awaiting_step_down(record, view)
        )

    # ================================================================== replica proposals

    def on_config_proposal(self, request: ConfigProposalRequest, reply_to: ReplyTo) -> MetaReady:
        """A primary asks for a change of its own group, made against its current ballot."""
        out = _Out()
        proposal = request.proposal
        gpid = proposal.config.gpid
        refusal = self._check_proposal(request)
        if refusal is not None:
            shown = self._durable.config(gpid) or proposal.config
            response = ConfigProposalResponse(accepted=False, config=shown, reason=refusal)
            out.replies.append(Reply(reply_to, response))
            return self._ready(out)
        current = self._projected.config(gpid)
        assert current is not None  # _check_proposal refused otherwise
        new = next_configuration(
            current, proposal.config_type, proposal.node, last_committed_decree=self._known_decree(current)
        )
        self._persist(
            out, ConfigurationChanged(config=new, config_type=proposal.config_type, node=proposal.node)
        )
        response = ConfigProposalResponse(accepted=True, config=new)
        out.replies_after.append(Reply(reply_to, response))
        learner = self._book.learner_requests.get(gpid)
        if learner is not None and learner.node == proposal.node:
            del self._book.learner_requests[gpid]
        return self._ready(out)

    def _check_proposal(self, request: ConfigProposalRequest) -> str | None:
        """Why the proposal is refused, or None when it may be applied."""
        proposal = request.proposal
        gpid = proposal.config.gpid
        config_type = proposal.config_type
        node = proposal.node
        table = self._projected.table(gpid.app_id)
        current = self._projected.config(gpid)
        if table is None or current is None:
            return f"no partition {gpid}"
        if table.status != TableStatus.AVAILABLE:
            return f"table {table.name!r} is dropped"
        level = self.effective_level
        if not level.allows_downgrades:
            return f"meta level {level.name}: no configuration changes"
        if config_type not in REPLICA_PROPOSABLE:
            return f"{config_type.name} is not a change a replica may propose"
        if not level.allows_cure and config_type not in DOWNGRADES:
            return f"meta level {level.name}: only downgrades are accepted"
        if gpid in self._pending_gpids:
            return "busy: another change to this partition is being persisted"
        if self._store_behind():
            return "busy: the meta store is behind"
        if proposal.config.ballot < current.ballot:
            return f"stale ballot {proposal.config.ballot}: the configuration is at {current.ballot}"
        if proposal.config.ballot > current.ballot:
            return f"ballot {proposal.config.ballot} is ahead of meta's {current.ballot}"
        primary = current.primary
        if primary is None or proposal.config.primary != primary:
            return "only the current primary may propose a change"
        if self._detector.is_dead(primary):
            return f"the proposing primary {primary} was declared dead"
        if config_type == ConfigType.DOWNGRADE_TO_INACTIVE:
            if node == primary:
                return "a primary cannot remove itself (it may step down with DOWNGRADE_TO_SECONDARY)"
            if node not in current.secondaries:
                return f"{node} is not a secondary"
        elif config_type == ConfigType.UPGRADE_TO_SECONDARY:
            if node in current.members:
                return f"{node} is already a member"
            if len(current.members) >= current.max_replica_count:
                return f"the group is full ({current.max_replica_count} replicas)"
            liveness = self._detector.liveness(node)
            if liveness is None:
                return f"unknown node {node}"
            if liveness == NodeLiveness.DEAD:
                return f"{node} was declared dead"
        elif config_type == ConfigType.DOWNGRADE_TO_SECONDARY and node != primary:
            return f"only the primary steps down, {node} is not the primary"
        return None

    # ================================================================== operator proposals

    def operator_proposal(self, request: OperatorProposalRequest, reply_to: ReplyTo) -> MetaReady:
        """Pegasus shell `propose` / `balance`: refused at once with a reason, or the change persisted
        (its preferences kept in the cure book) and answered once durable."""
        self._check_store_keeps_up()
        gpid = request.gpid
        view = self._view()
        situation = ProposalSituation(
            table=self._projected.table(gpid.app_id),
            record=self._projected.record(gpid),
            operator_level=self._projected.level,
            effective_level=self.effective_level,
            change_in_flight=gpid in self._pending_gpids,
            view=view,
            book=self._book,
        )
        plan = plan_operator_proposal(request, situation)
        out = _Out()
        if isinstance(plan, Refusal):
            response = OperatorProposalResponse(
                accepted=False, reason=plan.reason, config=self._durable.config(gpid)
            )
            out.replies.append(Reply(reply_to, response))
            return self._ready(out)
        if plan.change is not None:
            config = self._change(out, plan.change, view)
            response = OperatorProposalResponse(accepted=True, reason=plan.summary, config=config)
            out.replies_after.append(Reply(reply_to, response))
        else:
            assert plan.learner is not None  # an OperatorPlan makes exactly one change
            self._ask_for_learner(out, plan.learner, view)
            response = OperatorProposalResponse(
                accepted=True, reason=plan.summary, config=self._durable.config(gpid)
            )
            out.replies.append(Reply(reply_to, response))
        record_plan(self._book, gpid, plan)
        return self._ready(out)

    # ================================================================== DDL

    def create_table(self, request: CreateTableRequest, reply_to: ReplyTo) -> MetaReady:
        check_ddl_allowed(self._projected.level)
        self._check_store_keeps_up()
        planned = plan_create(self._projected, self._options, request, self._now)
        out = _Out()
        if isinstance(planned, TableInfo):
            response = CreateTableResponse(app_id=planned.app_id, partition_count=planned.partition_count)
            self._answer(out, Reply(reply_to, response), self._pending_apps.get(planned.app_id, 0))
            return self._ready(out)
        invariant(isinstance(planned, TableCreated), "plan_create returned neither a table nor an event")
        self._persist(out, planned)
        response = CreateTableResponse(app_id=planned.app_id, partition_count=planned.partition_count)
        out.replies_after.append(Reply(reply_to, response))
        return self._ready(out)

    def drop_table(self, request: DropTableRequest, reply_to: ReplyTo) -> MetaReady:
        check_ddl_allowed(self._projected.level)
        self._check_store_keeps_up()
        event = plan_drop(self._projected, self._options, request, self._now)
        out = _Out()
        self._persist(out, event)
        response = DropTableResponse(app_id=event.app_id, expire_tick=event.expire_tick)
        out.replies_after.append(Reply(reply_to, response))
        return self._ready(out)

    def recall_table(self, request: RecallTableRequest, reply_to: ReplyTo) -> MetaReady:
        check_ddl_allowed(self._projected.level)
        self._check_store_keeps_up()
        event = plan_recall(self._projected, request)
        out = _Out()
        self._persist(out, event)
        out.replies_after.append(Reply(reply_to, RecallTableResponse(app_id=event.app_id, name=event.name)))
        return self._ready(out)

    def rename_table(self, request: RenameTableRequest, reply_to: ReplyTo) -> MetaReady:
        check_ddl_allowed(self._projected.level)
        self._check_store_keeps_up()
        event = plan_rename(self._projected, request)
        out = _Out()
        self._persist(out, event)
        out.replies_after.append(Reply(reply_to, RenameTableResponse(app_id=event.app_id)))
        return self._ready(out)

    def set_app_envs(self, request: SetAppEnvsRequest, reply_to: ReplyTo) -> MetaReady:
        return self._change_envs(request, reply_to)

    def del_app_envs(self, request: DelAppEnvsRequest, reply_to: ReplyTo) -> MetaReady:
        return self._change_envs(request, reply_to)

    def clear_app_envs(self, request: ClearAppEnvsRequest, reply_to: ReplyTo) -> MetaReady:
        return self._change_envs(request, reply_to)

    def _change_envs(
        self, request: SetAppEnvsRequest | DelAppEnvsRequest | ClearAppEnvsRequest, reply_to: ReplyTo
    ) -> MetaReady:
        check_ddl_allowed(self._projected.level)
        self._check_store_keeps_up()
        table, event = plan_envs(self._projected, request)
        out = _Out()
        if event is None:
            response = AppEnvsResponse(app_id=table.app_id, envs=dict(table.envs))
            self._answer(out, Reply(reply_to, response), self._pending_apps.get(table.app_id, 0))
        else:
            self._persist(out, event)
            out.replies_after.append(
                Reply(reply_to, AppEnvsResponse(app_id=event.app_id, envs=dict(event.envs)))
            )
        return self._ready(out)

    def set_meta_level(self, request: SetMetaLevelRequest, reply_to: ReplyTo) -> MetaReady:
        """Allowed at every level (it is how an operator leaves STOPPED)."""
        level = MetaLevel(request.level)
        self._check_store_keeps_up()
        out = _Out()
        response = MetaLevelResponse(level=level, effective_level=self._effective(level))
        if level == self._projected.level:
            self._answer(out, Reply(reply_to, response), self._pending_level_seq)
        else:
            self._persist(out, MetaLevelChanged(level=level))
            out.replies_after.append(Reply(reply_to, response))
        return self._ready(out)

    # ================================================================== queries (durable state)

    def list_tables(self, request: ListTablesRequest) -> ListTablesResponse:
        tables = [
            table
            for table in self._durable.tables()
            if request.include_dropped or table.status == TableStatus.AVAILABLE
        ]
        return ListTablesResponse(tables=tables)

    def query_config(self, request: QueryConfigRequest) -> QueryConfigResponse:
        table = available_table(self._durable, request.name)
        return QueryConfigResponse(
            app_id=table.app_id,
            partition_count=table.partition_count,
            replica_count=table.replica_count,
            configs=self._durable.configs(table.app_id),
        )

    def get_meta_level(self, request: GetMetaLevelRequest) -> MetaLevelResponse:
        level = self._durable.level
        return MetaLevelResponse(level=level, effective_level=self._effective(level))

    def list_nodes(self, request: ListNodesRequest) -> ListNodesResponse:
        nodes = []
        for node, liveness in self._detector.nodes():
            gpids = self._durable.gpids_of(node)
            primaries = sum(1 for gpid in gpids if (c := self._durable.config(gpid)) and c.primary == node)
            nodes.append(
                NodeInfo(address=node, liveness=liveness, primary_count=primaries, replica_count=len(gpids))
            )
        return ListNodesResponse(nodes=nodes)

    # ================================================================== one entry point

    def on_request(self, request: Message, reply_to: ReplyTo, tick: int) -> MetaReady:
        """Dispatch any request meta serves; a PegasusError becomes an ErrorReply to `reply_to`."""
        self._advance(tick)
        try:
            return self._dispatch(request, reply_to, tick)
        except PegasusError as error:
            reply = Reply(reply_to, ErrorReply(code=int(error.code), message=error.message))
            return MetaReady(replies=(reply,))

    def _dispatch(self, request: Message, reply_to: ReplyTo, tick: int) -> MetaReady:
        def now(message: Message) -> MetaReady:
            return MetaReady(replies=(Reply(reply_to, message),))

        match request:
            case BeaconRequest():
                return now(self.on_beacon(request, tick))
            case ConfigSyncRequest():
                return now(self.on_config_sync(request, tick))
            case ConfigProposalRequest():
                return self.on_config_proposal(request, reply_to)
            case OperatorProposalRequest():
                return self.operator_proposal(request, reply_to)
            case CreateTableRequest():
                return self.create_table(request, reply_to)
            case DropTableRequest():
                return self.drop_table(request, reply_to)
            case RecallTableRequest():
                return self.recall_table(request, reply_to)
            case RenameTableRequest():
                return self.rename_table(request, reply_to)
            case SetAppEnvsRequest():
                return self.set_app_envs(request, reply_to)
            case DelAppEnvsRequest():
                return self.del_app_envs(request, reply_to)
            case ClearAppEnvsRequest():
                return self.clear_app_envs(request, reply_to)
            case SetMetaLevelRequest():
                return self.set_meta_level(request, reply_to)
            case ListTablesRequest():
                return now(self.list_tables(request))
            case QueryConfigRequest():
                return now(self.query_config(request))
            case GetMetaLevelRequest():
                return now(self.get_meta_level(request))
            case ListNodesRequest():
                return now(self.list_nodes(request))
        raise UnsupportedError(f"meta does not serve {type(request).__name__}")


def _move_load(view: ClusterView, old: PartitionConfiguration, new: PartitionConfiguration) -> None:
    for node in old.members:
        view.replica_load[node] -= 1
    if old.primary is not None:
        view.primary_load[old.primary] -= 1
    for node in new.members:
        view.replica_load[node] += 1
    if new.primary is not None:
        view.primary_load[new.primary] += 1
