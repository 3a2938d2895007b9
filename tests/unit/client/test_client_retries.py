"""Retries within the call's deadline, and the errors a call ends with.

Stories: a busy server is retried until it takes the request; a non-retriable error ends the call
at once, after one request; a server that never answers makes the call fail with a timeout at its
deadline; lost connections are redialled; a non-idempotent write whose outcome is unknown is not
sent twice; oversized keys and values are refused before any request leaves.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pegasus_kv import (
    BusyError,
    CheckType,
    Client,
    ClientOptions,
    InvalidArgumentError,
    KeyTooLargeError,
    Mutations,
    NetworkError,
    PegasusTimeoutError,
    ValueTooLargeError,
)
from pegasus_kv.core.errors import ErrorCode
from pegasus_kv.core.messages import GetRequest, IncrRequest, SetRequest
from pegasus_kv.core.schema import MAX_HASH_KEY_BYTES, MAX_WRITE_BYTES
from tests.unit.client.fake_cluster import fake_cluster, run


def test_a_busy_server_is_retried_until_it_takes_the_request(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            table = await client.open_table("temp")
            primary = cluster.primary_of("temp", table.partition_of(b"hk"))
            primary.busy_replies = 3
            await table.set(b"hk", b"sk", b"v")
            assert primary.count(SetRequest) == 4
            assert primary.refused == [ErrorCode.BUSY] * 3
            assert table.refresh_count == 0  # BUSY says nothing about the configuration
            assert await table.get(b"hk", b"sk") == b"v"

    run(story())


def test_a_server_busy_for_the_whole_deadline_ends_the_call_with_a_timeout(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            table = await client.open_table("temp")
            cluster.primary_of("temp", table.partition_of(b"hk")).busy_replies = 1_000_000
            with pytest.raises(PegasusTimeoutError, match="BUSY") as raised:
                await table.get(b"hk", b"sk", timeout=0.3)
            assert isinstance(raised.value.__cause__, BusyError)

    run(story())


def test_a_non_retriable_error_ends_the_call_at_once(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            table = await client.open_table("temp")
            await table.set(b"hk", b"name", b"not a number")
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(InvalidArgumentError):
                await table.incr(b"hk", b"name", 1, timeout=5.0)
            assert loop.time() - started < 1.0
            assert cluster.received(IncrRequest) == 1

    run(story())


def test_a_server_that_never_answers_makes_the_call_time_out_at_its_deadline(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address, timeout=0.4) as client:
            table = await client.open_table("temp")
            cluster.primary_of("temp", table.partition_of(b"hk")).stalled = True
            loop = asyncio.get_running_loop()
            for timeout in (None, 0.2):  # the client's default, then a per-call timeout
                started = loop.time()
                with pytest.raises(PegasusTimeoutError):
                    await table.get(b"hk", b"sk", timeout=timeout)
                elapsed = loop.time() - started
                expected = 0.4 if timeout is None else timeout
                assert expected * 0.95 <= elapsed < expected + 0.3

            # A write that timed out says it may have taken effect.
            with pytest.raises(PegasusTimeoutError, match="may or may not have taken effect"):
                await table.set(b"hk", b"sk", b"v")

    run(story())


def test_an_attempt_cap_lets_a_call_move_on_from_a_hung_primary(tmp_path: Path) -> None:
    async def story() -> None:
        options = ClientOptions(timeout_s=3.0, attempt_timeout_s=0.1)
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address, options=options) as client:
            table = await client.open_table("temp")
            index = table.partition_of(b"hk")
            hung = cluster.primary_of("temp", index)
            hung.stalled = True
            rescuer = next(server for server in cluster.replicas if server is not hung)

            async def meta_moves_the_primary_soon() -> None:
                await asyncio.sleep(0.3)
                cluster.move_primary("temp", index, rescuer)

            mover = asyncio.create_task(meta_moves_the_primary_soon())
            await table.set(b"hk", b"sk", b"v")  # idempotent: re-sent after each timed-out attempt
            await mover
            assert hung.count(SetRequest) >= 2
            assert rescuer.count(SetRequest) == 1
            assert await table.get(b"hk", b"sk") == b"v"

    run(story())


def test_a_non_idempotent_write_whose_outcome_is_unknown_is_not_sent_twice(tmp_path: Path) -> None:
    async def story() -> None:
        options = ClientOptions(timeout_s=3.0, attempt_timeout_s=0.1)
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address, options=options) as client:
            table = await client.open_table("temp")
            primary = cluster.primary_of("temp", table.partition_of(b"counter"))
            primary.stalled = True
            with pytest.raises(PegasusTimeoutError, match="may or may not have taken effect"):
                await table.incr(b"counter", b"n", 1)
            with pytest.raises(PegasusTimeoutError, match="may or may not have taken effect"):
                await table.check_and_set(b"counter", b"n", CheckType.NO_CHECK, b"", b"n", b"1")
            with pytest.raises(PegasusTimeoutError):
                await table.check_and_mutate(
                    b"counter", b"n", CheckType.NO_CHECK, b"", Mutations().delete(b"n")
                )
            sent = [name for name, _gpid in primary.received]
            assert sent == ["IncrRequest", "CheckAndSetRequest", "CheckAndMutateRequest"]  # once each

            # A refusal proves nothing was applied, so even incr is retried after one.
            primary.stalled = False
            primary.busy_replies = 2
            assert await table.incr(b"counter", b"n", 1) == 1
            assert primary.count(IncrRequest) == 1 + 3

    run(story())


def test_lost_connections_are_redialled_within_the_call(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            table = await client.open_table("temp")
            await table.set(b"hk", b"sk", b"v")
            for server in cluster.replicas:
                await server.drop_connections()
            assert await table.get(b"hk", b"sk") == b"v"

            # A connection that drops while a read is in flight: the read is sent again.
            primary = cluster.primary_of("temp", table.partition_of(b"hk"))
            primary.stalled = True
            reading = asyncio.create_task(table.get(b"hk", b"sk"))
            await asyncio.sleep(0.05)
            primary.stalled = False
            await primary.drop_connections()
            assert await reading == b"v"
            assert primary.count(GetRequest) >= 3

    run(story())


def test_an_unreachable_cluster_ends_calls_with_a_timeout_naming_the_network_error(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            table = await client.open_table("temp")
            for server in cluster.replicas:
                await server.close()
            with pytest.raises(PegasusTimeoutError) as raised:
                await table.get(b"hk", b"sk", timeout=0.3)
            assert isinstance(raised.value.__cause__, NetworkError)

    run(story())


def test_oversized_keys_and_values_are_refused_before_any_request(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            table = await client.open_table("temp")
            huge_hash_key = b"h" * (MAX_HASH_KEY_BYTES + 1)
            with pytest.raises(KeyTooLargeError):
                await table.set(huge_hash_key, b"sk", b"v")
            with pytest.raises(KeyTooLargeError):
                await table.get(huge_hash_key, b"sk")
            with pytest.raises(KeyTooLargeError):
                await table.batch_get([(b"ok", b"sk"), (huge_hash_key, b"sk")])
            with pytest.raises(ValueTooLargeError):
                await table.set(b"hk", b"sk", b"v" * MAX_WRITE_BYTES)
            with pytest.raises(ValueTooLargeError):
                await table.multi_set(
                    b"hk", {b"a": b"v" * (MAX_WRITE_BYTES // 2), b"b": b"v" * (MAX_WRITE_BYTES // 2)}
                )
            with pytest.raises(ValueTooLargeError):
                await table.check_and_mutate(
                    b"hk", b"sk", CheckType.NO_CHECK, b"", Mutations().put(b"sk", b"v" * MAX_WRITE_BYTES)
                )
            assert sum(len(server.received) for server in cluster.replicas) == 0
            # Just under the limit is fine.
            await table.set(b"hk", b"sk", b"v" * (MAX_WRITE_BYTES - 4))
            assert len(await table.get(b"hk", b"sk") or b"") == MAX_WRITE_BYTES - 4

    run(story())
