"""`pegasus-kv onebox ...`: a whole cluster on this machine, in the background (DESIGN.md section 7).

    start_onebox(OneboxOptions(data_dir=Path("onebox")))   # meta1, replica1..3, table `temp`
    onebox_status(Path("onebox"))                           # {"meta": [...], "replica": [...], ...}
    stop_node(Path("onebox"), "replica1", kill=True)        # fault injection
    start_node(Path("onebox"), "replica1")                  # same config, same data
    stop_onebox(Path("onebox")); clean_onebox(Path("onebox"))

Like Pegasus's `./run.sh start_onebox`: one meta server and three replica servers on loopback, the
meta state in the embedded local store (no ZooKeeper), table `temp` with 8 partitions of 3 replicas.
Every node lives in DIR/<name>/ (config.toml, data, server.log) and runs as a detached process in
its own session, so the cluster outlives the command that started it; DIR/onebox.json
(onebox_state.py) records their pids and addresses for the other subcommands.

Every meta and replica server serves Prometheus metrics (pegasus_kv/metrics) on its own port:
meta i (from 0) on base + 300 + i, replica server j on base + 400 + j (34901, 35001 ... by default);
`onebox status` lists their URLs.

The leading meta serves the admin shell over SSH: meta i (from 0) listens on base + 100 + i (34701
for meta1 by default). `start` makes a key pair for the local user in DIR/ssh/ (id_ed25519, 0600),
authorizes it as admin in DIR/ssh/authorized_keys (add readonly keys there; the leader re-reads it),
and prints the ssh command; `status --json` gives the leader's shell as "ssh" and the command as
"ssh_command" (onebox_ssh.py). Each meta writes its audit log to DIR/metaN/audit.log.

Timings are short so that failover is quick on one machine: 100 ms ticks, beacons every second,
3 s leases, and meta declares a silent replica server dead after 4 s (PacificA needs the replica's
lease to end before meta's grace period, so lease < grace). Meta is told that one live replica
server is enough not to freeze (Pegasus's onebox does the same), so killing a node reconfigures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pegasus_kv.client import Client
from pegasus_kv.client.meta import MetaCaller
from pegasus_kv.client.options import ClientOptions
from pegasus_kv.client.session import ClientSession
from pegasus_kv.core.errors import PegasusError
from pegasus_kv.metrics.endpoint import METRICS_PATH
from pegasus_kv.replication.meta.admin_messages import ClusterInfoRequest, ClusterInfoResponse
from pegasus_kv.testing.onebox_ssh import (
    SSH_DIR,
    AdminShellNotReadyError,
    prepare_admin_shell,
    ssh_command,
    ssh_config_section,
    wait_admin_shell,
)
from pegasus_kv.testing.onebox_state import (
    NodeState,
    OneboxDirError,
    OneboxState,
    Role,
    node_is_running,
)

HOST = "127.0.0.1"
DEFAULT_META_BASE_PORT = 34601
REPLICA_PORT_OFFSET = 200  # replica servers from base + 200: 34801, 34802, ...
SSH_PORT_OFFSET = 100  # meta i's admin shell on base + 100 + i: 34701, ...
META_METRICS_PORT_OFFSET = 300  # meta i's Prometheus metrics on base + 300 + i: 34901, ...
REPLICA_METRICS_PORT_OFFSET = 400  # replica server j's on base + 400 + j: 35001, 35002, ...
TABLE_NAME = "temp"
TABLE_PARTITION_COUNT = 8
TABLE_REPLICA_COUNT = 3
MAX_META_SERVERS = 5
MAX_REPLICA_SERVERS = 16
STATUS_TIMEOUT_S = 2.0  # `status` asks a multi-meta onebox who leads, for this long at most
STOP_GRACE_S = 10.0  # SIGTERM, then SIGKILL after this long
POLL_S = 0.1

TICK_MS = 100
BEACON_INTERVAL_S = 1.0
LEASE_S = 3.0
GRACE_S = 4.0


class OneboxError(RuntimeError):
    """A onebox command failed; the message says why and where to look."""


@dataclass(frozen=True)
class OneboxOptions:
    data_dir: Path
    base_port: int = DEFAULT_META_BASE_PORT  # 0: pick free ports
    meta_servers: int = 1
    replica_servers: int = 3
    meta_store: str = "local"  # or "zookeeper" (also starts a local ZooKeeper)
    timeout_s: float = 60.0


def _free_port() -> int:
    from pegasus_kv.testing.zookeeper import free_port

    return free_port()


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(_toml_string(value) for value in values) + "]"


def _server_command(role: str, config: Path) -> list[str]:
    return [sys.executable, "-m", "pegasus_kv.cli", role, "--config", str(config)]


def _meta_config(address: str, meta_addresses: list[str], store_section: str, metrics_port: int) -> str:
    port = address.rpartition(":")[2]
    return (
        'cluster_name = "onebox"\n'
        f"host = {_toml_string(HOST)}\n"
        f"port = {port}\n"
        f"metrics_port = {metrics_port}\n"
        f"meta_servers = {_toml_list(meta_addresses)}\n"
        f"tick_ms = {TICK_MS}\n"
        f"beacon_interval_s = {BEACON_INTERVAL_S}\n"
        f"lease_s = {LEASE_S}\n"
        f"grace_s = {GRACE_S}\n"
        "add_secondary_wait_s = 1.0\n"
        "min_live_node_count = 1\n"
        "min_live_node_percent = 0\n"
        "\n" + store_section
    )


def _replica_config(address: str, meta_addresses: list[str], data_dir: Path, metrics_port: int) -> str:
    port = address.rpartition(":")[2]
    return (
        f"host = {_toml_string(HOST)}\n"
        f"port = {port}\n"
        f"metrics_port = {metrics_port}\n"
        f"meta_servers = {_toml_list(meta_addresses)}\n"
        f"data_dir = {_toml_string(str(data_dir))}\n"
        f"tick_ms = {TICK_MS}\n"
        f"beacon_interval_s = {BEACON_INTERVAL_S}\n"
        f"lease_s = {LEASE_S}\n"
        "config_sync_interval_s = 5.0\n"
        "group_check_interval_s = 2.0\n"
        "flush_interval_s = 30.0\n"
        "\n[store]\n"
        "write_buffer_bytes = 4194304\n"  # 24 replicas on one machine: keep memtables small
    )


def _check_options(options: OneboxOptions) -> None:
    if not 1 <= options.meta_servers <= MAX_META_SERVERS:
        raise OneboxError(f"--meta-servers must be 1..{MAX_META_SERVERS}")
    if not TABLE_REPLICA_COUNT <= options.replica_servers <= MAX_REPLICA_SERVERS:
        raise OneboxError(f"--replica-servers must be {TABLE_REPLICA_COUNT}..{MAX_REPLICA_SERVERS}")
    if options.meta_store not in ("local", "zookeeper"):
        raise OneboxError("--meta-store must be local or zookeeper")
    if options.meta_store == "local" and options.meta_servers != 1:
        raise OneboxError("the local meta store serves one meta server; use --meta-store zookeeper")
    highest_base = 65535 - REPLICA_METRICS_PORT_OFFSET - MAX_REPLICA_SERVERS
    if options.base_port != 0 and not 1024 <= options.base_port <= highest_base:
        raise OneboxError(f"--base-port must be 0 (free ports) or 1024..{highest_base}")


def _plan(options: OneboxOptions) -> OneboxState:
    """Write every node's config under DIR and return the state that records them (not yet saved)."""
    data_dir = options.data_dir
    state = OneboxState(
        data_dir=data_dir, meta_store="zookeeper" if options.meta_store == "zookeeper" else "local"
    )

    taken: set[int] = set()

    def port(base_offset: int) -> int:
        if options.base_port != 0:
            return options.base_port + base_offset
        # A probed port is free again once the probe closes, so the kernel may hand it out twice
        # (it did: meta's RPC and metrics ports collided): never give two listeners one port.
        for _ in range(100):
            candidate = _free_port()
            if candidate not in taken:
                taken.add(candidate)
                return candidate
        raise OneboxError("could not find distinct free ports on 127.0.0.1")

    meta_addresses = [f"{HOST}:{port(index)}" for index in range(options.meta_servers)]
    store_section = ""
    if options.meta_store == "zookeeper":
        from pegasus_kv.testing.zookeeper import (
            ZooKeeperUnavailableError,
            detached_zookeeper_command,
            write_zookeeper_config,
        )

        zk_port = port(0) if options.base_port == 0 else 22181
        zk_dir = data_dir / "zookeeper"
        zk_dir.mkdir(parents=True, exist_ok=True)
        zk_config = write_zookeeper_config(zk_dir, HOST, zk_port)
        try:
            zk_command = detached_zookeeper_command(zk_config)
        except ZooKeeperUnavailableError as exc:
            raise OneboxError(f"--meta-store zookeeper: {exc}") from exc
        state.nodes["zookeeper"] = NodeState(
            name="zookeeper",
            role="zookeeper",
            address=f"{HOST}:{zk_port}",
            node_dir=zk_dir,
            config=zk_config,
            log=zk_dir / "server.log",
            command=zk_command,
        )
        store_section = (
            f'[store]\nkind = "zookeeper"\nhosts = "{HOST}:{zk_port}"\nroot = "/pegasus-kv"\n'
            "session_timeout_s = 4.0\n"  # a killed meta leader's election node goes within 4 s
        )
    shell_files = prepare_admin_shell(data_dir)
    state.ssh_key = str(shell_files.identity)
    for index, address in enumerate(meta_addresses, start=1):
        node_dir = data_dir / f"meta{index}"
        node_dir.mkdir(parents=True, exist_ok=True)
        section = (
            store_section or f'[store]\nkind = "local"\ndata_dir = {_toml_string(str(node_dir / "data"))}\n'
        )
        config = node_dir / "config.toml"
        metrics_port = port(META_METRICS_PORT_OFFSET + index - 1)
        ssh_port = port(SSH_PORT_OFFSET + index - 1)
        shell = ssh_config_section(shell_files, port=ssh_port, audit_log=node_dir / "audit.log")
        config.write_text(_meta_config(address, meta_addresses, section, metrics_port) + shell)
        _add_node(state, f"meta{index}", "meta", address, node_dir, config, metrics_port)
        state.nodes[f"meta{index}"].ssh_address = f"{HOST}:{ssh_port}"
    for index in range(1, options.replica_servers + 1):
        address = f"{HOST}:{port(REPLICA_PORT_OFFSET + index - 1)}"
        node_dir = data_dir / f"replica{index}"
        node_dir.mkdir(parents=True, exist_ok=True)
        config = node_dir / "config.toml"
        metrics_port = port(REPLICA_METRICS_PORT_OFFSET + index - 1)
        config.write_text(_replica_config(address, meta_addresses, node_dir / "data", metrics_port))
        _add_node(state, f"replica{index}", "replica", address, node_dir, config, metrics_port)
    return state


