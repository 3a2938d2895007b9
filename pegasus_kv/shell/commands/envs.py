"""App envs of the current table (`use TABLE` first, as in Pegasus's shell): get_app_envs,
set_app_envs, del_app_envs, clear_app_envs."""

from __future__ import annotations

from pegasus_kv.shell.commands.base import NO_TABLE_MESSAGE, Command, Context
from pegasus_kv.shell.output import format_table
from pegasus_kv.shell.parsing import CommandSpec, Kind, Option, Positional, UsageError

GROUP = "app envs"
MAX_ENV_ARGUMENTS = 2 * 1024  # KEY VALUE words of one set_app_envs (meta bounds the env count)


def _current(ctx: Context) -> str:
    if ctx.state.table_name is None:
        raise UsageError(NO_TABLE_MESSAGE, show_usage=False)
    return ctx.state.table_name


def _emit_envs(ctx: Context, name: str, envs: dict[str, str], headline: str) -> None:
    rows = [[key, value] for key, value in sorted(envs.items())]
    human = headline + (format_table(["key", "value"], rows) if rows else "(no envs)\n")
    ctx.emit(human, {"app_name": name, "envs": dict(sorted(envs.items()))})


async def run_get_app_envs(ctx: Context) -> None:
    name = _current(ctx)
    envs = await ctx.client.admin.get_app_envs(name)
    _emit_envs(ctx, name, envs, f"envs of {name}:\n")


async def run_set_app_envs(ctx: Context) -> None:
    name = _current(ctx)
    words = ctx.args.texts("pairs")
    if len(words) % 2:
        raise UsageError("set_app_envs takes KEY VALUE pairs; the last key has no value")
    envs: dict[str, str] = {}
    for key, value in zip(words[::2], words[1::2], strict=True):
        if key in envs:
            raise UsageError(f"set_app_envs names {key!r} twice")
        envs[key] = value
    after = await ctx.client.admin.set_app_envs(name, envs)
    _emit_envs(ctx, name, after, f"set app envs of {name} succeed; now:\n")


async def run_del_app_envs(ctx: Context) -> None:
    name = _current(ctx)
    after = await ctx.client.admin.del_app_envs(name, ctx.args.texts("keys"))
    _emit_envs(ctx, name, after, f"del app envs of {name} succeed; now:\n")


async def run_clear_app_envs(ctx: Context) -> None:
    name = _current(ctx)
    clear_all = ctx.args.flag("all")
    prefix = ctx.args.optional_text("prefix")
    if clear_all == (prefix is not None):
        raise UsageError("clear_app_envs takes either --all or --prefix PREFIX")
    if prefix == "":
        raise UsageError("an empty --prefix would clear every env; say --all")
    after = await ctx.client.admin.clear_app_envs(name, prefix or "")
    _emit_envs(ctx, name, after, f"clear app envs of {name} succeed; now:\n")


COMMANDS = (
    Command(
        CommandSpec("get_app_envs", GROUP, "the envs of the current table", prints_data=True),
        run_get_app_envs,
    ),
    Command(
        CommandSpec(
            "set_app_envs",
            GROUP,
            "set envs of the current table",
            positionals=(
                Positional(
                    "KEY VALUE",
                    "pairs",
                    Kind.TEXT,
                    "env keys and their values",
                    repeated=True,
                    max_count=MAX_ENV_ARGUMENTS,
                ),
            ),
            mutates=True,
            prints_data=True,
        ),
        run_set_app_envs,
    ),
    Command(
        CommandSpec(
            "del_app_envs",
            GROUP,
            "delete envs of the current table",
            positionals=(
                Positional("KEY", "keys", Kind.TEXT, "env keys", repeated=True, max_count=MAX_ENV_ARGUMENTS),
            ),
            mutates=True,
            prints_data=True,
        ),
        run_del_app_envs,
    ),
    Command(
        CommandSpec(
            "clear_app_envs",
            GROUP,
            "delete every env of the current table, or those with a prefix",
            options=(
                Option(("-a", "--all"), "all", Kind.FLAG, "clear every env"),
                Option(("-p", "--prefix"), "prefix", Kind.TEXT, "clear the envs whose key starts with it"),
            ),
            mutates=True,
            prints_data=True,
        ),
        run_clear_app_envs,
    ),
)
