"""Operator proposals: Pegasus shell `propose` and `balance`, decided against the projected state.

    plan = plan_operator_proposal(request, situation)     # OperatorPlan, or Refusal(reason)
    record_plan(book, plan)                                # once the core has made plan.change / learner
    decision = operator_follow_up(record, view, book)     # each tick, before cure: the rest of a move

Everything here is a decision; the meta core (meta_core.py) persists the change (ConfigurationChanged,
before anything is sent, like every other meta change) or sends the learner request, and keeps the
soft parts of a move in the CureBook. A refusal names what does not fit, for the shell to print.

Common conditions. The partition exists and its table is available. Meta acts at level STEADY or
LIVELY: operator changes are cure-like, and at FREEZED and below (set by the operator, or meta's
self-freeze while too few servers are alive) meta changes no configuration on its own initiative,
so it takes none from an operator either. Nothing else is under way on the partition: no change
being persisted, no role switch waiting for its new primary, no copy_pri waiting to drop the old
primary (and, for moves that add a replica, no learner being added).

`propose` (raw changes; `target`, when given, must be the node the command goes to):
- DOWNGRADE_TO_SECONDARY of the primary (target: the primary): it steps down; cure then waits for it
  to confirm (cure.py rule 2c) and promotes the best secondary (possibly the same node again).
- DOWNGRADE_TO_INACTIVE of a secondary (target: the primary): it leaves the group; cure adds a
  learner back, the dropped node first while it is alive (cure.py rule 3b). Refused for the
  primary: it steps down first (dropping a primary that may still serve could let two serve).
- ADD_SECONDARY of a live node outside a group that is not full (target: the primary): the primary
  is asked to add it as a learner, exactly as cure asks (nothing persisted; it becomes a secondary
  through the primary's UPGRADE_TO_SECONDARY proposal once it caught up).
- ASSIGN_PRIMARY of `node` (target: node) only when the partition has no primary:
  * the group still has secondaries: node must be one of them, and a primary that stepped down
    must have confirmed it (rule 2c). Logged as UPGRADE_TO_PRIMARY (next_configuration reserves
    ASSIGN_PRIMARY for an empty group; Pegasus's meta also promotes here).
  * the group is empty: a brand-new partition (ballot 0) takes any live node; otherwise node must be
    the last member dropped (the only one known to hold every acknowledged write, cure.py rule 2b)
    and must have reported its replica. Pegasus's `propose -f` forcing an older member (and so
    accepting lost writes) is not offered.

`balance` (moves one replica of a healthy partition; the primary must be alive):
- move_pri FROM=primary TO=secondary: the balancer's role switch (balancer.py): DOWNGRADE_TO_SECONDARY
  of FROM with TO as the preferred primary, which cure promotes once FROM confirmed.
- copy_sec FROM=secondary TO=live node outside the group: DOWNGRADE_TO_INACTIVE of FROM, with TO the
  preferred node for the learner cure then adds (cure.py rule 3b). Simplification: Pegasus adds
  the new replica first (ADD_SECONDARY_FOR_LB) and drops FROM once it caught up; here the group is
  one replica short while TO learns, as when a secondary dies.
- copy_pri FROM=primary TO=live node outside the group: FROM steps down with another secondary as
  the preferred primary; once that one serves, FROM (now a secondary) is dropped and TO preferred
  for the learner, as in copy_sec. Simplification: in Pegasus TO ends up primary; here it ends up a
  secondary (a later move_pri can hand it the primary role).
The copies need a full group with every member alive, so a move never takes a partition below
max_replica_count - 1 members. Every preference expires (role_switch_timeout_ticks,
add_secondary_timeout_ticks), after which cure goes back to its own choices.
"""

from __future__ import annotations

import dataclasses

