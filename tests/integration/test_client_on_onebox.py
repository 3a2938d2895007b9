"""Every operation of the client API against a real cluster (onebox processes), then the table's
life cycle: create, drop, recall with its data, as an application developer sees it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from pegasus_kv import CheckType, Client, Filter, Mutations, TableNotFoundError

from .onebox_support import onebox, running_onebox

pytestmark = pytest.mark.integration


async def exercise_every_operation(meta: str) -> None:
    async with Client(meta) as client:
        app_id = await client.create_table("orders", partition_count=4, replica_count=3)
        table = await client.open_table("orders")

        await table.set(b"alice", b"name", b"Alice")
        await table.set(b"alice", b"session", b"s1", ttl=600)
        assert await table.get(b"alice", b"name") == b"Alice"
        assert await table.get(b"alice", b"missing") is None
        assert await table.exist(b"alice", b"name")
        assert await table.ttl(b"alice", b"name") == -1  # no TTL
        session_ttl = await table.ttl(b"alice", b"session")
        assert session_ttl is not None and 590 <= session_ttl <= 600
        assert await table.ttl(b"alice", b"missing") is None

        assert await table.incr(b"alice", b"visits", 5) == 5
        assert await table.incr(b"alice", b"visits", -2) == 3

        await table.multi_set(b"alice", {b"city": b"Paris", b"lang": b"fr", b"zip": b"75001"})
        assert await table.sort_key_count(b"alice") == 6
        by_keys = await table.multi_get(b"alice", [b"city", b"lang", b"nope"])
        assert dict(by_keys.items) == {b"city": b"Paris", b"lang": b"fr"}
        ranged = await table.multi_get(b"alice", start_sort_key=b"c", stop_sort_key=b"m", max_kv_count=10)
        assert list(ranged.items) == [b"city", b"lang"] and ranged.complete
        cut = await table.multi_get(b"alice", max_kv_count=2)
        assert len(cut.items) == 2 and not cut.complete  # a limit cut it short
        newest_first = await table.multi_get(b"alice", reverse=True, max_kv_count=1)
        assert list(newest_first.items) == [b"zip"]
        filtered = await table.multi_get(b"alice", sort_key_filter=Filter.prefix(b"s"), no_value=True)
        assert list(filtered.items) == [b"session"]

        passed = await table.check_and_set(
            b"alice", b"lang", CheckType.VALUE_BYTES_EQUAL, b"fr", b"lang", b"en", return_check_value=True
        )
        assert passed.passed and passed.check_value == b"fr"
        refused = await table.check_and_set(b"alice", b"lang", CheckType.VALUE_NOT_EXIST, b"", b"lang", b"de")
        assert not refused.passed
        assert await table.get(b"alice", b"lang") == b"en"
        mutated = await table.check_and_mutate(
            b"alice",
            b"visits",
            CheckType.VALUE_INT_GREATER_OR_EQUAL,
            b"3",
            Mutations().put(b"tier", b"gold").delete(b"zip"),
        )
        assert mutated.passed
        assert await table.get(b"alice", b"tier") == b"gold" and not await table.exist(b"alice", b"zip")

        await table.multi_set(b"bob", {b"a": b"1", b"b": b"2"})
        assert await table.batch_get([(b"bob", b"b"), (b"alice", b"name"), (b"carol", b"x")]) == [
            b"2",
            b"Alice",
            None,
        ]
        scanned = [(hk, sk, v) async for hk, sk, v in table.scan(b"bob")]
        assert scanned == [(b"bob", b"a", b"1"), (b"bob", b"b", b"2")]
        everything = set()
        for scanner in await table.unordered_scanners(3):
            async for hk, sk, _ in scanner:
                everything.add((hk, sk))
        assert (b"bob", b"a") in everything and (b"alice", b"tier") in everything
        assert len(everything) == await table.sort_key_count(b"alice") + 2

        assert await table.multi_delete(b"bob", [b"a", b"nope"]) == 1
        await table.delete(b"alice", b"session")
        assert await table.get(b"alice", b"session") is None
        assert await table.delete_range(b"alice", b"a", b"m") == 2  # city and lang
        assert await table.sort_key_count(b"alice") == 3  # name, tier, visits

        await client.drop_table("orders")
        with pytest.raises(TableNotFoundError):
            await client.open_table("orders")
        dropped = [t for t in await client.list_tables(include_dropped=True) if t.app_id == app_id]
        assert dropped and dropped[0].drop_tick >= 0
        recalled = await client.recall_table(app_id)
        assert recalled.name == "orders"
        table = await client.open_table("orders")
        assert await table.get(b"alice", b"name") == b"Alice"  # the data came back with the table


def test_every_client_operation_and_the_table_life_cycle_on_a_real_cluster(tmp_path: Path) -> None:
    with running_onebox(tmp_path / "onebox") as data_dir:
        status = json.loads(onebox("status", "--data-dir", str(data_dir), "--json").stdout)
        asyncio.run(asyncio.wait_for(exercise_every_operation(status["meta"][0]), timeout=120))
