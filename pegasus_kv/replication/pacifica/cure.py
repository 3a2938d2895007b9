"""Cure: what one partition needs to get back to a serving, fully replicated group.

`cure_partition` looks at one partition (its configuration as projected, i.e. including changes
being persisted; the core skips partitions with such a change in flight) and returns at most one
decision: a configuration change to persist (ChangeDecision) or a learner to ask the primary for
(LearnerDecision, nothing persisted). The core turns decisions into events and commands.

A member is GONE when its node is DEAD (its lease has lapsed, failure_detector.py), or when the node
reported in a config sync its replica in ERROR, or holding the partition under the current ballot
in another role (INACTIVE after a restart). The replica core never takes a member role back under
a ballot it already holds (it waits for a higher one), so a gone primary does not serve, and the
group needs a new configuration either way.

A node is USABLE for a new role in a partition when it is ALIVE and does not report its replica of
that partition in ERROR (such a replica takes no new role until the server drops it).

The rules, in the order they are tried:
1. The primary is GONE:
   a. a secondary is USABLE: UPGRADE_TO_PRIMARY the best one (highest last committed decree it
      reported in a config sync; rng breaks ties). Every secondary holds every committed mutation
      (PacificA commit invariant) and reconciles its prepared tail before serving; a secondary that
      restarted is fine too, it adopts the higher ballot.
   b. no secondary at all: DOWNGRADE_TO_INACTIVE the primary. The group is now empty and the
      dropped primary, last in last_drops, is the only node known to hold every committed write
      (rule 2b then makes it primary again once it reports its replica).
   c. secondaries exist but none is usable, and the primary is (it restarted):
      DOWNGRADE_TO_SECONDARY it, so that rule 2d can promote it under a new ballot.
   d. otherwise: wait. Whichever member comes back first takes over: a secondary by rule 1a, the
      primary by rule 1c.
2. There is no primary:
   a. no member, ballot 0 (a brand-new partition): ASSIGN_PRIMARY on the ALIVE node with the fewest
      primaries, then fewest replicas (rng breaks ties), so a new table spreads evenly.
   b. no member, ballot > 0 (every member was dropped): the partition has had data, and it is never
      recreated empty. By rule 1b the last node in last_drops was the group's only member when it
      was dropped, so it alone is guaranteed to hold every acknowledged write. Meta waits until
      that node is ALIVE and has reported a replica of the partition (status not ERROR) in a config
      sync, then ASSIGN_PRIMARY to it. Earlier drops may miss writes the last member committed
      alone, so they are never chosen, even with a higher reported decree. If that node never
      comes back with its replica, the partition stays down for an operator to decide.
   c. the last change was a DOWNGRADE_TO_SECONDARY of node H (the balancer's role switch, rule 1c,
      or a primary stepping down) and H is not DEAD: wait until H has reported, in a config sync,
      that it holds the partition under the ballot it was primary in (or a later one) in a role
      other than primary. Until then H may still act as primary of the old ballot (the
      ConfigCommand telling it may be lost or late), and naming another primary could let two
      serve. This reads only durable state and reports, so it also holds after a meta restart.
   d. a secondary is USABLE: UPGRADE_TO_PRIMARY the balancer's preferred node if it is one of them,
      else the best one as in 1a.
3. The primary is ALIVE and not gone (a PENDING primary, after a meta restart, is left alone until
   it has re-synced):
   a. a secondary is GONE: DOWNGRADE_TO_INACTIVE it (the primary is told the new configuration;
      the primary usually proposes this itself when the secondary stops acking).
   b. fewer members than max_replica_count: ask the primary to add a learner (ADD_SECONDARY) on
      - the operator's preferred node (balance copy_sec / copy_pri, operator_proposals.py) if it
        is USABLE and the preference is younger than add_secondary_timeout_ticks: otherwise the
        node just moved away from, a dropped member, would be chosen by the next rule;
      - a dropped member's node that is USABLE again (newest drop first): it catches up cheaply;
      - otherwise, once no dropped member's node may still come back (none in last_drops is merely
        dead or pending) or add_secondary_wait_ticks have passed since the group was first seen
        short, the USABLE non-member with the fewest replicas (rng breaks ties).
      One learner at a time per partition; a request not turned into a secondary within
      add_secondary_timeout_ticks (or whose node died, or whose primary changed) is forgotten.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping

from pegasus_kv.core.ids import Gpid
from pegasus_kv.replication.pacifica.config import (
    ConfigType,
    NodeAddress,
    PartitionConfiguration,
    PartitionStatus,
)
from pegasus_kv.replication.pacifica.failure_detector import FailureDetector
from pegasus_kv.replication.pacifica.meta_messages import ReplicaInfo
from pegasus_kv.replication.pacifica.meta_options import MetaOptions
from pegasus_kv.replication.pacifica.meta_state import PartitionRecord
from pegasus_kv.replication.pacifica.meta_types import RandomSource


@dataclasses.dataclass(frozen=True, slots=True)
class ChangeDecision:
    """Persist `config_type` on `node`, then send the new configuration to `notify` (if any)."""

    gpid: Gpid
    config_type: ConfigType
    node: NodeAddress
    notify: NodeAddress | None
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class LearnerDecision:
    """Ask the primary (ADD_SECONDARY, nothing persisted) to start a learner on `node`."""

    gpid: Gpid
    primary: NodeAddress
    node: NodeAddress
    reason: str


CureDecision = ChangeDecision | LearnerDecision


@dataclasses.dataclass(frozen=True, slots=True)
class LearnerRequest:
    node: NodeAddress
    primary: NodeAddress
    tick: int  # when it was first asked for (add_secondary_timeout counts from here)
    sent_tick: int = -1  # when the ADD_SECONDARY command last went out (-1: as `tick`)

    @property
    def last_sent_tick(self) -> int:
        return self.tick if self.sent_tick < 0 else self.sent_tick


@dataclasses.dataclass(frozen=True, slots=True)
class PreferredPrimary:
    node: NodeAddress
    tick: int


@dataclasses.dataclass(frozen=True, slots=True)
class PreferredLearner:
    """An operator's choice of node for the next learner of a partition (balance copy_sec /
    copy_pri); forgotten after add_secondary_timeout_ticks or once the node is a member."""

    node: NodeAddress
    tick: int


@dataclasses.dataclass(frozen=True, slots=True)
class PlannedRemoval:
    """balance copy_pri, second step: once a primary other than `node` serves, drop `node` (the old
    primary, now a secondary) and prefer `learner` for the replica cure adds back."""

    node: NodeAddress
    learner: NodeAddress
    tick: int


@dataclasses.dataclass
class CureBook:
    """Cure's soft memory (lost on a meta restart, which only delays cure)."""

    learner_requests: dict[Gpid, LearnerRequest] = dataclasses.field(default_factory=dict)
    # The tick a partition with a live primary was first seen short of replicas.
    short_since: dict[Gpid, int] = dataclasses.field(default_factory=dict)
    # The balancer's choice of new primary for a partition whose primary it asked to step down.
    preferred_primary: dict[Gpid, PreferredPrimary] = dataclasses.field(default_factory=dict)
    # Operator moves in progress (operator_proposals.py).
    preferred_learner: dict[Gpid, PreferredLearner] = dataclasses.field(default_factory=dict)
    planned_removal: dict[Gpid, PlannedRemoval] = dataclasses.field(default_factory=dict)

    def forget(self, gpid: Gpid) -> None:
        self.learner_requests.pop(gpid, None)
        self.short_since.pop(gpid, None)
        self.preferred_primary.pop(gpid, None)
        self.preferred_learner.pop(gpid, None)
        self.planned_removal.pop(gpid, None)