from pegasus_kv.core.errors import InvalidArgumentError
from pegasus_kv.core.ids import Gpid
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
    PlannedRemoval,
    PreferredLearner,
    PreferredPrimary,
    awaiting_step_down,
    is_gone,
)
from pegasus_kv.replication.pacifica.meta_invariants import invariant
from pegasus_kv.replication.pacifica.meta_state import PartitionRecord
from pegasus_kv.replication.pacifica.meta_types import MetaLevel, NodeLiveness, TableInfo, TableStatus
from pegasus_kv.replication.pacifica.operator_messages import (
    PROPOSABLE_BY_OPERATOR,
    BalanceKind,
    OperatorProposalRequest,
)


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class OperatorPlan:
    """An accepted proposal: exactly one of `change` (persist, then notify) and `learner` (ask the
    primary now), plus the soft preferences that steer cure through the rest of the move."""

    summary: str
    change: ChangeDecision | None = None
    learner: LearnerDecision | None = None
    preferred_primary: PreferredPrimary | None = None
    preferred_learner: PreferredLearner | None = None
    planned_removal: PlannedRemoval | None = None

    def __post_init__(self) -> None:
        invariant((self.change is None) != (self.learner is None), "a plan makes exactly one change")


@dataclasses.dataclass(frozen=True, slots=True)
class ProposalSituation:
    """What the decision reads: the projected table and partition, levels, and cure's view."""

    table: TableInfo | None
    record: PartitionRecord | None
    operator_level: MetaLevel  # the level the operator set
    effective_level: MetaLevel  # the level meta acts at (FREEZED while too few servers are alive)
    change_in_flight: bool  # a change to this partition is being persisted
    view: ClusterView
    book: CureBook


def check_request(request: OperatorProposalRequest) -> None:
    """Raise InvalidArgumentError for a request that is neither a well-formed propose nor balance."""
    if (request.config_type is None) == (request.balance is None):
        raise InvalidArgumentError("an operator proposal is either a propose (config_type) or a balance")
    if request.config_type is not None:
        if not request.node:
            raise InvalidArgumentError("propose needs the node the change is about")
        if request.from_node or request.to_node:
            raise InvalidArgumentError("propose takes node and target, not from/to")
        return
    if not request.from_node or not request.to_node:
        raise InvalidArgumentError("balance needs both a from node and a to node")
    if request.from_node == request.to_node:
        raise InvalidArgumentError(f"balance from and to are the same node {request.from_node}")
    if request.node or request.target:
        raise InvalidArgumentError("balance takes from/to, not node and target")


def plan_operator_proposal(
    request: OperatorProposalRequest, situation: ProposalSituation
) -> OperatorPlan | Refusal:
    check_request(request)
    gpid = request.gpid
    table = situation.table
    record = situation.record
    if table is None or record is None:
        return Refusal(f"no partition {gpid}")
    if table.status != TableStatus.AVAILABLE:
        return Refusal(f"table {table.name!r} is dropped")
    level_problem = _level_problem(situation)
    if level_problem is not None:
        return Refusal(level_problem)
    config = record.config
    adds_replica = request.balance in (BalanceKind.COPY_SEC, BalanceKind.COPY_PRI) or (
        request.config_type == ConfigType.ADD_SECONDARY
    )
    busy = _under_way(situation, config, learners_block=adds_replica)
    if busy is not None:
        return Refusal(busy)
    if request.config_type is not None:
        return _plan_propose(request, request.config_type, situation, record)
    assert request.balance is not None  # check_request
    return _plan_balance(request, request.balance, situation, config)


def record_plan(book: CureBook, gpid: Gpid, plan: OperatorPlan) -> None:
    """Keep the plan's preferences (after the core made its change or learner request)."""
    if plan.preferred_primary is not None:
        book.preferred_primary[gpid] = plan.preferred_primary
    if plan.preferred_learner is not None:
        book.preferred_learner[gpid] = plan.preferred_learner
    if plan.planned_removal is not None:
        book.planned_removal[gpid] = plan.planned_removal