def _add_node(
    state: OneboxState, name: str, role: Role, address: str, node_dir: Path, config: Path, metrics_port: int
) -> None:
    state.nodes[name] = NodeState(
        name=name,
        role=role,
        address=address,
        node_dir=node_dir,
        config=config,
        log=node_dir / "server.log",
        command=_server_command(role, config),
        metrics_address=f"{HOST}:{metrics_port}",
    )


def _spawn(node: NodeState) -> None:
    """Start the node as a detached process (its own session: a Ctrl-C on onebox's terminal or the
    exit of the onebox command leaves it running)."""
    node.node_dir.mkdir(parents=True, exist_ok=True)
    with open(node.log, "ab") as log:
        process = subprocess.Popen(
            node.command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            cwd=node.node_dir,
            close_fds=True,
        )
    node.pid = process.pid
    # Popen's object is dropped on purpose: the process outlives this command, and a later
    # `onebox stop` (another process) finds it by the pid recorded in onebox.json.


# --- waiting for health ---------------------------------------------------------------------------


async def _cluster_info(meta_addresses: list[str], timeout_s: float) -> ClusterInfoResponse:
    session = ClientSession(ClientOptions(timeout_s=timeout_s), random.Random())
    try:
        caller = MetaCaller(session, meta_addresses)
        return await caller.call(
            ClusterInfoRequest(),
            ClusterInfoResponse,
            deadline=session.deadline(timeout_s),
            idempotent=True,
            what="cluster info",
        )
    finally:
        await session.close()


