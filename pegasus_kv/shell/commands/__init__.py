"""Every shell command, grouped by module: basic, cluster/meta, tables, app envs, data, scans."""

from __future__ import annotations

from pegasus_kv.shell.commands import basic, cluster, data, envs, scans, tables
from pegasus_kv.shell.commands.base import Command

ALL_COMMANDS: tuple[Command, ...] = (
    *basic.COMMANDS,
    *cluster.COMMANDS,
    *tables.COMMANDS,
    *envs.COMMANDS,
    *data.COMMANDS,
    *scans.COMMANDS,
)

__all__ = ["ALL_COMMANDS", "Command"]
