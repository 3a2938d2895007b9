"""The admin shell's SSH server (asyncssh), run by the leading meta server.

    server = AdminShellServer(AdminShellSettings(host="0.0.0.0", port=34701, ...))
    await server.start()          # loads (or makes) the host key, listens, opens a Client to meta
    server.port                   # the bound port (settings.port 0 picks a free one)
    await server.stop()           # closes every connection, the client and the audit log

What it accepts, and nothing else (DESIGN.md section 7, issue 5):
- Authentication by public key only, against the authorized_keys file (authorized_keys.py); each key
  brings its role. No passwords, no keyboard-interactive, no host-based or GSS authentication, no
  certificates (asyncssh's defaults refuse a certificate unless a CA is trusted, and none is).
- Session channels, each running one ShellSession (session.py): one command, or the interactive
  shell. There is no operating-system shell, and no subsystem (sftp), no SCP.
- Refused and audited: local and remote port forwarding (TCP and Unix sockets), tun/tap, agent and
  X11 forwarding, environment variables, subsystems, and sessions beyond the per-connection limit.
  A connection that ends without having logged in is audited as a refused authentication.

Limits: connections (beyond max_connections a new one is closed at once), sessions per connection,
the time to log in, line and command lengths (session.py), the audit queue (audit.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import asyncssh
from asyncssh.packet import SSHPacket

from pegasus_kv import __version__
from pegasus_kv.client import Client
from pegasus_kv.shell.audit import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, AuditEvent, AuditLog
from pegasus_kv.shell.authorized_keys import AuthorizedKey, AuthorizedKeys
from pegasus_kv.shell.host_keys import load_or_create_host_key
from pegasus_kv.shell.roles import Role
from pegasus_kv.shell.session import Identity, SessionLimits, ShellFactory, ShellSession
from pegasus_kv.shell.shell import Shell

logger = logging.getLogger(__name__)

LOGIN_TIMEOUT_S = 30.0
KEEPALIVE_INTERVAL_S = 30.0
CLOSE_TIMEOUT_S = 5.0
MAX_OFFERED_KEYS = 32  # public keys one connection may offer before it is disconnected


@dataclass(frozen=True)
class AdminShellSettings:
    host: str
    port: int  # 0: a free port (tests)
    host_key_path: Path
    authorized_keys_path: Path
    audit_log_path: Path
    cluster_name: str
    meta_addresses: tuple[str, ...]
    audit_log_max_bytes: int = DEFAULT_MAX_BYTES
    audit_log_backups: int = DEFAULT_BACKUPS
    max_connections: int = 32
    max_sessions_per_connection: int = 4
    login_timeout_s: float = LOGIN_TIMEOUT_S
    client_timeout_s: float = 10.0  # one shell command's cluster calls
    limits: SessionLimits = field(default_factory=SessionLimits)


def format_peer(peername: object) -> str:
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = str(peername[0]), peername[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(peername or "unknown")


class _ShellChannel(asyncssh.SSHServerChannel[str]):
    """A session channel that refuses, and audits, the requests the shell never honours.

    asyncssh accepts every `env` request and answers agent and X11 requests itself (refusing them
    when agent_forwarding and x11_forwarding are off, as they are here, but silently). These three
    handlers are asyncssh's request dispatch names (`_process_<request>_request`, channel.py); the
    integration tests send each request and read its refusal in the audit log, so a rename in a
    later asyncssh fails a test instead of passing unaudited."""

    _on_refused: Callable[[str, str], None]

    def _process_env_request(self, packet: SSHPacket) -> bool:
        name = packet.get_string()
        packet.get_string()  # the value: never stored
        packet.check_end()
        self._on_refused("env", name.decode("utf-8", errors="replace"))
        return False

    def _process_auth_agent_req_at_openssh_dot_com_request(self, packet: SSHPacket) -> None:
        packet.check_end()
        self._on_refused("agent forwarding", "")
        self._report_response(False)  # asyncssh answers this request later, hence no return value

    def _process_x11_req_request(self, packet: SSHPacket) -> bool:
        self._on_refused("x11 forwarding", "")
        return False


class _Connection(asyncssh.SSHServer):
    """One client connection: authentication, and the channels it may open."""

    def __init__(self, server: AdminShellServer) -> None:
        self._server = server
        self._conn: asyncssh.SSHServerConnection | None = None
        self._peer = "unknown"
        self._user = ""
        self._auth_started = False
        self._offered: list[str] = []  # fingerprints of the keys tried, for the refusal record
        self._candidate: AuthorizedKey | None = None  # the key validated last (the one that signs)
        self._identity: Identity | None = None
        self._sessions = 0

    # --- connection ------------------------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._peer = format_peer(conn.get_extra_info("peername"))
        if not self._server._admit(self):
            logger.warning(
                "admin shell: refusing %s, %d connections open", self._peer, self._server.connections
            )
            asyncio.get_running_loop().call_soon(
                conn.disconnect, asyncssh.DISC_TOO_MANY_CONNECTIONS, "too many admin shell connections"
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._forget(self)
        if self._identity is None and self._auth_started:
            if self._offered:
                reason = f"no authorized key among the {len(self._offered)} offered"
            else:
                reason = "no public key offered (only public-key authentication is accepted)"
            self._server.audit.record(
                AuditEvent.AUTH_REFUSED,
                user=self._user,
                fingerprint=self._offered[-1] if self._offered else "",
                role=None,
                peer=self._peer,
                outcome=f"denied: {reason}",
            )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    async def wait_closed(self) -> None:
        if self._conn is not None:
            await self._conn.wait_closed()

    # --- authentication ----------------------------------------------------------------------------

    def begin_auth(self, username: str) -> bool:
        self._user = username
        self._auth_started = True
        return True  # always authenticate

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        # asyncssh calls this for a key offered without a signature ("may I use it?") and again,
        # right before checking the signature, for the key the client signs with; the role is
        # taken from that last call (auth_completed follows only a valid signature).
        fingerprint = key.get_fingerprint("sha256")
        if fingerprint not in self._offered:
            self._offered.append(fingerprint)
        if len(self._offered) > MAX_OFFERED_KEYS and self._conn is not None:
            self._conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "too many keys offered")
            return False
        self._user = username
        self._candidate = await self._server.authorized_keys.lookup(key)
        return self._candidate is not None

    def auth_completed(self) -> None:
        candidate = self._candidate
        if candidate is None:  # asyncssh completes auth only after validate_public_key said yes
            raise RuntimeError("admin shell: authentication completed without an authorized key")
        self._identity = Identity(
            user=self._user, fingerprint=candidate.fingerprint, role=candidate.role, peer=self._peer
        )
        logger.info(
            "admin shell: %s logged in from %s with %s key %s (line %d)",
            self._user,
            self._peer,
            candidate.role.value,
            candidate.fingerprint,
            candidate.line_number,
        )

    # --- channels ------------------------------------------------------------------------------------

    def session_requested(
        self,
    ) -> tuple[asyncssh.SSHServerChannel[str], asyncssh.SSHServerSession[str]] | bool:
        identity, conn = self._identity, self._conn
        if identity is None or conn is None:
            return False
        if self._sessions >= self._server.settings.max_sessions_per_connection:
            self._refused(
                "session", f"more than {self._server.settings.max_sessions_per_connection} sessions"
            )
            return False
        self._sessions += 1
        chan: asyncssh.SSHServerChannel[str] = conn.create_server_channel()
        chan.__class__ = _ShellChannel  # same object and state, plus the refusing handlers above
        cast(_ShellChannel, chan)._on_refused = self._refused
        session = ShellSession(
            identity,
            self._server.shell_factory,
            self._server.audit,
            limits=self._server.settings.limits,
            on_refused=self._refused,
            on_closed=self._session_closed,
            track=self._server._track_session,
            banner=self._server.banner(identity),
        )
        return chan, session

    def _session_closed(self) -> None:
        self._sessions -= 1

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
        self._refused("local port forwarding", f"to {dest_host}:{dest_port}")
        return False

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        self._refused("remote port forwarding", f"listen on {listen_host}:{listen_port}")
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        self._refused("local unix socket forwarding", dest_path)
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        self._refused("remote unix socket forwarding", listen_path)
        return False

    def tun_requested(self, unit: int | None) -> bool:
        self._refused("tun forwarding", str(unit))
        return False

    def tap_requested(self, unit: int | None) -> bool:
        self._refused("tap forwarding", str(unit))
        return False

    def _refused(self, request: str, detail: str) -> None:
        identity = self._identity
        self._server.audit.record(
            AuditEvent.REQUEST_REFUSED,
            user=identity.user if identity else self._user,
            fingerprint=identity.fingerprint if identity else "",
            role=identity.role.value if identity else None,
            peer=self._peer,
            request=request,
            outcome=f"denied: {request} is not allowed" + (f" ({detail})" if detail else ""),
        )


class AdminShellServer:
    def __init__(self, settings: AdminShellSettings, *, shell_factory: ShellFactory | None = None) -> None:
        """`shell_factory(role)` makes one session's Shell (default: a Shell over this server's client)."""
        self.settings = settings
        self.authorized_keys = AuthorizedKeys(settings.authorized_keys_path)
        self.audit = AuditLog(
            settings.audit_log_path,
            max_bytes=settings.audit_log_max_bytes,
            backups=settings.audit_log_backups,
        )
        self._custom_factory = shell_factory
        self._client: Client | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._connections: set[_Connection] = set()
        self._session_tasks: set[asyncio.Task[None]] = set()
        self._started = False

    @property
    def port(self) -> int:
        if self._acceptor is None:
            raise RuntimeError("the admin shell is not listening")
        return self._acceptor.get_port()

    @property
    def address(self) -> str:
        return format_peer((self.settings.host, self.port))

    @property
    def connections(self) -> int:
        return len(self._connections)

    def shell_factory(self, role: Role) -> Shell:
        if self._custom_factory is not None:
            return self._custom_factory(role)
        client = self._client
        if client is None:
            raise RuntimeError("the admin shell has no client (not started)")
        return Shell(client, role=role, cluster_name=self.settings.cluster_name)

    def banner(self, identity: Identity) -> str:
        return (
            f"pegasus-kv {__version__} admin shell, cluster {self.settings.cluster_name}; "
            f"user {identity.user}, role {identity.role.value} (key {identity.fingerprint}).\n"
            "Type help for the commands, Tab to complete; exit or Ctrl-D leaves.\n"
        )

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("an admin shell server starts once")
        self._started = True
        host_key = await asyncio.to_thread(load_or_create_host_key, self.settings.host_key_path)
        await self.authorized_keys.count()  # load now: problems in the file show in the log at startup
        self.audit.start()
        if self._custom_factory is None:
            self._client = Client(list(self.settings.meta_addresses), timeout=self.settings.client_timeout_s)
        try:
            self._acceptor = await asyncssh.create_server(
                lambda: _Connection(self),
                self.settings.host,
                self.settings.port,
                server_host_keys=[host_key],
                server_version=f"pegasus-kv_{__version__}",
                config=None,
                authorized_client_keys=None,
                known_client_hosts=None,
                public_key_auth=True,
                password_auth=False,
                kbdint_auth=False,
                host_based_auth=False,
                gss_host=None,
                gss_kex=False,
                gss_auth=False,
                allow_pty=True,
                line_editor=True,
                line_history=self.settings.limits.max_queued_lines * 16,
                max_line_length=self.settings.limits.max_line_chars,
                x11_forwarding=False,
                agent_forwarding=False,
                allow_scp=False,
                sftp_factory=None,
                login_timeout=self.settings.login_timeout_s,
                keepalive_interval=KEEPALIVE_INTERVAL_S,
                encoding="utf-8",
                errors="replace",
            )
        except BaseException:
            await self._close_resources()
            raise
        logger.info(
            "admin shell of cluster %r listening on %s (authorized keys %s, audit log %s)",
            self.settings.cluster_name,
            self.address,
            self.settings.authorized_keys_path,
            self.settings.audit_log_path,
        )

    async def stop(self) -> None:
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            acceptor.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await acceptor.wait_closed()
        connections = list(self._connections)
        for connection in connections:
            connection.close()
        if connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await asyncio.gather(*(c.wait_closed() for c in connections), return_exceptions=True)
        if self._session_tasks:  # cancelled by their lost connections; let them audit and finish
            await asyncio.wait(set(self._session_tasks), timeout=CLOSE_TIMEOUT_S)
        await self._close_resources()

    async def _close_resources(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        await self.audit.close()

    def _admit(self, connection: _Connection) -> bool:
        if len(self._connections) >= self.settings.max_connections:
            return False
        self._connections.add(connection)
        return True

    def _forget(self, connection: _Connection) -> None:
        self._connections.discard(connection)

    def _track_session(self, task: asyncio.Task[None]) -> None:
        self._session_tasks.add(task)
        task.add_done_callback(self._session_tasks.discard)