@dataclasses.dataclass
class ClusterView:
    """What cure and the balancer read besides the configuration. The loads count the projected
    memberships plus the decisions already made in this pass (the core updates them)."""

    detector: FailureDetector
    reports: Mapping[NodeAddress, Mapping[Gpid, ReplicaInfo]]
    options: MetaOptions
    rng: RandomSource
    now_tick: int
    primary_load: Counter[NodeAddress]
    replica_load: Counter[NodeAddress]

    def report(self, node: NodeAddress, gpid: Gpid) -> ReplicaInfo | None:
        return self.reports.get(node, {}).get(gpid)


def cure_partition(record: PartitionRecord, view: ClusterView, book: CureBook) -> CureDecision | None:
    config = record.config
    detector = view.detector
    primary = config.primary
    if primary is not None and is_gone(config, primary, view):
        live = [s for s in config.secondaries if _usable(s, config.gpid, view)]
        if live:
            best = _best_secondary(config, live, view, book)
            return ChangeDecision(config.gpid, ConfigType.UPGRADE_TO_PRIMARY, best, best, "primary gone")
        if not config.secondaries:
            return ChangeDecision(
                config.gpid, ConfigType.DOWNGRADE_TO_INACTIVE, primary, None, "sole member gone"
            )
        if _usable(primary, config.gpid, view):
            return ChangeDecision(
                config.gpid, ConfigType.DOWNGRADE_TO_SECONDARY, primary, primary, "restarted, no secondary up"
            )
        return None
    if primary is None:
        return _cure_headless(record, view, book)
    if not detector.is_alive(primary):
        return None  # PENDING: wait until it has re-synced with this meta incarnation
    for secondary in config.secondaries:
        if is_gone(config, secondary, view):
            return ChangeDecision(
                config.gpid, ConfigType.DOWNGRADE_TO_INACTIVE, secondary, primary, "secondary gone"
            )
    if len(config.members) < config.max_replica_count:
        return _add_learner(config, primary, view, book)
    return None


def is_gone(config: PartitionConfiguration, member: NodeAddress, view: ClusterView) -> bool:
    """The member's node is dead, or it reported its replica in ERROR, or holding this ballot in
    another role."""
    if view.detector.is_dead(member):
        return True
    report = view.report(member, config.gpid)
    if report is None:
        return False
    if report.status == PartitionStatus.ERROR:
        return True
    return report.ballot >= config.ballot and report.status != config.status_of(member)


