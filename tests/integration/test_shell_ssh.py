"""The admin shell of a real onebox, as operators reach it: OpenSSH's `ssh` (one-shot commands and an
interactive session on a PTY) and asyncssh's client. One onebox serves the whole module.

The stories: JSON out and exit statuses that say success, a usage error or a cluster error; a
readonly key that reads but cannot write; strangers and passwords turned away; no way to a shell,
an OS command, a forwarded port or an agent; and every one of those things in the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import socket
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from pegasus_kv.shell.host_keys import create_user_key, fingerprint

from .onebox_support import onebox, running_onebox

pytestmark = pytest.mark.integration

SSH = "/usr/bin/ssh"
COMMAND_TIMEOUT_S = 30.0
PTY_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Cluster:
    data_dir: Path
    ssh_host: str
    ssh_port: int
    admin_key: Path
    meta: str
    replica_pids: list[int]

    @property
    def audit_log(self) -> Path:
        return self.data_dir / "meta1" / "audit.log"

    @property
    def authorized_keys(self) -> Path:
        return self.data_dir / "ssh" / "authorized_keys"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_onebox(tmp_path_factory.mktemp("shell") / "onebox") as data_dir:
        status = onebox("status", "--data-dir", str(data_dir), "--json")
        assert status.returncode == 0, status.stderr
        found = json.loads(status.stdout)
        host, _, port = found["ssh"].rpartition(":")
        assert found["ssh_command"].startswith(f"ssh -i {found['ssh_key']} -p {port} ")
        assert stat.S_IMODE(os.stat(found["ssh_key"]).st_mode) == 0o600  # or OpenSSH refuses it
        yield Cluster(
            data_dir=data_dir,
            ssh_host=host,
            ssh_port=int(port),
            admin_key=Path(found["ssh_key"]),
            meta=found["meta"][0],
            replica_pids=[found["pids"][name] for name in ("replica1", "replica2", "replica3")],
        )


def ssh_argv(cluster: Cluster, *options: str, key: Path | None = None, user: str = "admin") -> list[str]:
    return [
        SSH,
        "-F",
        "/dev/null",  # neither ~/.ssh/config nor /etc/ssh/ssh_config (its SendEnv) applies
        "-i",
        str(key or cluster.admin_key),
        "-p",
        str(cluster.ssh_port),
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        *options,
        f"{user}@{cluster.ssh_host}",
    ]


def ssh(
    cluster: Cluster, command: str, *options: str, key: Path | None = None, **run: Any
) -> subprocess.CompletedProcess[str]:
    argv = [*ssh_argv(cluster, *options, key=key), command]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
        **run,
    )


def audit_lines(cluster: Cluster) -> list[dict[str, Any]]:
    return [json.loads(line) for line in cluster.audit_log.read_text().splitlines()]


def audited(cluster: Cluster, event: str, **match: Any) -> dict[str, Any]:
    """The last audit line of `event` with these fields (refusals are written moments later)."""
    deadline = time.monotonic() + 5.0
    while True:
        for line in reversed(audit_lines(cluster)):
            if line["event"] == event and all(line.get(name) == value for name, value in match.items()):
                found: dict[str, Any] = line
                return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no {event} line with {match} in {cluster.audit_log}")
        time.sleep(0.05)


def new_key(directory: Path, name: str) -> tuple[Path, str]:
    path = directory / name
    return path, create_user_key(path, comment=name)


# --- one-shot commands with OpenSSH ---------------------------------------------------------------


def test_one_shot_commands_print_json_and_their_exit_status_says_how_they_went(cluster: Cluster) -> None:
    tables = ssh(cluster, "ls --json")
    assert tables.returncode == 0, tables.stderr
    assert [table["app_name"] for table in json.loads(tables.stdout)["tables"]] == ["temp"]

    info = ssh(cluster, "cluster_info --json")
    assert info.returncode == 0 and json.loads(info.stdout)["alive_node_count"] == 3

    created = ssh(cluster, "create ssh_orders -p 4 --json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["app_name"] == "ssh_orders"
    app = ssh(cluster, "app ssh_orders --json")
    assert app.returncode == 0 and "ssh_orders" in app.stdout

    missing = ssh(cluster, "app no_such_table")  # a cluster error: exit 1, the code on stderr
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.startswith("error: TABLE_NOT_FOUND")

    usage = ssh(cluster, "create")  # a usage error: exit 2, the usage on stderr, no traceback
    assert usage.returncode == 2 and "usage: create TABLE" in usage.stderr
    assert "Traceback" not in usage.stderr + usage.stdout

    # A one-shot data command has no session to `use` a table in: it names its own.
    stored = ssh(cluster, "set --table ssh_orders order1 total '42 EUR'")
    assert stored.returncode == 0, stored.stderr
    read = ssh(cluster, "get order1 total --table ssh_orders --json")
    assert read.returncode == 0 and json.loads(read.stdout)["value"] == "42 EUR"
    no_table = ssh(cluster, "get order1 total")
    assert no_table.returncode == 2 and "no table selected" in no_table.stderr

    line = audited(cluster, "command", command="create ssh_orders -p 4 --json")
    assert line["user"] == "admin" and line["role"] == "admin" and line["session"] == "exec"
    assert line["fingerprint"] == fingerprint(cluster.admin_key.with_suffix(".pub").read_text())
    assert line["outcome"] == "ok" and line["exit_status"] == 0 and line["duration_ms"] >= 0
    assert audited(cluster, "command", command="app no_such_table")["exit_status"] == 1
    assert audited(cluster, "command", command="create")["exit_status"] == 2


def test_a_readonly_key_reads_but_is_refused_every_write(cluster: Cluster, tmp_path: Path) -> None:
    key, public_line = new_key(tmp_path, "dashboards")
    with cluster.authorized_keys.open("a") as handle:  # the leader re-reads the file: no restart
        handle.write(f'role="readonly" {public_line}\n')

    tables = ssh(cluster, "ls --json", key=key)
    assert tables.returncode == 0, tables.stderr
    assert "temp" in tables.stdout
    for write in ("drop temp", "create evil", "set hk sk value"):
        refused = ssh(cluster, write, key=key)
        assert refused.returncode == 3, (write, refused.stderr)
        assert "key role is readonly" in refused.stderr

    line = audited(cluster, "command", command="drop temp")
    assert line["role"] == "readonly" and line["exit_status"] == 3
    assert line["fingerprint"] == fingerprint(public_line)
    assert ssh(cluster, "app temp --json").returncode == 0  # and temp is still there


def test_strangers_and_passwords_are_turned_away_at_authentication(cluster: Cluster, tmp_path: Path) -> None:
    stranger, public_line = new_key(tmp_path, "stranger")
    refused = ssh(cluster, "ls", key=stranger)
    assert refused.returncode == 255 and "Permission denied (publickey)" in refused.stderr
    assert audited(cluster, "auth_refused", fingerprint=fingerprint(public_line))["user"] == "admin"

    password = ssh(
        cluster,
        "ls",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "PreferredAuthentications=password,keyboard-interactive",
    )
    assert password.returncode == 255 and "Permission denied (publickey)" in password.stderr
    assert "only public-key" in audited(cluster, "auth_refused", fingerprint="")["outcome"]


def test_there_is_no_way_to_an_os_shell_or_out_of_the_shell(cluster: Cluster, tmp_path: Path) -> None:
    bash = ssh(cluster, "bash")
    assert bash.returncode == 2 and "unknown command 'bash'" in bash.stderr

    pty_sh = ssh(cluster, "/bin/sh", "-tt")  # a PTY-backed exec: still one shell command
    assert pty_sh.returncode == 2 and "unknown command '/bin/sh'" in pty_sh.stdout

    sftp = ssh(cluster, "sftp", "-s")  # `-s`: the command names a subsystem
    assert sftp.returncode == 255 and "subsystem request failed" in sftp.stderr

    remote = ssh(cluster, "version", "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:22")
    assert remote.returncode == 255 and "remote port forwarding failed" in remote.stderr

    with_env = ssh(cluster, "version", "-o", "SetEnv=PEGASUS_SECRET=1")
    assert with_env.returncode == 0  # env needs no reply: refused, and the command runs without it

    assert local_forwarding_is_refused(cluster)
    agent = forward_an_agent(cluster, tmp_path)
    assert agent.returncode == 0, agent.stderr

    refusals = {line["request"] for line in audit_lines(cluster) if line["event"] == "request_refused"}
    for request in (
        "subsystem",
        "remote port forwarding",
        "env",
        "local port forwarding",
        "agent forwarding",
    ):
        assert request in refusals, (request, refusals)
    assert audited(cluster, "request_refused", request="env")["outcome"] == (
        "denied: env is not allowed (PEGASUS_SECRET)"
    )
    assert audited(cluster, "command", command="/bin/sh")["exit_status"] == 2


def local_forwarding_is_refused(cluster: Cluster) -> bool:
    """`ssh -L` to the meta's RPC port: the local listener works, the tunnel behind it never opens."""
    for _ in range(3):  # a free port may be taken by another process before ssh binds it: try again
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            local_port = probe.getsockname()[1]
        argv = ssh_argv(cluster, "-N", "-o", "ExitOnForwardFailure=yes", "-L", f"{local_port}:{cluster.meta}")
        forward = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            tunnel = _connect_when_listening(forward, local_port)
            if tunnel is None:
                continue  # ssh could not bind the port and exited
            with tunnel:
                tunnel.settimeout(COMMAND_TIMEOUT_S)
                closed = tunnel.recv(1) == b""  # the server refused the channel: ssh closes our end
            audited(cluster, "request_refused", request="local port forwarding")
            return closed
        finally:
            forward.kill()
            forward.wait(COMMAND_TIMEOUT_S)
    raise AssertionError("ssh -L could not bind a local port three times")


