"""help, version, exit (quit), use: the commands about the shell itself."""

from __future__ import annotations

from pegasus_kv import __version__
from pegasus_kv.shell.commands.base import Command, Context
from pegasus_kv.shell.output import format_table
from pegasus_kv.shell.parsing import CommandSpec, Kind, Positional, UsageError

GROUP = "basic"
# The order `help` lists groups in; a group not named here comes last.
GROUP_ORDER = ("basic", "cluster", "meta", "tables", "app envs", "data", "scans")


async def run_help(ctx: Context) -> None:
    name = ctx.args.optional_text("command")
    if name is not None:
        spec = ctx.specs.get(name) or next((s for s in ctx.specs.values() if name in s.aliases), None)
        if spec is None:
            raise UsageError(f"unknown command {name!r}; type help", show_usage=False)
        lines = [f"usage: {spec.usage}", "", spec.summary]
        if spec.description:
            lines += ["", spec.description]
        if spec.positionals:
            lines += ["", "arguments:"]
            width = max(len(arg.metavar) for arg in spec.positionals)
            lines += [f"  {arg.metavar.ljust(width)}  {arg.help}" for arg in spec.positionals]
        if spec.all_options:
            lines += ["", "options:"]
            shown = [(", ".join(option.names), option.help) for option in spec.all_options]
            width = max(len(names) for names, _ in shown)
            lines += [f"  {names.ljust(width)}  {text}" for names, text in shown]
        if spec.aliases:
            lines += ["", f"also: {', '.join(spec.aliases)}"]
        if spec.mutates:
            lines += ["", "changes the cluster (not allowed for readonly keys)"]
        ctx.out.write("\n".join(lines) + "\n")
        return
    groups: dict[str, list[CommandSpec]] = {}
    for spec in ctx.specs.values():
        groups.setdefault(spec.group, []).append(spec)
    order = {group: index for index, group in enumerate(GROUP_ORDER)}
    parts = []
    for group in sorted(groups, key=lambda g: (order.get(g, len(order)), g)):
        rows = [[spec.name, spec.summary] for spec in sorted(groups[group], key=lambda s: s.name)]
        lines = format_table(["command", "summary"], rows).splitlines(True)[1:]  # no header line
        parts.append(f"{group}:\n" + "".join("  " + line for line in lines))
    parts.append("type `help COMMAND` for its usage; commands that print data take --json\n")
    ctx.out.write("\n".join(parts))


async def run_version(ctx: Context) -> None:
    ctx.emit(f"pegasus-kv {__version__}\n", {"version": __version__})


async def run_exit(ctx: Context) -> None:
    ctx.state.exit_requested = True


async def run_use(ctx: Context) -> None:
    name = ctx.args.text("table")
    table = await ctx.client.open_table(name)
    ctx.state.table_name = table.name
    ctx.state.table = table
    ctx.out.write(f"OK: current table is {table.name} (app_id {table.app_id})\n")


COMMANDS = (
    Command(
        CommandSpec(
            "help",
            GROUP,
            "list the commands, or show how to use one",
            positionals=(Positional("COMMAND", "command", Kind.TEXT, "a command name", required=False),),
        ),
        run_help,
    ),
    Command(
        CommandSpec("version", GROUP, "the version of pegasus-kv", prints_data=True),
        run_version,
    ),
    Command(CommandSpec("exit", GROUP, "end the session", aliases=("quit",)), run_exit),
    Command(
        CommandSpec(
            "use",
            GROUP,
            "choose the table the data commands work on",
            positionals=(Positional("TABLE", "table", Kind.TEXT, "a table name", completes_tables=True),),
        ),
        run_use,
    ),
)
