"""Meta servers sharing a real ZooKeeper: one leads, the others redirect, a new leader replays the state.

One ZooKeeper process (the project's launcher) serves the module; each test uses a cluster name of
its own. The meta servers run in this process on loopback with 20 ms ticks.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pegasus_kv import Client
from pegasus_kv.core.errors import NotLeaderError
from pegasus_kv.replication.meta.admin_messages import ClusterInfoRequest, ClusterInfoResponse
from pegasus_kv.replication.meta.config import MetaServerConfig
from pegasus_kv.replication.meta.server import MetaServer
from pegasus_kv.replication.meta.zk_store import ZooKeeperMetaStore
from pegasus_kv.replication.pacifica.meta_requests import (
    CreateTableRequest,
    CreateTableResponse,
    ListTablesRequest,
    ListTablesResponse,
    QueryConfigRequest,
    QueryConfigResponse,
)
from pegasus_kv.testing.zookeeper import ZooKeeperServer, expire_session
from tests.unit.meta_server_support import FAST, FakeReplicaServer, MetaCaller, eventually, run

pytestmark = pytest.mark.integration

WAIT_S = 30.0


def zk_config(zookeeper: ZooKeeperServer, cluster: str, **overrides: Any) -> MetaServerConfig:
    values: dict[str, Any] = {
        "cluster_name": cluster,
        "port": 0,
        "store": {"kind": "zookeeper", "hosts": zookeeper.hosts, "session_timeout_s": 2.0},
        **FAST,
    }
    values.update(overrides)
    return MetaServerConfig.model_validate(values)


async def start_pair(config: MetaServerConfig) -> tuple[MetaServer, MetaServer]:
    """Two metas of one cluster; returns (leader, follower) once one of them leads."""
    first, second = MetaServer(config), MetaServer(config)
    await first.start()
    await second.start()
    await eventually(lambda: _true(first.is_leader or second.is_leader), timeout_s=WAIT_S)
    return (first, second) if first.is_leader else (second, first)


async def _true(value: bool) -> bool:
    return value


async def redirect_of(address: str) -> str:
    """The leader a meta names when asked anything (NotLeaderError's message)."""
    meta = await MetaCaller.to(address)
    try:
        await meta.call(ListTablesRequest(), ListTablesResponse)
    except NotLeaderError as error:
        return error.message
    finally:
        await meta.close()
    raise AssertionError(f"{address} answered as a leader")


async def table_names(address: str) -> list[str]:
    meta = await MetaCaller.to(address)
    try:
        return [t.name for t in (await meta.call(ListTablesRequest(), ListTablesResponse)).tables]
    finally:
        await meta.close()


def test_one_meta_leads_and_the_other_redirects_clients_to_it(
    zookeeper: ZooKeeperServer, cluster: str
) -> None:
    async def story() -> None:
        leader, follower = await start_pair(zk_config(zookeeper, cluster))
        try:
            assert not follower.is_leader

            async def names_the_leader() -> bool:
                return await redirect_of(follower.address) == leader.address

            await eventually(names_the_leader, timeout_s=WAIT_S)

            meta = await MetaCaller.to(leader.address)
            await meta.call(CreateTableRequest(name="temp", partition_count=4), CreateTableResponse)
            info = await meta.call(ClusterInfoRequest(), ClusterInfoResponse)
            assert (info.cluster_name, info.leader, info.table_count) == (cluster, leader.address, 1)
            await meta.close()

            # A client that knows the follower first is redirected to the leader.
            async with Client([follower.address, leader.address], timeout=10.0) as client:
                assert [t.name for t in await client.list_tables()] == ["temp"]
                assert client.meta_leader == leader.address
        finally:
            await follower.stop()
            await leader.stop()

    run(story)


def test_when_the_leader_stops_the_other_meta_takes_over_with_the_same_state(
    zookeeper: ZooKeeperServer, cluster: str
) -> None:
    async def story() -> None:
        # Snapshots every 3 records: the new leader replays a snapshot and the records after it.
        leader, follower = await start_pair(zk_config(zookeeper, cluster, snapshot_every_records=3))
        replica = FakeReplicaServer(leader.address)
        try:
            meta = await MetaCaller.to(leader.address)
            for name in ("temp", "users", "orders", "events"):
                await meta.call(CreateTableRequest(name=name, partition_count=2), CreateTableResponse)
            await replica.start()

            async def assigned() -> bool:
                reply = await meta.call(QueryConfigRequest(name="events"), QueryConfigResponse)
                return all(c.primary == replica.address for c in reply.configs)

            await eventually(assigned, timeout_s=WAIT_S)
            before = await meta.call(QueryConfigRequest(name="events"), QueryConfigResponse)
            await meta.close()
            await replica.stop()

            await leader.stop()
            await follower.wait_until_leader(WAIT_S)

            assert await table_names(follower.address) == ["temp", "users", "orders", "events"]
            meta = await MetaCaller.to(follower.address)
            after = await meta.call(QueryConfigRequest(name="events"), QueryConfigResponse)
            assert after.configs == before.configs
            created = await meta.call(CreateTableRequest(name="more", partition_count=1), CreateTableResponse)
            assert created.app_id == 5  # app ids continue where the old leader stopped
            await meta.close()
        finally:
            await replica.stop()
            await follower.stop()
            await leader.stop()

    run(story)


def test_a_leader_whose_session_expires_stops_serving_and_redirects_to_the_new_leader(
    zookeeper: ZooKeeperServer, cluster: str
) -> None:
    async def story() -> None:
        old, new = await start_pair(zk_config(zookeeper, cluster))
        try:
            meta = await MetaCaller.to(old.address)
            await meta.call(CreateTableRequest(name="temp", partition_count=2), CreateTableResponse)
            await meta.close()
            store = old.store
            assert isinstance(store, ZooKeeperMetaStore) and store.client_id is not None

            await asyncio.to_thread(expire_session, zookeeper.hosts, store.client_id)

            await new.wait_until_leader(WAIT_S)
            await eventually(lambda: _true(not old.is_leader), timeout_s=WAIT_S)
            assert await table_names(new.address) == ["temp"]

            async def old_names_new() -> bool:
                return await redirect_of(old.address) == new.address

            await eventually(old_names_new, timeout_s=WAIT_S)
            assert old.failure is None  # it went back to campaigning, it did not stop
            assert old.terms_started == 1 and new.terms_started == 1
        finally:
            await new.stop()
            await old.stop()

    run(story)
