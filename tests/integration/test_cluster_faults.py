"""Faults on a real onebox cluster (meta1, replica1..3, table `temp` with 8 partitions of 3 replicas):
kill -9 a replica server under load, kill the server of a primary, freeze one past its lease with
SIGSTOP, restart the whole cluster, and feed the servers garbage. Each story checks what a user
relies on: no acknowledged write is lost, writes resume within a few lease periods, every partition
gets its three replicas back, a deposed primary never serves a stale read, and bad input gets a
typed error while the servers keep serving.

Onebox times: 100 ms ticks, 3 s leases, meta declares a silent replica server dead after 4 s. The
budgets below are several lease periods on purpose: they bound liveness, they do not time it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pegasus_kv import Client
from pegasus_kv.client.meta import MetaCaller
from pegasus_kv.client.options import ClientOptions
from pegasus_kv.client.session import ClientSession
from pegasus_kv.core.errors import (
    InvalidArgumentError,
    NotPrimaryError,
    PartitionMismatchError,
    PegasusError,
    TableNotFoundError,
    UnsupportedError,
    ValueTooLargeError,
)
from pegasus_kv.core.hashing import partition_index
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import GetRequest, GetResponse, SetRequest
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.connection_pool import ConnectionPool
from pegasus_kv.replication.pacifica.config import PartitionConfiguration
from pegasus_kv.replication.pacifica.meta_requests import QueryConfigRequest, QueryConfigResponse
from pegasus_kv.testing.onebox import GRACE_S
from tests.integration.onebox_support import (
    FAILOVER_BUDGET_S,
    LEASE_S,
    START_TIMEOUT_S,
    is_alive,
    kill_leftovers,
    onebox,
    running_onebox,
)

pytestmark = pytest.mark.integration

TABLE = "temp"
PARTITION_COUNT = 8
REPLICA_COUNT = 3
HEALTH_BUDGET_S = 45.0  # a restarted server learns what it missed for up to 8 partitions
WRITER_COUNT = 4
MAX_WRITES_PER_WRITER = 5_000  # bounds the acknowledged-write log and the read-back
CALL_TIMEOUT_S = 2.0
ATTEMPT_TIMEOUT_S = 0.5  # move on from a primary that hangs (SIGSTOP) instead of waiting for it
READ_BACK_CONCURRENCY = 8
GRACE_AND_LEASE_S = 4.0 + LEASE_S  # by then meta has surely noticed a crash and reconfigured


@pytest.fixture
def onebox_dir(tmp_path: Path) -> Iterator[Path]:
    with running_onebox(tmp_path / "onebox") as data_dir:
        yield data_dir


# --- the cluster as the tests see it ----------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaServer:
    name: str  # onebox's node name, e.g. "replica2"
    address: str
    pid: int | None


def meta_addresses(data_dir: Path) -> list[str]:
    status = onebox("status", "--data-dir", str(data_dir), "--json")
    assert status.returncode == 0, status.stderr
    addresses: list[str] = json.loads(status.stdout)["meta"]
    return addresses


def replica_servers(data_dir: Path) -> dict[str, ReplicaServer]:
    """Replica servers by address, with the pid onebox recorded for each."""
    nodes = json.loads((data_dir / "onebox.json").read_text())["nodes"]
    return {
        node["address"]: ReplicaServer(name, node["address"], node["pid"])
        for name, node in nodes.items()
        if node["role"] == "replica"
    }


async def query_configs(meta: list[str], timeout_s: float = 5.0) -> list[PartitionConfiguration]:
    """What meta answers a client that routes: the configuration of every partition of `temp`."""
    session = ClientSession(ClientOptions(timeout_s=timeout_s), random.Random())
    try:
        response = await MetaCaller(session, meta).call(
            QueryConfigRequest(TABLE),
            QueryConfigResponse,
            deadline=session.deadline(timeout_s),
            idempotent=True,
            what="query the configuration of temp",
        )
    finally:
        await session.close()
    assert response.partition_count == PARTITION_COUNT == len(response.configs)
    return sorted(response.configs, key=lambda config: config.gpid.partition_index)


def fully_replicated(config: PartitionConfiguration) -> bool:
    return config.primary is not None and len(config.secondaries) == REPLICA_COUNT - 1


async def wait_until_fully_replicated(meta: list[str], budget_s: float) -> list[PartitionConfiguration]:
    """Every partition has a primary and two secondaries again, within budget_s."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(PegasusError):
            configs = await query_configs(meta)
            if all(fully_replicated(config) for config in configs):
                return configs
        if time.monotonic() - started > budget_s:
            configs = await query_configs(meta)
            raise AssertionError(f"not every partition has 3 replicas after {budget_s} s: {configs}")
        await asyncio.sleep(0.5)


