"""Every shell command, grouped by module: basic, cluster/meta, tables, app envs, data, scans."""

from __future__ import annotations

import dataclasses

from pegasus_kv.shell.commands import basic, cluster, data, envs, scans, tables
from pegasus_kv.shell.commands.base import Command


def _on_a_table(command: Command) -> Command:
    """Data, scan and app-env commands run on the current table, or the one `--table` names."""
    return dataclasses.replace(command, spec=dataclasses.replace(command.spec, uses_table=True))


ALL_COMMANDS: tuple[Command, ...] = (
    *basic.COMMANDS,
    *cluster.COMMANDS,
    *tables.COMMANDS,
    *(_on_a_table(command) for command in envs.COMMANDS),
    *(_on_a_table(command) for command in data.COMMANDS),
    *(_on_a_table(command) for command in scans.COMMANDS),
)

__all__ = ["ALL_COMMANDS", "Command"]