def _connect_when_listening(forward: subprocess.Popen[bytes], port: int) -> socket.socket | None:
    deadline = time.monotonic() + COMMAND_TIMEOUT_S
    while forward.poll() is None:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5.0)
        except OSError:
            assert time.monotonic() < deadline, "ssh -L never listened"
            time.sleep(0.1)
    return None


def forward_an_agent(cluster: Cluster, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(socket_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10.0
        while not socket_path.exists():
            assert time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.05)
        return ssh(cluster, "version", "-A", env={**os.environ, "SSH_AUTH_SOCK": str(socket_path)})
    finally:
        agent.kill()
        agent.wait(COMMAND_TIMEOUT_S)


@contextlib.asynccontextmanager
async def admin_connection(cluster: Cluster) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """asyncssh's client, logged in with the onebox's admin key (no agent, config or known_hosts)."""
    async with asyncssh.connect(
        cluster.ssh_host,
        cluster.ssh_port,
        username="admin",
        client_keys=[str(cluster.admin_key)],
        known_hosts=None,
        agent_path=None,
        config=None,
    ) as conn:
        yield conn


# --- asyncssh's client ------------------------------------------------------------------------------


def test_asyncssh_client_sessions_use_a_table_and_read_back_what_they_wrote(cluster: Cluster) -> None:
    async def story() -> None:
        async with admin_connection(cluster) as conn:
            one_shot = await conn.run("cluster_info --json")
            assert one_shot.exit_status == 0
            assert json.loads(str(one_shot.stdout))["healthy_partition_count"] >= 8

            script = "use temp\nset ssh_user name Ada\nget ssh_user name\nexist ssh_user nobody\n"
            session = await conn.run(input=script)
            assert session.exit_status == 0, session.stderr
            assert "Ada" in str(session.stdout)

    asyncio.run(story())
    commands = [line["command"] for line in audit_lines(cluster) if line.get("session") == "shell"]
    assert commands[-4:-1] == ["use temp", "set ssh_user name Ada", "get ssh_user name"]


def test_every_command_runs_one_shot_over_asyncssh(cluster: Cluster) -> None:
    """Every command of the shell, each as its own one-shot exec over one asyncssh connection (the
    in-process suite, test_shell_commands.py, checks what each one does in depth)."""

    async def story() -> None:
        async with admin_connection(cluster) as conn:

            async def run(line: str, exit_status: int = 0) -> str:
                result = await conn.run(line)
                assert result.exit_status == exit_status, (line, result.exit_status, result.stderr)
                assert "Traceback" not in str(result.stderr)
                return str(result.stdout)

            async def as_json(line: str) -> Any:
                return json.loads(await run(line + " --json"))

            assert "count_data" in await run("help") and "usage: propose" in await run("help propose")
            assert (await as_json("version"))["version"]
            assert (await run("exit")) == ""
            assert (await as_json("cluster_info"))["alive_node_count"] == 3
            nodes = (await as_json("nodes -d"))["nodes"]
            assert len(nodes) == 3
            assert (await as_json("get_meta_level"))["meta_level"] == "steady"
            assert (await as_json("set_meta_level steady"))["meta_level"] == "steady"
            assert (await as_json("create ssh_every -p 4"))["ready"]
            assert "ssh_every" in {table["app_name"] for table in (await as_json("ls -a"))["tables"]}
            app = await as_json("app ssh_every -d")
            assert (await run("use ssh_every")).startswith("OK")  # a session of its own: lasts one exec

            t = "--table ssh_every"
            assert (await as_json(f"set_app_envs {t} rocksdb.usage_scenario normal"))["envs"]
            assert (await as_json(f"get_app_envs {t}"))["envs"] == {"rocksdb.usage_scenario": "normal"}
            assert (await as_json(f"del_app_envs {t} rocksdb.usage_scenario"))["envs"] == {}
            assert (await as_json(f"clear_app_envs {t} --all"))["envs"] == {}
            assert (await as_json(f"hash {t} bob name"))["app_name"] == "ssh_every"
            await run(f"set {t} bob name Bob")
            assert (await as_json(f"get {t} bob name"))["value"] == "Bob"
            assert (await as_json(f"exist {t} bob name"))["exist"] is True
            assert (await as_json(f"ttl {t} bob name"))["ttl_seconds"] == -1
            assert (await as_json(f"incr {t} bob visits 2"))["new_value"] == 2
            await run(f"multi_set {t} bob city Oslo lang no")
            assert len((await as_json(f"multi_get {t} bob city lang"))["items"]) == 2
            assert len((await as_json(f"multi_get_range {t} bob a z"))["items"]) == 4
            assert len((await as_json(f"multi_get_sortkeys {t} bob"))["items"]) == 4
            assert (await as_json(f"count {t} bob"))["count"] == 4
            assert (await as_json(f"check_and_set {t} bob -c lang -t bytes_equal -o no -v nb"))["passed"]
            assert (await as_json(f"check_and_mutate {t} bob -c lang -t exist set tier 1 del city"))["passed"]
            assert (await as_json(f"multi_del {t} bob tier"))["deleted"] == 1
            assert (await as_json(f"multi_del_range {t} bob l m"))["deleted"] == 1  # lang
            await run(f"del {t} bob visits")
            assert (await as_json(f"hash_scan {t} bob '' ''"))["count"] == 1
            assert len((await as_json(f"full_scan {t}"))["rows"]) == 1
            assert (await as_json(f"count_data {t}"))["total"]["rows"] == 1

            config = app["partitions"][0]
            gpid = f"{app['app_id']}.0"
            primary, secondary = config["primary"], config["secondaries"][0]
            refused = await conn.run(f"propose -g {gpid} -p downgrade_to_secondary -n {secondary}")
            assert refused.exit_status == 1 and "REFUSED" in str(refused.stderr)
            balanced = await as_json(f"balance -g {gpid} -p move_pri -f {primary} -t {secondary}")
            assert balanced["accepted"], balanced

            await run("rename ssh_every ssh_every2")
            assert (await as_json("drop ssh_every2 --hold-seconds 600"))["app_id"] == app["app_id"]
            recalled = await as_json(f"recall {app['app_id']} ssh_every3")
            assert recalled["app_name"] == "ssh_every3"

    asyncio.run(story())
    audited_commands = {
        line["command"].split()[0] for line in audit_lines(cluster) if line["event"] == "command"
    }
    for name in (
        "help",
        "version",
        "exit",
        "cluster_info",
        "nodes",
        "ls",
        "app",
        "create",
        "drop",
        "recall",
        "rename",
        "get_app_envs",
        "set_app_envs",
        "del_app_envs",
        "clear_app_envs",
        "get_meta_level",
        "set_meta_level",
        "use",
        "hash",
        "set",
        "get",
        "del",
        "exist",
        "ttl",
        "incr",
        "multi_set",
        "multi_get",
        "multi_get_range",
        "multi_get_sortkeys",
        "multi_del",
        "multi_del_range",
        "check_and_set",
        "check_and_mutate",
        "count",
        "hash_scan",
        "full_scan",
        "count_data",
        "balance",
        "propose",
    ):
        assert name in audited_commands, name


# --- an interactive session on a PTY ------------------------------------------------------------------


class Terminal:
    """`ssh -tt` on a pseudo-terminal, read and typed into like a person at a keyboard."""

    def __init__(self, argv: list[str]) -> None:
        self._master, slave = os.openpty()
        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True, start_new_session=True
        )
        os.close(slave)
        self._pending = b""

    def type(self, keys: str) -> None:
        os.write(self._master, keys.encode())

    def read_until(self, token: str, timeout_s: float = PTY_TIMEOUT_S) -> str:
        wanted = token.encode()
        deadline = time.monotonic() + timeout_s
        while wanted not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {token!r} on the terminal; it shows {self._pending!r}")
            ready, _, _ = select.select([self._master], [], [], min(remaining, 0.1))
            if ready:
                try:
                    chunk = os.read(self._master, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"the terminal closed before {token!r}; it showed {self._pending!r}")
                self._pending += chunk
        index = self._pending.index(wanted) + len(wanted)
        seen, self._pending = self._pending[:index], self._pending[index:]
        return seen.decode(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        os.close(self._master)


@contextlib.contextmanager
def replica_servers_paused(cluster: Cluster) -> Iterator[None]:
    """SIGSTOP every replica server (for far less than a lease): a data command then hangs."""
    for pid in cluster.replica_pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in cluster.replica_pids:
            os.kill(pid, signal.SIGCONT)


def test_an_interactive_session_recalls_history_completes_and_survives_ctrl_c(cluster: Cluster) -> None:
    terminal = Terminal(ssh_argv(cluster, "-tt"))
    try:
        banner = terminal.read_until(">>> ")
        assert "cluster onebox" in banner and "role admin" in banner

        terminal.type("cluster_i\t")  # Tab completes the command name
        terminal.read_until("cluster_info ")
        terminal.type("--json\r")
        first = terminal.read_until(">>> ")
        assert '"cluster_name":"onebox"' in first

        terminal.type("\x1b[A")  # up-arrow brings the last line back; Enter runs it again
        terminal.read_until("cluster_info --json")
        terminal.type("\r")
        assert '"cluster_name":"onebox"' in terminal.read_until(">>> ")

        terminal.type("use te\t")  # Tab completes a table name after `use`
        terminal.read_until("use temp ")
        terminal.type("\r")
        assert "[temp] >>> " in terminal.read_until("[temp] >>> ")

        with replica_servers_paused(cluster):
            terminal.type("get nobody home\r")  # hangs: every replica server is stopped
            terminal.read_until("get nobody home\r\n")
            time.sleep(0.5)
            terminal.type("\x03")  # Ctrl-C
            assert "interrupted" in terminal.read_until("[temp] >>> ")

        terminal.type("version\r")  # the session goes on
        assert "pegasus-kv 0.1.0" in terminal.read_until(">>> ")
        terminal.type("\x04")  # Ctrl-D leaves
        assert terminal.process.wait(PTY_TIMEOUT_S) == 0
    finally:
        terminal.close()

    session = [line for line in audit_lines(cluster) if line.get("session") == "shell"][-5:]
    assert [(line["command"], line["exit_status"]) for line in session] == [
        ("cluster_info --json", 0),
        ("cluster_info --json", 0),
        ("use temp", 0),
        ("get nobody home", 130),
        ("version", 0),
    ]