def client_options() -> ClientOptions:
    return ClientOptions(timeout_s=CALL_TIMEOUT_S, attempt_timeout_s=ATTEMPT_TIMEOUT_S)


def hash_key_in_partition(index: int, prefix: str) -> bytes:
    """A hash key that routes to partition `index` (keys are spread by CRC-64 of the hash key)."""
    for attempt in range(10_000):
        hash_key = f"{prefix}{attempt}".encode()
        if partition_index(hash_key, b"", PARTITION_COUNT) == index:
            return hash_key
    raise AssertionError(f"no hash key with prefix {prefix!r} routes to partition {index}")


async def read_back(meta: list[str], acknowledged: dict[bytes, bytes]) -> dict[bytes, bytes | None]:
    """Every key of `acknowledged` whose value read back differs from the acknowledged one."""
    keys = list(acknowledged)
    wrong: dict[bytes, bytes | None] = {}
    async with Client(meta, options=ClientOptions(timeout_s=10.0)) as client:
        table = await client.open_table(TABLE)

        async def reader(start: int) -> None:
            for hash_key in keys[start::READ_BACK_CONCURRENCY]:
                value = await table.get(hash_key, b"v")
                if value != acknowledged[hash_key]:
                    wrong[hash_key] = value

        await asyncio.gather(*(reader(start) for start in range(READ_BACK_CONCURRENCY)))
    return wrong


# --- story 1: kill -9 a replica server under continuous writes ------------------------------------


@dataclass
class WriteLog:
    """What the writers saw: every acknowledged write and when each one was acknowledged."""

    acknowledged: dict[bytes, bytes] = field(default_factory=dict)
    # time.monotonic() of each acknowledgement, by partition, in order
    acknowledged_at: list[list[float]] = field(default_factory=lambda: [[] for _ in range(PARTITION_COUNT)])
    failures: int = 0

    def record(self, hash_key: bytes, value: bytes) -> None:
        self.acknowledged[hash_key] = value
        self.acknowledged_at[partition_index(hash_key, b"", PARTITION_COUNT)].append(time.monotonic())

    def times_in_partition(self, index: int) -> list[float]:
        return self.acknowledged_at[index]

    def last_in_partition(self, index: int) -> float:
        return self.acknowledged_at[index][-1] if self.acknowledged_at[index] else 0.0

    def longest_gap_s(self, index: int, since: float, until: float) -> float:
        """The longest stretch in [since, until] without an acknowledged write to partition `index`:
        how long that partition was unavailable to writers."""
        times = [since, *(at for at in self.times_in_partition(index) if since <= at <= until), until]
        return max(later - earlier for earlier, later in itertools.pairwise(times))


async def write_continuously(meta: list[str], writer: int, log: WriteLog, stop: asyncio.Event) -> None:
    """Distinct keys with unique values, one after the other; only acknowledged writes are logged
    (a failed write may or may not have been applied, so nothing is claimed about it)."""
    async with Client(meta, options=client_options()) as client:
        table = await client.open_table(TABLE)
        for sequence in range(MAX_WRITES_PER_WRITER):
            if stop.is_set():
                return
            hash_key = f"w{writer}-{sequence}".encode()
            value = f"writer {writer} write {sequence} {random.random()}".encode()
            try:
                await table.set(hash_key, b"v", value)
            except PegasusError:
                log.failures += 1
                await asyncio.sleep(0.05)
                continue
            log.record(hash_key, value)


