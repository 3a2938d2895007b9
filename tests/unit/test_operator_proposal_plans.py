"""What meta decides about an operator's `propose` and `balance` (operator_proposals.py, pure).

Each story builds one partition, the liveness of its nodes and the cure book, asks for a plan, and
checks the change meta would make or the reason it refuses.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import msgspec
import pytest

from pegasus_kv.core.errors import InvalidArgumentError
from pegasus_kv.core.ids import Gpid
from pegasus_kv.replication.pacifica.config import ConfigType, PartitionConfiguration, PartitionStatus
from pegasus_kv.replication.pacifica.cure import (
    ClusterView,
    CureBook,
    LearnerDecision,
    LearnerRequest,
    PlannedRemoval,
    PreferredLearner,
    PreferredPrimary,
    cure_partition,
)
from pegasus_kv.replication.pacifica.failure_detector import FailureDetector
from pegasus_kv.replication.pacifica.meta_messages import ReplicaInfo
from pegasus_kv.replication.pacifica.meta_state import PartitionRecord
from pegasus_kv.replication.pacifica.meta_types import MetaLevel, TableInfo, TableStatus
from pegasus_kv.replication.pacifica.operator_messages import BalanceKind, OperatorProposalRequest
from pegasus_kv.replication.pacifica.operator_proposals import (
    OperatorPlan,
    ProposalSituation,
    Refusal,
    operator_follow_up,
    plan_operator_proposal,
    record_plan,
)

from .meta_harness import N1, N2, N3, N4, N5, TEST_OPTIONS

GPID = Gpid(1, 0)
NOW = 20
HEALTHY = PartitionConfiguration(gpid=GPID, ballot=5, primary=N1, secondaries=(N2, N3))
TABLE = TableInfo(
    app_id=1,
    name="temp",
    status=TableStatus.AVAILABLE,
    partition_count=1,
    replica_count=3,
    envs={},
    create_tick=0,
)


@dataclasses.dataclass
class World:
    """One partition and what meta knows around it; `situation()` is what the plan reads."""

    config: PartitionConfiguration = HEALTHY
    alive: tuple[str, ...] = (N1, N2, N3, N4)
    dead: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    reports: dict[str, dict[Gpid, ReplicaInfo]] = dataclasses.field(default_factory=dict)
    last_change: ConfigType | None = None
    last_change_node: str = ""
    table: TableInfo | None = TABLE
    level: MetaLevel = MetaLevel.STEADY
    effective_level: MetaLevel | None = None
    change_in_flight: bool = False
    book: CureBook = dataclasses.field(default_factory=CureBook)
    primary_load: Counter[str] = dataclasses.field(default_factory=Counter)

    def view(self) -> ClusterView:
        detector = FailureDetector(TEST_OPTIONS, [], 0)
        for node in self.dead:
            detector.on_sync(node, 0, may_revive=True)
        for node in self.alive:
            detector.on_sync(node, NOW, may_revive=True)
        for node in self.pending:
            detector.on_beacon(node, NOW)
        detector.check(NOW)  # the dead ones have been silent past grace_ticks
        return ClusterView(
            detector=detector,
            reports=self.reports,
            options=TEST_OPTIONS,
            rng=random.Random(3),
            now_tick=NOW,
            primary_load=self.primary_load,
            replica_load=Counter(),
        )

    def record(self) -> PartitionRecord:
        return PartitionRecord(
            config=self.config, last_change=self.last_change, last_change_node=self.last_change_node
        )

    def situation(self) -> ProposalSituation:
        return ProposalSituation(
            table=self.table,
            record=self.record() if self.table is not None else None,
            operator_level=self.level,
            effective_level=self.effective_level or self.level,
            change_in_flight=self.change_in_flight,
            view=self.view(),
            book=self.book,
        )

    def plan(self, request: OperatorProposalRequest) -> OperatorPlan | Refusal:
        return plan_operator_proposal(request, self.situation())


def balance(kind: BalanceKind, from_node: str, to_node: str) -> OperatorProposalRequest:
    return OperatorProposalRequest(GPID, balance=kind, from_node=from_node, to_node=to_node)


def propose(config_type: ConfigType, node: str, target: str = "") -> OperatorProposalRequest:
    return OperatorProposalRequest(GPID, config_type=config_type, node=node, target=target)


def accepted(result: OperatorPlan | Refusal) -> OperatorPlan:
    assert isinstance(result, OperatorPlan), result
    return result


def refused(result: OperatorPlan | Refusal) -> str:
    assert isinstance(result, Refusal), result
    return result.reason


def secondary_report(
    ballot: int, status: PartitionStatus = PartitionStatus.SECONDARY
) -> dict[Gpid, ReplicaInfo]:
    return {GPID: ReplicaInfo(gpid=GPID, ballot=ballot, status=status, last_committed_decree=9)}


# ---------------------------------------------------------------------- balance


def test_move_pri_is_the_balancers_role_switch_step_down_then_the_chosen_secondary() -> None:
    plan = accepted(World().plan(balance(BalanceKind.MOVE_PRI, N1, N3)))
    assert plan.change is not None
    assert (plan.change.config_type, plan.change.node, plan.change.notify) == (
        ConfigType.DOWNGRADE_TO_SECONDARY,
        N1,
        N1,
    )
    assert plan.preferred_primary == PreferredPrimary(N3, NOW)
    assert plan.planned_removal is None and plan.preferred_learner is None


def test_copy_sec_drops_the_secondary_and_prefers_the_new_node_for_the_next_learner() -> None:
    plan = accepted(World().plan(balance(BalanceKind.COPY_SEC, N2, N4)))
    assert plan.change is not None
    assert (plan.change.config_type, plan.change.node, plan.change.notify) == (
        ConfigType.DOWNGRADE_TO_INACTIVE,
        N2,
        N1,
    )
    assert plan.preferred_learner == PreferredLearner(N4, NOW)


def test_copy_pri_steps_down_hands_the_role_to_the_least_loaded_secondary_and_plans_the_removal() -> None:
    world = World(primary_load=Counter({N2: 3, N3: 1}))
    plan = accepted(world.plan(balance(BalanceKind.COPY_PRI, N1, N4)))
    assert plan.change is not None
    assert (plan.change.config_type, plan.change.node) == (ConfigType.DOWNGRADE_TO_SECONDARY, N1)
    assert plan.preferred_primary == PreferredPrimary(N3, NOW)
    assert plan.planned_removal == PlannedRemoval(N1, N4, NOW)


@pytest.mark.parametrize(
    ("request_", "world", "reason"),
    [
        (
            balance(BalanceKind.MOVE_PRI, N2, N3),
            World(),
            f"{N2} is not the primary of 1.0 (the primary is {N1})",
        ),
        (balance(BalanceKind.MOVE_PRI, N1, N4), World(), f"{N4} is not a secondary of 1.0"),
        (balance(BalanceKind.MOVE_PRI, N1, N3), World(alive=(N1, N2), dead=(N3,)), f"{N3} was declared dead"),
        (
            balance(BalanceKind.MOVE_PRI, N1, N3),
            World(alive=(N2, N3), dead=(N1,)),
            f"the primary {N1} of 1.0 is not serving",
        ),
        (balance(BalanceKind.COPY_SEC, N1, N4), World(), f"{N1} is not a secondary of 1.0"),
        (balance(BalanceKind.COPY_SEC, N2, N3), World(), f"{N3} is already a member of 1.0"),
        (balance(BalanceKind.COPY_SEC, N2, N5), World(), f"unknown node {N5}"),
        (balance(BalanceKind.COPY_SEC, N2, N4), World(alive=(N1, N2, N3), pending=(N4,)), "has not synced"),
        (
            balance(BalanceKind.COPY_SEC, N2, N4),
            World(config=msgspec.structs.replace(HEALTHY, secondaries=(N2,))),
            "has 2 of 3 replicas",
        ),
        (
            balance(BalanceKind.COPY_SEC, N2, N4),
            World(alive=(N1, N2, N4), dead=(N3,)),
            f"member {N3} of 1.0 is not serving",
        ),
        (
            balance(BalanceKind.COPY_PRI, N1, N4),
            World(config=msgspec.structs.replace(HEALTHY, secondaries=(), max_replica_count=1)),
            "has no secondary to take over",
        ),
        (
            balance(BalanceKind.MOVE_PRI, N1, N3),
            World(config=msgspec.structs.replace(HEALTHY, primary=None, secondaries=(N1, N2, N3))),
            "1.0 has no primary",
        ),
    ],
)
def test_balance_refuses_moves_that_do_not_fit_the_group(
    request_: OperatorProposalRequest, world: World, reason: str
) -> None:
    assert reason in refused(world.plan(request_))


# ---------------------------------------------------------------------- common conditions


@pytest.mark.parametrize("level", [MetaLevel.STOPPED, MetaLevel.BLIND, MetaLevel.FREEZED])
def test_nothing_is_accepted_below_steady(level: MetaLevel) -> None:
    reason = refused(World(level=level).plan(balance(BalanceKind.MOVE_PRI, N1, N2)))
    assert reason == (
        f"meta level {level.name.lower()}: operator proposals need level steady or lively "
        "(set_meta_level steady)"
    )


def test_a_self_frozen_meta_says_why_it_refuses() -> None:
    world = World(level=MetaLevel.LIVELY, effective_level=MetaLevel.FREEZED)
    assert "too few replica servers are alive" in refused(
        world.plan(propose(ConfigType.DOWNGRADE_TO_SECONDARY, N1))
    )


def test_a_dropped_table_or_a_missing_partition_is_refused() -> None:
    dropped = msgspec.structs.replace(TABLE, status=TableStatus.DROPPED)
    assert (
        refused(World(table=dropped).plan(balance(BalanceKind.MOVE_PRI, N1, N2))) == "table 'temp' is dropped"
    )
    assert refused(World(table=None).plan(balance(BalanceKind.MOVE_PRI, N1, N2))) == "no partition 1.0"


def test_one_move_at_a_time() -> None:
    in_flight = World(change_in_flight=True)
    assert "being persisted" in refused(in_flight.plan(balance(BalanceKind.MOVE_PRI, N1, N2)))

    switching = World(config=msgspec.structs.replace(HEALTHY, primary=None, secondaries=(N2, N3, N1)))
    switching.book.preferred_primary[GPID] = PreferredPrimary(N2, NOW - 1)
    assert "primary switch of 1.0 to" in refused(switching.plan(propose(ConfigType.ASSIGN_PRIMARY, N3)))

    copying = World()
    copying.book.planned_removal[GPID] = PlannedRemoval(N1, N4, NOW - 1)
    assert "copy_pri of 1.0" in refused(copying.plan(balance(BalanceKind.MOVE_PRI, N1, N2)))

    learning = World(config=msgspec.structs.replace(HEALTHY, secondaries=(N2,)))
    learning.book.learner_requests[GPID] = LearnerRequest(N4, N1, NOW - 1)
    assert "learner is being added" in refused(learning.plan(propose(ConfigType.ADD_SECONDARY, N3)))
    # A learner does not block a step-down: the operator may want exactly that.
    assert isinstance(learning.plan(propose(ConfigType.DOWNGRADE_TO_SECONDARY, N1)), OperatorPlan)


def test_malformed_requests_are_invalid_arguments() -> None:
    for request in (
        OperatorProposalRequest(GPID),
        OperatorProposalRequest(
            GPID, config_type=ConfigType.ADD_SECONDARY, node=N4, balance=BalanceKind.COPY_SEC
        ),
        OperatorProposalRequest(GPID, config_type=ConfigType.ADD_SECONDARY),
        OperatorProposalRequest(GPID, balance=BalanceKind.MOVE_PRI, from_node=N1, to_node=N1),
        OperatorProposalRequest(GPID, balance=BalanceKind.MOVE_PRI, from_node=N1),
    ):
        with pytest.raises(InvalidArgumentError):
            World().plan(request)


# ---------------------------------------------------------------------- propose


def test_propose_downgrades_and_adds_go_through_the_primary() -> None:
    step_down = accepted(World().plan(propose(ConfigType.DOWNGRADE_TO_SECONDARY, N1, target=N1))).change
    assert step_down is not None and (step_down.node, step_down.notify) == (N1, N1)
    removal = accepted(World().plan(propose(ConfigType.DOWNGRADE_TO_INACTIVE, N3, target=N1))).change
    assert removal is not None and (removal.config_type, removal.node, removal.notify) == (
        ConfigType.DOWNGRADE_TO_INACTIVE,
        N3,
        N1,
    )
    short = World(config=msgspec.structs.replace(HEALTHY, secondaries=(N2,)))
    plan = accepted(short.plan(propose(ConfigType.ADD_SECONDARY, N4)))
    assert plan.learner == LearnerDecision(GPID, N1, N4, "operator propose")


@pytest.mark.parametrize(
    ("request_", "world", "reason"),
    [
        (propose(ConfigType.DOWNGRADE_TO_SECONDARY, N2), World(), f"{N2} is not the primary of 1.0"),
        (
            propose(ConfigType.DOWNGRADE_TO_SECONDARY, N1, target=N2),
            World(),
            f"target {N2} does not match: DOWNGRADE_TO_SECONDARY goes to {N1}",
        ),
        (propose(ConfigType.DOWNGRADE_TO_INACTIVE, N1), World(), "it steps down first"),
        (propose(ConfigType.DOWNGRADE_TO_INACTIVE, N4), World(), f"{N4} is not a secondary of 1.0"),
        (propose(ConfigType.ADD_SECONDARY, N4), World(), "1.0 is full (3 replicas)"),
        (propose(ConfigType.ADD_SECONDARY, N2), World(), f"{N2} is already a member"),
        (
            propose(ConfigType.ADD_SECONDARY, N4),
            World(config=msgspec.structs.replace(HEALTHY, secondaries=(N2,)), alive=(N1, N2), dead=(N4,)),
            f"{N4} was declared dead",
        ),
        (propose(ConfigType.UPGRADE_TO_SECONDARY, N4), World(), "not a change an operator proposes"),
        (propose(ConfigType.ASSIGN_PRIMARY, N2), World(), f"1.0 has a primary ({N1})"),
    ],
)
def test_propose_refuses_changes_that_do_not_fit(
    request_: OperatorProposalRequest, world: World, reason: str
) -> None:
    assert reason in refused(world.plan(request_))


def test_assign_primary_promotes_a_secondary_of_a_headless_group_once_the_old_primary_confirmed() -> None:
    headless = msgspec.structs.replace(HEALTHY, ballot=6, primary=None, secondaries=(N2, N3, N1))
    waiting = World(config=headless, last_change=ConfigType.DOWNGRADE_TO_SECONDARY, last_change_node=N1)
    assert "has not confirmed it stepped down" in refused(
        waiting.plan(propose(ConfigType.ASSIGN_PRIMARY, N2))
    )
    confirmed = dataclasses.replace(waiting, reports={N1: secondary_report(6)})
    change = accepted(confirmed.plan(propose(ConfigType.ASSIGN_PRIMARY, N2, target=N2))).change
    # Logged as UPGRADE_TO_PRIMARY: ASSIGN_PRIMARY is kept for a group with no member.
    assert change is not None and (change.config_type, change.node, change.notify) == (
        ConfigType.UPGRADE_TO_PRIMARY,
        N2,
        N2,
    )
    assert f"{N4} is not a secondary" in refused(confirmed.plan(propose(ConfigType.ASSIGN_PRIMARY, N4)))


def test_assign_primary_of_an_emptied_group_only_on_the_last_member_with_its_replica() -> None:
    emptied = PartitionConfiguration(gpid=GPID, ballot=9, last_drops=(N3, N2, N1))
    world = World(config=emptied)
    assert "only n1:34801, the last member dropped" in refused(
        world.plan(propose(ConfigType.ASSIGN_PRIMARY, N2))
    )
    assert "has not reported a replica" in refused(world.plan(propose(ConfigType.ASSIGN_PRIMARY, N1)))
    world.reports = {N1: secondary_report(8, PartitionStatus.INACTIVE)}
    change = accepted(world.plan(propose(ConfigType.ASSIGN_PRIMARY, N1))).change
    assert change is not None and (change.config_type, change.node) == (ConfigType.ASSIGN_PRIMARY, N1)
    # A brand-new partition holds no data: any live node will do.
    fresh = World(config=PartitionConfiguration(gpid=GPID, ballot=0))
    assert isinstance(fresh.plan(propose(ConfigType.ASSIGN_PRIMARY, N4)), OperatorPlan)


# ---------------------------------------------------------------------- what follows a move


def test_the_preferred_learner_beats_the_dropped_member_that_cure_would_add_back() -> None:
    after_copy = World(
        config=PartitionConfiguration(gpid=GPID, ballot=6, primary=N1, secondaries=(N3,), last_drops=(N2,))
    )
    view = after_copy.view()
    book = CureBook()
    decision = cure_partition(after_copy.record(), view, book)
    assert isinstance(decision, LearnerDecision) and decision.node == N2  # without a preference
    book = CureBook()
    record_plan(book, GPID, accepted(World().plan(balance(BalanceKind.COPY_SEC, N2, N4))))
    decision = cure_partition(after_copy.record(), view, book)
    assert decision == LearnerDecision(GPID, N1, N4, "operator's choice")


def test_copy_pri_drops_the_old_primary_once_the_heir_serves_a_full_group() -> None:
    world = World()
    plan = accepted(world.plan(balance(BalanceKind.COPY_PRI, N1, N4)))
    record_plan(world.book, GPID, plan)
    stepped_down = msgspec.structs.replace(HEALTHY, ballot=6, primary=None, secondaries=(N2, N3, N1))
    world.config = stepped_down
    assert operator_follow_up(world.record(), world.view(), world.book) is None  # no primary yet
    world.config = msgspec.structs.replace(stepped_down, ballot=7, primary=N2, secondaries=(N3, N1))
    decision = operator_follow_up(world.record(), world.view(), world.book)
    assert decision is not None
    assert (decision.config_type, decision.node, decision.notify) == (
        ConfigType.DOWNGRADE_TO_INACTIVE,
        N1,
        N2,
    )
    assert GPID not in world.book.planned_removal
    assert world.book.preferred_learner[GPID] == PreferredLearner(N4, NOW)


def test_copy_pri_is_given_up_when_the_old_primary_is_promoted_back() -> None:
    world = World()
    record_plan(world.book, GPID, accepted(world.plan(balance(BalanceKind.COPY_PRI, N1, N4))))
    world.config = msgspec.structs.replace(HEALTHY, ballot=7)  # N1 primary again
    assert operator_follow_up(world.record(), world.view(), world.book) is None
    assert GPID not in world.book.planned_removal
