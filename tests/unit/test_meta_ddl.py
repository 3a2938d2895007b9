"""Table DDL through the meta core: create, drop, recall, rename, envs; bad input gets typed errors."""

from __future__ import annotations

import pytest

from pegasus_kv.core.errors import (
    ErrorCode,
    InvalidArgumentError,
    InvalidStateError,
    TableExistsError,
    TableNotFoundError,
)
from pegasus_kv.core.messages import ErrorReply
from pegasus_kv.replication.pacifica.config import PartitionStatus
from pegasus_kv.replication.pacifica.meta_requests import (
    AppEnvsResponse,
    ClearAppEnvsRequest,
    CreateTableRequest,
    CreateTableResponse,
    DelAppEnvsRequest,
    DropTableRequest,
    DropTableResponse,
    ListTablesRequest,
    QueryConfigRequest,
    QueryConfigResponse,
    RecallTableRequest,
    RecallTableResponse,
    RenameTableRequest,
    RenameTableResponse,
    SetAppEnvsRequest,
)
from pegasus_kv.replication.pacifica.meta_types import TableStatus

from .meta_harness import N1, N2, MetaHarness, replica


def test_create_then_query_the_configuration_a_client_routes_by() -> None:
    meta = MetaHarness()
    reply = meta.request(CreateTableRequest(name="temp", partition_count=8, replica_count=3, envs={"a": "1"}))
    assert isinstance(reply, CreateTableResponse) and reply.partition_count == 8
    meta.advance(1)
    query = meta.request(QueryConfigRequest(name="temp"))
    assert isinstance(query, QueryConfigResponse)
    assert query.app_id == reply.app_id and query.partition_count == 8 and query.replica_count == 3
    assert [c.gpid.partition_index for c in query.configs] == list(range(8))
    assert all(c.primary is not None for c in query.configs)
    second = meta.request(CreateTableRequest(name="other", partition_count=1))
    assert isinstance(second, CreateTableResponse) and second.app_id == reply.app_id + 1


def test_bad_create_requests_get_typed_errors() -> None:
    meta = MetaHarness()
    core = meta.core
    meta.create_table("temp", partition_count=4)
    cases: list[tuple[CreateTableRequest, type[Exception], str]] = [
        (CreateTableRequest(name="t", partition_count=3), InvalidArgumentError, "power of two"),
        (CreateTableRequest(name="t", partition_count=0), InvalidArgumentError, "power of two"),
        (CreateTableRequest(name="t", partition_count=8192), InvalidArgumentError, "over the limit"),
        (CreateTableRequest(name="t", partition_count=4, replica_count=6), InvalidArgumentError, "1..5"),
        (CreateTableRequest(name="t", partition_count=4, replica_count=0), InvalidArgumentError, "1..5"),
        (CreateTableRequest(name="", partition_count=4), InvalidArgumentError, "empty"),
        (CreateTableRequest(name="a b", partition_count=4), InvalidArgumentError, "characters"),
        (CreateTableRequest(name="t", partition_count=4, envs={"": "x"}), InvalidArgumentError, "empty key"),
        (CreateTableRequest(name="temp", partition_count=4), TableExistsError, "exists"),
        (
            CreateTableRequest(name="temp", partition_count=8, success_if_exist=True),
            TableExistsError,
            "4 partitions",
        ),
    ]
    for request, error, text in cases:
        with pytest.raises(error, match=text):
            core.create_table(request, reply_to=1)
    assert [t.name for t in core.state.tables()] == ["temp"]


def test_success_if_exist_returns_the_existing_table() -> None:
    meta = MetaHarness()
    app_id = meta.create_table("temp", partition_count=4)
    reply = meta.request(CreateTableRequest(name="temp", partition_count=4, success_if_exist=True))
    assert isinstance(reply, CreateTableResponse) and reply.app_id == app_id
    assert len(meta.core.state.tables()) == 1


def test_errors_through_on_request_become_error_replies_with_the_wire_code() -> None:
    meta = MetaHarness()
    reply = meta.request(QueryConfigRequest(name="missing"))
    assert isinstance(reply, ErrorReply) and reply.code == ErrorCode.TABLE_NOT_FOUND
    reply = meta.request(CreateTableRequest(name="t", partition_count=5))
    assert isinstance(reply, ErrorReply) and reply.code == ErrorCode.INVALID_ARGUMENT


def test_drop_hides_the_table_recall_brings_it_back_with_its_partitions() -> None:
    meta = MetaHarness()
    app_id = meta.create_table("temp", partition_count=2)
    meta.fill_groups(app_id)
    configs = meta.configs(app_id)

    dropped = meta.request(DropTableRequest(name="temp"))
    assert isinstance(dropped, DropTableResponse) and dropped.expire_tick == meta.tick + 100
    with pytest.raises(TableNotFoundError):
        meta.core.query_config(QueryConfigRequest(name="temp"))
    assert meta.core.list_tables(ListTablesRequest()).tables == []
    listed = meta.core.list_tables(ListTablesRequest(include_dropped=True)).tables
    assert [(t.name, t.status) for t in listed] == [("temp", TableStatus.DROPPED)]
    # Its replicas stop being listed to their servers, but are not deleted (recall needs them).
    answer = meta.sync(N1, *(replica(c.gpid, c.ballot) for c in configs if N1 in c.members))
    assert answer.configs == [] and answer.gc_gpids == []

    recalled = meta.request(RecallTableRequest(app_id=app_id))
    assert isinstance(recalled, RecallTableResponse) and recalled.name == "temp"
    assert meta.configs(app_id) == configs