def operator_follow_up(record: PartitionRecord, view: ClusterView, book: CureBook) -> ChangeDecision | None:
    """The next step of an operator move on this partition, if one is due (called before cure).

    Forgets a preferred learner that joined or expired. For a copy_pri: once a primary other than
    the old one serves a full group, drop the old primary (now a secondary) and prefer the copy's
    target for the learner cure adds next. Gives the plan up when it timed out or no longer fits
    (the old primary was promoted back, or left the group some other way).
    """
    config = record.config
    gpid = config.gpid
    preferred = book.preferred_learner.get(gpid)
    if preferred is not None and (
        preferred.node in config.members
        or view.now_tick - preferred.tick >= view.options.add_secondary_timeout_ticks
    ):
        del book.preferred_learner[gpid]
    removal = book.planned_removal.get(gpid)
    if removal is None:
        return None
    if (
        view.now_tick - removal.tick >= view.options.role_switch_timeout_ticks
        or removal.node not in config.secondaries
    ):
        del book.planned_removal[gpid]
        return None
    primary = config.primary
    if primary is None or not view.detector.is_alive(primary) or is_gone(config, primary, view):
        return None  # the new primary is not serving yet: cure's rules 1 and 2 handle the group
    if len(config.members) < config.max_replica_count:
        return None  # a member was lost meanwhile: let cure refill the group first
    del book.planned_removal[gpid]
    book.preferred_learner[gpid] = PreferredLearner(removal.learner, view.now_tick)
    return ChangeDecision(
        gpid,
        ConfigType.DOWNGRADE_TO_INACTIVE,
        removal.node,
        primary,
        "balance copy_pri: the old primary leaves",
    )


# ---------------------------------------------------------------------- common conditions


def _level_problem(situation: ProposalSituation) -> str | None:
    if situation.effective_level.allows_cure:
        return None
    if situation.operator_level.allows_cure:
        return (
            f"meta acts as {situation.effective_level.name.lower()}: too few replica servers are alive "
            "for configuration changes"
        )
    return (
        f"meta level {situation.operator_level.name.lower()}: operator proposals need level steady or "
        "lively (set_meta_level steady)"
    )


def _under_way(
    situation: ProposalSituation, config: PartitionConfiguration, *, learners_block: bool
) -> str | None:
    gpid = config.gpid
    book = situation.book
    view = situation.view
    if situation.change_in_flight:
        return f"busy: another change to {gpid} is being persisted"
    switch = book.preferred_primary.get(gpid)
    if (
        switch is not None
        and config.primary is None
        and view.now_tick - switch.tick < view.options.role_switch_timeout_ticks
    ):
        return f"a primary switch of {gpid} to {switch.node} is under way"
    removal = book.planned_removal.get(gpid)
    if removal is not None:
        return f"a copy_pri of {gpid} from {removal.node} to {removal.learner} is under way"
    if not learners_block:
        return None
    learner = book.learner_requests.get(gpid)
    if learner is not None and learner.node not in config.members:
        return f"busy: a learner is being added to {gpid} on {learner.node}"
    preferred = book.preferred_learner.get(gpid)
    if (
        preferred is not None
        and preferred.node not in config.members
        and view.now_tick - preferred.tick < view.options.add_secondary_timeout_ticks
    ):
        return f"a copy of {gpid} to {preferred.node} is under way"
    return None


def _node_problem(node: NodeAddress, gpid: Gpid, view: ClusterView) -> str | None:
    """Why `node` cannot take a new role in `gpid`, or None."""
    liveness = view.detector.liveness(node)
    if liveness is None:
        return f"unknown node {node} (no replica server there has contacted meta)"
    if liveness == NodeLiveness.PENDING:
        return f"{node} has not synced with this meta yet"
    if liveness == NodeLiveness.DEAD:
        return f"{node} was declared dead"
    report = view.report(node, gpid)
    if report is not None and report.status == PartitionStatus.ERROR:
        return f"{node} reports its replica of {gpid} in ERROR"
    return None


def _primary_problem(config: PartitionConfiguration, view: ClusterView) -> str | None:
    primary = config.primary
    if primary is None:
        return f"{config.gpid} has no primary"
    if not view.detector.is_alive(primary) or is_gone(config, primary, view):
        return f"the primary {primary} of {config.gpid} is not serving (cure replaces it)"
    return None


def _group_problem(config: PartitionConfiguration, view: ClusterView) -> str | None:
    """A copy needs a full group with every member alive."""
    if len(config.members) < config.max_replica_count:
        return (
            f"{config.gpid} has {len(config.members)} of {config.max_replica_count} replicas: "
            "let cure refill it before moving one"
        )
    for member in config.members:
        if not view.detector.is_alive(member) or is_gone(config, member, view):
            return f"member {member} of {config.gpid} is not serving: let cure repair the group first"
    return None


