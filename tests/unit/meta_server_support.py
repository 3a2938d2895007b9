"""Helpers for the meta server tests: short ticks, a caller on a real socket, a fake replica server.

The fake replica server is a real RpcServer on loopback that advertises its address, beacons the
meta server over the wire, syncs its configuration when refused a lease (as the replica-server core
does), and records the ConfigCommands meta sends it. It holds a replica of every partition meta made
it primary of and reports them in its syncs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pegasus_kv.core.codec import Decoded
from pegasus_kv.core.errors import PegasusError, StorageError
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.meta.config import MetaServerConfig
from pegasus_kv.replication.meta.local_store import LocalMetaStore
from pegasus_kv.replication.meta.server import MetaServer
from pegasus_kv.replication.meta.store import MetaLog, MetaStore
from pegasus_kv.replication.pacifica.config import ConfigType, PartitionStatus
from pegasus_kv.replication.pacifica.meta_messages import (
    BeaconRequest,
    BeaconResponse,
    ConfigCommand,
    ConfigSyncRequest,
    ConfigSyncResponse,
    ReplicaInfo,
)
from pegasus_kv.replication.rpc_server import RpcServer
from pegasus_kv.replication.transport import Connection

T = TypeVar("T")
R = TypeVar("R", bound=Message)

HOST = "127.0.0.1"
GUARD_S = 30.0
WAIT_S = 10.0

# 20 ms ticks; replica servers beacon every 50 ms, hold 0.4 s leases, are dead after 0.6 s of silence.
FAST = {
    "tick_ms": 20,
    "beacon_interval_s": 0.05,
    "lease_s": 0.4,
    "grace_s": 0.6,
    "add_secondary_wait_s": 0.2,
    "min_live_node_count": 1,
    "min_live_node_percent": 0,
}


def meta_config(data_dir: Path, **overrides: Any) -> MetaServerConfig:
    values: dict[str, Any] = {"port": 0, "store": {"kind": "local", "data_dir": str(data_dir)}, **FAST}
    values.update(overrides)
    return MetaServerConfig.model_validate(values)


def run(story: Callable[[], Coroutine[Any, Any, T]]) -> T:
    async def guarded() -> T:
        async with asyncio.timeout(GUARD_S):
            return await story()

    return asyncio.run(guarded())


async def eventually(predicate: Callable[[], Awaitable[bool]], *, timeout_s: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not await predicate():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(server: MetaServer, *, lead: bool = True) -> Any:
    await server.start()
    try:
        if lead:
            await server.wait_until_leader(WAIT_S)
        yield server
    finally:
        await server.stop()


class MetaCaller:
    """Requests to one meta server over one connection; errors come back as typed exceptions."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    @classmethod
    async def to(cls, address: str) -> MetaCaller:
        return cls(await Connection.open(address, connect_timeout_s=2.0))

    async def call(self, request: Message, response_type: type[R], *, timeout_s: float = 5.0) -> R:
        reply = await self.connection.call(request, timeout_s=timeout_s)
        assert isinstance(reply, response_type), f"expected {response_type.__name__}, got {reply!r}"
        return reply

    async def close(self) -> None:
        await self.connection.close()


class FakeReplicaServer:
    """A replica server reduced to its talk with meta (see the module docstring)."""

    def __init__(self, meta_address: str, *, beacon_period_s: float = 0.05) -> None:
        self.meta_address = meta_address
        self.beacon_period_s = beacon_period_s
        self.commands: list[ConfigCommand] = []
        self.primary_of: dict[Gpid, int] = {}  # gpid -> ballot
        self.synced = asyncio.Event()
        self._rpc = RpcServer(self._on_message, HOST, 0, name="fake replica")
        self._beacons: asyncio.Task[None] | None = None
        self._meta: Connection | None = None
        self._sent_tick = 0

    @property
    def address(self) -> str:
        return self._rpc.address

    async def start(self) -> None:
        await self._rpc.start()
        self._beacons = asyncio.get_running_loop().create_task(self._beacon_loop())

    async def stop(self) -> None:
        if self._beacons is not None:
            self._beacons.cancel()
            await asyncio.gather(self._beacons, return_exceptions=True)
        if self._meta is not None:
            await self._meta.close()
        await self._rpc.close()

    def _on_message(self, request: Decoded, peer: str) -> Message | None:
        message = request.message
        assert isinstance(message, ConfigCommand), f"a replica server got {message!r}"
        self.commands.append(message)
        if message.config_type == ConfigType.ASSIGN_PRIMARY and message.node == self.address:
            self.primary_of[message.config.gpid] = message.config.ballot
        return None

    async def _beacon_loop(self) -> None:
        while True:
            with contextlib.suppress(PegasusError):
                await self.beacon_once()
            await asyncio.sleep(self.beacon_period_s)

    async def beacon_once(self) -> BeaconResponse:
        if self._meta is None or self._meta.closed:
            self._meta = await Connection.open(self.meta_address, connect_timeout_s=2.0)
        self._sent_tick += 1
        reply = await self._meta.call(
            BeaconRequest(node=self.address, sent_tick=self._sent_tick), timeout_s=2.0
        )
        assert isinstance(reply, BeaconResponse)
        if not reply.alive:
            await self._sync()
        return reply

    async def _sync(self) -> None:
        assert self._meta is not None
        replicas = [
            ReplicaInfo(gpid=gpid, ballot=ballot, status=PartitionStatus.PRIMARY, last_committed_decree=0)
            for gpid, ballot in sorted(self.primary_of.items())
        ]
        reply = await self._meta.call(ConfigSyncRequest(node=self.address, replicas=replicas), timeout_s=2.0)
        assert isinstance(reply, ConfigSyncResponse)
        self.synced.set()


class ControlledStore(MetaStore):
    """A local store whose appends the test can hold back or make fail."""

    def __init__(self, inner: LocalMetaStore) -> None:
        super().__init__()
        self.inner = inner
        self.appends_allowed = asyncio.Event()
        self.appends_allowed.set()
        self.appending = asyncio.Event()  # set while an append waits for appends_allowed
        self.fail_appends = 0  # the next this-many appends raise StorageError (nothing written)
        self.appended: list[Sequence[bytes]] = []

    @property
    def leadership_lost(self) -> asyncio.Event:
        return self.inner.leadership_lost

    @property
    def is_leader(self) -> bool:
        return self.inner.is_leader

    @property
    def records_since_snapshot(self) -> int:
        return self.inner.records_since_snapshot

    async def campaign(self, my_address: str) -> None:
        await self.inner.campaign(my_address)

    async def leader_address(self) -> str | None:
        return await self.inner.leader_address()

    async def load(self) -> MetaLog:
        return await self.inner.load()

    async def append(self, records: Sequence[bytes]) -> None:
        self.appending.set()
        await self.appends_allowed.wait()
        self.appending.clear()
        if self.fail_appends > 0:
            self.fail_appends -= 1
            raise StorageError("injected: the disk refused the write")
        await self.inner.append(records)
        self.appended.append(list(records))

    async def write_snapshot(self, snapshot: bytes) -> None:
        await self.inner.write_snapshot(snapshot)

    async def close(self) -> None:
        await self.inner.close()
