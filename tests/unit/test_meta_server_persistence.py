"""The meta server tells nobody about a change before its store made it durable, and survives a store
that fails: it drops its core, reopens the store and serves again from what the store holds.

The store is the real local store behind a thin wrapper the test controls (hold appends back, make
the next one fail).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pegasus_kv.core.errors import BusyError, ShuttingDownError
from pegasus_kv.replication.meta.local_store import LocalMetaStore
from pegasus_kv.replication.meta.server import MetaServer
from pegasus_kv.replication.meta.store import MetaStore
from pegasus_kv.replication.pacifica.meta_requests import (
    CreateTableRequest,
    CreateTableResponse,
    ListTablesRequest,
    ListTablesResponse,
)

from .meta_server_support import WAIT_S, ControlledStore, MetaCaller, meta_config, run, running


class Stores:
    """Opens a ControlledStore over the local store in `directory`, and remembers each one."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.opened: list[ControlledStore] = []

    async def open(self) -> MetaStore:
        store = ControlledStore(await LocalMetaStore.open(self.directory))
        self.opened.append(store)
        return store

    @property
    def current(self) -> ControlledStore:
        return self.opened[-1]


async def names(meta: MetaCaller) -> list[str]:
    return [t.name for t in (await meta.call(ListTablesRequest(), ListTablesResponse)).tables]


def create(name: str) -> CreateTableRequest:
    return CreateTableRequest(name=name, partition_count=1)


def test_a_create_is_answered_only_once_the_store_made_it_durable(tmp_path: Path) -> None:
    async def story() -> None:
        stores = Stores(tmp_path)
        async with running(MetaServer(meta_config(tmp_path), open_store=stores.open)) as server:
            meta = await MetaCaller.to(server.address)
            stores.current.appends_allowed.clear()  # the disk is slow

            reply = asyncio.create_task(meta.call(create("temp"), CreateTableResponse))
            await asyncio.wait_for(stores.current.appending.wait(), WAIT_S)
            await asyncio.sleep(0.1)  # several ticks: still nothing may be said about the table
            assert not reply.done()
            assert await names(meta) == []  # queries read the durable state only

            stores.current.appends_allowed.set()
            assert (await asyncio.wait_for(reply, WAIT_S)).app_id == 1
            assert await names(meta) == ["temp"]
            assert len(stores.current.appended) == 1
            await meta.close()

    run(story)


def test_after_a_failed_append_the_server_reloads_from_the_store_and_serves_again(tmp_path: Path) -> None:
    async def story() -> None:
        stores = Stores(tmp_path)
        async with running(MetaServer(meta_config(tmp_path), open_store=stores.open)) as server:
            meta = await MetaCaller.to(server.address)
            assert (await meta.call(create("kept"), CreateTableResponse)).app_id == 1
            stores.current.fail_appends = 1

            # The outcome of a write that failed is unknown: the caller is told exactly that.
            with pytest.raises(ShuttingDownError, match="may or may not"):
                await meta.call(create("lost"), CreateTableResponse)

            # The server dropped its core, reopened the store, and leads again from what it holds.
            await server.wait_until_leader(WAIT_S)
            assert server.terms_started == 2
            assert len(stores.opened) == 2
            assert await names(meta) == ["kept"]
            assert (await meta.call(create("lost"), CreateTableResponse)).app_id == 2
            assert await names(meta) == ["kept", "lost"]
            await meta.close()

    run(story)


def test_while_the_store_lags_changes_are_refused_with_busy_and_queries_still_answered(
    tmp_path: Path,
) -> None:
    async def story() -> None:
        stores = Stores(tmp_path)
        config = meta_config(tmp_path, max_pending_persists=3)
        async with running(MetaServer(config, open_store=stores.open)) as server:
            meta = await MetaCaller.to(server.address)
            stores.current.appends_allowed.clear()

            calls: list[asyncio.Task[CreateTableResponse]] = []
            for index in range(6):
                calls.append(asyncio.create_task(meta.call(create(f"t{index}"), CreateTableResponse)))
                await asyncio.sleep(0.05)  # one at a time, in order
            accepted = [call for call in calls if not call.done()]
            refused = [call for call in calls if call.done()]
            # Three changes wait for the store (the bound); the next ones were refused at once.
            assert accepted == calls[:3]
            assert all(isinstance(call.exception(), BusyError) for call in refused)
            assert await names(meta) == []

            stores.current.appends_allowed.set()
            app_ids = [(await asyncio.wait_for(task, WAIT_S)).app_id for task in accepted]
            assert app_ids == list(range(1, len(accepted) + 1))
            assert await names(meta) == [f"t{index}" for index in range(len(accepted))]
            await meta.close()

    run(story)