# ---------------------------------------------------------------------- propose


def _plan_propose(
    request: OperatorProposalRequest,
    config_type: ConfigType,
    situation: ProposalSituation,
    record: PartitionRecord,
) -> OperatorPlan | Refusal:
    config = record.config
    gpid = config.gpid
    view = situation.view
    node = request.node
    if config_type not in PROPOSABLE_BY_OPERATOR:
        names = ", ".join(t.name for t in PROPOSABLE_BY_OPERATOR)
        return Refusal(f"{config_type.name} is not a change an operator proposes (one of {names})")
    primary = config.primary
    expected_target = node if config_type == ConfigType.ASSIGN_PRIMARY else primary
    if request.target and request.target != expected_target:
        goes_to = expected_target or "the primary, and there is none"
        return Refusal(f"target {request.target} does not match: {config_type.name} goes to {goes_to}")
    if config_type == ConfigType.ASSIGN_PRIMARY:
        return _plan_assign_primary(node, situation, record)
    problem = _primary_problem(config, view)
    if problem is not None:
        return Refusal(problem)
    assert primary is not None  # _primary_problem
    if config_type == ConfigType.DOWNGRADE_TO_SECONDARY:
        if node != primary:
            return Refusal(f"{node} is not the primary of {gpid} (the primary is {primary})")
        if not config.secondaries:
            return Refusal(f"the primary {primary} of {gpid} has no secondary to hand over to")
        return OperatorPlan(
            summary=f"{primary} steps down; once it confirms, cure promotes the best secondary",
            change=ChangeDecision(gpid, config_type, primary, primary, "operator propose"),
        )
    if config_type == ConfigType.DOWNGRADE_TO_INACTIVE:
        if node == primary:
            return Refusal(
                f"{node} is the primary of {gpid}: it steps down first (DOWNGRADE_TO_SECONDARY), "
                "or use balance copy_pri"
            )
        if node not in config.secondaries:
            return Refusal(f"{node} is not a secondary of {gpid}")
        return OperatorPlan(
            summary=(
                f"{node} leaves {gpid}; cure adds a learner back (the dropped node first while it is alive; "
                "balance copy_sec moves a replica to another node)"
            ),
            change=ChangeDecision(gpid, config_type, node, primary, "operator propose"),
        )
    invariant(config_type == ConfigType.ADD_SECONDARY, f"unexpected operator config type {config_type}")
    if node in config.members:
        return Refusal(f"{node} is already a member of {gpid}")
    if len(config.members) >= config.max_replica_count:
        return Refusal(
            f"{gpid} is full ({config.max_replica_count} replicas): remove a member first, "
            "or use balance copy_sec"
        )
    problem = _node_problem(node, gpid, view)
    if problem is not None:
        return Refusal(problem)
    return OperatorPlan(
        summary=f"{primary} is asked to add a learner on {node}; it becomes a secondary once it caught up",
        learner=LearnerDecision(gpid, primary, node, "operator propose"),
    )


def _plan_assign_primary(
    node: NodeAddress, situation: ProposalSituation, record: PartitionRecord
) -> OperatorPlan | Refusal:
    config = record.config
    gpid = config.gpid
    view = situation.view
    if config.primary is not None:
        return Refusal(
            f"{gpid} has a primary ({config.primary}): ASSIGN_PRIMARY is for a partition without one"
        )
    problem = _node_problem(node, gpid, view)
    if problem is not None:
        return Refusal(problem)
    if config.members:
        if node not in config.secondaries:
            return Refusal(f"{node} is not a secondary of {gpid}: only a member may take over")
        if awaiting_step_down(record, view):
            return Refusal(
                f"{record.last_change_node} has not confirmed it stepped down from primary of {gpid}: "
                "naming another primary now could let two serve"
            )
        return OperatorPlan(
            summary=f"{node} is promoted to primary of {gpid}",
            change=ChangeDecision(gpid, ConfigType.UPGRADE_TO_PRIMARY, node, node, "operator propose"),
        )
    if config.ballot > 0:
        if not config.last_drops:
            return Refusal(f"no node is known to hold the data of {gpid}")
        holder = config.last_drops[-1]
        if node != holder:
            return Refusal(
                f"only {holder}, the last member dropped, is known to hold every acknowledged write of "
                f"{gpid}; {node} may miss some"
            )
        if view.report(node, gpid) is None:
            return Refusal(f"{node} has not reported a replica of {gpid} yet")
    return OperatorPlan(
        summary=f"{node} becomes primary of {gpid}",
        change=ChangeDecision(gpid, ConfigType.ASSIGN_PRIMARY, node, node, "operator propose"),
    )


