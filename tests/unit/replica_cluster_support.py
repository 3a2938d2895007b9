"""An in-process cluster for the replica server tests: one real meta server and real replica servers.

Everything listens on 127.0.0.1 with ports picked by the kernel, keeps its data in the test's tmp
directory and runs with short periods: 50 ms ticks, beacons every 0.2 s, 1 s leases, meta declares a
silent server dead after 1.5 s. A replica server restarted with `restart_replica` binds the port it
had, so meta and its peers know it again by the same address (DESIGN.md section 1: a node is its
advertised address).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from pegasus_kv.core.errors import PegasusError
from pegasus_kv.core.hashing import partition_index
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.connection_pool import ConnectionPool
from pegasus_kv.replication.meta.config import MetaServerConfig
from pegasus_kv.replication.meta.server import MetaServer
from pegasus_kv.replication.pacifica.config import PartitionConfiguration
from pegasus_kv.replication.pacifica.meta_requests import (
    CreateTableRequest,
    CreateTableResponse,
    QueryConfigRequest,
    QueryConfigResponse,
)
from pegasus_kv.replication.replica.config import ReplicaServerConfig
from pegasus_kv.replication.replica.server import ReplicaServer

T = TypeVar("T")

HOST = "127.0.0.1"
GUARD_S = 45.0
WAIT_S = 15.0

META_TIMINGS: dict[str, Any] = {
    "tick_ms": 50,
    "beacon_interval_s": 0.2,
    "lease_s": 1.0,
    "grace_s": 1.5,
    "add_secondary_wait_s": 0.5,
    "min_live_node_count": 1,
    "min_live_node_percent": 0,
}
REPLICA_TIMINGS: dict[str, Any] = {
    "tick_ms": 50,
    "beacon_interval_s": 0.2,
    "lease_s": 1.0,
    "config_sync_interval_s": 1.0,
    "config_sync_timeout_s": 0.5,
    "prepare_timeout_s": 0.5,
    "learner_prepare_timeout_s": 1.0,
    "group_check_interval_s": 0.5,
    "learn_timeout_s": 1.0,
    "proposal_timeout_s": 1.0,
    "rpc_timeout_s": 2.0,
    "meta_timeout_s": 1.0,
    "io_threads": 4,
}


def run(story: Callable[[], Coroutine[Any, Any, T]]) -> T:
    async def guarded() -> T:
        async with asyncio.timeout(GUARD_S):
            return await story()

    return asyncio.run(guarded())


async def eventually(predicate: Callable[[], Awaitable[bool]], *, timeout_s: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not await predicate():
            await asyncio.sleep(0.05)


def replica_config(data_dir: Path, meta_address: str, **overrides: Any) -> ReplicaServerConfig:
    values: dict[str, Any] = {
        "host": HOST,
        "port": 0,
        "meta_servers": [meta_address],
        "data_dir": str(data_dir),
        **REPLICA_TIMINGS,
    }
    values.update(overrides)
    return ReplicaServerConfig.model_validate(values)


class Cluster:
    def __init__(
        self, root: Path, replica_count: int = 3, *, replica_overrides: dict[str, Any] | None = None
    ) -> None:
        self.root = root
        self.replica_count = replica_count
        self.replica_overrides = dict(replica_overrides or {})
        self.meta = MetaServer(
            MetaServerConfig.model_validate(
                {
                    "host": HOST,
                    "port": 0,
                    "store": {"kind": "local", "data_dir": str(root / "meta")},
                    **META_TIMINGS,
                }
            )
        )
        self.replicas: list[ReplicaServer] = []
        self.pool = ConnectionPool()

    async def __aenter__(self) -> Cluster:
        await self.meta.start()
        await self.meta.wait_until_leader(WAIT_S)
        for index in range(self.replica_count):
            server = ReplicaServer(
                replica_config(self.root / f"replica{index}", self.meta.address, **self.replica_overrides)
            )
            await server.start()
            self.replicas.append(server)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for server in self.replicas:
            await server.stop()
        await self.pool.close()
        await self.meta.stop()
        failures = [server.failure for server in self.replicas if server.failure is not None]
        assert not failures, f"a replica server failed: {failures!r}"

    # --- servers ------------------------------------------------------------------------------

    def server(self, address: str) -> ReplicaServer:
        return next(s for s in self.replicas if s.address == address and not s._stopping)

    async def restart_replica(self, index: int) -> ReplicaServer:
        old = self.replicas[index]
        port = int(old.address.rsplit(":", 1)[1])
        overrides = {**self.replica_overrides, "port": port}
        server = ReplicaServer(replica_config(self.root / f"replica{index}", self.meta.address, **overrides))
        await server.start()
        self.replicas[index] = server
        return server

    # --- meta ---------------------------------------------------------------------------------

    async def call(self, address: str, request: Message, gpid: Gpid | None = None) -> Message:
        return await self.pool.call(address, request, gpid=gpid, timeout_s=5.0)

    async def create_table(self, name: str, partition_count: int, replica_count: int = 3) -> int:
        reply = await self.call(self.meta.address, CreateTableRequest(name, partition_count, replica_count))
        assert isinstance(reply, CreateTableResponse)
        return reply.app_id

    async def configs(self, name: str) -> list[PartitionConfiguration]:
        reply = await self.call(self.meta.address, QueryConfigRequest(name))
        assert isinstance(reply, QueryConfigResponse)
        return sorted(reply.configs, key=lambda c: c.gpid.partition_index)

    async def wait_healthy(self, name: str, members: int = 3) -> list[PartitionConfiguration]:
        """Every partition has a primary that serves and members - 1 secondaries, as meta says."""
        found: list[PartitionConfiguration] = []

        async def healthy() -> bool:
            nonlocal found
            found = await self.configs(name)
            for config in found:
                if config.primary is None or len(config.members) != members:
                    return False
                live = [s for s in self.replicas if s.address == config.primary and not s._stopping]
                if not live or live[0].node.check_read(config.gpid).name != "OK":
                    return False
            return True

        await eventually(healthy)
        return found

    # --- data ---------------------------------------------------------------------------------

    async def write(self, name: str, request: Message, hash_key: bytes, sort_key: bytes = b"") -> Message:
        """Send a write (or read) to the primary of its partition, retrying while there is none."""
        last: PegasusError | None = None
        for _ in range(100):
            configs = await self.configs(name)
            config = configs[partition_index(hash_key, sort_key, len(configs))]
            if config.primary is not None:
                try:
                    return await self.call(config.primary, request, config.gpid)
                except PegasusError as exc:
                    if not exc.retriable:
                        raise
                    last = exc
            await asyncio.sleep(0.1)
        raise AssertionError(f"no primary served {request!r}: {last}")