def _log_tails(state: OneboxState, names: list[str], max_bytes: int = 1500) -> str:
    parts = []
    for name in names:
        node = state.nodes[name]
        try:
            tail = node.log.read_bytes()[-max_bytes:].decode(errors="replace")
        except OSError:
            tail = "(no log)"
        parts.append(f"--- {node.log} ends with:\n{tail}")
    return "\n".join(parts)


class _Progress:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._last = ""

    def show(self, line: str) -> None:
        if line != self._last:
            print(line, file=self._stream, flush=True)
            self._last = line


async def _wait_healthy(state: OneboxState, timeout_s: float, progress: _Progress) -> ClusterInfoResponse:
    meta_addresses = [node.address for node in state.nodes_of("meta")]
    replica_count = len(state.nodes_of("replica"))
    deadline = time.monotonic() + timeout_s
    table_created = False
    last_error = ""
    while True:
        dead = [name for name, node in state.nodes.items() if not node_is_running(node)]
        if dead:
            raise OneboxError(f"{', '.join(dead)} exited while starting\n{_log_tails(state, dead)}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise OneboxError(
                f"the cluster was not healthy within {timeout_s:.0f} s (last: {last_error or 'no answer'}); "
                f"the nodes keep running (onebox stop ends them); logs: "
                + ", ".join(str(node.log) for node in state.nodes.values())
            )
        try:
            info = await _cluster_info(meta_addresses, min(2.0, remaining))
            if info.alive_node_count < replica_count:
                last_error = f"{info.alive_node_count}/{replica_count} replica servers alive"
                progress.show(f"onebox: meta {info.leader} up, {last_error}")
            elif not table_created:
                progress.show(f"onebox: {replica_count} replica servers alive, creating table {TABLE_NAME}")
                async with Client(meta_addresses, timeout=min(10.0, remaining)) as client:
                    await client.create_table(
                        TABLE_NAME, TABLE_PARTITION_COUNT, TABLE_REPLICA_COUNT, success_if_exist=True
                    )
                table_created = True
                continue
            elif info.partition_count > 0 and info.healthy_partition_count == info.partition_count:
                progress.show(
                    f"onebox: {info.healthy_partition_count}/{info.partition_count} partitions healthy"
                )
                return info
            else:
                last_error = f"{info.healthy_partition_count}/{info.partition_count} partitions healthy"
                progress.show(f"onebox: {last_error}")
        except PegasusError as exc:
            last_error = str(exc)
            progress.show("onebox: waiting for meta to answer")
        await asyncio.sleep(POLL_S * 2)


