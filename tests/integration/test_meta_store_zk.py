"""Meta servers share their state through a real ZooKeeper: one leader, fenced writes, snapshots.

One ZooKeeper process serves the whole module (started by the project's own launcher); each test
uses a cluster name of its own, so their znodes never meet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from kazoo.client import KazooClient

from pegasus_kv.core.errors import NotLeaderError
from pegasus_kv.replication.meta.store import MetaLog
from pegasus_kv.replication.meta.zk_store import ZooKeeperMetaStore
from pegasus_kv.testing.zookeeper import ZooKeeperServer, expire_session

pytestmark = pytest.mark.integration

T = TypeVar("T")
WAIT_S = 30.0


def run(story: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(story(), timeout=120)

    return asyncio.run(main())


def leads(store: ZooKeeperMetaStore) -> bool:
    """Whether the store believes it leads (read through a call: it changes behind the test's back)."""
    return store.is_leader


def children(zookeeper: ZooKeeperServer, path: str) -> list[str]:
    client = KazooClient(hosts=zookeeper.hosts)
    client.start(timeout=WAIT_S)
    try:
        return sorted(client.get_children(path))
    finally:
        client.stop()
        client.close()


def test_records_appended_by_the_leader_are_loaded_by_another_meta_server(
    zookeeper: ZooKeeperServer, cluster: str
) -> None:
    async def story() -> None:
        leader = await ZooKeeperMetaStore.connect(zookeeper.hosts, cluster)
        follower = await ZooKeeperMetaStore.connect(zookeeper.hosts, cluster)
        try:
            await leader.campaign("meta-1:34601")
            assert await leader.load() == MetaLog(None, [])
            await leader.append([b"table temp created", b"partition 1.0 configured"])
            await leader.append([b"partition 1.1 configured"])
            assert leader.records_since_snapshot == 3

            assert await follower.load() == MetaLog(
                None, [b"table temp created", b"partition 1.0 configured", b"partition 1.1 configured"]
            )
            assert not leads(follower)
            with pytest.raises(NotLeaderError):
                await follower.append([b"a follower must redirect, not write"])
        finally:
            await leader.close()
            await follower.close()

    run(story)


def test_a_record_larger_than_a_znode_is_chunked_and_reassembled(
    zookeeper: ZooKeeperServer, cluster: str
) -> None:
    big = bytes(range(256)) * 10_000  # 2.56 MB: three znodes of at most 900 KiB

    async def story() -> None:
        async with await ZooKeeperMetaStore.connect(zookeeper.hosts, cluster) as leader:
            await leader.campaign("meta-1:34601")
            await leader.append([b"before", big, b"after"])
        async with await ZooKeeperMetaStore.connect(zookeeper.hosts, cluster) as reader:
            assert await reader.load() == MetaLog(None, [b"before", big, b"after"])

    run(story)
    assert len(children(zookeeper, f"/pegasus-kv/{cluster}/log")) == 1 + 3 + 1


def test_a_snapshot_replaces_the_records_it_covers(zookeeper: ZooKeeperServer, cluster: str) -> None:
    big_snapshot = b"state " * 400_000  # 2.4 MB, chunked too

    async def story() -> None:
        async with await ZooKeeperMetaStore.connect(zookeeper.hosts, cluster) as leader:
            await leader.campaign("meta-1:34601")
            await leader.append([b"e1", b"e2"])
            await leader.write_snapshot(b"fold(e1, e2)")
            await leader.append([b"e3"])
            assert leader.records_since_snapshot == 1
        async with await ZooKeeperMetaStore.connect(zookeeper.hosts, cluster) as next_leader:
            await next_leader.campaign("meta-2:34601")
            assert await next_leader.load() == MetaLog(b"fold(e1, e2)", [b"e3"])
            await next_leader.write_snapshot(big_snapshot)
            await next_leader.append([b"e4"])
        async with await ZooKeeperMetaStore.connect(zookeeper.hosts, cluster) as reader:
            assert await reader.load() == MetaLog(big_snapshot, [b"e4"])

    run(story)
    assert len(children(zookeeper, f"/pegasus-kv/{cluster}/log")) == 1  # covered records are gone
    assert len(children(zookeeper, f"/pegasus-kv/{cluster}/snapshots")) == 1  # and older snapshots


def test_one_leader_at_a_time_and_the_next_takes_over_when_it_closes(
    zookeeper: ZooKeeperServer, cluster: str
) -> None:
    async def story() -> None:
        first = await ZooKeeperMetaStore.connect(zookeeper.hosts, cluster)
        second = await ZooKeeperMetaStore.connect(zookeeper.hosts, cluster)
        try:
            await first.campaign("meta-1:34601")
            second_campaign = asyncio.create_task(second.campaign("meta-2:34601"))
            assert leads(first)
            assert not leads(second)
            assert await second.leader_address() == "meta-1:34601"  # where a follower redirects clients
            await first.append([b"written by meta-1"])

            await first.close()
            assert first.leadership_lost.is_set()
            await asyncio.wait_for(second_campaign, WAIT_S)
            assert leads(second)
            assert await second.leader_address() == "meta-2:34601"
            assert await second.load() == MetaLog(None, [b"written by meta-1"])
            await second.append([b"written by meta-2"])
            assert (await second.load()).records == [b"written by meta-1", b"written by meta-2"]
        finally:
            await first.close()
            await second.close()

    run(story)


def test_a_leader_whose_session_expires_learns_it_and_another_takes_over(
    zookeeper: ZooKeeperServer, cluster: str
) -> None:
    async def story() -> None:
        first = await ZooKeeperMetaStore.connect(zookeeper.hosts, cluster)
        second = await ZooKeeperMetaStore.connect(zookeeper.hosts, cluster)
        try:
            await first.campaign("meta-1:34601")
            second_campaign = asyncio.create_task(second.campaign("meta-2:34601"))
            client_id = first.client_id
            assert client_id is not None

            await asyncio.to_thread(expire_session, zookeeper.hosts, client_id)

            await asyncio.wait_for(second_campaign, WAIT_S)
            await asyncio.wait_for(first.leadership_lost.wait(), WAIT_S)
            assert not leads(first)
            assert leads(second)
            with pytest.raises(NotLeaderError):
                await first.append([b"from a meta server that is no longer leader"])
        finally:
            await first.close()
            await second.close()

    run(story)


def test_a_deposed_leader_that_has_not_noticed_is_fenced_out(
    zookeeper: ZooKeeperServer, cluster: str
) -> None:
    async def story() -> None:
        first = await ZooKeeperMetaStore.connect(zookeeper.hosts, cluster)
        second = await ZooKeeperMetaStore.connect(zookeeper.hosts, cluster)
        try:
            await first.campaign("meta-1:34601")
            await first.append([b"acknowledged while leader"])
            # ZooKeeper drops meta-1's election node (as when its session ends during a long pause),
            # but meta-1 has not heard about it yet.
            (election_node,) = await asyncio.to_thread(children, zookeeper, f"/pegasus-kv/{cluster}/election")
            admin = KazooClient(hosts=zookeeper.hosts)
            await asyncio.to_thread(admin.start, WAIT_S)
            await asyncio.to_thread(admin.delete, f"/pegasus-kv/{cluster}/election/{election_node}")
            await asyncio.to_thread(admin.stop)
            admin.close()

            await asyncio.wait_for(second.campaign("meta-2:34601"), WAIT_S)
            assert leads(first)  # it still believes it leads ...

            with pytest.raises(NotLeaderError, match="fenced"):
                await first.append([b"stale write from the deposed leader"])  # ... but cannot write
            assert not leads(first)
            assert first.leadership_lost.is_set()
            with pytest.raises(NotLeaderError):
                await first.write_snapshot(b"stale snapshot")

            await second.append([b"written by the new leader"])
            assert await second.load() == MetaLog(
                None, [b"acknowledged while leader", b"written by the new leader"]
            )
        finally:
            await first.close()
            await second.close()

    run(story)
