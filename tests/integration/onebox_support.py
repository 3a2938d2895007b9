"""Driving `pegasus-kv onebox` from tests: run its commands, find its processes, and never leave one
behind (a test that fails half-way still stops and, at last, kills every node it started)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

START_TIMEOUT_S = 60.0
LEASE_S = 3.0  # onebox's lease; meta declares a silent server dead a grace (4 s) later
FAILOVER_BUDGET_S = 6 * LEASE_S


def onebox(*args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pegasus_kv.cli", "onebox", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def recorded_pids(data_dir: Path) -> list[int]:
    state_file = data_dir / "onebox.json"
    if not state_file.is_file():
        return []
    nodes = json.loads(state_file.read_text())["nodes"]
    return [node["pid"] for node in nodes.values() if node["pid"] is not None]


def is_alive(pid: int) -> bool:
    """Running and not a zombie (onebox's detached servers are reaped by init once they exit)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def kill_leftovers(data_dir: Path) -> None:
    for pid in recorded_pids(data_dir):
        if is_alive(pid):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running_onebox(data_dir: Path, *options: str) -> Iterator[Path]:
    """`onebox start` in data_dir; always stops (and at last kills) every node it recorded."""
    start = ("start", "--data-dir", str(data_dir), "--base-port", "0", *options)
    try:
        started = onebox(*start, timeout_s=START_TIMEOUT_S + 10)
        assert started.returncode == 0, started.stdout + started.stderr
        yield data_dir
    finally:
        try:
            onebox("stop", "--data-dir", str(data_dir))
        finally:
            kill_leftovers(data_dir)  # whatever stop could not end, even after a failed assertion
