"""What every command gets: the client, where to write, its parsed arguments, the session's state.

A command is a spec (parsing.CommandSpec) and an async function of a Context. It reports through
`ctx.out`, and fails by raising: UsageError (exit 2), CommandFailed or a PegasusError (exit 1).
The shell maps those to an Outcome; asyncio.CancelledError passes through untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from pegasus_kv.client import Client, Table
from pegasus_kv.shell.output import Output, json_document
from pegasus_kv.shell.parsing import CommandSpec, ParsedArgs, UsageError

NO_TABLE_MESSAGE = "no table selected; use TABLE"
# Table names kept for completion (a cluster with more tables completes the first ones).
MAX_CACHED_TABLE_NAMES = 10_000


class CommandFailed(Exception):
    """The command could not do its work for a reason of its own (not a cluster error): exit 1."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class SessionState:
    """What one shell session remembers between commands."""

    table_name: str | None = None
    table: Table | None = None
    table_names: tuple[str, ...] = ()  # for completion; refreshed by Shell.refresh_tables and ls
    exit_requested: bool = False

    def remember_tables(self, names: list[str]) -> None:
        self.table_names = tuple(sorted(set(names))[:MAX_CACHED_TABLE_NAMES])


@dataclass
class Context:
    client: Client
    out: Output
    args: ParsedArgs
    state: SessionState
    specs: Mapping[str, CommandSpec] = field(default_factory=dict)  # every command, for `help`

    @property
    def json(self) -> bool:
        return self.args.flag("json")

    def table(self) -> Table:
        """The table chosen by `use`; a usage error when there is none."""
        if self.state.table is None:
            raise UsageError(NO_TABLE_MESSAGE, show_usage=False)
        return self.state.table

    def emit(self, human: str, document: object) -> None:
        """Write the human text, or the JSON document under --json."""
        self.out.write(json_document(document) if self.json else human)


Handler = Callable[[Context], Awaitable[None]]


@dataclass(frozen=True)
class Command:
    spec: CommandSpec
    run: Handler
