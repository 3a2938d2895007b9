"""The entry point of the async client (DESIGN.md section 7).

    async with Client("127.0.0.1:34601") as client:        # or a list of meta addresses
        table = await client.open_table("temp")
        await table.set(b"hk", b"sk", b"v")

The client asks meta for each table's partition configuration, sends every data request to the
primary of its partition, and refreshes the configuration when a request says it is stale. Table
DDL goes to meta through thin wrappers the admin tools share. `close()` (or leaving `async with`)
fails what is still pending with ShuttingDownError, closes every connection and leaves no task.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import TracebackType

from pegasus_kv.client.admin import MetaAdmin
from pegasus_kv.client.meta import MetaCaller, parse_meta_addresses
from pegasus_kv.client.options import ClientOptions, check_timeout_s
from pegasus_kv.client.routing import RouteCache, query_route
from pegasus_kv.client.session import ClientSession
from pegasus_kv.client.table import Table
from pegasus_kv.core.errors import InvalidArgumentError
from pegasus_kv.replication.connection_pool import RandomSource
from pegasus_kv.replication.pacifica.meta_requests import (
    CreateTableRequest,
    CreateTableResponse,
    DropTableRequest,
    DropTableResponse,
    ListTablesRequest,
    ListTablesResponse,
    RecallTableRequest,
    RecallTableResponse,
)
from pegasus_kv.replication.pacifica.meta_types import TableInfo


def _require_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"a table name must be a non-empty str, got {name!r}")
    return name


class Client:
    """A connection to one cluster, through its meta servers.

    meta: "host:port", "h1:p1,h2:p2", or a list of addresses (hosts may be DNS names).
    timeout: the default time of one call in seconds (ClientOptions.timeout_s otherwise, 5 s).
    rng: the randomness of backoff jitter (a seeded random.Random makes retries reproducible).
    """

    def __init__(
        self,
        meta: str | Sequence[str],
        *,
        timeout: float | None = None,
        options: ClientOptions | None = None,
        rng: RandomSource | None = None,
    ) -> None:
        options = options or ClientOptions()
        if timeout is not None:
            check_timeout_s("timeout", timeout)
            options = replace(options, timeout_s=timeout)
        self.options = options
        self._session = ClientSession(options, rng if rng is not None else random.Random())
        self._meta = MetaCaller(self._session, parse_meta_addresses(meta))
        self._admin = MetaAdmin(self._session, self._meta)

    @property
    def meta_addresses(self) -> tuple[str, ...]:
        return self._meta.addresses

    @property
    def meta_leader(self) -> str | None:
        """The meta server that answered last (the leader, as far as the client knows)."""
        return self._meta.leader

    @property
    def closed(self) -> bool:
        return self._session.closed

    @property
    def admin(self) -> MetaAdmin:
        """Cluster administration through meta: cluster info, nodes, envs, levels, propose, balance."""
        return self._admin

    # --- tables ---------------------------------------------------------------------------------

    async def open_table(self, name: str, *, timeout: float | None = None) -> Table:
        """A handle on an existing table (TableNotFoundError otherwise)."""
        deadline = self._session.deadline(timeout)
        route = await query_route(self._meta, _require_name(name), deadline)
        return Table(self._session, RouteCache(self._session, self._meta, route))

    async def create_table(
        self,
        name: str,
        partition_count: int = 8,
        replica_count: int = 3,
        envs: Mapping[str, str] | None = None,
        *,
        success_if_exist: bool = False,
        timeout: float | None = None,
    ) -> int:
        """Create a table; returns its app id. partition_count must be a power of two.

        success_if_exist: an existing table of the same name and shape is a success (TABLE_EXISTS
        otherwise). Not re-sent after a lost reply; retry with success_if_exist=True.
        """
        request = CreateTableRequest(
            _require_name(name), partition_count, replica_count, dict(envs or {}), bool(success_if_exist)
        )
        reply = await self._meta.call(
            request,
            CreateTableResponse,
            deadline=self._session.deadline(timeout),
            idempotent=False,
            what=f"create table {name!r}",
        )
        return reply.app_id

    async def drop_table(
        self, name: str, *, hold_ticks: int | None = None, timeout: float | None = None
    ) -> DropTableResponse:
        """Soft-drop a table: it is kept, recallable, for hold_ticks meta ticks (meta's default
        when None), then purged."""
        reply = await self._meta.call(
            DropTableRequest(_require_name(name), hold_ticks),
            DropTableResponse,
            deadline=self._session.deadline(timeout),
            idempotent=False,
            what=f"drop table {name!r}",
        )
        return reply

    async def recall_table(
        self, app_id: int, new_name: str = "", *, timeout: float | None = None
    ) -> RecallTableResponse:
        """Undo the drop of table app_id, under its old name (or new_name)."""
        reply = await self._meta.call(
            RecallTableRequest(app_id, new_name),
            RecallTableResponse,
            deadline=self._session.deadline(timeout),
            idempotent=False,
            what=f"recall table {app_id}",
        )
        return reply

    async def list_tables(
        self, *, include_dropped: bool = False, timeout: float | None = None
    ) -> list[TableInfo]:
        reply = await self._meta.call(
            ListTablesRequest(bool(include_dropped)),
            ListTablesResponse,
            deadline=self._session.deadline(timeout),
            idempotent=True,
            what="list tables",
        )
        return list(reply.tables)

    # --- lifetime -------------------------------------------------------------------------------

    async def close(self) -> None:
        """Fail pending calls with ShuttingDownError, close every connection, leave no task.

        Closing twice is harmless; any call after it raises ShuttingDownError.
        """
        await self._session.close()

    async def __aenter__(self) -> Client:
        self._session.ensure_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