def test_kill_9_of_a_replica_server_under_writes_loses_no_acknowledged_write(onebox_dir: Path) -> None:
    meta = meta_addresses(onebox_dir)
    servers = replica_servers(onebox_dir)
    victim = servers[str(asyncio.run(query_configs(meta))[0].primary)]  # it holds primaries
    log = WriteLog()
    timeline: dict[str, float] = {}

    async def writes_around_a_crash() -> None:
        stop = asyncio.Event()
        writers = [
            asyncio.create_task(write_continuously(meta, writer, log, stop)) for writer in range(WRITER_COUNT)
        ]
        try:
            await asyncio.sleep(3.0)
            timeline["killed"] = time.monotonic()
            killed = await asyncio.to_thread(
                onebox, "stop-node", victim.name, "--kill", "--data-dir", str(onebox_dir)
            )
            assert killed.returncode == 0, killed.stderr
            # Keep writing through the failover, then a little longer on the two survivors.
            deadline = timeline["killed"] + FAILOVER_BUDGET_S + 6.0
            while time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                if all(
                    log.last_in_partition(index) > timeline["killed"] + GRACE_AND_LEASE_S
                    for index in range(PARTITION_COUNT)
                ):
                    break
            timeline["stopped"] = time.monotonic()
        finally:
            stop.set()
            await asyncio.gather(*writers)

    asyncio.run(writes_around_a_crash())
    assert victim.pid is not None and not is_alive(victim.pid)

    # Writes kept being acknowledged before the crash, and resumed within a few lease periods.
    for index in range(PARTITION_COUNT):
        times = log.times_in_partition(index)
        assert times and times[0] < timeline["killed"] < times[-1], f"partition {index}: no write on one side"
        gap_s = log.longest_gap_s(index, timeline["killed"], timeline["stopped"])
        assert gap_s < FAILOVER_BUDGET_S, f"partition {index} acknowledged no write for {gap_s:.1f} s"

    restarted = onebox("start-node", victim.name, "--data-dir", str(onebox_dir))
    assert restarted.returncode == 0, restarted.stderr

    wrong = asyncio.run(read_back(meta, log.acknowledged))
    assert wrong == {}, f"{len(wrong)} of {len(log.acknowledged)} acknowledged writes read back wrong"

    configs = asyncio.run(wait_until_fully_replicated(meta, HEALTH_BUDGET_S))
    members = {member for config in configs for member in config.members}
    assert members <= set(servers)
    # The restarted server is a member again (it learned what it missed).
    assert victim.address in members


# --- story 2: kill -9 the server of a primary ------------------------------------------------------


def test_a_secondary_takes_over_when_the_server_of_a_primary_is_killed(onebox_dir: Path) -> None:
    meta = meta_addresses(onebox_dir)
    servers = replica_servers(onebox_dir)
    before = asyncio.run(query_configs(meta))[3]
    assert before.primary is not None
    victim = servers[before.primary]
    hash_key = hash_key_in_partition(3, "takeover")

    async def write(value: bytes) -> None:
        async with Client(meta, options=ClientOptions(timeout_s=10.0)) as client:
            table = await client.open_table(TABLE)
            await table.set(hash_key, b"sk", value)

    asyncio.run(write(b"before the crash"))
    killed = onebox("stop-node", victim.name, "--kill", "--data-dir", str(onebox_dir))
    assert killed.returncode == 0, killed.stderr

    async def use_partition_after_the_crash() -> float:
        started = time.monotonic()
        # One call with the whole budget: the client retries until meta names a new primary.
        async with Client(
            meta, options=ClientOptions(timeout_s=FAILOVER_BUDGET_S, attempt_timeout_s=1.0)
        ) as client:
            table = await client.open_table(TABLE)
            assert table.partition_of(hash_key) == 3
            assert await table.get(hash_key, b"sk") == b"before the crash"
            await table.set(hash_key, b"sk", b"after the crash")
            assert await table.get(hash_key, b"sk") == b"after the crash"
        return time.monotonic() - started

    took_s = asyncio.run(use_partition_after_the_crash())
    assert took_s < FAILOVER_BUDGET_S

    after = asyncio.run(query_configs(meta))[3]
    assert after.primary is not None and after.primary != victim.address
    assert after.primary in before.secondaries  # a secondary took over; it has every committed write
    assert after.ballot > before.ballot
    assert victim.address not in after.members


# --- story 3: SIGSTOP a primary's server past its lease --------------------------------------------


async def direct_get(address: str, gpid: Gpid, hash_key: bytes) -> bytes | PegasusError | None:
    """A GetRequest sent straight to `address`, bypassing routing: its value, or the error it got."""
    pool = ConnectionPool(connect_timeout_s=1.0)
    try:
        reply = await pool.call(address, GetRequest(hash_key, b"sk"), gpid=gpid, timeout_s=1.0)
    except PegasusError as error:
        return error
    finally:
        await pool.close()
    assert isinstance(reply, GetResponse), reply
    return reply.value


async def direct_get_once_served(address: str, gpid: Gpid, hash_key: bytes) -> bytes | None:
    """direct_get, repeated while the server answers a retriable error (for a few lease periods)."""
    started = time.monotonic()
    while True:
        answer = await direct_get(address, gpid, hash_key)
        if not isinstance(answer, PegasusError):
            return answer
        assert answer.retriable and time.monotonic() - started < FAILOVER_BUDGET_S, answer
        await asyncio.sleep(0.2)