# ---------------------------------------------------------------------- balance


def _plan_balance(
    request: OperatorProposalRequest,
    kind: BalanceKind,
    situation: ProposalSituation,
    config: PartitionConfiguration,
) -> OperatorPlan | Refusal:
    gpid = config.gpid
    view = situation.view
    now = view.now_tick
    from_node, to_node = request.from_node, request.to_node
    problem = _primary_problem(config, view)
    if problem is not None:
        return Refusal(problem)
    primary = config.primary
    assert primary is not None  # _primary_problem
    if kind in (BalanceKind.MOVE_PRI, BalanceKind.COPY_PRI):
        if from_node != primary:
            return Refusal(f"{from_node} is not the primary of {gpid} (the primary is {primary})")
    elif from_node not in config.secondaries:
        return Refusal(f"{from_node} is not a secondary of {gpid}")
    if kind == BalanceKind.MOVE_PRI:
        if to_node not in config.secondaries:
            return Refusal(f"{to_node} is not a secondary of {gpid}")
        problem = _node_problem(to_node, gpid, view)
        if problem is None and is_gone(config, to_node, view):
            problem = f"{to_node} does not hold {gpid} as a secondary (cure is dropping it)"
        if problem is not None:
            return Refusal(problem)
        return OperatorPlan(
            summary=f"{from_node} steps down; once it confirms, {to_node} becomes primary",
            change=ChangeDecision(
                gpid, ConfigType.DOWNGRADE_TO_SECONDARY, from_node, from_node, "balance move_pri"
            ),
            preferred_primary=PreferredPrimary(to_node, now),
        )
    if to_node in config.members:
        return Refusal(f"{to_node} is already a member of {gpid}")
    problem = _group_problem(config, view) or _node_problem(to_node, gpid, view)
    if problem is not None:
        return Refusal(problem)
    if kind == BalanceKind.COPY_SEC:
        return OperatorPlan(
            summary=f"{from_node} leaves {gpid}; cure then adds a learner on {to_node}",
            change=ChangeDecision(
                gpid, ConfigType.DOWNGRADE_TO_INACTIVE, from_node, primary, "balance copy_sec"
            ),
            preferred_learner=PreferredLearner(to_node, now),
        )
    invariant(kind == BalanceKind.COPY_PRI, f"unexpected balance kind {kind}")
    heir = _heir(config, view)
    if heir is None:
        return Refusal(f"{gpid} has no secondary to take over the primary role")
    return OperatorPlan(
        summary=(
            f"{from_node} steps down and {heir} becomes primary; then {from_node} leaves {gpid} and cure "
            f"adds a learner on {to_node}"
        ),
        change=ChangeDecision(
            gpid, ConfigType.DOWNGRADE_TO_SECONDARY, from_node, from_node, "balance copy_pri"
        ),
        preferred_primary=PreferredPrimary(heir, now),
        planned_removal=PlannedRemoval(from_node, to_node, now),
    )


def _heir(config: PartitionConfiguration, view: ClusterView) -> NodeAddress | None:
    """The secondary that takes over from a copied primary: fewest primaries, then most data."""
    candidates = [node for node in config.secondaries if _node_problem(node, config.gpid, view) is None]
    if not candidates:
        return None

    def rank(node: NodeAddress) -> tuple[int, int, NodeAddress]:
        report = view.report(node, config.gpid)
        decree = -1 if report is None else report.last_committed_decree
        return (view.primary_load[node], -decree, node)

    return min(candidates, key=rank)
