"""Scans: one hash key in sort-key order, or the whole table split over unordered scanners.

Stories: a scan returns exactly its range, batch after batch; it survives its primary moving, its
connection dropping and its server context expiring, without repeating or skipping a record;
unordered scanners together return every record exactly once; a scanner abandoned early drops its
server context.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pegasus_kv import Client, Filter, Scanner
from pegasus_kv.core.messages import ClearScannerRequest, GetScannerRequest, ScanRequest
from tests.unit.client.fake_cluster import LOOPS, FakeCluster, fake_cluster, run, wait_until

Row = tuple[bytes, bytes, bytes]


async def collect(scanner: Scanner) -> list[Row]:
    return [row async for row in scanner]


def open_contexts(cluster: FakeCluster) -> int:
    """Scan contexts still open in any store of table temp."""
    return sum(store.open_scan_contexts for store in cluster.table("temp").stores)


async def fill(cluster: FakeCluster, client: Client, hash_key_count: int, sort_keys_each: int) -> list[Row]:
    table = await client.open_table("temp")
    rows: list[Row] = []
    for h in range(hash_key_count):
        hash_key = f"user{h:03d}".encode()
        kvs = {f"item{s:03d}".encode(): f"{h}/{s}".encode() for s in range(sort_keys_each)}
        await table.multi_set(hash_key, kvs)
        rows.extend((hash_key, sort_key, value) for sort_key, value in kvs.items())
    return rows


def test_a_hash_key_scan_returns_its_range_in_sort_key_order(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            table = await client.open_table("temp")
            kvs = {f"k{i:03d}".encode(): str(i).encode() for i in range(250)}
            await table.multi_set(b"hk", kvs)
            await table.set(b"neighbour", b"k001", b"not mine")

            rows = await collect(table.scan(b"hk", batch_size=7))
            assert rows == [(b"hk", sk, v) for sk, v in sorted(kvs.items())]
            assert cluster.received(ScanRequest) == 250 // 7  # batches after the first, one each

            window = await collect(table.scan(b"hk", b"k010", b"k020", stop_inclusive=True, no_value=True))
            assert window == [(b"hk", f"k{i:03d}".encode(), b"") for i in range(10, 21)]

            filtered = await collect(table.scan(b"hk", sort_key_filter=Filter.postfix(b"7"), batch_size=3))
            assert [sk for _, sk, _ in filtered] == [f"k{i:03d}".encode() for i in range(250) if i % 10 == 7]

            assert await collect(table.scan(b"nobody")) == []
            assert open_contexts(cluster) == 0  # finished scans leave nothing open

    run(story())


def test_a_scan_survives_its_primary_moving_without_duplicates_or_gaps(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            table = await client.open_table("temp")
            kvs = {f"k{i:03d}".encode(): str(i).encode() for i in range(300)}
            await table.multi_set(b"hk", kvs)
            index = table.partition_of(b"hk")
            old = cluster.primary_of("temp", index)
            new = next(server for server in cluster.replicas if server is not old)

            rows: list[Row] = []
            async for row in table.scan(b"hk", batch_size=10):
                rows.append(row)
                if len(rows) == 35:  # in the middle of the fourth batch
                    cluster.move_primary("temp", index, new)
                    # Writes keep coming meanwhile: one ahead of the scan, one behind it.
                    await table.set(b"hk", b"k299x", b"late")
                    await table.set(b"hk", b"k000x", b"too late")

            expected = [(b"hk", sk, v) for sk, v in sorted({**kvs, b"k299x": b"late"}.items())]
            assert rows == expected
            assert new.count(GetScannerRequest) == 1  # reopened once, after the last key received
            assert table.refresh_count == 1

    run(story())


def test_a_scan_survives_dropped_connections_and_an_expired_context(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            table = await client.open_table("temp")
            kvs = {f"k{i:03d}".encode(): str(i).encode() for i in range(100)}
            await table.multi_set(b"hk", kvs)
            primary = cluster.primary_of("temp", table.partition_of(b"hk"))

            async def drop_the_connection_under_the_next_batch() -> None:
                primary.stalled = True
                await wait_until(lambda: primary.count(ScanRequest) == 3)
                primary.stalled = False
                await primary.drop_connections()

            rows: list[Row] = []
            dropper = None
            async for row in table.scan(b"hk", batch_size=10):
                rows.append(row)
                if len(rows) == 15:  # between batches: the context outlives a lost connection
                    await primary.drop_connections()
                if len(rows) == 25:  # a batch in flight when the connection drops
                    dropper = asyncio.create_task(drop_the_connection_under_the_next_batch())
                if len(rows) == 55:
                    primary.contexts.clear()  # the server forgot the context (idle, restart)
            assert dropper is not None and dropper.done()
            assert rows == [(b"hk", sk, v) for sk, v in sorted(kvs.items())]
            assert primary.count(GetScannerRequest) == 3  # the first open and two reopenings

    run(story())


def test_unordered_scanners_return_every_record_exactly_once(tmp_path: Path) -> None:
    async def story() -> None:
        async with (
            fake_cluster(tmp_path, partition_count=8) as cluster,
            Client(cluster.meta_address) as client,
        ):
            expected = await fill(cluster, client, hash_key_count=60, sort_keys_each=7)
            table = await client.open_table("temp")

            scanners = await table.unordered_scanners(3, batch_size=16)
            assert [s.partitions for s in scanners] == [(0, 1), (2, 3, 4), (5, 6, 7)]
            results = await asyncio.gather(*(collect(scanner) for scanner in scanners))
            found = [row for rows in results for row in rows]
            assert len(found) == len(expected)
            assert sorted(found) == sorted(expected)

            # Never more scanners than partitions.
            many = await table.unordered_scanners(20)
            assert [s.partitions for s in many] == [(i,) for i in range(8)]
            assert sorted([row for s in many for row in await collect(s)]) == sorted(expected)

            only_user01x = await table.unordered_scanners(
                2, hash_key_filter=Filter.prefix(b"user01"), no_value=True
            )
            filtered = sorted([row for s in only_user01x for row in await collect(s)])
            assert filtered == sorted((hk, sk, b"") for hk, sk, _ in expected if hk.startswith(b"user01"))
            assert open_contexts(cluster) == 0

    run(story())


def test_unordered_scanners_survive_primaries_moving_mid_scan(tmp_path: Path) -> None:
    async def story() -> None:
        async with (
            fake_cluster(tmp_path, partition_count=4) as cluster,
            Client(cluster.meta_address) as client,
        ):
            expected = await fill(cluster, client, hash_key_count=40, sort_keys_each=10)
            table = await client.open_table("temp")
            (scanner,) = await table.unordered_scanners(1, batch_size=25)
            found: list[Row] = []
            async for row in scanner:
                found.append(row)
                if len(found) % 60 == 0:  # now and then every partition moves on
                    for index in range(4):
                        old = cluster.primary_of("temp", index)
                        others = [s for s in cluster.replicas if s is not old]
                        cluster.move_primary("temp", index, others[len(found) % len(others)])
            assert len(found) == len(set(found)) == len(expected)
            assert set(found) == set(expected)

    run(story())


@pytest.mark.parametrize("loop_name", LOOPS)
def test_an_abandoned_scanner_drops_its_server_context(tmp_path: Path, loop_name: str) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            table = await client.open_table("temp")
            await table.multi_set(b"hk", {f"k{i:03d}".encode(): b"v" for i in range(50)})

            scanner = table.scan(b"hk", batch_size=5)
            assert (await anext(scanner))[1] == b"k000"
            assert open_contexts(cluster) == 1
            await scanner.aclose()
            assert open_contexts(cluster) == 0
            assert await collect(scanner) == []  # a closed scanner is over

            async with table.scan(b"hk", batch_size=5) as in_a_block:
                async for _row in in_a_block:
                    break
                assert open_contexts(cluster) == 1
            assert open_contexts(cluster) == 0

            # Leaving an `async for` over a temporary scanner: the event loop closes it.
            async for _row in table.scan(b"hk", batch_size=5):
                break
            await wait_until(lambda: open_contexts(cluster) == 0)

    run(story(), loop_name)


def test_a_scan_cancelled_while_it_opens_still_drops_the_context_the_server_opened(tmp_path: Path) -> None:
    """Ctrl-C in the shell cancels a scan whose GetScanner request is already on the wire: the
    server opens a context whose id only the late reply names, and the client drops it then."""

    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            table = await client.open_table("temp")
            await table.multi_set(b"hk", {f"k{i:03d}".encode(): b"v" for i in range(50)})
            for server in cluster.replicas:
                server.reply_delay_s = 0.3

            scanner = table.scan(b"hk", batch_size=5)
            first_row = asyncio.ensure_future(anext(scanner))
            await asyncio.sleep(0.1)  # the GetScanner request is on the wire, unanswered
            first_row.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first_row
            await wait_until(lambda: cluster.received(GetScannerRequest) == 1)
            await wait_until(lambda: cluster.received(ClearScannerRequest) == 1)
            assert open_contexts(cluster) == 0

    run(story())