def test_a_primary_frozen_past_its_lease_never_serves_a_stale_read(onebox_dir: Path) -> None:
    meta = meta_addresses(onebox_dir)
    servers = replica_servers(onebox_dir)
    before = asyncio.run(query_configs(meta))[5]
    assert before.primary is not None
    frozen = servers[before.primary]
    assert frozen.pid is not None and is_alive(frozen.pid)
    hash_key = hash_key_in_partition(5, "frozen")
    latest: list[bytes] = []  # acknowledged values, oldest first
    sequence = itertools.count()  # every value ever sent is unique, acknowledged or not

    async def write_new_values(budget_s: float, wanted_after_freeze: int) -> None:
        async with Client(meta, options=client_options()) as client:
            table = await client.open_table(TABLE)
            started = time.monotonic()
            acknowledged = 0
            while acknowledged < wanted_after_freeze:
                assert time.monotonic() - started < budget_s, f"{acknowledged} writes in {budget_s} s"
                value = f"value {next(sequence)}".encode()
                try:
                    await table.set(hash_key, b"sk", value)
                except PegasusError:
                    await asyncio.sleep(0.1)
                    continue
                latest.append(value)
                acknowledged += 1

    asyncio.run(write_new_values(10.0, 3))
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        # Writes succeed again once meta gives the partition to a secondary (after the grace).
        asyncio.run(write_new_values(FAILOVER_BUDGET_S + 6.0, 5))
        moved = asyncio.run(query_configs(meta))[5]
        assert moved.primary is not None and moved.primary != frozen.address
        assert moved.ballot > before.ballot
    finally:
        os.kill(frozen.pid, signal.SIGCONT)

    async def ask_the_old_primary(for_s: float) -> list[bytes | PegasusError | None]:
        """Ask the woken server again and again: right after SIGCONT it has not yet heard that it
        was deposed, which is exactly when a stale read would slip out."""
        answers: list[bytes | PegasusError | None] = []
        started = time.monotonic()
        while time.monotonic() - started < for_s:
            answers.append(await direct_get(frozen.address, before.gpid, hash_key))
            await asyncio.sleep(0.05)
        return answers

    answers = asyncio.run(ask_the_old_primary(3.0))
    assert answers, "the old primary was never asked"
    # The same direct read, sent to the new primary, does see the latest value (once its read lease
    # is confirmed: until then it refuses reads with NOT_PRIMARY too).
    assert asyncio.run(direct_get_once_served(str(moved.primary), before.gpid, hash_key)) == latest[-1]
    for answer in answers:
        if isinstance(answer, PegasusError):
            assert isinstance(answer, NotPrimaryError) or answer.retriable, answer
        else:
            assert answer == latest[-1], f"stale read {answer!r}; latest acknowledged is {latest[-1]!r}"

    # It rejoins: every partition is back to three replicas, the woken server among them.
    configs = asyncio.run(wait_until_fully_replicated(meta, HEALTH_BUDGET_S))
    assert any(frozen.address in config.members for config in configs)
    assert is_alive(frozen.pid)


# --- story 4: stop and restart the whole cluster ---------------------------------------------------


def test_acknowledged_data_is_back_after_the_whole_cluster_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "onebox"
    written = {f"restart{index}".encode(): f"value {index}".encode() for index in range(200)}
    try:
        with running_onebox(data_dir):
            meta = meta_addresses(data_dir)

            async def write_all() -> None:
                async with Client(meta, options=ClientOptions(timeout_s=10.0)) as client:
                    table = await client.open_table(TABLE)
                    for hash_key, value in written.items():
                        await table.set(hash_key, b"v", value)

            asyncio.run(write_all())
            stopped = onebox("stop", "--data-dir", str(data_dir))
            assert stopped.returncode == 0, stopped.stderr
            restarted = onebox("start", "--data-dir", str(data_dir), timeout_s=START_TIMEOUT_S + 10)
            assert restarted.returncode == 0, restarted.stdout + restarted.stderr
            meta = meta_addresses(data_dir)
            assert asyncio.run(read_back(meta, written)) == {}
    finally:
        kill_leftovers(data_dir)


