"""Function levels (stopped / blind / freezed / steady / lively) and meta freezing itself."""

from __future__ import annotations

import dataclasses

import pytest

from pegasus_kv.core.errors import InvalidStateError
from pegasus_kv.core.ids import Gpid
from pegasus_kv.replication.pacifica.meta_requests import (
    CreateTableRequest,
    GetMetaLevelRequest,
    ListTablesRequest,
    MetaLevelResponse,
    SetMetaLevelRequest,
)
from pegasus_kv.replication.pacifica.meta_types import MetaLevel

from .meta_harness import N1, N2, N3, N4, N5, TEST_OPTIONS, MetaHarness


def _effective(meta: MetaHarness) -> MetaLevel:
    return meta.core.effective_level


def _set_level(meta: MetaHarness, level: MetaLevel) -> MetaLevelResponse:
    reply = meta.request(SetMetaLevelRequest(level=level))
    assert isinstance(reply, MetaLevelResponse)
    return reply


def test_the_default_level_is_steady_and_the_level_is_durable() -> None:
    meta = MetaHarness()
    assert meta.core.get_meta_level(GetMetaLevelRequest()).level == MetaLevel.STEADY
    _set_level(meta, MetaLevel.LIVELY)
    meta.crash_and_restart()
    assert meta.core.get_meta_level(GetMetaLevelRequest()).level == MetaLevel.LIVELY


def test_stopped_refuses_ddl_but_answers_queries_and_can_be_left() -> None:
    meta = MetaHarness()
    _set_level(meta, MetaLevel.STOPPED)
    with pytest.raises(InvalidStateError, match="STOPPED"):
        meta.core.create_table(CreateTableRequest(name="t", partition_count=1), reply_to=1)
    assert meta.core.list_tables(ListTablesRequest()).tables == []
    _set_level(meta, MetaLevel.STEADY)
    meta.create_table("t", partition_count=1)


@pytest.mark.parametrize("level", [MetaLevel.STOPPED, MetaLevel.BLIND, MetaLevel.FREEZED])
def test_levels_below_steady_do_not_cure(level: MetaLevel) -> None:
    meta = MetaHarness()
    app_id = meta.create_table("temp", partition_count=2)
    _set_level(meta, level)
    meta.advance(3)
    assert all(c.primary is None for c in meta.configs(app_id))
    _set_level(meta, MetaLevel.STEADY)
    meta.advance(1)
    assert all(c.primary is not None for c in meta.configs(app_id))


def test_blind_still_takes_ddl() -> None:
    meta = MetaHarness()
    _set_level(meta, MetaLevel.BLIND)
    app_id = meta.create_table("temp", partition_count=1)
    meta.advance(2)
    assert meta.configs(app_id)[0].primary is None


def test_meta_freezes_itself_when_too_few_nodes_are_alive_and_thaws_when_they_return() -> None:
    options = dataclasses.replace(TEST_OPTIONS, min_live_node_count=3, min_live_node_percent=0)
    meta = MetaHarness((N1, N2, N3, N4), options=options)
    app_id = meta.create_table("temp", partition_count=1, replica_count=3)
    meta.fill_groups(app_id)
    gpid = Gpid(app_id, 0)
    config = meta.config(gpid)
    spare = next(n for n in (N1, N2, N3, N4) if n not in config.members)
    primary = config.primary
    assert primary is not None
    # The primary and the spare go silent: two of four alive, under the minimum of three.
    meta.stop(primary)
    meta.stop(spare)
    meta.advance(10)
    assert _effective(meta) == MetaLevel.FREEZED
    response = meta.core.get_meta_level(GetMetaLevelRequest())
    assert (response.level, response.effective_level) == (MetaLevel.STEADY, MetaLevel.FREEZED)
    assert meta.config(gpid) == config  # no cure while frozen: the dead primary stays named

    # The spare comes back (it resyncs): three alive, meta thaws and promotes a secondary.
    meta.up.add(spare)
    meta.sync(spare)
    meta.advance(1)
    assert _effective(meta) == MetaLevel.STEADY
    assert meta.config(gpid).primary in config.secondaries


def test_meta_freezes_when_under_the_percentage_of_known_nodes() -> None:
    options = dataclasses.replace(TEST_OPTIONS, min_live_node_count=1, min_live_node_percent=65)
    meta = MetaHarness((N1, N2, N3, N4, N5), options=options)
    meta.stop(N4)
    meta.advance(7)
    assert _effective(meta) == MetaLevel.STEADY  # 4 of 5 = 80%
    meta.stop(N5)
    meta.advance(7)
    assert _effective(meta) == MetaLevel.FREEZED  # 3 of 5 = 60% < 65%
    # An operator's lower level always wins over the self-freeze.
    _set_level(meta, MetaLevel.BLIND)
    assert _effective(meta) == MetaLevel.BLIND


def test_right_after_a_restart_pending_nodes_count_as_alive_for_the_freeze() -> None:
    options = dataclasses.replace(TEST_OPTIONS, min_live_node_count=3)
    meta = MetaHarness((N1, N2, N3), options=options)
    app_id = meta.create_table("temp", partition_count=1)
    meta.fill_groups(app_id)
    meta.crash_and_restart()
    assert _effective(meta) == MetaLevel.STEADY
