"""The connection pool: lazy dialling by address, redialling with backoff, and a clean close.

Stories: a server restarts and the pool finds it again without hammering it meanwhile; many first
calls share one dial; closing the pool fails what is pending with a typed error and leaves no task;
a DNS name is as good an address as an IP.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from pegasus_kv.core.errors import InvalidArgumentError, NetworkError, PegasusTimeoutError, ShuttingDownError
from pegasus_kv.core.messages import GetResponse
from pegasus_kv.replication.connection_pool import Backoff, ConnectionPool
from pegasus_kv.replication.rpc_server import RpcServer
from pegasus_kv.replication.transport import format_address
from tests.unit.test_transport_support import (
    HOST,
    Gates,
    echo,
    free_port,
    get,
    on_both_loops,
    other_tasks,
    run,
    unanswering_listener,
    wait_until,
)


class FixedDraw:
    """A random source that always draws the same number."""

    def __init__(self, draw: float) -> None:
        self.draw = draw

    def random(self) -> float:
        return self.draw


def test_backoff_doubles_per_failure_up_to_its_cap_and_jitter_only_shortens_it() -> None:
    backoff = Backoff(initial_s=0.1, max_s=1.0, multiplier=2.0, jitter=0.5)
    without_jitter = [backoff.delay_s(failures, FixedDraw(0.0)) for failures in range(1, 7)]
    assert without_jitter == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert backoff.delay_s(3, FixedDraw(1.0)) == pytest.approx(0.2)  # at most half is taken off
    assert backoff.delay_s(10_000, FixedDraw(0.5)) == pytest.approx(0.75)  # no overflow far out

    rng = random.Random(7)
    draws = [backoff.delay_s(4, rng) for _ in range(200)]
    assert all(0.4 <= delay <= 0.8 for delay in draws)
    assert len(set(draws)) > 100  # clients that failed together spread out


@on_both_loops
def test_the_pool_redials_with_backoff_when_the_server_restarts(loop_name: str) -> None:
    async def story() -> None:
        server = RpcServer(echo, HOST, 0)
        await server.start()
        port = server.port
        address = format_address(HOST, port)
        pool = ConnectionPool(backoff=Backoff(initial_s=0.05, max_s=0.2), rng=random.Random(1))
        assert await pool.call(address, get(b"before"), timeout_s=2.0) == GetResponse(b"before")
        assert pool.dial_attempts == 1

        await server.close()
        await wait_until(lambda: not pool.is_connected(address))
        with pytest.raises(NetworkError):  # the first redial is at once, and is refused
            await pool.call(address, get(b"down"), timeout_s=2.0)
        assert pool.dial_attempts == 2
        with pytest.raises(NetworkError, match="next attempt in"):  # then it backs off, failing fast
            await pool.call(address, get(b"down"), timeout_s=2.0)
        assert pool.dial_attempts == 2

        # Callers keep knocking every millisecond while the server is away...
        loop = asyncio.get_running_loop()
        knock_until = loop.time() + 0.3
        knocks = 0
        while loop.time() < knock_until:
            knocks += 1
            with pytest.raises(NetworkError):
                await pool.call(address, get(b"down"), timeout_s=2.0)
            await asyncio.sleep(0.001)
        # ...but the pool dialled only when the backoff allowed: 50, 100, 200, 200 ms apart at most.
        assert knocks > 20
        assert pool.dial_attempts <= 2 + 5

        restarted = RpcServer(echo, HOST, port)
        await restarted.start()
        succeeded = False
        while not succeeded:
            try:
                succeeded = await pool.call(address, get(b"after"), timeout_s=2.0) == GetResponse(b"after")
            except NetworkError:
                await asyncio.sleep(0.01)
        assert pool.is_connected(address)

        await pool.close()
        await restarted.close()
        assert other_tasks() == set()

    run(loop_name, story())


@on_both_loops
def test_concurrent_first_calls_share_one_dial(loop_name: str) -> None:
    async def story() -> None:
        async with RpcServer(echo, HOST, 0) as server:
            pool = ConnectionPool()
            keys = [b"k%d" % i for i in range(20)]
            replies = await asyncio.gather(
                *(pool.call(server.address, get(key), timeout_s=2.0) for key in keys)
            )
            assert replies == [GetResponse(key) for key in keys]
            assert pool.dial_attempts == 1
            assert server.connection_count == 1
            await pool.close()

    run(loop_name, story())


@on_both_loops
def test_closing_the_pool_fails_pending_calls_and_leaves_no_task_behind(loop_name: str) -> None:
    async def story() -> None:
        gates = Gates()
        async with RpcServer(gates.handler, HOST, 0) as server:
            pool = ConnectionPool()
            pending = [
                asyncio.create_task(pool.call(server.address, get(b"k%d" % i), timeout_s=5.0))
                for i in range(5)
            ]
            await wait_until(lambda: gates.held == 5)

            await pool.close()
            for call in pending:
                with pytest.raises(ShuttingDownError):
                    await call
            with pytest.raises(ShuttingDownError):
                await pool.call(server.address, get(b"later"), timeout_s=1.0)
            assert other_tasks() == set()
            await wait_until(lambda: gates.held == 0)  # the server noticed and cancelled them too
        assert other_tasks() == set()

    run(loop_name, story())


@on_both_loops
def test_closing_the_pool_while_a_dial_is_under_way_fails_its_callers_with_shutting_down(
    loop_name: str,
) -> None:
    async def story() -> None:
        with unanswering_listener() as port:
            pool = ConnectionPool(connect_timeout_s=5.0)
            address = format_address(HOST, port)
            callers = [asyncio.create_task(pool.call(address, get(b"k"), timeout_s=5.0)) for _ in range(3)]
            await asyncio.sleep(0.05)
            assert pool.dial_attempts == 1  # all three wait on the same dial

            await pool.close()
            for caller in callers:
                with pytest.raises(ShuttingDownError):
                    await caller
            assert other_tasks() == set()

    run(loop_name, story())


@on_both_loops
def test_a_dial_slower_than_the_caller_times_the_caller_out_and_a_hung_dial_backs_off(loop_name: str) -> None:
    async def story() -> None:
        with unanswering_listener() as port:
            pool = ConnectionPool(
                connect_timeout_s=0.2, backoff=Backoff(initial_s=1.0, max_s=1.0, jitter=0.0)
            )
            address = format_address(HOST, port)
            with pytest.raises(PegasusTimeoutError):
                await pool.call(address, get(b"impatient"), timeout_s=0.05)
            # The dial goes on without that caller and ends at the pool's connect timeout.
            await wait_until(lambda: pool.dial_attempts == 1 and not pool.is_dialling(address))
            with pytest.raises(NetworkError, match="timed out"):
                await pool.call(address, get(b"k"), timeout_s=5.0)
            assert pool.dial_attempts == 1
            await pool.close()
            assert other_tasks() == set()

    run(loop_name, story())


@on_both_loops
def test_a_dns_name_works_as_the_host(loop_name: str) -> None:
    async def story() -> None:
        async with RpcServer(echo, "localhost", 0) as server:
            assert server.address == f"localhost:{server.port}"
            pool = ConnectionPool()
            assert await pool.call(server.address, get(b"by name"), timeout_s=2.0) == GetResponse(b"by name")
            await pool.close()

    run(loop_name, story())


@on_both_loops
def test_an_unknown_dns_name_is_a_network_error_and_a_malformed_address_an_invalid_argument(
    loop_name: str,
) -> None:
    async def story() -> None:
        pool = ConnectionPool()
        with pytest.raises(NetworkError):
            await pool.call("no-such-host.invalid:34601", get(b"k"), timeout_s=5.0)
        with pytest.raises(InvalidArgumentError):
            await pool.call("no port here", get(b"k"), timeout_s=1.0)
        with pytest.raises(NetworkError):
            await pool.call(f"{HOST}:{free_port()}", get(b"k"), timeout_s=1.0)
        await pool.close()

    run(loop_name, story())