def test_every_replica_server_stopped_and_started_again_is_writable_and_fully_replicated(
    onebox_dir: Path,
) -> None:
    """A rolling-restart gone wrong: all replica servers stop (gracefully, one after the other, so
    meta drops members down to the last one) and start again past meta's grace. The last member is
    made primary again and the others must rejoin as learners: nothing is lost, and the table is
    writable and fully replicated within seconds, not after add_secondary_timeout (600 s)."""
    meta = meta_addresses(onebox_dir)
    written = {f"rolling{index}".encode(): f"value {index}".encode() for index in range(100)}

    async def write(items: dict[bytes, bytes]) -> None:
        async with Client(meta, options=ClientOptions(timeout_s=30.0)) as client:
            table = await client.open_table(TABLE)
            for hash_key, value in items.items():
                await table.set(hash_key, b"v", value)

    asyncio.run(write(written))
    servers = sorted(replica_servers(onebox_dir).values(), key=lambda server: server.name)
    for server in servers:
        stopped = onebox("stop-node", server.name, "--data-dir", str(onebox_dir))
        assert stopped.returncode == 0, stopped.stderr
    time.sleep(GRACE_S + 1.0)  # meta declares them dead and drops members down to the last one
    for server in servers:
        started = onebox("start-node", server.name, "--data-dir", str(onebox_dir))
        assert started.returncode == 0, started.stderr

    after = {f"after{index}".encode(): b"written after the restart" for index in range(32)}
    asyncio.run(write(after))  # every partition takes writes again (30 s budget per call)
    asyncio.run(wait_until_fully_replicated(meta, budget_s=30.0))
    assert asyncio.run(read_back(meta, {**written, **after})) == {}


# --- story 5: bad input gets typed errors and the servers keep serving ------------------------------


def send_garbage(address: str, garbage: bytes) -> bytes:
    """Send bytes that are no valid frame; return what the server sent back before closing."""
    host, _, port = address.rpartition(":")
    received = b""
    with socket.create_connection((host, int(port)), timeout=5.0) as sock:
        sock.sendall(garbage)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(4096):  # a timeout (server kept it open) fails the test
                received += chunk
    return received


# 0xc1 is the one byte msgpack never uses; a length of 2^32-1 exceeds any frame limit.
NOT_MSGPACK = struct.pack(">I", 8) + b"\xc1" * 8
OVER_LONG = b"\xff\xff\xff\xff" + b"x" * 64


def test_bad_input_gets_typed_errors_and_the_servers_keep_serving(onebox_dir: Path) -> None:
    meta = meta_addresses(onebox_dir)
    servers = replica_servers(onebox_dir)

    for address in [meta[0], *servers]:
        for garbage in (NOT_MSGPACK, OVER_LONG):
            send_garbage(address, garbage)  # returns once the server closed the connection

    async def send_straight(address: str, request: Message, gpid: Gpid | None) -> PegasusError:
        """A request no client would send, straight to a server: the typed error it answers."""
        pool = ConnectionPool(connect_timeout_s=2.0)
        try:
            reply = await pool.call(address, request, gpid=gpid, timeout_s=5.0)
        except PegasusError as error:
            return error
        finally:
            await pool.close()
        raise AssertionError(f"{request!r} to {address} was answered {reply!r}")

    async def servers_refuse_bad_requests() -> None:
        config = (await query_configs(meta))[1]
        primary = str(config.primary)
        two_mb = SetRequest(hash_key_in_partition(1, "big"), b"v", b"x" * (2 * 1024 * 1024))
        assert isinstance(await send_straight(primary, two_mb, config.gpid), ValueTooLargeError)
        misrouted = SetRequest(hash_key_in_partition(0, "misrouted"), b"v", b"value")
        assert isinstance(await send_straight(primary, misrouted, config.gpid), PartitionMismatchError)
        no_partition = GetRequest(b"hk", b"v")
        assert isinstance(await send_straight(primary, no_partition, None), InvalidArgumentError)
        assert isinstance(await send_straight(meta[0], no_partition, config.gpid), UnsupportedError)

    asyncio.run(servers_refuse_bad_requests())

    async def use_the_cluster() -> None:
        async with Client(meta, options=ClientOptions(timeout_s=10.0)) as client:
            with pytest.raises(TableNotFoundError):
                await client.open_table("nope")
            table = await client.open_table(TABLE)
            with pytest.raises(ValueTooLargeError):
                await table.set(b"big", b"v", b"x" * (2 * 1024 * 1024))
            with pytest.raises(InvalidArgumentError):
                await table.set("not bytes", b"v", b"value")  # type: ignore[arg-type]
            with pytest.raises(InvalidArgumentError):
                await table.set(b"hk", b"v", b"value", ttl="soon")  # type: ignore[arg-type]
            with pytest.raises(InvalidArgumentError):
                await table.get(b"hk", 42)  # type: ignore[arg-type]
            # Still serving, on every partition.
            for index in range(20):
                await table.set(f"after garbage {index}".encode(), b"v", b"fine")
            assert await table.get(b"after garbage 7", b"v") == b"fine"
            assert await table.get(b"big", b"v") is None

    asyncio.run(use_the_cluster())
    assert all(server.pid is not None and is_alive(server.pid) for server in servers.values())
