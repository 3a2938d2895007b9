"""The meta admin API against a real cluster (onebox processes), as an operator uses it through
`client.admin`: look at the cluster, manage a table's envs and name, change the function level,
and move replicas by hand with `balance` while the table keeps taking writes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pegasus_kv import Client, InvalidArgumentError, TableNotFoundError
from pegasus_kv.core.hashing import partition_index
from pegasus_kv.core.ids import Gpid
from pegasus_kv.replication.pacifica.config import PartitionConfiguration
from pegasus_kv.replication.pacifica.meta_types import MetaLevel, NodeLiveness

from .onebox_support import onebox, running_onebox

pytestmark = pytest.mark.integration

MOVE_BUDGET_S = 20.0  # a step-down is confirmed by the old primary's next config sync (5 s in onebox)


def hash_key_of_partition(index: int, partition_count: int) -> bytes:
    """A hash key whose writes land on partition `index`."""
    for n in range(100_000):
        key = b"key-%d" % n
        if partition_index(key, b"", partition_count) == index:
            return key
    raise AssertionError(f"no hash key found for partition {index}")


async def wait_for_config(
    client: Client, gpid: Gpid, what: str, done: Callable[[PartitionConfiguration], bool]
) -> PartitionConfiguration:
    """Poll the table's configuration until partition `gpid` is `done`."""
    deadline = time.monotonic() + MOVE_BUDGET_S
    while True:
        config = (await client.admin.query_config("temp")).configs[gpid.partition_index]
        if done(config):
            return config
        assert time.monotonic() < deadline, f"{gpid} did not reach {what}: {config}"
        await asyncio.sleep(0.2)


def full(config: PartitionConfiguration) -> bool:
    return config.primary is not None and len(config.members) == config.max_replica_count


async def look_around(client: Client) -> None:
    admin = client.admin
    info = await admin.cluster_info()
    assert info.cluster_name == "onebox" and info.leader == client.meta_leader
    assert (info.table_count, info.alive_node_count, info.dead_node_count) == (1, 4, 0)
    assert info.partition_count == info.healthy_partition_count == 8
    nodes = await admin.list_nodes()
    assert len(nodes) == 4 and all(node.liveness == NodeLiveness.ALIVE for node in nodes)
    assert sum(node.primary_count for node in nodes) == 8
    assert sum(node.replica_count for node in nodes) == 24


async def manage_the_table(client: Client) -> None:
    admin = client.admin
    envs = await admin.set_app_envs("temp", {"rocksdb.usage_scenario": "bulk_load", "x.a": "1", "x.b": "2"})
    assert envs == {"rocksdb.usage_scenario": "bulk_load", "x.a": "1", "x.b": "2"}
    assert await admin.del_app_envs("temp", ["rocksdb.usage_scenario"]) == {"x.a": "1", "x.b": "2"}
    assert await admin.get_app_envs("temp") == {"x.a": "1", "x.b": "2"}
    assert await admin.clear_app_envs("temp", "x.") == {}
    with pytest.raises(TableNotFoundError):
        await admin.get_app_envs("nope")

    table = await client.open_table("temp")
    await table.set(b"renamed", b"sk", b"still here")
    await admin.rename_table("temp", "orders")
    with pytest.raises(TableNotFoundError):
        await admin.query_config("temp")
    renamed = await client.open_table("orders")
    assert await renamed.get(b"renamed", b"sk") == b"still here"
    await admin.rename_table("orders", "temp")


async def change_levels(client: Client) -> None:
    admin = client.admin
    assert (await admin.get_meta_level()).level == MetaLevel.STEADY
    with pytest.raises(InvalidArgumentError, match="unknown meta level"):
        await admin.set_meta_level("turbo")
    frozen = await admin.set_meta_level("FREEZED")
    assert frozen.level == frozen.effective_level == MetaLevel.FREEZED
    config = (await admin.query_config("temp")).configs[0]
    assert config.primary is not None
    refused = await admin.balance(config.gpid, "move_pri", config.primary, config.secondaries[0])
    assert not refused.accepted and refused.reason.startswith("meta level freezed")
    assert (await admin.set_meta_level("steady")).level == MetaLevel.STEADY


async def move_replicas(client: Client) -> None:
    admin = client.admin
    table = await client.open_table("temp")
    config = (await admin.query_config("temp")).configs[0]
    gpid, old_primary = config.gpid, config.primary
    assert old_primary is not None
    new_primary = config.secondaries[0]
    key = hash_key_of_partition(0, 8)
    await table.set(key, b"sk", b"before")

    wrong = await admin.balance(gpid, "move_pri", new_primary, old_primary)
    assert not wrong.accepted and wrong.reason == (
        f"{new_primary} is not the primary of {gpid} (the primary is {old_primary})"
    )
    started = time.monotonic()
    moved = await admin.balance(gpid, "move_pri", old_primary, new_primary)
    assert moved.accepted, moved.reason
    after = await wait_for_config(
        client, gpid, "a new primary", lambda c: full(c) and c.primary != old_primary
    )
    assert after.primary == new_primary and old_primary in after.secondaries
    assert time.monotonic() - started < MOVE_BUDGET_S
    await table.set(key, b"sk", b"after")  # the client follows the new primary
    assert await table.get(key, b"sk") == b"after"

    # copy_sec: a secondary's replica moves to the node outside the group, with the data.
    spare = next(node.address for node in await admin.list_nodes() if node.address not in after.members)
    leaving = next(node for node in after.secondaries if node != old_primary)
    copied = await admin.balance(gpid, "copy_sec", leaving, spare)
    assert copied.accepted, copied.reason
    current = await wait_for_config(
        client, gpid, f"{spare} a member", lambda c: full(c) and spare in c.members
    )
    assert leaving not in current.members
    assert await table.get(key, b"sk") == b"after"
    await table.set(key, b"sk", b"after the copy")
    assert await table.get(key, b"sk") == b"after the copy"


async def administer(meta: str) -> None:
    async with Client(meta, timeout=10.0) as client:
        await look_around(client)
        await manage_the_table(client)
        await change_levels(client)
        await move_replicas(client)


def test_an_operator_administers_a_real_cluster_through_client_admin(tmp_path: Path) -> None:
    with running_onebox(tmp_path / "onebox", "--replica-servers", "4") as data_dir:
        status = json.loads(onebox("status", "--data-dir", str(data_dir), "--json").stdout)
        asyncio.run(asyncio.wait_for(administer(status["meta"][0]), timeout=150))