# --- the subcommands ------------------------------------------------------------------------------


def start_onebox(options: OneboxOptions, *, out: TextIO = sys.stdout, progress: TextIO = sys.stderr) -> int:
    """Start (or restart) the cluster in options.data_dir and wait until table `temp` is healthy."""
    data_dir = options.data_dir.resolve()
    options = OneboxOptions(
        data_dir=data_dir,
        base_port=options.base_port,
        meta_servers=options.meta_servers,
        replica_servers=options.replica_servers,
        meta_store=options.meta_store,
        timeout_s=options.timeout_s,
    )
    if OneboxState.exists_in(data_dir):
        state = OneboxState.load(data_dir)  # a stopped onebox restarts with its configs and data
    else:
        _check_options(options)
        if data_dir.exists() and any(data_dir.iterdir()):
            raise OneboxError(f"{data_dir} is not empty and not a onebox directory; pick another --data-dir")
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            state = _plan(options)
        except BaseException:
            shutil.rmtree(data_dir, ignore_errors=True)  # it was empty: leave nothing half-written
            raise
        state.save()
    # ZooKeeper first (meta needs it), then meta, then the replica servers that beacon to it.
    order = state.nodes_of("zookeeper") + state.nodes_of("meta") + state.nodes_of("replica")
    for node in order:
        if node_is_running(node):
            continue
        _spawn(node)
        state.save()
        if node.role == "zookeeper":
            _wait_zookeeper(node, options.timeout_s)
    info = asyncio.run(_wait_healthy(state, options.timeout_s, _Progress(progress)))
    state.ssh = _leader_ssh_address(state, info.leader)
    if state.ssh:
        try:
            wait_admin_shell(state.ssh, options.timeout_s)
        except AdminShellNotReadyError as exc:
            meta_logs = ", ".join(str(node.log) for node in state.nodes_of("meta"))
            raise OneboxError(
                f"{exc}; the nodes keep running (onebox stop ends them); see {meta_logs}"
            ) from exc
    state.save()
    print(f"onebox is up in {data_dir} (cluster {info.cluster_name!r}, table {TABLE_NAME!r})", file=out)
    _print_nodes(state, out)
    return 0


