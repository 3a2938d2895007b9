"""Every operation of the data API, end to end: client -> transport -> fake servers -> real stores.

The stories use the public API exactly as DESIGN.md section 7 shows it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pegasus_kv import (
    CheckAndMutateResult,
    CheckAndSetResult,
    CheckType,
    Client,
    Filter,
    InvalidArgumentError,
    KeyTooLargeError,
    MultiGetResult,
    Mutations,
    PegasusError,
    TableExistsError,
    TableNotFoundError,
)
from pegasus_kv.core.hashing import partition_index
from pegasus_kv.core.messages import BatchGetRequest
from pegasus_kv.core.schema import MAX_HASH_KEY_BYTES
from tests.unit.client.fake_cluster import fake_cluster, run


def test_a_record_is_set_read_timed_and_deleted(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            table = await client.open_table("temp")
            assert (table.name, table.partition_count) == ("temp", 8)

            assert await table.get(b"user1", b"name") is None
            assert await table.exist(b"user1", b"name") is False
            assert await table.ttl(b"user1", b"name") is None

            await table.set(b"user1", b"name", b"alice")
            assert await table.get(b"user1", b"name") == b"alice"
            assert await table.exist(b"user1", b"name") is True
            assert await table.ttl(b"user1", b"name") == -1  # no TTL

            await table.set(b"user1", b"session", b"s", ttl=100)
            assert 98 <= (await table.ttl(b"user1", b"session") or 0) <= 100

            await table.delete(b"user1", b"name")
            assert await table.get(b"user1", b"name") is None
            await table.delete(b"user1", b"name")  # deleting what is gone is fine

    run(story())


def test_incr_counts_from_zero_and_refuses_a_value_that_is_not_an_int(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            table = await client.open_table("temp")
            assert await table.incr(b"page", b"views", 5) == 5
            assert await table.incr(b"page", b"views", -2) == 3
            assert await table.get(b"page", b"views") == b"3"
            assert await table.incr(b"page", b"views", 1, ttl=60) == 4
            assert 58 <= (await table.ttl(b"page", b"views") or 0) <= 60

            await table.set(b"page", b"title", b"hello")
            with pytest.raises(InvalidArgumentError):
                await table.incr(b"page", b"title", 1)
            assert await table.get(b"page", b"title") == b"hello"

    run(story())


def test_multi_set_multi_get_by_range_filter_limits_and_reverse(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            table = await client.open_table("temp")
            rows = {f"k{i:02d}".encode(): f"v{i}".encode() for i in range(20)}
            rows[b"other"] = b"o"
            await table.multi_set(b"hk", rows)
            assert await table.sort_key_count(b"hk") == 21

            everything = await table.multi_get(b"hk", max_kv_count=-1)
            assert everything.complete
            assert everything.items == dict(sorted(rows.items()))
            assert list(everything.items) == sorted(rows)  # in sort-key order

            first_five = await table.multi_get(b"hk", max_kv_count=5)
            assert list(first_five.items) == [b"k00", b"k01", b"k02", b"k03", b"k04"]
            assert first_five.complete is False

            window = await table.multi_get(
                b"hk", start_sort_key=b"k05", stop_sort_key=b"k08", start_inclusive=False, stop_inclusive=True
            )
            assert list(window.items) == [b"k06", b"k07", b"k08"] and window.complete

            backwards = await table.multi_get(
                b"hk", start_sort_key=b"k10", stop_sort_key=b"k13", reverse=True
            )
            assert list(backwards.items) == [b"k12", b"k11", b"k10"]

            ending_in_7 = await table.multi_get(b"hk", sort_key_filter=Filter.postfix(b"7"))
            assert ending_in_7.items == {b"k07": b"v7", b"k17": b"v17"}
            prefixed = await table.multi_get(b"hk", sort_key_filter=Filter.prefix(b"oth"), no_value=True)
            assert prefixed.items == {b"other": b""}

            chosen = await table.multi_get(b"hk", [b"k03", b"missing", b"k01"])
            assert chosen.items == {b"k01": b"v1", b"k03": b"v3"} and chosen.complete
            assert (await table.multi_get(b"hk", [])).items == {}

            assert await table.multi_delete(b"hk", [b"k00", b"k01", b"missing"]) == 2
            assert await table.sort_key_count(b"hk") == 19

            # A TTL given to multi_set applies to every sort key it writes.
            await table.multi_set(b"tmp", {b"a": b"1", b"b": b"2"}, ttl=30)
            assert 28 <= (await table.ttl(b"tmp", b"b") or 0) <= 30

    run(story())


def test_delete_range_removes_exactly_the_range(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            table = await client.open_table("temp")
            # More keys than one delete_range round takes, so the loop has to go round.
            await table.multi_set(b"hk", {f"k{i:05d}".encode(): b"x" for i in range(2500)})
            assert await table.delete_range(b"hk", b"k00010", b"k02400") == 2390
            left = await table.multi_get(b"hk", max_kv_count=-1, no_value=True)
            expected = [f"k{i:05d}".encode() for i in [*range(10), *range(2400, 2500)]]
            assert list(left.items) == expected
            assert await table.delete_range(b"hk") == 110  # the whole hash key
            assert await table.sort_key_count(b"hk") == 0

    run(story())


def test_check_and_set_sets_only_when_the_check_passes(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            table = await client.open_table("temp")
            created = await table.check_and_set(
                b"lock", b"owner", CheckType.VALUE_NOT_EXIST, b"", b"owner", b"alice"
            )
            assert created == CheckAndSetResult(passed=True)
            taken = await table.check_and_set(
                b"lock", b"owner", CheckType.VALUE_NOT_EXIST, b"", b"owner", b"bob", return_check_value=True
            )
            assert taken == CheckAndSetResult(passed=False, check_value_exist=True, check_value=b"alice")
            assert await table.get(b"lock", b"owner") == b"alice"

            # The checked and the set sort keys may differ; the set may carry a TTL.
            await table.check_and_set(
                b"lock", b"owner", CheckType.VALUE_BYTES_EQUAL, b"alice", b"lease", b"1", ttl=10
            )
            assert 8 <= (await table.ttl(b"lock", b"lease") or 0) <= 10

            with pytest.raises(InvalidArgumentError):  # an int check on a value that is not an int
                await table.check_and_set(b"lock", b"owner", CheckType.VALUE_INT_LESS, b"5", b"x", b"y")

    run(story())


def test_check_and_mutate_applies_every_mutation_or_none(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            table = await client.open_table("temp")
            await table.multi_set(b"acct", {b"balance": b"10", b"stale": b"x"})
            mutations = Mutations().put(b"balance", b"7").put(b"log", b"-3", ttl=50).delete(b"stale")
            assert len(mutations) == 3

            refused = await table.check_and_mutate(
                b"acct", b"balance", CheckType.VALUE_INT_LESS, b"5", mutations, return_check_value=True
            )
            assert refused == CheckAndMutateResult(passed=False, check_value_exist=True, check_value=b"10")
            assert (await table.multi_get(b"acct")).items == {b"balance": b"10", b"stale": b"x"}

            applied = await table.check_and_mutate(
                b"acct", b"balance", CheckType.VALUE_INT_EQUAL, b"10", mutations
            )
            assert applied.passed
            assert (await table.multi_get(b"acct")).items == {b"balance": b"7", b"log": b"-3"}
            assert 48 <= (await table.ttl(b"acct", b"log") or 0) <= 50

    run(story())


def test_batch_get_answers_in_the_order_asked_across_partitions(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            table = await client.open_table("temp")
            keys = [(f"user{i}".encode(), b"name") for i in range(40)]
            for hash_key, sort_key in keys[::2]:  # every other record exists
                await table.set(hash_key, sort_key, b"name of " + hash_key)
            partitions = {partition_index(hk, sk, 8) for hk, sk in keys}
            assert len(partitions) == 8  # the keys really are spread over every partition

            asked = [*reversed(keys), keys[0]]  # any order, repeats allowed
            values = await table.batch_get(asked)
            expected = [b"name of " + hk if int(hk[4:]) % 2 == 0 else None for hk, _ in asked]
            assert values == expected
            # One request per partition, not one per key.
            assert cluster.received(BatchGetRequest) == 8
            assert await table.batch_get([]) == []

    run(story())


def test_table_ddl_through_the_client(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            app_id = await client.create_table("events", partition_count=4)
            with pytest.raises(TableExistsError):
                await client.create_table("events", partition_count=4)
            assert await client.create_table("events", partition_count=4, success_if_exist=True) == app_id
            assert sorted(t.name for t in await client.list_tables()) == ["events", "temp"]

            events = await client.open_table("events")
            assert (events.app_id, events.partition_count) == (app_id, 4)
            await events.set(b"e", b"1", b"started")

            dropped = await client.drop_table("events")
            assert dropped.app_id == app_id
            with pytest.raises(TableNotFoundError):
                await client.open_table("events")
            assert [t.name for t in await client.list_tables(include_dropped=True)].count("events") == 1

            recalled = await client.recall_table(app_id)
            assert recalled.name == "events"
            events = await client.open_table("events")
            assert await events.get(b"e", b"1") == b"started"

    run(story())


def test_arguments_of_the_wrong_type_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            table = await client.open_table("temp")
            with pytest.raises(InvalidArgumentError):
                await table.set("hk", b"sk", b"v")  # type: ignore[arg-type]
            with pytest.raises(InvalidArgumentError):
                await table.multi_get(b"")  # a whole-hash-key operation needs a hash key
            with pytest.raises(InvalidArgumentError):
                await table.multi_delete(b"hk", b"sk")  # type: ignore[arg-type]  # one bytes value is not a list of keys
            with pytest.raises(InvalidArgumentError):
                await table.set(b"hk", b"sk", b"v", ttl=-1)
            with pytest.raises(InvalidArgumentError):
                await table.get(b"hk", b"sk", timeout=0)
            with pytest.raises(InvalidArgumentError):
                await table.unordered_scanners(0)
            with pytest.raises(PegasusError):
                await table.check_and_set(b"hk", b"sk", 99, b"", b"sk", b"v")  # type: ignore[arg-type]
            assert sum(len(server.received) for server in cluster.replicas) == 0

    run(story())


def test_multi_get_and_get_check_every_argument_and_name_the_wrong_one(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            table = await client.open_table("temp")
            refused = {
                "sort_key": table.multi_get(b"hk", [b"a", "b"]),  # type: ignore[list-item]
                "start_sort_key": table.multi_get(b"hk", start_sort_key="a"),  # type: ignore[arg-type]
                "max_kv_count": table.multi_get(b"hk", max_kv_count=True),  # a bool is not a count
                "max_kv_size": table.multi_get(b"hk", max_kv_size=1.5),  # type: ignore[arg-type]
                "hash_key": table.get(bytearray(b"hk"), b"sk"),  # type: ignore[arg-type]
            }
            for culprit, call in refused.items():
                with pytest.raises(InvalidArgumentError, match=culprit):
                    await call
            with pytest.raises(KeyTooLargeError):
                await table.multi_get(b"h" * (MAX_HASH_KEY_BYTES + 1), [b"a"])
            assert await table.multi_get(b"hk", []) == MultiGetResult({}, True)  # no key, no request
            assert sum(len(server.received) for server in cluster.replicas) == 0

            await table.multi_set(b"hk", {b"a": b"1", b"b": b"2"})
            assert (await table.multi_get(b"hk", (b"b", b"a"))).items == {b"a": b"1", b"b": b"2"}
            assert (await table.multi_get(b"hk", iter([b"a"]))).items == {b"a": b"1"}

    run(story())
