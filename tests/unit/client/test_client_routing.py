"""Routing: every request reaches the primary of its key's partition, and follows it when it moves.

Stories: records land in the partition their hash (or, with an empty hash key, their sort key)
names; a primary that moved answers NOT_PRIMARY and the client finds the new one with a single
configuration query, shared by every call that hit the same stale configuration; a meta that is not
the leader redirects the client; an unreachable meta is skipped.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pegasus_kv import Client, PegasusError, TableNotFoundError
from pegasus_kv.client.routing import MAX_MEMOISED_PARTITIONS, TableRoute
from pegasus_kv.core.hashing import partition_index
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import GetRequest, GetResponse, SetRequest
from pegasus_kv.replication.pacifica.config import PartitionConfiguration
from pegasus_kv.storage import PartitionStore
from tests.unit.client.fake_cluster import FakeCluster, fake_cluster, run
from tests.unit.test_transport_support import free_port


def stored_in(cluster: FakeCluster, hash_key: bytes, sort_key: bytes) -> list[int]:
    """The partitions whose store holds the record (read straight from the stores)."""
    table = cluster.table("temp")
    return [
        index for index, store in enumerate(table.stores) if _value(store, hash_key, sort_key) is not None
    ]


def _value(store: PartitionStore, hash_key: bytes, sort_key: bytes) -> bytes | None:
    reply = store.read(GetRequest(hash_key, sort_key))
    assert isinstance(reply, GetResponse)
    return reply.value


def route_of(partition_count: int) -> TableRoute:
    configs = tuple(PartitionConfiguration(Gpid(1, index), ballot=1) for index in range(partition_count))
    return TableRoute("temp", 1, partition_count, configs)


def test_a_route_names_the_partition_of_core_hashing_for_every_key_and_every_time() -> None:
    route = route_of(8)
    keys = [
        *((b"user%d" % i, b"f0") for i in range(MAX_MEMOISED_PARTITIONS + 100)),  # past the memo's bound
        *((b"", b"sort%d" % i) for i in range(200)),  # an empty hash key routes by the sort key
        (b"h" * 1000, b""),  # too long to be memoised
    ]
    for _ in range(2):  # the second pass finds (most of) them memoised
        for hash_key, sort_key in keys[-1000:]:
            assert route.partition_of(hash_key, sort_key) == partition_index(hash_key, sort_key, 8)
    for hash_key, sort_key in keys:
        assert route.partition_of(hash_key, sort_key) == partition_index(hash_key, sort_key, 8)
    assert route.partition_of(b"hk", b"a") == route.partition_of(b"hk", b"b")  # all of a hash key together


def test_a_route_refuses_a_partition_count_that_is_not_a_power_of_two() -> None:
    configs = tuple(PartitionConfiguration(Gpid(1, index), ballot=1) for index in range(6))
    with pytest.raises(PegasusError, match="power of two"):
        TableRoute("temp", 1, 6, configs)
    with pytest.raises(PegasusError):
        TableRoute("temp", 1, 8, configs)  # a configuration per partition, no more, no less


def test_each_record_lands_in_the_partition_its_hash_names(tmp_path: Path) -> None:
    async def story() -> None:
        async with (
            fake_cluster(tmp_path, partition_count=8) as cluster,
            Client(cluster.meta_address) as client,
        ):
            table = await client.open_table("temp")
            for i in range(32):
                hash_key = f"user{i}".encode()
                await table.set(hash_key, b"profile", b"p")
                assert stored_in(cluster, hash_key, b"profile") == [partition_index(hash_key, b"", 8)]
                assert table.partition_of(hash_key) == partition_index(hash_key, b"", 8)

            # With an empty hash key the sort key decides: such records spread over partitions.
            homes = set()
            for i in range(32):
                sort_key = f"redis-key-{i}".encode()
                await table.set(b"", sort_key, str(i).encode())
                assert stored_in(cluster, b"", sort_key) == [partition_index(b"", sort_key, 8)]
                assert await table.get(b"", sort_key) == str(i).encode()
                homes.add(partition_index(b"", sort_key, 8))
            assert len(homes) > 1

            # The fake servers check every key against the gpid in the frame: none was refused.
            assert [server.refused for server in cluster.replicas] == [[], [], []]
            assert table.refresh_count == 0

    run(story())


def test_a_moved_primary_is_found_after_not_primary_with_one_refresh(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            table = await client.open_table("temp")
            index = table.partition_of(b"hk")
            await table.set(b"hk", b"sk", b"before")
            old = cluster.primary_of("temp", index)
            new = next(server for server in cluster.replicas if server is not old)
            queries_before = cluster.meta.query_count["temp"]

            cluster.move_primary("temp", index, new)
            await table.set(b"hk", b"sk", b"after")

            assert old.count(SetRequest) == 2  # the first set, then the one refused with NOT_PRIMARY
            assert new.count(SetRequest) == 1
            assert cluster.meta.query_count["temp"] == queries_before + 1
            assert table.refresh_count == 1
            assert table.route.primary(index) == new.address
            assert await table.get(b"hk", b"sk") == b"after"
            assert old.count(GetRequest) == 0  # later calls go straight to the new primary

    run(story())


def test_calls_that_hit_the_same_stale_configuration_share_one_refresh(tmp_path: Path) -> None:
    async def story() -> None:
        async with (
            fake_cluster(tmp_path, partition_count=4) as cluster,
            Client(cluster.meta_address) as client,
        ):
            table = await client.open_table("temp")
            hash_keys = [f"k{i}".encode() for i in range(64)]
            # Every partition moves to another server at once.
            for index in range(4):
                old = cluster.primary_of("temp", index)
                cluster.move_primary("temp", index, next(s for s in cluster.replicas if s is not old))
            queries_before = cluster.meta.query_count["temp"]

            await asyncio.gather(*(table.set(hk, b"sk", hk) for hk in hash_keys))

            assert cluster.meta.query_count["temp"] == queries_before + 1
            assert await table.batch_get([(hk, b"sk") for hk in hash_keys]) == hash_keys

    run(story())


def test_a_meta_that_is_not_the_leader_redirects_to_the_leader(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path, meta_count=2) as cluster:
            follower, leader = cluster.metas
            follower.not_leader = leader.address
            async with Client(follower.address) as client:
                table = await client.open_table("temp")
                assert client.meta_leader == leader.address
                assert follower.received == ["QueryConfigRequest"]
                await table.set(b"a", b"b", b"c")
                assert await client.create_table("more", partition_count=2) > 0
                assert follower.received == ["QueryConfigRequest"]  # remembered the leader

                # Leadership moves back: the old leader redirects, the client follows.
                leader.not_leader = follower.address
                follower.not_leader = None
                assert [t.name for t in await client.list_tables()] == ["temp", "more"]
                assert client.meta_leader == follower.address

    run(story())


def test_a_meta_that_does_not_know_the_leader_makes_the_client_try_the_next_one(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path, meta_count=2) as cluster:
            electing, leader = cluster.metas
            electing.not_leader = ""  # no leader known: the message is not an address
            nobody = f"127.0.0.1:{free_port()}"
            async with Client([nobody, electing.address, leader.address]) as client:
                table = await client.open_table("temp")
                await table.set(b"a", b"b", b"c")
                assert client.meta_leader == leader.address

    run(story())


def test_a_dropped_table_ends_calls_with_table_not_found(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            table = await client.open_table("temp")
            await table.set(b"a", b"b", b"c")
            cluster.table("temp").dropped = True  # its servers now answer NOT_PRIMARY
            with pytest.raises(TableNotFoundError):
                await table.get(b"a", b"b")
            with pytest.raises(TableNotFoundError):
                await client.open_table("temp")

    run(story())
