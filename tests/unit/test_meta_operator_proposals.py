"""The meta core carries out an operator's `balance` and `propose` from start to end.

Stories on a 4-node cluster (N4 holds nothing of the table at first): the request goes through
on_request like any admin request, the change is durable before anyone hears of it, and cure
finishes the move over the following ticks.
"""

from __future__ import annotations

from pegasus_kv.core.errors import ErrorCode
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import ErrorReply
from pegasus_kv.replication.pacifica.config import ConfigType, PartitionStatus
from pegasus_kv.replication.pacifica.meta_requests import DropTableRequest, SetMetaLevelRequest
from pegasus_kv.replication.pacifica.meta_types import MetaLevel
from pegasus_kv.replication.pacifica.operator_messages import (
    BalanceKind,
    OperatorProposalRequest,
    OperatorProposalResponse,
)

from .meta_harness import N1, N2, N3, N4, MetaHarness, replica

GPID = Gpid(1, 0)


def _cluster() -> MetaHarness:
    """One partition whose group is N1 (primary), N2, N3; N4 is up and holds nothing."""
    meta = MetaHarness((N1,))
    app_id = meta.create_table("temp", partition_count=1)
    assert app_id == GPID.app_id
    meta.advance(1)  # N1, the only node up, becomes primary
    for node in (N2, N3):
        meta.up.add(node)
        meta.beacon(node)
    meta.fill_groups(app_id)
    meta.up.add(N4)
    meta.beacon(N4)
    config = meta.config(GPID)
    assert config.primary == N1 and set(config.secondaries) == {N2, N3}
    return meta


def _balance(meta: MetaHarness, kind: BalanceKind, from_node: str, to_node: str) -> OperatorProposalResponse:
    reply = meta.request(OperatorProposalRequest(GPID, balance=kind, from_node=from_node, to_node=to_node))
    assert isinstance(reply, OperatorProposalResponse), reply
    return reply


def _propose(
    meta: MetaHarness, config_type: ConfigType, node: str, target: str = ""
) -> OperatorProposalResponse:
    reply = meta.request(OperatorProposalRequest(GPID, config_type=config_type, node=node, target=target))
    assert isinstance(reply, OperatorProposalResponse), reply
    return reply


def _report_roles(meta: MetaHarness, node: str) -> None:
    """The server applied its commands and reports its replica with its durable role."""
    config = meta.config(GPID)
    meta.sync(node, replica(GPID, config.ballot, config.status_of(node)))


def _teach(meta: MetaHarness, since: int) -> list[str]:
    """Play the primary: every ADD_SECONDARY since `since` becomes UPGRADE_TO_SECONDARY; returns
    the learners' nodes."""
    learners = []
    for command in meta.commands()[since:]:
        if command.config_type == ConfigType.ADD_SECONDARY:
            learners.append(command.node)
            meta.propose(meta.config(GPID), ConfigType.UPGRADE_TO_SECONDARY, command.node)
    return learners


def test_move_pri_makes_the_chosen_secondary_primary_after_the_old_one_confirms() -> None:
    meta = _cluster()
    before = meta.config(GPID)
    reply = _balance(meta, BalanceKind.MOVE_PRI, N1, N3)
    assert reply.accepted and reply.config is not None
    assert reply.config.primary is None and reply.config.ballot == before.ballot + 1
    told = meta.commands(to=N1)[-1]
    assert told.config_type == ConfigType.DOWNGRADE_TO_SECONDARY and told.config == reply.config
    meta.advance(3)
    assert meta.config(GPID).primary is None  # N1 has not confirmed it stepped down
    _report_roles(meta, N1)
    meta.advance(1)
    after = meta.config(GPID)
    assert after.primary == N3 and set(after.secondaries) == {N1, N2}
    assert meta.commands(to=N3)[-1].config_type == ConfigType.UPGRADE_TO_PRIMARY


def test_an_accepted_change_is_answered_only_once_durable_and_a_second_one_is_refused_meanwhile() -> None:
    meta = _cluster()
    meta.auto_persist = False
    token = meta.reply_token()
    request = OperatorProposalRequest(GPID, balance=BalanceKind.MOVE_PRI, from_node=N1, to_node=N2)
    meta.run(meta.core.on_request(request, token, meta.tick))
    assert (
        meta.replies_to(token) == []
        and meta.commands(to=N1)[-1].config_type != ConfigType.DOWNGRADE_TO_SECONDARY
    )
    second = meta.request(
        OperatorProposalRequest(GPID, balance=BalanceKind.MOVE_PRI, from_node=N1, to_node=N3)
    )
    assert isinstance(second, OperatorProposalResponse) and not second.accepted
    assert "being persisted" in second.reason
    meta.persist()
    reply = meta.reply(token)
    assert isinstance(reply, OperatorProposalResponse) and reply.accepted
    assert meta.commands(to=N1)[-1].config_type == ConfigType.DOWNGRADE_TO_SECONDARY


