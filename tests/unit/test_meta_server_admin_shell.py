"""The meta server serves the admin shell while it leads: it starts with a term, goes away when the
term ends (its sessions closed), comes back with the next term under the same host key, and stops
with the server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import stat
from pathlib import Path

import asyncssh
import pytest

from pegasus_kv.core.errors import ShuttingDownError
from pegasus_kv.replication.meta.local_store import LocalMetaStore
from pegasus_kv.replication.meta.server import MetaServer
from pegasus_kv.replication.meta.store import MetaStore
from pegasus_kv.replication.pacifica.meta_requests import CreateTableRequest, CreateTableResponse
from pegasus_kv.shell.host_keys import create_user_key

from .meta_server_support import WAIT_S, ControlledStore, MetaCaller, meta_config, run, running


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


async def shell_address(server: MetaServer) -> str:
    """The admin shell's address once the term started it (right after the term itself)."""
    async with asyncio.timeout(WAIT_S):
        while not server.admin_shell_address:
            await asyncio.sleep(0.01)
    return server.admin_shell_address


def test_the_leader_serves_the_shell_only_while_its_term_lasts(tmp_path: Path) -> None:
    key_path = tmp_path / "id_ed25519"
    authorized_keys = tmp_path / "authorized_keys"
    authorized_keys.write_text(f'role="admin" {create_user_key(key_path, comment="ops")}\n')
    port = free_port()
    config = meta_config(
        tmp_path / "meta",
        cluster_name="shelltest",
        ssh={"port": port, "authorized_keys": str(authorized_keys)},
    )
    stores: list[ControlledStore] = []

    async def open_store() -> MetaStore:
        stores.append(ControlledStore(await LocalMetaStore.open(tmp_path / "meta")))
        return stores[-1]

    def connect() -> contextlib.AbstractAsyncContextManager[asyncssh.SSHClientConnection]:
        return asyncssh.connect(
            "127.0.0.1",
            port,
            username="ops",
            client_keys=[str(key_path)],
            known_hosts=None,
            agent_path=None,
            config=None,
        )

    async def story() -> None:
        server = MetaServer(config, open_store=open_store)
        async with running(server):
            assert await shell_address(server) == f"127.0.0.1:{port}"
            async with connect() as conn:
                first_key = conn.get_server_host_key()
                assert first_key is not None
                info = await conn.run("cluster_info --json")
                assert info.exit_status == 0, info.stderr
                assert json.loads(str(info.stdout))["cluster_name"] == "shelltest"
                assert json.loads(str(info.stdout))["primary_meta_server"] == server.address

                # A write the store refuses ends the term: the shell goes with it.
                stores[-1].fail_appends = 1
                meta = await MetaCaller.to(server.address)
                with pytest.raises(ShuttingDownError):
                    await meta.call(CreateTableRequest(name="t", partition_count=1), CreateTableResponse)
                await asyncio.wait_for(conn.wait_closed(), WAIT_S)
                await meta.close()

            await server.wait_until_leader(WAIT_S)  # the next term, and its shell
            await shell_address(server)
            async with connect() as conn:
                again = conn.get_server_host_key()
                assert again is not None and again.public_data == first_key.public_data  # same key file
                assert (await conn.run("version")).exit_status == 0
        assert server.admin_shell_address == ""
        assert not answers(port)
        assert (tmp_path / "meta" / "audit.log").exists()  # the default: in the store's data dir
        host_key = tmp_path / "meta" / "ssh_host_ed25519_key"  # made on first start, private
        assert stat.S_IMODE(host_key.stat().st_mode) == 0o600

    run(story)
