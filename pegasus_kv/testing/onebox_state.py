"""What a onebox directory holds: `DIR/onebox.json`, the record of every node onebox started.

    state = OneboxState.load(Path("onebox"))      # OneboxDirError when DIR is not a onebox dir
    state.nodes["replica1"].pid                   # the last pid onebox spawned for it (or None)
    node_is_running(state.nodes["replica1"])      # alive, not a zombie, and still that node

Each node keeps the command that starts it, so `start-node` respawns it exactly as `start` did, with
its config and data left in place. A recorded pid is trusted only while /proc says that process is
still running that node's command line (its config path), so a pid reused by the system is never
signalled.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

STATE_FILE = "onebox.json"
STATE_VERSION = 1
MAX_NODES = 64
CMDLINE_RETRIES = 20
CMDLINE_RETRY_S = 0.01

Role = Literal["meta", "replica", "zookeeper"]


class OneboxDirError(RuntimeError):
    """DIR is not a onebox directory, or its state file cannot be read."""


class NodeState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    role: Role
    address: str  # "host:port" where it listens (clients dial meta; ZooKeeper's client port)
    node_dir: Path  # everything of the node: config, data, server.log
    config: Path
    log: Path
    command: list[str]  # argv that starts it
    pid: int | None = None
    metrics_address: str = ""  # "host:port" of its Prometheus metrics ("" for ZooKeeper)
    ssh_address: str = ""  # a meta's admin shell "host:port" (served while it leads); "" otherwise


class OneboxState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = STATE_VERSION
    data_dir: Path
    meta_store: Literal["local", "zookeeper"] = "local"
    ssh: str = ""  # the admin shell's "host:port" on the leader when `start` finished; "" until then
    ssh_key: str = ""  # the private key that logs in to the admin shell as admin ("" before the shell)
    nodes: dict[str, NodeState] = Field(default_factory=dict)

    @staticmethod
    def path_in(data_dir: Path) -> Path:
        return data_dir / STATE_FILE

    @classmethod
    def exists_in(cls, data_dir: Path) -> bool:
        return cls.path_in(data_dir).is_file()

    @classmethod
    def load(cls, data_dir: Path) -> OneboxState:
        path = cls.path_in(data_dir)
        if not path.is_file():
            raise OneboxDirError(f"{data_dir} is not a onebox directory (no {STATE_FILE}); run onebox start")
        try:
            state = cls.model_validate_json(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise OneboxDirError(f"cannot read {path}: {exc}") from exc
        if state.version != STATE_VERSION:
            raise OneboxDirError(f"{path} has version {state.version}, this onebox writes {STATE_VERSION}")
        if len(state.nodes) > MAX_NODES:
            raise OneboxDirError(f"{path} lists {len(state.nodes)} nodes, more than {MAX_NODES}")
        return state

    def save(self) -> None:
        """Write the state atomically (a crash leaves the old or the new file, never half of one)."""
        path = self.path_in(self.data_dir)
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
        os.replace(temporary, path)

    def nodes_of(self, role: Role) -> list[NodeState]:
        return [node for node in self.nodes.values() if node.role == role]

    def node(self, name: str) -> NodeState:
        try:
            return self.nodes[name]
        except KeyError:
            known = ", ".join(self.nodes) or "none"
            raise OneboxDirError(f"no node {name!r} in {self.data_dir} (nodes: {known})") from None


def _proc_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        # Right after exec the kernel shows an empty command line for a moment (seen with java):
        # look again briefly rather than call a starting node dead.
        for _ in range(CMDLINE_RETRIES):
            if raw:
                break
            time.sleep(CMDLINE_RETRY_S)
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The state letter follows the parenthesised command name; a zombie has exited already.
    state_letter = status.rpartition(")")[2].split()[0:1]
    if state_letter in (["Z"], ["X"]):
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def node_is_running(node: NodeState) -> bool:
    """True when the node's recorded pid is alive and still runs that node's command line."""
    if node.pid is None:
        return False
    if not Path("/proc").is_dir():  # no procfs: fall back to "some process has this pid"
        try:
            os.kill(node.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False
        return True
    cmdline = _proc_cmdline(node.pid)
    return cmdline is not None and str(node.config) in cmdline
