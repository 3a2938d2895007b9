"""The admin shell's command layer: parse one line, check the role, run the command, say how it went.

The SSH layer (ssh_server.py, interactive.py) owns one Shell per session and calls `execute` once
per command line with an Output of its channel. Everything here is independent of SSH: tests drive
`execute` in-process with a CollectingOutput.

Exit statuses (the contract with the SSH layer, helper-notes/SHELL_CONTRACT.md):
0 ok; 1 the command failed (a cluster error, "error: <CODE>: message"); 2 usage error (unknown
command, bad arguments, no table selected); 3 permission denied (a readonly key ran a command that
changes the cluster: refused before anything is sent). Ctrl-C cancels the task running execute:
asyncio.CancelledError propagates once the command has closed what it held (scanners).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

from pegasus_kv.client import Client
from pegasus_kv.core.errors import PegasusError
from pegasus_kv.shell.commands import ALL_COMMANDS
from pegasus_kv.shell.commands.base import Command, CommandFailed, Context, SessionState
from pegasus_kv.shell.output import Output, OutputTooLargeError
from pegasus_kv.shell.parsing import CommandSpec, ParsedArgs, UsageError, check, is_blank, tokenize
from pegasus_kv.shell.roles import Role

__all__ = ["Outcome", "Output", "Shell"]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DENIED = 3

# Seconds `refresh_tables` may take before completion keeps its old list.
REFRESH_TABLES_TIMEOUT_S = 3.0
# An audit summary is one line; a long error message is cut to this.
MAX_SUMMARY_CHARS = 300


@dataclass(frozen=True)
class Outcome:
    exit_status: int  # 0 ok; 1 failed; 2 usage error; 3 permission denied
    summary: str  # one line for the audit log: "ok", "usage: ...", "error: <CODE>: ...", "denied: ..."
    exit_requested: bool = False  # `exit` / `quit`


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_SUMMARY_CHARS else line[: MAX_SUMMARY_CHARS - 3] + "..."


class Shell:
    """One admin session: its role, its current table, and every command."""

    def __init__(self, client: Client, *, role: Role, cluster_name: str) -> None:
        check(isinstance(role, Role), f"role must be a Role, got {role!r}")
        self._client = client
        self.role = role
        self.cluster_name = cluster_name
        self._state = SessionState()
        self._commands: dict[str, Command] = {}
        self._specs: dict[str, CommandSpec] = {}
        for command in ALL_COMMANDS:
            for name in (command.spec.name, *command.spec.aliases):
                check(name not in self._commands, f"command {name!r} defined twice")
                self._commands[name] = command
            self._specs[command.spec.name] = command.spec

    # --- what the SSH layer shows --------------------------------------------------------------

    @property
    def prompt(self) -> str:
        table = f" [{self._state.table_name}]" if self._state.table_name else ""
        return f"pegasus-kv {self.cluster_name}{table} >>> "

    @property
    def current_table(self) -> str | None:
        return self._state.table_name

    def command_names(self) -> list[str]:
        """Every command name and alias, sorted."""
        return sorted(self._commands)

    def is_read_only(self, command_name: str) -> bool:
        """True when the command changes nothing (a readonly key may run it). Unknown: False."""
        command = self._commands.get(command_name)
        return command is not None and not command.spec.mutates

    def spec(self, command_name: str) -> CommandSpec | None:
        command = self._commands.get(command_name)
        return command.spec if command is not None else None

    async def refresh_tables(self) -> None:
        """Cache the table names for completion. Never raises (a failure keeps the old list)."""
        try:
            tables = await self._client.list_tables(timeout=REFRESH_TABLES_TIMEOUT_S)
        except Exception as error:  # completion is a convenience: it must never break a session
            logger.debug("refresh_tables: %s", error)
            return
        self._state.remember_tables([table.name for table in tables])

    # --- running a line --------------------------------------------------------------------------

    async def execute(self, line: str, out: Output) -> Outcome:
        """Parse and run one command line. Never raises for bad input or cluster errors;
        asyncio.CancelledError propagates (after the command released what it held)."""
        if is_blank(line):
            return Outcome(EXIT_OK, "ok")
        try:
            words = tokenize(line)
        except UsageError as error:
            out.error(f"{error.message}\n")
            return Outcome(EXIT_USAGE, _one_line(f"usage: {error.message}"))
        if not words:
            return Outcome(EXIT_OK, "ok")
        name, arguments = words[0], words[1:]
        command = self._commands.get(name)
        if command is None:
            message = f"unknown command {name!r}; type help"
            out.error(message + "\n")
            return Outcome(EXIT_USAGE, _one_line(f"usage: {message}"))
        spec = command.spec
        if spec.mutates and self.role is Role.READONLY:
            message = f"permission denied: {spec.name!r} changes the cluster; key role is readonly"
            out.error(message + "\n")
            return Outcome(EXIT_DENIED, _one_line(f"denied: {message}"))
        try:
            args = spec.parse(arguments)
        except UsageError as error:
            out.error(f"{error.message}\nusage: {spec.usage}\n")
            return Outcome(EXIT_USAGE, _one_line(f"usage: {error.message}"))
        try:
            state = await self._state_for(args)
            await command.run(Context(self._client, out, args, state, self._specs))
        except asyncio.CancelledError:
            raise
        except UsageError as error:
            out.error(f"{error.message}\nusage: {spec.usage}\n" if error.show_usage else f"{error.message}\n")
            return Outcome(EXIT_USAGE, _one_line(f"usage: {error.message}"))
        except PegasusError as error:
            message = f"error: {error.code.name}: {error.message}"
            out.error(message + "\n")
            return Outcome(EXIT_FAILED, _one_line(message))
        except (CommandFailed, OutputTooLargeError) as error:
            message = f"error: {error}"
            out.error(message + "\n")
            return Outcome(EXIT_FAILED, _one_line(message))
        except Exception as error:
            # A bug, not the operator's fault: keep the session alive and say so in one line; the
            # traceback goes to the server's log, never to the operator's terminal.
            logger.exception("shell command %r failed unexpectedly", spec.name)
            message = f"error: INTERNAL: {type(error).__name__}: {error}"
            out.error(message + "\n")
            return Outcome(EXIT_FAILED, _one_line(message))
        if self._state.exit_requested:
            self._state.exit_requested = False
            return Outcome(EXIT_OK, "ok", exit_requested=True)
        return Outcome(EXIT_OK, "ok")

    async def _state_for(self, args: ParsedArgs) -> SessionState:
        """The session's state, or for `--table NAME` a copy naming that table for one command
        (the session's current table stays what `use` chose)."""
        name = args.optional_text("table_override")
        if name is None:
            return self._state
        table = await self._client.open_table(name)
        return dataclasses.replace(self._state, table_name=table.name, table=table)

    # --- completion -----------------------------------------------------------------------------

    def complete(self, line: str, cursor: int) -> list[str]:
        """Candidates (whole words) for the word ending at `cursor`: command names for the first
        word; then the command's option names, and cached table names where it takes a table."""
        before = line[: max(0, min(cursor, len(line)))]
        words = before.split()
        if not words or before[-1:].isspace():
            words.append("")
        current = words[-1]
        if len(words) == 1:
            return sorted({name for name in self._commands if name.startswith(current)})
        command = self._commands.get(words[0])
        if command is None:
            return []
        spec = command.spec
        if current.startswith("-"):
            return sorted({name for name in spec.option_names() if name.startswith(current)})
        previous = words[-2]
        option = spec.option_named(previous) if previous.startswith("-") else None
        if option is not None and option.takes_value:
            return sorted({choice for choice in option.choices if choice.startswith(current)})
        positional = spec.positional_at(words[1:-1])
        if positional is None:
            return []
        if positional.completes_tables:
            return sorted({name for name in self._state.table_names if name.startswith(current)})
        return sorted({choice for choice in positional.choices if choice.startswith(current)})