def test_a_dropped_table_is_purged_after_its_hold_and_its_replicas_collected() -> None:
    meta = MetaHarness()
    app_id = meta.create_table("temp", partition_count=1)
    meta.fill_groups(app_id)
    gpid = meta.configs(app_id)[0].gpid
    meta.request(DropTableRequest(name="temp", hold_ticks=5))
    meta.advance(4)
    assert meta.core.state.table(app_id) is not None
    meta.advance(1)
    assert meta.core.state.table(app_id) is None
    with pytest.raises(TableNotFoundError):
        meta.core.recall_table(RecallTableRequest(app_id=app_id), reply_to=1)
    answer = meta.sync(N2, replica(gpid, 3, PartitionStatus.SECONDARY))
    assert answer.gc_gpids == [gpid]


def test_recall_needs_a_new_name_when_the_old_one_was_taken() -> None:
    meta = MetaHarness()
    old = meta.create_table("temp", partition_count=1)
    meta.request(DropTableRequest(name="temp"))
    meta.create_table("temp", partition_count=2)
    with pytest.raises(TableExistsError, match="new name"):
        meta.core.recall_table(RecallTableRequest(app_id=old), reply_to=1)
    with pytest.raises(InvalidStateError, match="not dropped"):
        meta.core.recall_table(RecallTableRequest(app_id=old + 1), reply_to=1)
    reply = meta.request(RecallTableRequest(app_id=old, new_name="temp_old"))
    assert isinstance(reply, RecallTableResponse) and reply.name == "temp_old"
    assert sorted(t.name for t in meta.core.state.tables()) == ["temp", "temp_old"]


def test_rename_moves_the_name_and_keeps_the_configurations() -> None:
    meta = MetaHarness()
    app_id = meta.create_table("temp", partition_count=2)
    meta.create_table("busy", partition_count=1)
    meta.advance(1)
    configs = meta.configs(app_id)
    reply = meta.request(RenameTableRequest(old_name="temp", new_name="fresh"))
    assert isinstance(reply, RenameTableResponse) and reply.app_id == app_id
    query = meta.core.query_config(QueryConfigRequest(name="fresh"))
    assert query.configs == configs
    with pytest.raises(TableNotFoundError):
        meta.core.rename_table(RenameTableRequest(old_name="temp", new_name="x"), reply_to=1)
    with pytest.raises(TableExistsError):
        meta.core.rename_table(RenameTableRequest(old_name="fresh", new_name="busy"), reply_to=1)
    with pytest.raises(InvalidArgumentError):
        meta.core.rename_table(RenameTableRequest(old_name="fresh", new_name="fresh"), reply_to=1)


def test_app_envs_set_delete_and_clear_by_prefix() -> None:
    meta = MetaHarness()
    meta.create_table("temp", partition_count=1)
    reply = meta.request(
        SetAppEnvsRequest(
            name="temp", envs={"replica.deny_client_request": "reject", "manual_compact.once": "1"}
        )
    )
    assert isinstance(reply, AppEnvsResponse) and len(reply.envs) == 2
    reply = meta.request(DelAppEnvsRequest(name="temp", keys=["replica.deny_client_request", "absent"]))
    assert isinstance(reply, AppEnvsResponse) and reply.envs == {"manual_compact.once": "1"}
    store_size = len(meta.store)
    reply = meta.request(DelAppEnvsRequest(name="temp", keys=["absent"]))  # changes nothing: not logged
    assert isinstance(reply, AppEnvsResponse) and len(meta.store) == store_size
    reply = meta.request(ClearAppEnvsRequest(name="temp", prefix="manual_compact."))
    assert isinstance(reply, AppEnvsResponse) and reply.envs == {}
    with pytest.raises(InvalidArgumentError, match="longer"):
        meta.core.set_app_envs(SetAppEnvsRequest(name="temp", envs={"k": "v" * 5000}), reply_to=1)
    with pytest.raises(TableNotFoundError):
        meta.core.set_app_envs(SetAppEnvsRequest(name="nope", envs={"k": "v"}), reply_to=1)


def test_ddl_on_a_name_being_created_sees_the_pending_table() -> None:
    meta = MetaHarness(auto_persist=False)
    meta.run(meta.core.create_table(CreateTableRequest(name="temp", partition_count=1), reply_to=1))
    with pytest.raises(TableExistsError):
        meta.core.create_table(CreateTableRequest(name="temp", partition_count=1), reply_to=2)
    # ...but queries only answer from durable state.
    with pytest.raises(TableNotFoundError):
        meta.core.query_config(QueryConfigRequest(name="temp"))
    meta.persist()
    assert meta.core.query_config(QueryConfigRequest(name="temp")).partition_count == 1


def test_a_drop_with_no_hold_is_purged_even_while_earlier_changes_are_in_flight() -> None:
    meta = MetaHarness(auto_persist=False)
    meta.run(meta.core.create_table(CreateTableRequest(name="temp", partition_count=2), reply_to=1))
    meta.advance(1)  # primaries assigned, not yet durable
    meta.run(meta.core.drop_table(DropTableRequest(name="temp", hold_ticks=0), reply_to=2))
    meta.advance(1)  # purged
    assert meta.core.projected_state.tables() == []
    meta.persist(1)
    meta.persist()
    assert meta.core.state.tables() == [] and meta.core.state.next_app_id == 2
