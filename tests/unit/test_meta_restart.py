"""Meta restarts mid-change: nothing durable is lost, and nothing unpersisted was ever told."""

from __future__ import annotations

import dataclasses

import pytest

from pegasus_kv.core.errors import BusyError
from pegasus_kv.core.ids import Gpid
from pegasus_kv.replication.pacifica.config import ConfigType
from pegasus_kv.replication.pacifica.meta_requests import (
    CreateTableRequest,
    CreateTableResponse,
    DropTableRequest,
    DropTableResponse,
    ListTablesRequest,
    ListTablesResponse,
    QueryConfigRequest,
    QueryConfigResponse,
)
from pegasus_kv.replication.pacifica.meta_types import NodeLiveness

from .meta_harness import N1, N2, N3, TEST_OPTIONS, MetaHarness, proposal_response


def test_a_promotion_lost_in_a_crash_was_never_announced_and_is_decided_again() -> None:
    meta = MetaHarness((N1, N2, N3))
    app_id = meta.create_table("temp", partition_count=1)
    meta.fill_groups(app_id)
    gpid = Gpid(app_id, 0)
    before = meta.config(gpid)
    assert before.primary is not None
    meta.stop(before.primary)
    meta.auto_persist = False
    told_before = len(meta.delivered)

    meta.advance(7)  # the primary is declared dead; the promotion waits to be persisted
    assert meta.core.has_pending_change(gpid)
    assert meta.core.projected_state.config(gpid) != before
    # Nobody heard about it: no command, and queries still show the durable configuration.
    assert meta.delivered[told_before:] == []
    query = meta.core.query_config(QueryConfigRequest(name="temp"))
    assert query.configs == [before]

    meta.crash_and_restart()
    assert meta.config(gpid) == before  # the undecided promotion is simply gone
    meta.auto_persist = True
    # The old primary is PENDING again with a fresh grace: only after it, the promotion is redone.
    meta.advance(meta.options.grace_ticks)
    assert meta.config(gpid) == before
    meta.advance(1)
    assert meta.core.liveness(before.primary) == NodeLiveness.DEAD
    meta.advance(1)
    after = meta.config(gpid)
    assert after.primary in before.secondaries and after.ballot == before.ballot + 1
    promote = meta.commands(to=after.primary)[-1]
    assert promote.config == after and promote.config_type == ConfigType.UPGRADE_TO_PRIMARY


def test_an_accepted_proposal_survives_the_crash_that_follows_its_reply() -> None:
    meta = MetaHarness((N1, N2, N3))
    app_id = meta.create_table("temp", partition_count=1)
    meta.fill_groups(app_id)
    config = meta.config(Gpid(app_id, 0))
    token, _ = meta.propose(config, ConfigType.DOWNGRADE_TO_INACTIVE, config.secondaries[0])
    accepted = proposal_response(meta, token)
    assert accepted.accepted

    meta.crash_and_restart()
    assert meta.config(config.gpid) == accepted.config
    # And the primary's next proposal, made against the acknowledged ballot, still fits.
    token, _ = meta.propose(accepted.config, ConfigType.DOWNGRADE_TO_INACTIVE, config.secondaries[1])
    assert proposal_response(meta, token).accepted


def test_a_drop_that_was_not_persisted_is_neither_answered_nor_applied_after_a_crash() -> None:
    meta = MetaHarness((N1, N2, N3))
    meta.create_table("temp", partition_count=2)
    meta.create_table("keep", partition_count=2)
    meta.auto_persist = False
    token = meta.reply_token()
    meta.run(meta.core.on_request(DropTableRequest(name="temp"), token, meta.tick))
    assert meta.replies_to(token) == []

    meta.crash_and_restart()
    listed = meta.core.list_tables(ListTablesRequest())
    assert [t.name for t in listed.tables] == ["temp", "keep"]
    assert meta.replies_to(token) == []

    meta.auto_persist = True
    reply = meta.request(DropTableRequest(name="temp"))
    assert isinstance(reply, DropTableResponse)
    meta.crash_and_restart(via_snapshot=True)
    relisted = meta.request(ListTablesRequest())
    assert isinstance(relisted, ListTablesResponse) and [t.name for t in relisted.tables] == ["keep"]
    config = meta.request(QueryConfigRequest(name="keep"))
    assert isinstance(config, QueryConfigResponse) and config.partition_count == 2


def test_batches_persisted_in_order_release_their_messages_only_when_durable() -> None:
    meta = MetaHarness((N1, N2, N3))
    meta.auto_persist = False
    token = meta.reply_token()
    meta.run(meta.core.on_request(CreateTableRequest(name="t", partition_count=2), token, meta.tick))
    # A second create of the same table with success_if_exist waits for the first to be durable.
    token2 = meta.reply_token()
    ready = meta.run(
        meta.core.on_request(
            CreateTableRequest(name="t", partition_count=2, success_if_exist=True), token2, meta.tick
        )
    )
    assert ready.persist == () and ready.persist_seq == 1 and len(ready.replies_after_persist) == 1
    meta.advance(1)  # cure assigns primaries in batch 2
    assert meta.commands() == [] and meta.replies_to(token) == [] and meta.replies_to(token2) == []

    meta.persist(1)
    first = meta.reply(token)
    assert isinstance(first, CreateTableResponse) and meta.reply(token2) == first
    assert meta.commands() == []  # batch 2 is not durable yet
    meta.persist()
    assert {c.config_type for c in meta.commands()} == {ConfigType.ASSIGN_PRIMARY}


def test_when_the_store_falls_behind_meta_stops_making_changes_until_it_catches_up() -> None:
    options = dataclasses.replace(TEST_OPTIONS, max_batches_in_flight=2)
    meta = MetaHarness((N1, N2, N3), options=options, auto_persist=False)
    meta.run(meta.core.create_table(CreateTableRequest(name="a", partition_count=1), reply_to=1))
    meta.run(meta.core.create_table(CreateTableRequest(name="b", partition_count=1), reply_to=2))
    with pytest.raises(BusyError):
        meta.core.create_table(CreateTableRequest(name="c", partition_count=1), reply_to=3)
    ready = meta.run(meta.core.on_tick(1))
    assert ready.persist == ()  # no cure while two batches wait
    meta.persist()
    meta.advance(1)
    meta.persist()
    assert all(c.primary is not None for app in (1, 2) for c in meta.configs(app))