def _leader_ssh_address(state: OneboxState, leader: str) -> str:
    """The admin shell of the meta whose RPC address is `leader` ("" if it has none)."""
    for node in state.nodes_of("meta"):
        if node.address == leader:
            return node.ssh_address
    return ""


def _current_ssh_address(state: OneboxState) -> str:
    """The admin shell of the meta that leads now: asked of the cluster when there are several metas
    (a failover moves it); "" when no meta with a shell is running or none answers."""
    metas = [node for node in state.nodes_of("meta") if node.ssh_address and node_is_running(node)]
    if not metas:
        return ""
    if len(state.nodes_of("meta")) == 1:
        return metas[0].ssh_address
    try:
        info = asyncio.run(_cluster_info([node.address for node in metas], STATUS_TIMEOUT_S))
    except PegasusError:
        return ""
    return _leader_ssh_address(state, info.leader)


def _ssh_command_of(state: OneboxState, address: str) -> str:
    return ssh_command(Path(state.ssh_key), address) if address and state.ssh_key else ""


def _wait_zookeeper(node: NodeState, timeout_s: float) -> None:
    from pegasus_kv.testing.zookeeper import four_letter_word

    host, _, port = node.address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not node_is_running(node):
            raise OneboxError(f"ZooKeeper exited while starting; see {node.log}")
        try:
            if "Mode: standalone" in four_letter_word(host, int(port), "srvr"):
                return
        except OSError:
            pass
        time.sleep(POLL_S)
    raise OneboxError(f"ZooKeeper did not serve on {node.address} within {timeout_s:.0f} s; see {node.log}")


def _print_nodes(state: OneboxState, out: TextIO, *, ssh_address: str | None = None) -> None:
    """`ssh_address`: the leader's admin shell (default: the one recorded by `start`)."""
    meta = ",".join(node.address for node in state.nodes_of("meta"))
    print(f"meta servers: {meta}", file=out)
    for node in state.nodes.values():
        running = "running" if node_is_running(node) else "stopped"
        print(
            f"  {node.name:<10} {node.role:<9} {node.address:<21} {running:<8} pid {node.pid}  "
            f"log {node.log}",
            file=out,
        )
    ssh = state.ssh if ssh_address is None else ssh_address
    if ssh and state.ssh_key:
        print(f"admin shell (the leader's, as admin): {_ssh_command_of(state, ssh)}", file=out)
    else:
        print(f"admin shell: {ssh or '(not available: no meta with a shell is leading)'}", file=out)
    metrics = _metrics_urls(state)
    if metrics:
        print("metrics (Prometheus):", file=out)
        for name, url in metrics.items():
            print(f"  {name:<10} {url}", file=out)


def _metrics_urls(state: OneboxState) -> dict[str, str]:
    """Node name -> the URL of its Prometheus metrics (nodes that serve them)."""
    return {
        name: f"http://{node.metrics_address}{METRICS_PATH}"
        for name, node in state.nodes.items()
        if node.metrics_address
    }


def onebox_status(data_dir: Path) -> dict[str, Any]:
    """{"meta": [addresses], "replica": [addresses], "ssh": "host:port" or "", "pids": {name: pid|None},
    "metrics": {name: "http://host:port/metrics"}, "ssh_command": "ssh -i ...", "ssh_key": path}.

    A pid is null when that node is not running. "ssh" is the admin shell of the meta leading now ("" if
    none is running); "ssh_command" logs in to it as admin with "ssh_key" ("" without a shell)."""
    state = OneboxState.load(data_dir.resolve())
    ssh = _current_ssh_address(state)
    return {
        "meta": [node.address for node in state.nodes_of("meta")],
        "replica": [node.address for node in state.nodes_of("replica")],
        "ssh": ssh,
        "ssh_command": _ssh_command_of(state, ssh),
        "ssh_key": state.ssh_key,
        "pids": {name: node.pid if node_is_running(node) else None for name, node in state.nodes.items()},
        "metrics": _metrics_urls(state),
    }


