"""An admin shell SSH server in-process, with keys and an audit log in a temporary directory.

The shell's client points at a "black hole" meta: a socket that accepts and never answers, so a
cluster command (ls) hangs until cancelled, which is what the Ctrl-C stories need. Commands that
need no cluster (help, version, exit) answer at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from pegasus_kv.shell.host_keys import create_user_key, fingerprint
from pegasus_kv.shell.ssh_server import AdminShellServer, AdminShellSettings

HOST = "127.0.0.1"
READ_TIMEOUT_S = 10.0


@dataclass
class UserKey:
    path: Path
    public_line: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_line)


@dataclass
class ShellServerEnv:
    server: AdminShellServer
    admin: UserKey
    readonly: UserKey
    stranger: UserKey  # a valid key that authorized_keys does not list
    authorized_keys: Path
    audit_log: Path

    @property
    def port(self) -> int:
        return self.server.port

    def connect(
        self, key: UserKey | None, **options: Any
    ) -> contextlib.AbstractAsyncContextManager[asyncssh.SSHClientConnection]:
        """An asyncssh client connection as user "ops" with `key` (None: no key at all)."""
        return asyncssh.connect(
            HOST,
            self.port,
            username="ops",
            client_keys=[str(key.path)] if key is not None else None,
            known_hosts=None,
            agent_path=None,
            config=None,
            **options,
        )

    async def audit_lines(self) -> list[dict[str, Any]]:
        await self.server.audit.flush()
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines()]

    async def audit_line(self, event: str, **match: Any) -> dict[str, Any]:
        """The last audit line of `event` whose fields include `match` (waits a little for it)."""
        for _ in range(50):
            for line in reversed(await self.audit_lines()):
                if line["event"] == event and all(line.get(name) == value for name, value in match.items()):
                    found: dict[str, Any] = line
                    return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {event} audit line with {match}; log: {await self.audit_lines()}")


def make_key(directory: Path, name: str) -> UserKey:
    path = directory / name
    return UserKey(path, create_user_key(path, comment=name))


async def _black_hole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass
    writer.close()


@contextlib.asynccontextmanager
async def shell_server(tmp_path: Path, **settings: Any) -> AsyncIterator[ShellServerEnv]:
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    admin, readonly, stranger = (make_key(keys, name) for name in ("admin", "readonly", "stranger"))
    authorized_keys = tmp_path / "authorized_keys"
    authorized_keys.write_text(f'role="admin" {admin.public_line}\nrole="readonly" {readonly.public_line}\n')
    meta = await asyncio.start_server(_black_hole, HOST, 0)
    meta_port = meta.sockets[0].getsockname()[1]
    server = AdminShellServer(
        AdminShellSettings(
            host=HOST,
            port=0,
            host_key_path=tmp_path / "host_key",
            authorized_keys_path=authorized_keys,
            audit_log_path=tmp_path / "audit.log",
            cluster_name="test",
            meta_addresses=(f"{HOST}:{meta_port}",),
            **settings,
        )
    )
    await server.start()
    try:
        yield ShellServerEnv(server, admin, readonly, stranger, authorized_keys, tmp_path / "audit.log")
    finally:
        await server.stop()
        meta.close()
        await meta.wait_closed()


async def read_until(stream: asyncssh.SSHReader[str], token: str, timeout_s: float = READ_TIMEOUT_S) -> str:
    """Read a PTY's output until `token` shows up; everything read so far is returned."""
    seen = ""
    async with asyncio.timeout(timeout_s):
        while token not in seen:
            chunk = await stream.read(4096)
            if not chunk:
                raise AssertionError(f"the stream ended before {token!r}; read: {seen!r}")
            seen += chunk
    return seen
