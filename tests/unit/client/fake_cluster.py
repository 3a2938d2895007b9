"""A TEST-ONLY stand-in for a pegasus-kv cluster, for the client's tests (holds no tests itself).

The real meta and replica servers do not exist yet, so this harness plays them in-process over the
real transport (RpcServer on loopback):

- FakeMeta answers QueryConfigRequest from the tables the cluster holds, and the table DDL the
  client wraps (create, drop, recall, list). It can play a non-leader that names the leader.
- FakeReplicaServer serves the data requests of the partitions it is primary of, through a real
  PartitionStore per partition (reads via `read`, writes via `apply` of a one-write Mutation).
  There is no replication: "moving a primary" just points the configuration at another server,
  which then serves the same store, while the old one answers NOT_PRIMARY. Scan contexts belong
  to the server that opened them, as on a real cluster.

Knobs: move a primary, drop every connection of a server, answer BUSY a few times, stall (never
answer), make a meta a non-leader. Every server records what it received, so a test can tell
exactly how many requests a call made and where they went.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pegasus_kv.core.codec import Decoded
from pegasus_kv.core.errors import (
    BusyError,
    ErrorCode,
    InvalidArgumentError,
    InvalidStateError,
    NotLeaderError,
    NotPrimaryError,
    PartitionMismatchError,
    PegasusError,
    ScannerExpiredError,
    TableExistsError,
    TableNotFoundError,
)
from pegasus_kv.core.hashing import partition_index
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import (
    WRITE_REQUEST_TYPES,
    BatchGetRequest,
    CheckAndMutateRequest,
    CheckAndSetRequest,
    ClearScannerRequest,
    ClearScannerResponse,
    DeleteRequest,
    ErrorReply,
    GetRequest,
    GetScannerRequest,
    IncrRequest,
    MultiDeleteRequest,
    MultiGetRequest,
    MultiSetRequest,
    ScanRequest,
    ScanResponse,
    SetRequest,
    SortKeyCountRequest,
    TtlRequest,
    WriteRequest,
)
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.core.registry import Message
from pegasus_kv.core.validation import validate_write
from pegasus_kv.replication import loop as loops
from pegasus_kv.replication.pacifica.config import PartitionConfiguration
from pegasus_kv.replication.pacifica.meta_requests import (
    CreateTableRequest,
    CreateTableResponse,
    DropTableRequest,
    DropTableResponse,
    ListTablesRequest,
    ListTablesResponse,
    QueryConfigRequest,
    QueryConfigResponse,
    RecallTableRequest,
    RecallTableResponse,
)
from pegasus_kv.replication.pacifica.meta_types import TableInfo, TableStatus
from pegasus_kv.replication.rpc_server import HandlerResult, RpcServer
from pegasus_kv.storage import PartitionStore

HOST = "127.0.0.1"
GUARD_S = 20.0  # a story that hangs fails instead of stalling the suite

T = TypeVar("T")


LOOPS = ["asyncio", "uvloop"]


def run(story: Coroutine[Any, Any, T], loop_name: str = "asyncio") -> T:
    """Run one test story on a fresh event loop (the standard one or uvloop), failing it if it hangs."""
    factory = loops.loop_factory() if loop_name == "uvloop" else asyncio.new_event_loop

    async def guarded() -> T:
        async with asyncio.timeout(GUARD_S):
            return await story

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(guarded())


async def wait_until(predicate: Callable[[], bool], *, timeout_s: float = 3.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.002)


async def _never_answer() -> Message:
    await asyncio.Event().wait()
    raise AssertionError("unreachable: nobody sets this event")


@dataclass
class FakeTable:
    app_id: int
    name: str
    partition_count: int
    configs: list[PartitionConfiguration]
    stores: list[PartitionStore]
    dropped: bool = False

    def info(self) -> TableInfo:
        return TableInfo(
            app_id=self.app_id,
            name=self.name,
            status=TableStatus.DROPPED if self.dropped else TableStatus.AVAILABLE,
            partition_count=self.partition_count,
            replica_count=1,
            envs={},
            create_tick=0,
        )


def _routing_keys(request: Message) -> list[tuple[bytes, bytes]]:
    """The (hash_key, sort_key) pairs a request routes by, as the client must have hashed them."""
    if isinstance(request, SetRequest | DeleteRequest | IncrRequest | GetRequest | TtlRequest):
        return [(request.hash_key, request.sort_key)]
    if isinstance(
        request,
        MultiSetRequest
        | MultiDeleteRequest
        | MultiGetRequest
        | SortKeyCountRequest
        | CheckAndSetRequest
        | CheckAndMutateRequest,
    ):
        return [(request.hash_key, b"")]
    if isinstance(request, BatchGetRequest):
        return list(request.keys)
    if isinstance(request, GetScannerRequest) and not request.full_scan:
        return [(request.hash_key, b"")]
    return []


class FakeReplicaServer:
    """Serves the partitions the cluster's configurations name it primary of."""

    def __init__(self, cluster: FakeCluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.port = 0
        self._server: RpcServer | None = None
        self.received: list[tuple[str, Gpid | None]] = []  # (request type, gpid) in arrival order
        self.busy_replies = 0  # answer BusyError to this many more data requests
        self.stalled = False  # take requests and never answer them
        self.reply_delay_s = 0.0  # serve each request this much later (a slow reply on the wire)
        self.contexts: set[tuple[Gpid, int]] = set()  # scan contexts this server opened
        self.refused: list[ErrorCode] = []  # the error of every request answered with one

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def connection_count(self) -> int:
        return 0 if self._server is None else self._server.connection_count

    def count(self, request_type: type[Message]) -> int:
        return sum(1 for name, _ in self.received if name == request_type.__name__)

    async def start(self) -> None:
        server = RpcServer(self._handle, HOST, self.port, name=f"fake replica {self.name}")
        await server.start()
        self.port = server.port
        self._server = server

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close(grace_s=0.2)
            self._server = None

    async def drop_connections(self) -> None:
        """Close every connection (and stop listening for a moment): in-flight calls get NETWORK."""
        await self.close()
        await self.start()

    def _handle(self, decoded: Decoded, peer: str) -> HandlerResult:
        if self.reply_delay_s > 0:
            return self._handle_later(decoded, peer, self.reply_delay_s)
        self.received.append((type(decoded.message).__name__, decoded.gpid))
        try:
            reply = self._serve(decoded)
        except PegasusError as exc:
            self.refused.append(exc.code)
            raise
        if isinstance(reply, ErrorReply):
            self.refused.append(ErrorCode(reply.code))  # type: ignore[call-arg]  # lookup by value
        return reply

    async def _handle_later(self, decoded: Decoded, peer: str, delay_s: float) -> Message:
        await asyncio.sleep(delay_s)
        self.received.append((type(decoded.message).__name__, decoded.gpid))
        reply = self._serve(decoded)
        if isinstance(reply, Message):
            return reply
        raise AssertionError("a delayed request must be answered at once once served")

    def _serve(self, decoded: Decoded) -> HandlerResult:
        request = decoded.message
        gpid = decoded.gpid
        if self.stalled:
            return _never_answer()
        if self.busy_replies > 0:
            self.busy_replies -= 1
            raise BusyError(f"{self.name} is busy")
        if gpid is None:
            raise InvalidArgumentError("a data request must name its gpid")
        table = self.cluster.table_by_app_id(gpid.app_id)
        index = gpid.partition_index
        if table is None or table.dropped or not 0 <= index < table.partition_count:
            raise NotPrimaryError(f"{self.name} serves no partition {gpid}")
        if table.configs[index].primary != self.address:
            raise NotPrimaryError(f"{self.name} is not the primary of {gpid}")
        for hash_key, sort_key in _routing_keys(request):
            if partition_index(hash_key, sort_key, table.partition_count) != index:
                raise PartitionMismatchError(f"a key of {type(request).__name__} is not in partition {gpid}")
        store = table.stores[index]
        if isinstance(request, WRITE_REQUEST_TYPES):
            return self._apply(store, table.configs[index].ballot, request)
        return self._read(store, gpid, request)

    def _apply(self, store: PartitionStore, ballot: int, request: Message) -> Message:
        write: WriteRequest = request  # type: ignore[assignment]  # checked by WRITE_REQUEST_TYPES
        validate_write(write)
        mutation = Mutation(
            ballot=ballot,
            decree=store.last_applied_decree + 1,
            timestamp_us=int(time.time() * 1_000_000),
            writes=[write],
        )
        (reply,) = store.apply(mutation)
        return reply

    def _read(self, store: PartitionStore, gpid: Gpid, request: Message) -> Message:
        if isinstance(request, ScanRequest | ClearScannerRequest):
            known = (gpid, request.context_id) in self.contexts
            if isinstance(request, ClearScannerRequest):
                self.contexts.discard((gpid, request.context_id))
                if known:
                    store.read(request)
                return ClearScannerResponse()
            if not known:
                raise ScannerExpiredError(f"{self.name} has no scan context {request.context_id}")
        reply = store.read(request)
        if isinstance(reply, ScanResponse):
            if isinstance(request, ScanRequest):
                self.contexts.discard((gpid, request.context_id))
            if reply.context_id != -1:
                self.contexts.add((gpid, reply.context_id))
        return reply


class FakeMeta:
    """Answers configuration queries and table DDL from the cluster's tables."""

    def __init__(self, cluster: FakeCluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.port = 0
        self._server: RpcServer | None = None
        self.not_leader: str | None = None  # when set: answer NotLeaderError with this text
        self.stalled = False  # take requests and never answer them
        self.query_count: Counter[str] = Counter()  # QueryConfigRequest per table name
        self.received: list[str] = []

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    async def start(self) -> None:
        server = RpcServer(self._handle, HOST, self.port, name=f"fake meta {self.name}")
        await server.start()
        self.port = server.port
        self._server = server

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close(grace_s=0.2)
            self._server = None

    def _handle(self, decoded: Decoded, peer: str) -> HandlerResult:
        request = decoded.message
        self.received.append(type(request).__name__)
        if self.stalled:
            return _never_answer()
        if self.not_leader is not None:
            raise NotLeaderError(self.not_leader)
        cluster = self.cluster
        if isinstance(request, QueryConfigRequest):
            self.query_count[request.name] += 1
            table = cluster.table(request.name)
            return QueryConfigResponse(table.app_id, table.partition_count, 1, list(table.configs))
        if isinstance(request, CreateTableRequest):
            existing = cluster.tables.get(request.name)
            if existing is not None and not existing.dropped:
                if request.success_if_exist:
                    return CreateTableResponse(existing.app_id, existing.partition_count)
                raise TableExistsError(f"table {request.name!r} exists")
            created = cluster.create_table(request.name, request.partition_count)
            return CreateTableResponse(created.app_id, created.partition_count)
        if isinstance(request, DropTableRequest):
            table = cluster.table(request.name)
            table.dropped = True
            return DropTableResponse(table.app_id, expire_tick=1000)
        if isinstance(request, RecallTableRequest):
            table_or_none = cluster.table_by_app_id(request.app_id)
            if table_or_none is None or not table_or_none.dropped:
                raise InvalidStateError(f"app {request.app_id} is not dropped")
            table_or_none.dropped = False
            return RecallTableResponse(table_or_none.app_id, table_or_none.name)
        if isinstance(request, ListTablesRequest):
            tables = [t.info() for t in cluster.tables.values() if request.include_dropped or not t.dropped]
            return ListTablesResponse(tables)
        raise InvalidArgumentError(f"the fake meta does not serve {type(request).__name__}")


@dataclass
class FakeCluster:
    data_dir: Path
    replica_count: int = 3
    meta_count: int = 1
    metas: list[FakeMeta] = field(default_factory=list)
    replicas: list[FakeReplicaServer] = field(default_factory=list)
    tables: dict[str, FakeTable] = field(default_factory=dict)
    _next_app_id: int = 1

    @property
    def meta(self) -> FakeMeta:
        return self.metas[0]

    @property
    def meta_address(self) -> str:
        return self.meta.address

    async def start(self) -> None:
        self.metas = [FakeMeta(self, f"meta{i}") for i in range(self.meta_count)]
        self.replicas = [FakeReplicaServer(self, f"replica{i}") for i in range(self.replica_count)]
        for meta in self.metas:
            await meta.start()
        for replica in self.replicas:
            await replica.start()

    async def close(self) -> None:
        for meta in self.metas:
            await meta.close()
        for replica in self.replicas:
            await replica.close()
        for table in self.tables.values():
            for store in table.stores:
                store.close()

    # --- tables ---

    def create_table(self, name: str, partition_count: int = 8) -> FakeTable:
        if partition_count <= 0 or partition_count & (partition_count - 1):
            raise InvalidArgumentError(f"partition count {partition_count} is not a power of two")
        app_id = self._next_app_id
        self._next_app_id += 1
        stores = [
            PartitionStore.open(str(self.data_dir / f"app{app_id}" / f"p{index}"))
            for index in range(partition_count)
        ]
        configs = [
            PartitionConfiguration(
                gpid=Gpid(app_id, index),
                ballot=1,
                primary=self.replicas[index % len(self.replicas)].address,
                max_replica_count=1,
            )
            for index in range(partition_count)
        ]
        table = FakeTable(app_id, name, partition_count, configs, stores)
        self.tables[name] = table
        return table

    def table(self, name: str) -> FakeTable:
        table = self.tables.get(name)
        if table is None or table.dropped:
            raise TableNotFoundError(f"no table {name!r}")
        return table

    def table_by_app_id(self, app_id: int) -> FakeTable | None:
        return next((t for t in self.tables.values() if t.app_id == app_id), None)

    def primary_of(self, name: str, index: int) -> FakeReplicaServer:
        address = self.table(name).configs[index].primary
        return next(server for server in self.replicas if server.address == address)

    def move_primary(self, name: str, index: int, to: FakeReplicaServer) -> None:
        """Meta makes `to` the primary of partition `index` under a higher ballot."""
        table = self.table(name)
        old = table.configs[index]
        assert old.primary != to.address, "moving a primary where it already is proves nothing"
        table.configs[index] = PartitionConfiguration(
            gpid=old.gpid, ballot=old.ballot + 1, primary=to.address, max_replica_count=1
        )

    def store(self, name: str, index: int) -> PartitionStore:
        return self.table(name).stores[index]

    def received(self, request_type: type[Message]) -> int:
        """How many requests of this type reached any replica server."""
        return sum(server.count(request_type) for server in self.replicas)


@contextlib.asynccontextmanager
async def fake_cluster(
    data_dir: Path, *, partition_count: int = 8, replica_count: int = 3, meta_count: int = 1
) -> AsyncIterator[FakeCluster]:
    """A started fake cluster holding table `temp`."""
    cluster = FakeCluster(data_dir, replica_count=replica_count, meta_count=meta_count)
    await cluster.start()
    try:
        cluster.create_table("temp", partition_count)
        yield cluster
    finally:
        await cluster.close()
