"""The shell's promises to the SSH layer, without a cluster: exit statuses, messages, the readonly
role refused before anything is sent, help, and completion of commands, options and table names.

The client here is a stand-in: `Tripwire` fails the test if the shell touches it at all, `Scripted`
answers the few calls a story needs.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from pegasus_kv.client import Client
from pegasus_kv.core.errors import TableNotFoundError
from pegasus_kv.replication.pacifica.meta_types import TableInfo, TableStatus
from pegasus_kv.shell import CollectingOutput, Outcome, Role, Shell

# The commands that change the cluster (a readonly key may run every other one).
MUTATING = {
    "create", "drop", "recall", "rename", "set_app_envs", "del_app_envs", "clear_app_envs",
    "set_meta_level", "balance", "propose", "set", "del", "incr", "multi_set", "multi_del",
    "multi_del_range", "check_and_set", "check_and_mutate",
}  # fmt: skip
READ_ONLY = {
    "help", "version", "exit", "quit", "use", "cluster_info", "nodes", "ls", "app", "get_app_envs",
    "get_meta_level", "hash", "get", "exist", "ttl", "multi_get", "multi_get_range",
    "multi_get_sortkeys", "count", "hash_scan", "full_scan", "count_data",
}  # fmt: skip
# Commands that print no data of their own (only "OK" or help text), so take no --json.
NO_JSON = {"help", "exit", "quit", "use", "set", "del", "multi_set", "rename"}


class Tripwire:
    """A client the shell must not touch."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the shell used client.{name}")


def shell_with(client: object, role: Role = Role.ADMIN) -> Shell:
    return Shell(cast(Client, client), role=role, cluster_name="onebox")


def run(shell: Shell, line: str) -> tuple[Outcome, CollectingOutput]:
    out = CollectingOutput()
    outcome = asyncio.run(shell.execute(line, out))
    return outcome, out


def table_info(name: str, app_id: int) -> TableInfo:
    return TableInfo(
        app_id=app_id,
        name=name,
        status=TableStatus.AVAILABLE,
        partition_count=4,
        replica_count=3,
        envs={},
        create_tick=0,
    )


class Scripted:
    """Answers list_tables with fixed tables and open_table with TABLE_NOT_FOUND (or a hang)."""

    def __init__(self, tables: list[str], *, hang: bool = False) -> None:
        self.tables = tables
        self.hang = hang

    async def list_tables(self, **_: object) -> list[TableInfo]:
        return [table_info(name, app_id) for app_id, name in enumerate(self.tables, 1)]

    async def open_table(self, name: str, **_: object) -> object:
        if self.hang:
            await asyncio.Event().wait()
        raise TableNotFoundError(f"no table named {name!r}")


def test_the_command_set_is_pegasuss_and_each_says_whether_it_changes_the_cluster() -> None:
    shell = shell_with(Tripwire())
    assert set(shell.command_names()) == MUTATING | READ_ONLY
    assert {name for name in shell.command_names() if shell.is_read_only(name)} == READ_ONLY
    assert not shell.is_read_only("no_such_command")


def test_every_command_that_prints_data_takes_json() -> None:
    shell = shell_with(Tripwire())
    for name in shell.command_names():
        spec = shell.spec(name)
        assert spec is not None
        assert ("--json" in spec.option_names()) == (name not in NO_JSON), name


@pytest.mark.parametrize("name", sorted(MUTATING))
def test_a_readonly_key_is_refused_every_change_before_anything_is_sent(name: str) -> None:
    outcome, out = run(shell_with(Tripwire(), Role.READONLY), f"{name} hk sk v")
    assert outcome.exit_status == 3
    message = f"permission denied: '{name}' changes the cluster; key role is readonly"
    assert out.stderr == message + "\n" and out.stdout == ""
    assert outcome.summary == f"denied: {message}"


def test_a_readonly_key_may_still_look_around_and_leave() -> None:
    shell = shell_with(Tripwire(), Role.READONLY)
    assert run(shell, "help")[0].exit_status == 0
    assert run(shell, "version")[0].exit_status == 0
    assert run(shell, "exit") == (Outcome(0, "ok", exit_requested=True), CollectingOutput())
    assert run(shell, "quit")[0].exit_requested


def test_blank_and_comment_lines_do_nothing() -> None:
    shell = shell_with(Tripwire())
    for line in ("", "   ", "# a note", "  # indented note"):
        outcome, out = run(shell, line)
        assert outcome == Outcome(0, "ok") and out == CollectingOutput()


def test_an_unknown_command_is_a_usage_error() -> None:
    outcome, out = run(shell_with(Tripwire()), "sett hk sk v")
    assert outcome.exit_status == 2 and not outcome.exit_requested
    assert out.stderr == "unknown command 'sett'; type help\n"


