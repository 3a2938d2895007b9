"""The client's lifetime: closing fails what is pending, closes every connection, leaves no task."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from pegasus_kv import Client, ShuttingDownError
from tests.unit.client.fake_cluster import LOOPS, fake_cluster, run, wait_until


def other_tasks() -> set[asyncio.Task[Any]]:
    return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}


@pytest.mark.parametrize("loop_name", LOOPS)
def test_leaving_the_block_closes_every_connection_and_leaves_no_task(tmp_path: Path, loop_name: str) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster:
            before = other_tasks()
            async with Client(cluster.meta_address) as client:
                table = await client.open_table("temp")
                await asyncio.gather(*(table.set(f"k{i}".encode(), b"s", b"v") for i in range(50)))
                await table.batch_get([(f"k{i}".encode(), b"s") for i in range(50)])
                scanners = await table.unordered_scanners(4)
                await asyncio.gather(*(s.aclose() for s in scanners))
                assert all(server.connection_count == 1 for server in cluster.replicas)
            assert other_tasks() == before
            assert client.closed
            # The servers see the client's connections go.
            await wait_until(lambda: all(server.connection_count == 0 for server in cluster.replicas))
            with pytest.raises(ShuttingDownError):
                await table.get(b"k1", b"s")
            with pytest.raises(ShuttingDownError):
                await client.open_table("temp")
            await client.close()  # closing twice is harmless

    run(story(), loop_name)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_closing_fails_pending_calls_and_cancels_a_refresh_in_flight(tmp_path: Path, loop_name: str) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster:
            before = other_tasks()
            client = Client(cluster.meta_address, timeout=10.0)
            table = await client.open_table("temp")
            hung = cluster.primary_of("temp", table.partition_of(b"stuck"))
            hung.stalled = True
            pending_read = asyncio.create_task(table.get(b"stuck", b"sk"))

            # Another partition moves while meta hangs: its call waits on a refresh task.
            other_hash_key = next(
                f"k{i}".encode()
                for i in range(100)
                if table.partition_of(f"k{i}".encode()) != table.partition_of(b"stuck")
            )
            index = table.partition_of(other_hash_key)
            old = cluster.primary_of("temp", index)
            cluster.move_primary("temp", index, next(s for s in cluster.replicas if s is not old))
            cluster.meta.stalled = True
            pending_write = asyncio.create_task(table.set(other_hash_key, b"sk", b"v"))
            await wait_until(lambda: cluster.meta.received.count("QueryConfigRequest") == 2)
            assert hung.received

            await client.close()
            for pending in (pending_read, pending_write):
                with pytest.raises(ShuttingDownError):
                    await pending
            assert other_tasks() == before

    run(story(), loop_name)