def test_copy_sec_moves_a_secondary_to_a_new_node_not_back_to_where_it_was() -> None:
    meta = _cluster()
    handled = len(meta.commands())
    reply = _balance(meta, BalanceKind.COPY_SEC, N2, N4)
    assert reply.accepted and reply.config is not None
    assert reply.config.secondaries == (N3,) and reply.config.last_drops[-1] == N2
    meta.advance(1)
    # N2 is alive and was just dropped: without the preference cure would add it straight back.
    assert _teach(meta, handled) == [N4]
    after = meta.config(GPID)
    assert after.primary == N1 and set(after.secondaries) == {N3, N4}
    meta.advance(5)
    assert set(meta.config(GPID).members) == {N1, N3, N4}


def test_copy_pri_hands_the_primary_role_over_then_moves_the_replica() -> None:
    meta = _cluster()
    reply = _balance(meta, BalanceKind.COPY_PRI, N1, N4)
    assert reply.accepted, reply.reason
    assert meta.config(GPID).primary is None
    # A second move waits for this one.
    busy = _balance(meta, BalanceKind.COPY_SEC, N2, N4)
    assert not busy.accepted and "under way" in busy.reason
    _report_roles(meta, N1)
    handled = len(meta.commands())
    meta.advance(1)
    heir = meta.config(GPID).primary
    assert heir in (N2, N3)
    meta.advance(1)
    assert N1 not in meta.config(GPID).members
    meta.advance(1)
    assert _teach(meta, handled) == [N4]
    after = meta.config(GPID)
    assert after.primary == heir and set(after.members) == {N2, N3, N4}


def test_propose_removes_a_secondary_and_adds_a_learner_through_the_primary() -> None:
    meta = _cluster()
    removed = _propose(meta, ConfigType.DOWNGRADE_TO_INACTIVE, N3, target=N1)
    assert removed.accepted and removed.config is not None and N3 not in removed.config.members
    handled = len(meta.commands())
    added = _propose(meta, ConfigType.ADD_SECONDARY, N4, target=N1)
    assert added.accepted and added.config == meta.config(GPID)
    command = meta.commands(to=N1)[-1]
    assert command.config_type == ConfigType.ADD_SECONDARY and command.node == N4
    assert _teach(meta, handled) == [N4]
    assert set(meta.config(GPID).members) == {N1, N2, N4}


def test_refusals_change_nothing_and_say_why() -> None:
    meta = _cluster()
    events = len(meta.store)
    wrong_primary = _balance(meta, BalanceKind.MOVE_PRI, N2, N3)
    assert (
        not wrong_primary.accepted
        and wrong_primary.reason == f"{N2} is not the primary of 1.0 (the primary is {N1})"
    )
    assert wrong_primary.config == meta.config(GPID)
    not_member = _propose(meta, ConfigType.DOWNGRADE_TO_INACTIVE, N4)
    assert not not_member.accepted and not_member.reason == f"{N4} is not a secondary of 1.0"
    missing = meta.request(OperatorProposalRequest(Gpid(1, 7), config_type=ConfigType.ADD_SECONDARY, node=N4))
    assert isinstance(missing, OperatorProposalResponse)
    assert (missing.accepted, missing.reason, missing.config) == (False, "no partition 1.7", None)
    assert len(meta.store) == events and meta.config(GPID).primary == N1


def test_levels_below_steady_and_dropped_tables_refuse_operator_changes() -> None:
    meta = _cluster()
    meta.request(SetMetaLevelRequest(level=MetaLevel.FREEZED))
    frozen = _balance(meta, BalanceKind.MOVE_PRI, N1, N2)
    assert not frozen.accepted and frozen.reason.startswith("meta level freezed")
    meta.request(SetMetaLevelRequest(level=MetaLevel.LIVELY))
    meta.request(DropTableRequest(name="temp"))
    dropped = _balance(meta, BalanceKind.MOVE_PRI, N1, N2)
    assert not dropped.accepted and dropped.reason == "table 'temp' is dropped"


def test_a_malformed_request_is_an_invalid_argument() -> None:
    meta = _cluster()
    reply = meta.request(OperatorProposalRequest(GPID))
    assert isinstance(reply, ErrorReply) and reply.code == ErrorCode.INVALID_ARGUMENT


def test_an_operator_move_survives_a_meta_restart_as_a_durable_step_down() -> None:
    meta = _cluster()
    assert _balance(meta, BalanceKind.MOVE_PRI, N1, N3).accepted
    meta.crash_and_restart()  # the preference is soft and lost; the step-down is durable
    for node in (N1, N2, N3, N4):
        meta.beacon(node)
    meta.advance(2)
    assert meta.config(GPID).primary is None
    meta.sync(N1, replica(GPID, meta.config(GPID).ballot, PartitionStatus.SECONDARY))
    meta.advance(1)
    assert meta.config(GPID).primary in (N1, N2, N3)