def test_bad_arguments_get_the_message_and_the_usage_line() -> None:
    shell = shell_with(Tripwire())
    outcome, out = run(shell, "set hk")
    assert outcome.exit_status == 2 and outcome.summary == "usage: set: missing SORT_KEY"
    assert (
        out.stderr
        == "set: missing SORT_KEY\nusage: set HASH_KEY SORT_KEY VALUE [TTL_SECONDS] [--table TABLE]\n"
    )
    outcome, out = run(shell, "get 'unterminated")
    assert outcome.exit_status == 2 and "unterminated quote" in out.stderr
    outcome, out = run(shell, "check_and_mutate hk -t exist set sk")
    assert outcome.exit_status == 2 and "mutation `set` needs SORT_KEY VALUE" in out.stderr


def test_data_commands_need_a_current_table() -> None:
    shell = shell_with(Tripwire())
    for line in ("get hk sk", "set hk sk v", "full_scan", "count_data", "get_app_envs", "set_app_envs k v"):
        outcome, out = run(shell, line)
        assert outcome.exit_status == 2, line
        assert out.stderr == "no table selected; use TABLE\n"


def test_help_lists_every_command_and_explains_one() -> None:
    shell = shell_with(Tripwire())
    outcome, out = run(shell, "help")
    assert outcome.exit_status == 0
    listed = {line.split()[0] for line in out.stdout.splitlines() if line.startswith("  ")}
    assert listed == (MUTATING | READ_ONLY) - {"quit"}  # an alias is named in `help exit`
    outcome, out = run(shell, "help multi_get_range")
    assert out.stdout.startswith("usage: multi_get_range HASH_KEY START_SORT_KEY STOP_SORT_KEY [-a|")
    assert "-y, --sort_key_filter_pattern" in out.stdout
    assert "quit" in run(shell, "help exit")[1].stdout
    assert "not allowed for readonly keys" in run(shell, "help set")[1].stdout
    outcome, out = run(shell, "help nope")
    assert outcome.exit_status == 2 and out.stderr == "unknown command 'nope'; type help\n"


def test_cluster_errors_exit_1_with_their_code() -> None:
    outcome, out = run(shell_with(Scripted([])), "use nope")
    assert outcome == Outcome(1, "error: TABLE_NOT_FOUND: no table named 'nope'")
    assert out.stderr == "error: TABLE_NOT_FOUND: no table named 'nope'\n"


def test_a_bug_in_a_command_is_reported_in_one_line_and_the_session_goes_on() -> None:
    class Broken:
        async def list_tables(self, **_: object) -> list[TableInfo]:
            raise RuntimeError("boom")

    shell = shell_with(Broken())
    outcome, out = run(shell, "ls")
    assert outcome == Outcome(1, "error: INTERNAL: RuntimeError: boom")
    assert "Traceback" not in out.stderr
    assert run(shell, "version")[0].exit_status == 0


def test_cancelling_execute_propagates_cancelled_error() -> None:
    async def story() -> None:
        shell = shell_with(Scripted([], hang=True))
        task = asyncio.create_task(shell.execute("use temp", CollectingOutput()))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(story())


def test_the_prompt_shows_the_cluster() -> None:
    assert shell_with(Tripwire()).prompt == "pegasus-kv onebox >>> "


# --- completion -------------------------------------------------------------------------------


def completer(tables: list[str]) -> Shell:
    shell = shell_with(Scripted(tables))
    asyncio.run(shell.refresh_tables())
    return shell


def test_the_first_word_completes_to_command_names() -> None:
    shell = completer([])
    assert shell.complete("multi_get", 9) == ["multi_get", "multi_get_range", "multi_get_sortkeys"]
    assert shell.complete("", 0) == shell.command_names()
    assert shell.complete("zzz", 3) == []


def test_a_dash_completes_to_the_commands_options() -> None:
    shell = completer([])
    assert shell.complete("nodes -", 7) == ["--detailed", "--json", "--status", "-d", "-s"]
    assert shell.complete("nodes --d", 9) == ["--detailed"]


def test_table_arguments_complete_to_cached_table_names() -> None:
    shell = completer(["temp", "orders", "tasks"])
    assert shell.complete("use t", 5) == ["tasks", "temp"]
    assert shell.complete("app ", 4) == ["orders", "tasks", "temp"]
    assert shell.complete("drop -r 60 o", 12) == ["orders"]  # an option's value is skipped
    assert shell.complete("rename temp ", 12) == []  # the new name is not an existing table
    assert shell.complete("get ", 4) == []  # keys are not tables


def test_choices_complete_where_an_argument_has_them() -> None:
    shell = completer([])
    assert shell.complete("set_meta_level l", 16) == ["lively"]
    assert shell.complete("nodes -s a", 10) == ["alive", "all"]
    assert shell.complete("check_and_set hk -t int_g", 25) == ["int_greater", "int_greater_or_equal"]


def test_completion_looks_only_at_the_text_before_the_cursor() -> None:
    shell = completer(["temp", "orders"])
    assert shell.complete("use te and more", 6) == ["temp"]


def test_refreshing_tables_never_raises() -> None:
    class Down:
        async def list_tables(self, **_: object) -> list[TableInfo]:
            raise ConnectionResetError("meta is down")

    shell = shell_with(Down())
    asyncio.run(shell.refresh_tables())
    assert shell.complete("use ", 4) == []