def _usable(node: NodeAddress, gpid: Gpid, view: ClusterView) -> bool:
    """ALIVE, and not reporting its replica of `gpid` in ERROR (such a replica takes no new role)."""
    if not view.detector.is_alive(node):
        return False
    report = view.report(node, gpid)
    return report is None or report.status != PartitionStatus.ERROR


def _cure_headless(record: PartitionRecord, view: ClusterView, book: CureBook) -> CureDecision | None:
    config = record.config
    detector = view.detector
    if not config.members:
        if config.ballot == 0:
            candidates = detector.alive_nodes()
            if not candidates:
                return None
            node = _least_loaded(candidates, view, by_primaries=True)
            return ChangeDecision(config.gpid, ConfigType.ASSIGN_PRIMARY, node, node, "new partition")
        if not config.last_drops:
            return None
        holder = config.last_drops[-1]
        report = view.report(holder, config.gpid)
        if detector.is_alive(holder) and report is not None and report.status != PartitionStatus.ERROR:
            return ChangeDecision(
                config.gpid, ConfigType.ASSIGN_PRIMARY, holder, holder, "last member back with its replica"
            )
        return None
    if awaiting_step_down(record, view):
        return None
    live = [s for s in config.secondaries if _usable(s, config.gpid, view)]
    if not live:
        return None
    best = _best_secondary(config, live, view, book)
    return ChangeDecision(config.gpid, ConfigType.UPGRADE_TO_PRIMARY, best, best, "no primary")


def awaiting_step_down(record: PartitionRecord, view: ClusterView) -> bool:
    """Rule 2c: the node that stepped down from primary has not yet confirmed it."""
    config = record.config
    if record.last_change != ConfigType.DOWNGRADE_TO_SECONDARY or config.primary is not None:
        return False
    node = record.last_change_node
    if view.detector.is_dead(node):
        return False
    report = view.report(node, config.gpid)
    # It was primary under config.ballot - 1. A replica holding that ballot (or a later one) in
    # another role never becomes primary under it again, and later ballots come from meta.
    confirmed = (
        report is not None and report.ballot >= config.ballot - 1 and report.status != PartitionStatus.PRIMARY
    )
    return not confirmed


def _best_secondary(
    config: PartitionConfiguration, live: list[NodeAddress], view: ClusterView, book: CureBook
) -> NodeAddress:
    preferred = book.preferred_primary.get(config.gpid)
    if preferred is not None and preferred.node in live:
        return preferred.node

    def reported_decree(node: NodeAddress) -> int:
        report = view.report(node, config.gpid)
        return -1 if report is None else report.last_committed_decree

    top = max(reported_decree(node) for node in live)
    return view.rng.choice(sorted(node for node in live if reported_decree(node) == top))


def _add_learner(
    config: PartitionConfiguration, primary: NodeAddress, view: ClusterView, book: CureBook
) -> LearnerDecision | None:
    detector = view.detector
    gpid = config.gpid
    request = book.learner_requests.get(gpid)
    if request is not None:
        still_going = (
            request.primary == primary
            and request.node not in config.members
            and not detector.is_dead(request.node)
            and view.now_tick - request.tick < view.options.add_secondary_timeout_ticks
        )
        if still_going:
            if view.now_tick - request.last_sent_tick >= view.options.learner_resend_ticks:
                return LearnerDecision(gpid, primary, request.node, "learner request sent again")
            return None
        del book.learner_requests[gpid]
    first_short = book.short_since.setdefault(gpid, view.now_tick)
    preferred = book.preferred_learner.get(gpid)
    if (
        preferred is not None
        and view.now_tick - preferred.tick < view.options.add_secondary_timeout_ticks
        and preferred.node not in config.members
        and _usable(preferred.node, gpid, view)
    ):
        return LearnerDecision(gpid, primary, preferred.node, "operator's choice")
    dropped = [node for node in reversed(config.last_drops) if node not in config.members]
    for node in dropped:
        if _usable(node, gpid, view):
            return LearnerDecision(gpid, primary, node, "dropped member back")
    may_come_back = bool(dropped)
    if may_come_back and view.now_tick - first_short < view.options.add_secondary_wait_ticks:
        return None
    candidates = [
        node for node in detector.alive_nodes() if node not in config.members and _usable(node, gpid, view)
    ]
    if not candidates:
        return None
    node = _least_loaded(candidates, view, by_primaries=False)
    return LearnerDecision(gpid, primary, node, "short of replicas")


def _least_loaded(candidates: list[NodeAddress], view: ClusterView, *, by_primaries: bool) -> NodeAddress:
    def load(node: NodeAddress) -> tuple[int, int]:
        if by_primaries:
            return (view.primary_load[node], view.replica_load[node])
        return (view.replica_load[node], 0)

    lightest = min(load(node) for node in candidates)
    return view.rng.choice(sorted(node for node in candidates if load(node) == lightest))
