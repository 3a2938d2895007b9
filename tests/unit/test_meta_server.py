"""The meta server on loopback: tables over RPC, replica servers made primary, restarts that lose nothing.

Each story starts a real MetaServer (local store in tmp_path, 20 ms ticks, a free port) and talks to
it over real sockets, as clients, the admin shell and replica servers do.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pegasus_kv.core.errors import InvalidArgumentError, TableExistsError, TableNotFoundError
from pegasus_kv.core.ids import Gpid
from pegasus_kv.replication.meta.admin_messages import ClusterInfoRequest, ClusterInfoResponse
from pegasus_kv.replication.meta.server import MetaServer
from pegasus_kv.replication.pacifica.config import ConfigProposal, ConfigType
from pegasus_kv.replication.pacifica.meta_messages import ConfigProposalRequest, ConfigProposalResponse
from pegasus_kv.replication.pacifica.meta_requests import (
    CreateTableRequest,
    CreateTableResponse,
    DropTableRequest,
    DropTableResponse,
    ListNodesRequest,
    ListNodesResponse,
    ListTablesRequest,
    ListTablesResponse,
    QueryConfigRequest,
    QueryConfigResponse,
    RecallTableRequest,
    RecallTableResponse,
)
from pegasus_kv.replication.pacifica.meta_types import NodeLiveness, TableStatus

from .meta_server_support import FakeReplicaServer, MetaCaller, eventually, meta_config, run, running


async def create(meta: MetaCaller, name: str, partition_count: int = 4, replica_count: int = 3) -> int:
    request = CreateTableRequest(name=name, partition_count=partition_count, replica_count=replica_count)
    return (await meta.call(request, CreateTableResponse)).app_id


async def query(meta: MetaCaller, name: str) -> QueryConfigResponse:
    return await meta.call(QueryConfigRequest(name=name), QueryConfigResponse)


async def table_names(meta: MetaCaller, *, include_dropped: bool = False) -> list[str]:
    reply = await meta.call(ListTablesRequest(include_dropped=include_dropped), ListTablesResponse)
    return [table.name for table in reply.tables]


def test_a_table_created_over_rpc_is_listed_with_one_unassigned_configuration_per_partition(
    tmp_path: Path,
) -> None:
    async def story() -> None:
        async with running(MetaServer(meta_config(tmp_path))) as server:
            meta = await MetaCaller.to(server.address)
            app_id = await create(meta, "temp", partition_count=8)

            assert await table_names(meta) == ["temp"]
            config = await query(meta, "temp")
            assert (config.app_id, config.partition_count, config.replica_count) == (app_id, 8, 3)
            # No replica server has beaconed: every partition waits for a primary.
            assert [c.gpid for c in config.configs] == [Gpid(app_id, index) for index in range(8)]
            assert all(c.primary is None and c.secondaries == () and c.ballot == 0 for c in config.configs)
            await meta.close()

    run(story)


def test_table_ddl_errors_come_back_as_typed_errors(tmp_path: Path) -> None:
    async def story() -> None:
        async with running(MetaServer(meta_config(tmp_path))) as server:
            meta = await MetaCaller.to(server.address)
            await create(meta, "temp")

            with pytest.raises(TableExistsError):
                await create(meta, "temp")
            with pytest.raises(InvalidArgumentError, match="power of two"):
                await create(meta, "three", partition_count=3)
            with pytest.raises(TableNotFoundError):
                await query(meta, "missing")
            with pytest.raises(TableNotFoundError):
                await meta.call(DropTableRequest(name="missing"), DropTableResponse)
            # The refusals changed nothing.
            assert await table_names(meta) == ["temp"]
            await meta.close()

    run(story)


def test_a_beaconing_replica_server_becomes_primary_and_is_told_so_after_meta_persisted_it(
    tmp_path: Path,
) -> None:
    async def story() -> None:
        async with running(MetaServer(meta_config(tmp_path))) as server:
            meta = await MetaCaller.to(server.address)
            app_id = await create(meta, "temp", partition_count=4)
            replica = FakeReplicaServer(server.address)
            await replica.start()
            try:

                async def all_assigned() -> bool:
                    return all(c.primary == replica.address for c in (await query(meta, "temp")).configs)

                await eventually(all_assigned)
                configs = (await query(meta, "temp")).configs
                assert all(c.ballot == 1 for c in configs)

                # The replica server heard of each assignment, with the configuration meta persisted.
                async def told_of_all() -> bool:
                    return len(replica.primary_of) == 4

                await eventually(told_of_all)
                assigned = [c for c in replica.commands if c.config_type == ConfigType.ASSIGN_PRIMARY]
                assert sorted(c.config.gpid for c in assigned) == [Gpid(app_id, i) for i in range(4)]
                assert {c.config for c in assigned} == set(configs)

                nodes = (await meta.call(ListNodesRequest(), ListNodesResponse)).nodes
                assert [(n.address, n.liveness, n.primary_count) for n in nodes] == [
                    (replica.address, NodeLiveness.ALIVE, 4)
                ]
                info = await meta.call(ClusterInfoRequest(), ClusterInfoResponse)
                assert (info.leader, info.table_count, info.alive_node_count) == (server.address, 1, 1)
                # A primary alone out of three replicas: readable, not writable.
                assert (info.partition_count, info.unwritable_partition_count) == (4, 4)
            finally:
                await replica.stop()
            await meta.close()

    run(story)


def test_a_replica_server_that_stops_beaconing_is_declared_dead(tmp_path: Path) -> None:
    async def story() -> None:
        async with running(MetaServer(meta_config(tmp_path))) as server:
            meta = await MetaCaller.to(server.address)
            replica = FakeReplicaServer(server.address)
            await replica.start()
            await eventually(lambda: _liveness_is(meta, replica.address, NodeLiveness.ALIVE))
            await replica.stop()  # silent from now on; grace is 0.6 s

            await eventually(lambda: _liveness_is(meta, replica.address, NodeLiveness.DEAD))
            info = await meta.call(ClusterInfoRequest(), ClusterInfoResponse)
            assert (info.alive_node_count, info.dead_node_count) == (0, 1)
            await meta.close()

    run(story)


async def _liveness_is(meta: MetaCaller, node: str, liveness: NodeLiveness) -> bool:
    nodes = (await meta.call(ListNodesRequest(), ListNodesResponse)).nodes
    return any(n.address == node and n.liveness == liveness for n in nodes)


def test_a_meta_server_restarted_on_its_data_dir_has_its_tables_and_configurations_back(
    tmp_path: Path,
) -> None:
    async def story() -> None:
        config = meta_config(tmp_path)
        async with running(MetaServer(config)) as server:
            meta = await MetaCaller.to(server.address)
            await create(meta, "temp", partition_count=4)
            dropped_id = await create(meta, "old", partition_count=2)
            await meta.call(DropTableRequest(name="old"), DropTableResponse)
            replica = FakeReplicaServer(server.address)
            await replica.start()

            async def all_assigned() -> bool:
                return all(c.primary is not None for c in (await query(meta, "temp")).configs)

            await eventually(all_assigned)
            await replica.stop()
            before = await query(meta, "temp")
            await meta.close()

        async with running(MetaServer(config)) as restarted:
            meta = await MetaCaller.to(restarted.address)
            assert await table_names(meta) == ["temp"]
            assert await table_names(meta, include_dropped=True) == ["temp", "old"]
            after = await query(meta, "temp")
            assert after.configs == before.configs  # same primaries, same ballots
            # The dropped table is still recallable after the restart.
            recalled = await meta.call(RecallTableRequest(app_id=dropped_id), RecallTableResponse)
            assert recalled.name == "old"
            assert len((await query(meta, "old")).configs) == 2
            await meta.close()

    run(story)


def test_the_meta_log_is_compacted_into_snapshots_and_a_restart_reads_them(tmp_path: Path) -> None:
    async def story() -> None:
        config = meta_config(tmp_path, snapshot_every_records=3)
        async with running(MetaServer(config)) as server:
            meta = await MetaCaller.to(server.address)
            for index in range(7):
                await create(meta, f"table{index}", partition_count=1)
            assert server.store is not None
            # 7 records: snapshots after the 3rd and the 6th, one record left in the log.
            assert server.store.records_since_snapshot == 1
            assert (tmp_path / "snapshot").is_file()
            await meta.close()

        async with running(MetaServer(config)) as restarted:
            meta = await MetaCaller.to(restarted.address)
            assert await table_names(meta) == [f"table{index}" for index in range(7)]
            await create(meta, "one_more", partition_count=1)
            assert len(await table_names(meta)) == 8
            await meta.close()

    run(story)


def test_dropped_and_recalled_tables_keep_their_status_in_the_listing(tmp_path: Path) -> None:
    async def story() -> None:
        async with running(MetaServer(meta_config(tmp_path))) as server:
            meta = await MetaCaller.to(server.address)
            app_id = await create(meta, "temp")
            dropped = await meta.call(DropTableRequest(name="temp"), DropTableResponse)
            assert dropped.app_id == app_id
            listing = await meta.call(ListTablesRequest(include_dropped=True), ListTablesResponse)
            assert [(t.name, t.status) for t in listing.tables] == [("temp", TableStatus.DROPPED)]
            with pytest.raises(TableNotFoundError):
                await query(meta, "temp")
            await meta.call(RecallTableRequest(app_id=app_id), RecallTableResponse)
            assert await table_names(meta) == ["temp"]
            await meta.close()

    run(story)


def test_a_primary_adds_the_learner_meta_asked_for_through_a_configuration_proposal(tmp_path: Path) -> None:
    async def story() -> None:
        async with running(MetaServer(meta_config(tmp_path))) as server:
            meta = await MetaCaller.to(server.address)
            first = FakeReplicaServer(server.address)
            await first.start()
            await eventually(lambda: _liveness_is(meta, first.address, NodeLiveness.ALIVE))
            app_id = await create(meta, "temp", partition_count=1, replica_count=2)
            await eventually(lambda: _has_command(first, ConfigType.ASSIGN_PRIMARY))
            second = FakeReplicaServer(server.address)
            await second.start()
            try:
                # Meta asks the primary to teach a learner on the other live node.
                await eventually(lambda: _has_command(first, ConfigType.ADD_SECONDARY))
                learner_request = next(c for c in first.commands if c.config_type == ConfigType.ADD_SECONDARY)
                assert learner_request.node == second.address
                current = learner_request.config
                assert (current.gpid, current.primary) == (Gpid(app_id, 0), first.address)

                # The learner caught up: the primary proposes it as a secondary, against its ballot.
                proposal = ConfigProposal(
                    config=current, config_type=ConfigType.UPGRADE_TO_SECONDARY, node=second.address
                )
                reply = await meta.call(ConfigProposalRequest(proposal=proposal), ConfigProposalResponse)
                assert reply.accepted, reply.reason
                assert (reply.config.ballot, reply.config.secondaries) == (
                    current.ballot + 1,
                    (second.address,),
                )
                assert (await query(meta, "temp")).configs == [reply.config]

                # The same proposal again is stale now: compare-and-set on the ballot.
                again = await meta.call(ConfigProposalRequest(proposal=proposal), ConfigProposalResponse)
                assert not again.accepted and "stale ballot" in again.reason
                info = await meta.call(ClusterInfoRequest(), ClusterInfoResponse)
                assert (info.partition_count, info.healthy_partition_count) == (1, 1)
            finally:
                await second.stop()
                await first.stop()
            await meta.close()

    run(story)


async def _has_command(replica: FakeReplicaServer, config_type: ConfigType) -> bool:
    return any(command.config_type == config_type for command in replica.commands)