def print_status(data_dir: Path, *, as_json: bool, out: TextIO = sys.stdout) -> int:
    import json

    if as_json:
        print(json.dumps(onebox_status(data_dir)), file=out)
        return 0
    state = OneboxState.load(data_dir.resolve())
    _print_nodes(state, out, ssh_address=_current_ssh_address(state))
    return 0


def _signal_and_wait(nodes: list[NodeState], signum: int, grace_s: float) -> list[NodeState]:
    """Send signum to every running node; return those still running after grace_s."""
    targets = [node for node in nodes if node_is_running(node)]
    for node in targets:
        assert node.pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.pid, signum)
    deadline = time.monotonic() + grace_s
    while True:
        alive = [node for node in targets if node_is_running(node)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(POLL_S / 2)


def _stop_nodes(nodes: list[NodeState], *, kill: bool, grace_s: float = STOP_GRACE_S) -> None:
    if kill:
        still = _signal_and_wait(nodes, signal.SIGKILL, grace_s)
    else:
        still = _signal_and_wait(nodes, signal.SIGTERM, grace_s)
        if still:
            still = _signal_and_wait(still, signal.SIGKILL, grace_s)
    if still:
        raise OneboxError("could not stop: " + ", ".join(f"{node.name} (pid {node.pid})" for node in still))


def stop_onebox(data_dir: Path, *, out: TextIO = sys.stdout) -> int:
    """SIGTERM every node (replica servers and meta together, ZooKeeper last), SIGKILL after a grace."""
    state = OneboxState.load(data_dir.resolve())
    _stop_nodes(state.nodes_of("replica") + state.nodes_of("meta"), kill=False)
    _stop_nodes(state.nodes_of("zookeeper"), kill=False)
    print(f"onebox in {state.data_dir} stopped", file=out)
    return 0


def clean_onebox(data_dir: Path, *, out: TextIO = sys.stdout) -> int:
    """Stop the onebox and remove what it created in DIR (refuses a DIR without onebox.json)."""
    data_dir = data_dir.resolve()
    state = OneboxState.load(data_dir)
    stop_onebox(data_dir, out=out)
    for node in state.nodes.values():
        if node.node_dir.resolve().parent != data_dir:
            raise OneboxDirError(f"{node.node_dir} is outside {data_dir}; not removing it")
        shutil.rmtree(node.node_dir, ignore_errors=True)
    if state.ssh_key:
        shutil.rmtree(data_dir / SSH_DIR, ignore_errors=True)  # the admin shell's keys
    OneboxState.path_in(data_dir).unlink(missing_ok=True)
    if not any(data_dir.iterdir()):
        data_dir.rmdir()
    print(f"onebox in {data_dir} removed", file=out)
    return 0


def stop_node(data_dir: Path, name: str, *, kill: bool, out: TextIO = sys.stdout) -> int:
    """SIGTERM (graceful) or SIGKILL (a crash) one node."""
    state = OneboxState.load(data_dir.resolve())
    node = state.node(name)
    if not node_is_running(node):
        print(f"{name} is not running", file=out)
        return 0
    _stop_nodes([node], kill=kill)
    print(f"{name} {'killed' if kill else 'stopped'}", file=out)
    return 0


def start_node(data_dir: Path, name: str, *, out: TextIO = sys.stdout) -> int:
    """Respawn one node with its existing config and data (no wait for health)."""
    state = OneboxState.load(data_dir.resolve())
    node = state.node(name)
    if node_is_running(node):
        print(f"{name} is already running (pid {node.pid})", file=out)
        return 0
    _spawn(node)
    state.save()
    print(f"{name} started (pid {node.pid}) on {node.address}, log {node.log}", file=out)
    return 0
