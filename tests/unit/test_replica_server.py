"""Stories of a real cluster in one process: one meta server and three replica servers on loopback.

Each story starts the cluster (replica_cluster_support.py), creates a table of 4 partitions with 3
replicas, waits until every partition has a serving primary and two secondaries, and then does what
a user or an operator would: write and read, send requests to the wrong server, stop servers,
restart them on their data directories.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pegasus_kv import Client
from pegasus_kv.core.errors import (
    NotPrimaryError,
    PartitionMismatchError,
    ValueTooLargeError,
)
from pegasus_kv.core.hashing import partition_index
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import GetRequest, GetResponse, SetRequest, WriteResponse
from pegasus_kv.core.schema import MAX_WRITE_BYTES
from pegasus_kv.replication.pacifica.config import PartitionStatus
from tests.unit.replica_cluster_support import Cluster, eventually, run

TABLE = "temp"
PARTITIONS = 4


def key_in_partition(index: int, partition_count: int = PARTITIONS) -> bytes:
    """A hash key that routes to partition `index`."""
    for n in range(10_000):
        candidate = b"key-%d" % n
        if partition_index(candidate, b"", partition_count) == index:
            return candidate
    raise AssertionError("no key found")


def test_primaries_serve_writes_and_reads_and_refuse_what_is_not_theirs(tmp_path: Path) -> None:
    async def story() -> None:
        async with Cluster(tmp_path) as cluster:
            app_id = await cluster.create_table(TABLE, PARTITIONS)
            configs = await cluster.wait_healthy(TABLE)

            # Every partition takes a write at its primary and serves it back.
            for config in configs:
                index = config.gpid.partition_index
                hash_key = key_in_partition(index)
                assert config.primary is not None
                written = await cluster.call(
                    config.primary, SetRequest(hash_key, b"sk", b"v%d" % index), config.gpid
                )
                assert isinstance(written, WriteResponse)
                read = await cluster.call(config.primary, GetRequest(hash_key, b"sk"), config.gpid)
                assert read == GetResponse(b"v%d" % index)

            # A secondary refuses writes and reads: the client must go to the primary.
            config = configs[0]
            secondary = config.secondaries[0]
            hash_key = key_in_partition(0)
            with pytest.raises(NotPrimaryError):
                await cluster.call(secondary, SetRequest(hash_key, b"sk", b"x"), config.gpid)
            with pytest.raises(NotPrimaryError):
                await cluster.call(secondary, GetRequest(hash_key, b"sk"), config.gpid)
            # A partition the server does not host at all.
            with pytest.raises(NotPrimaryError):
                await cluster.call(config.primary or "", GetRequest(hash_key, b"sk"), Gpid(app_id + 7, 0))
            # A key that hashes to another partition (a stale client configuration).
            with pytest.raises(PartitionMismatchError):
                await cluster.call(
                    config.primary or "", SetRequest(key_in_partition(1), b"sk", b"x"), config.gpid
                )

            # An oversized value is refused before it reaches the log, and the server goes on serving.
            with pytest.raises(ValueTooLargeError):
                await cluster.call(
                    config.primary or "",
                    SetRequest(hash_key, b"big", b"x" * (MAX_WRITE_BYTES + 1)),
                    config.gpid,
                )
            assert await cluster.call(
                config.primary or "", GetRequest(hash_key, b"big"), config.gpid
            ) == GetResponse(None)
            assert await cluster.call(
                config.primary or "", GetRequest(hash_key, b"sk"), config.gpid
            ) == GetResponse(b"v0")

            # Every member applies what the primary committed (secondaries learn the commit point
            # from the next prepare or group check).
            primary_replica = cluster.server(config.primary or "").node.replica(config.gpid)
            assert primary_replica is not None
            committed = primary_replica.last_committed_decree
            assert committed >= 1

            async def all_members_applied() -> bool:
                decrees = {
                    cluster.server(member).runtime(config.gpid).applied_decree  # type: ignore[union-attr]
                    for member in config.members
                }
                return decrees == {committed}

            await eventually(all_members_applied)

            # The async client routes by hash to the primaries.
            async with Client(cluster.meta.address) as client:
                table = await client.open_table(TABLE)
                for n in range(40):
                    await table.set(b"user-%d" % n, b"name", b"n%d" % n, ttl=0)
                assert [await table.get(b"user-%d" % n, b"name") for n in range(40)] == [
                    b"n%d" % n for n in range(40)
                ]

    run(story)


def test_partitions_survive_a_stopped_server_and_a_restarted_one_catches_up(tmp_path: Path) -> None:
    async def story() -> None:
        async with Cluster(tmp_path) as cluster:
            await cluster.create_table(TABLE, PARTITIONS)
            await cluster.wait_healthy(TABLE)
            async with Client(cluster.meta.address) as client:
                table = await client.open_table(TABLE)
                for n in range(100):
                    await table.set(b"k%d" % n, b"s", b"before-%d" % n)

                # One server goes away: meta names primaries among the others and writes go on.
                stopped = cluster.replicas[0]
                stopped_address = stopped.address
                await stopped.stop()
                configs = await cluster.wait_healthy(TABLE, members=2)
                assert all(stopped_address not in config.members for config in configs)
                for n in range(100, 150):
                    await table.set(b"k%d" % n, b"s", b"while-down-%d" % n)

                # It comes back on its data directory: its replicas reopen from its store and log
                # and it catches up on what it missed.
                restarted = await cluster.restart_replica(0)
                assert restarted.address == stopped_address
                reopened = restarted.node.gpids()
                assert len(reopened) == PARTITIONS
                assert all(restarted.runtime(gpid).applied_decree > 0 for gpid in reopened)  # type: ignore[union-attr]
                configs = await cluster.wait_healthy(TABLE, members=3)
                assert all(stopped_address in config.members for config in configs)

                # Now both other servers go: the restarted one alone must serve, as primary of every
                # partition, what was written before and while it was down.
                await cluster.replicas[1].stop()
                await cluster.replicas[2].stop()
                configs = await cluster.wait_healthy(TABLE, members=1)
                assert all(config.primary == stopped_address for config in configs)
                values = [await table.get(b"k%d" % n, b"s") for n in range(150)]
                assert values == [b"before-%d" % n for n in range(100)] + [
                    b"while-down-%d" % n for n in range(100, 150)
                ]
                for gpid in restarted.node.gpids():
                    replica = restarted.node.replica(gpid)
                    assert replica is not None
                    assert replica.status == PartitionStatus.PRIMARY

    run(story)
