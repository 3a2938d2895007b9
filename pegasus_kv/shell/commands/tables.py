"""Table commands: ls, app, create, drop, recall, rename (Pegasus's names and options).

Meta times are ticks counted from the Unix epoch; `tick_ms` from cluster_info turns them into
clock times for people, and `drop --hold-seconds` into the ticks meta takes.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter

from pegasus_kv.core.errors import TableNotFoundError
from pegasus_kv.replication.meta.handlers import PartitionHealth, partition_health
from pegasus_kv.replication.pacifica.config import PartitionConfiguration
from pegasus_kv.replication.pacifica.meta_types import TableInfo, TableStatus
from pegasus_kv.shell.commands.base import Command, Context
from pegasus_kv.shell.commands.common import unix_time_text
from pegasus_kv.shell.output import format_fields, format_table
from pegasus_kv.shell.parsing import CommandSpec, Kind, Option, Positional, UsageError

GROUP = "tables"

# Pegasus's shell defaults for `create`.
DEFAULT_PARTITION_COUNT = 4
DEFAULT_REPLICA_COUNT = 3
MAX_PARTITION_COUNT = 65_536
# `create` waits this long for every partition to get a primary (Pegasus's shell waits too).
CREATE_WAIT_S = 30.0
CREATE_POLL_S = 0.25
MAX_HOLD_SECONDS = 10 * 365 * 24 * 3600


async def _tick_ms(ctx: Context) -> int:
    info = await ctx.client.admin.cluster_info()
    return info.tick_ms


def _tick_time(tick: int, tick_ms: int) -> str:
    return unix_time_text(tick * tick_ms / 1000) if tick >= 0 else "-"


def _tick_seconds(tick: int, tick_ms: int) -> float | None:
    return tick * tick_ms / 1000 if tick >= 0 else None


def health_counts(configs: list[PartitionConfiguration]) -> dict[str, int]:
    """Pegasus's `ls -d` columns: fully healthy, unhealthy (anything less), write unhealthy (fewer
    members than a majority, or no primary), read unhealthy (no primary)."""
    health = Counter(partition_health(config) for config in configs)
    unreadable = health[PartitionHealth.UNREADABLE]
    return {
        "fully_healthy": health[PartitionHealth.HEALTHY],
        "unhealthy": len(configs) - health[PartitionHealth.HEALTHY],
        "write_unhealthy": health[PartitionHealth.UNWRITABLE] + unreadable,
        "read_unhealthy": unreadable,
    }


def _status(table: TableInfo) -> str:
    return table.status.name.lower()


async def run_ls(ctx: Context) -> None:
    include_dropped = ctx.args.flag("all")
    detailed = ctx.args.flag("detailed")
    tables = await ctx.client.list_tables(include_dropped=include_dropped)
    tables.sort(key=lambda table: table.app_id)
    ctx.state.remember_tables([table.name for table in tables if table.status is TableStatus.AVAILABLE])
    tick_ms = await _tick_ms(ctx)
    health: dict[int, dict[str, int]] = {}
    if detailed:
        for table in tables:
            if table.status is TableStatus.AVAILABLE:
                config = await ctx.client.admin.query_config(table.name)
                health[table.app_id] = health_counts(list(config.configs))
    headers = ["app_id", "status", "app_name", "partition_count", "replica_count", "create_time"]
    if include_dropped:
        headers += ["drop_time", "expire_time"]
    headers.append("envs_count")
    if detailed:
        headers += ["fully_healthy", "unhealthy", "write_unhealthy", "read_unhealthy"]
    rows = []
    documents = []
    for table in tables:
        row = [
            str(table.app_id),
            _status(table),
            table.name,
            str(table.partition_count),
            str(table.replica_count),
            _tick_time(table.create_tick, tick_ms),
        ]
        if include_dropped:
            row += [_tick_time(table.drop_tick, tick_ms), _tick_time(table.expire_tick, tick_ms)]
        row.append(str(len(table.envs)))
        document: dict[str, object] = {
            "app_id": table.app_id,
            "status": _status(table),
            "app_name": table.name,
            "partition_count": table.partition_count,
            "replica_count": table.replica_count,
            "create_time": _tick_seconds(table.create_tick, tick_ms),
            "drop_time": _tick_seconds(table.drop_tick, tick_ms),
            "expire_time": _tick_seconds(table.expire_tick, tick_ms),
            "envs_count": len(table.envs),
        }
        if detailed:
            counts = health.get(table.app_id)
            row += [str(counts[name]) if counts else "-" for name in headers[-4:]]
            document["health"] = counts
        rows.append(row)
        documents.append(document)
    ctx.emit(format_table(headers, rows) + f"\n{len(tables)} tables\n", {"tables": documents})


async def _table_info(ctx: Context, name: str) -> TableInfo:
    """The table of that name: the available one, else the most recently dropped one."""
    tables = [table for table in await ctx.client.list_tables(include_dropped=True) if table.name == name]
    if not tables:
        raise TableNotFoundError(f"no table {name!r}")
    tables.sort(key=lambda table: (table.status is TableStatus.AVAILABLE, table.app_id))
    return tables[-1]


async def run_app(ctx: Context) -> None:
    name = ctx.args.text("table")
    detailed = ctx.args.flag("detailed")
    table = await _table_info(ctx, name)
    tick_ms = await _tick_ms(ctx)
    envs_text = ",".join(f"{key}={value}" for key, value in sorted(table.envs.items())) or "-"
    fields = [
        ("app_name", table.name),
        ("app_id", str(table.app_id)),
        ("status", _status(table)),
        ("partition_count", str(table.partition_count)),
        ("replica_count", str(table.replica_count)),
        ("create_time", _tick_time(table.create_tick, tick_ms)),
    ]
    document: dict[str, object] = {
        "app_name": table.name,
        "app_id": table.app_id,
        "status": _status(table),
        "partition_count": table.partition_count,
        "replica_count": table.replica_count,
        "create_time": _tick_seconds(table.create_tick, tick_ms),
        "envs": dict(table.envs),
    }
    if table.status is TableStatus.DROPPED:
        fields += [
            ("drop_time", _tick_time(table.drop_tick, tick_ms)),
            ("expire_time", _tick_time(table.expire_tick, tick_ms)),
        ]
        document["drop_time"] = _tick_seconds(table.drop_tick, tick_ms)
        document["expire_time"] = _tick_seconds(table.expire_tick, tick_ms)
    fields.append(("envs", envs_text))
    human = [format_fields(fields)]
    if table.status is TableStatus.AVAILABLE:
        reply = await ctx.client.admin.query_config(table.name)
        configs = sorted(reply.configs, key=lambda config: config.gpid.partition_index)
        counts = health_counts(configs)
        document["health"] = counts
        human.append("\n" + format_fields([(key, str(value)) for key, value in counts.items()]))
        if detailed:
            human.append("\n" + _partitions_table(configs) + "\n" + _nodes_table(configs))
            document["partitions"] = [_partition_document(config) for config in configs]
            document["nodes"] = _node_documents(configs)
    ctx.emit("".join(human), document)


def _partition_document(config: PartitionConfiguration) -> dict[str, object]:
    return {
        "pidx": config.gpid.partition_index,
        "ballot": config.ballot,
        "replica_count": len(config.members),
        "max_replica_count": config.max_replica_count,
        "primary": config.primary,
        "secondaries": list(config.secondaries),
        "last_committed_decree": config.last_committed_decree,
        "health": partition_health(config).value,
    }


def _partitions_table(configs: list[PartitionConfiguration]) -> str:
    headers = ["pidx", "ballot", "replica_count", "primary", "secondaries", "last_committed_decree", "health"]
    rows = [
        [
            str(config.gpid.partition_index),
            str(config.ballot),
            f"{len(config.members)}/{config.max_replica_count}",
            config.primary or "-",
            ",".join(config.secondaries) or "-",
            str(config.last_committed_decree),
            partition_health(config).value,
        ]
        for config in configs
    ]
    return format_table(headers, rows)


def _node_documents(configs: list[PartitionConfiguration]) -> list[dict[str, object]]:
    primaries: Counter[str] = Counter()
    secondaries: Counter[str] = Counter()
    for config in configs:
        if config.primary:
            primaries[config.primary] += 1
        secondaries.update(config.secondaries)
    nodes = sorted(set(primaries) | set(secondaries))
    return [
        {
            "node": node,
            "primary": primaries[node],
            "secondary": secondaries[node],
            "total": primaries[node] + secondaries[node],
        }
        for node in nodes
    ]


def _nodes_table(configs: list[PartitionConfiguration]) -> str:
    rows = [
        [str(node["node"]), str(node["primary"]), str(node["secondary"]), str(node["total"])]
        for node in _node_documents(configs)
    ]
    return format_table(["node", "primary", "secondary", "total"], rows)


def parse_envs(text: str) -> dict[str, str]:
    """Pegasus's `-e k1=v1,k2=v2`."""
    envs: dict[str, str] = {}
    for item in text.split(","):
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or not key:
            raise UsageError(f"-e takes KEY=VALUE[,KEY=VALUE...], not {item!r}")
        if key in envs:
            raise UsageError(f"-e names {key!r} twice")
        envs[key] = value.strip()
    return envs


async def _wait_until_readable(ctx: Context, name: str) -> bool:
    """Poll until every partition of the new table has a primary (True), or CREATE_WAIT_S passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CREATE_WAIT_S
    while True:
        reply = await ctx.client.admin.query_config(name)
        if reply.configs and all(config.primary is not None for config in reply.configs):
            return True
        if loop.time() >= deadline:
            return False
        ctx.out.progress(f"create: waiting for the partitions of {name} to get a primary")
        await asyncio.sleep(CREATE_POLL_S)


async def run_create(ctx: Context) -> None:
    args = ctx.args
    name = args.text("table")
    envs = parse_envs(args.text("envs")) if args.has("envs") else {}
    partition_count = args.integer("partition_count", DEFAULT_PARTITION_COUNT)
    app_id = await ctx.client.create_table(
        name, partition_count, args.integer("replica_count", DEFAULT_REPLICA_COUNT), envs
    )
    ready = await _wait_until_readable(ctx, name)
    ctx.state.remember_tables([*ctx.state.table_names, name])
    note = "" if ready else f"; not every partition has a primary after {CREATE_WAIT_S:.0f} s"
    ctx.emit(
        f"create app {name} succeed, app_id {app_id}, {partition_count} partitions{note}\n",
        {"app_name": name, "app_id": app_id, "partition_count": partition_count, "ready": ready},
    )


async def run_drop(ctx: Context) -> None:
    name = ctx.args.text("table")
    hold_seconds = ctx.args.optional_integer("hold_seconds")
    tick_ms = await _tick_ms(ctx)
    hold_ticks = None if hold_seconds is None else math.ceil(hold_seconds * 1000 / tick_ms)
    reply = await ctx.client.drop_table(name, hold_ticks=hold_ticks)
    if ctx.state.table_name == name:
        ctx.state.table_name = None
        ctx.state.table = None
    ctx.state.remember_tables([table for table in ctx.state.table_names if table != name])
    ctx.emit(
        f"drop app {name} succeed, app_id {reply.app_id}; recallable until "
        f"{_tick_time(reply.expire_tick, tick_ms)} UTC (recall {reply.app_id})\n",
        {
            "app_name": name,
            "app_id": reply.app_id,
            "expire_tick": reply.expire_tick,
            "expire_time": _tick_seconds(reply.expire_tick, tick_ms),
        },
    )


async def run_recall(ctx: Context) -> None:
    reply = await ctx.client.recall_table(ctx.args.integer("app_id"), ctx.args.text("new_name", ""))
    ctx.state.remember_tables([*ctx.state.table_names, reply.name])
    ctx.emit(
        f"recall app {reply.app_id} succeed, name {reply.name}\n",
        {"app_id": reply.app_id, "app_name": reply.name},
    )


async def run_rename(ctx: Context) -> None:
    old_name, new_name = ctx.args.text("old_name"), ctx.args.text("new_name")
    await ctx.client.admin.rename_table(old_name, new_name)
    ctx.state.remember_tables([new_name, *(name for name in ctx.state.table_names if name != old_name)])
    if ctx.state.table_name == old_name:
        # The data commands follow the table under its new name.
        ctx.state.table = await ctx.client.open_table(new_name)
        ctx.state.table_name = new_name
    ctx.out.write(f"rename app {old_name} to {new_name} succeed\n")


TABLE = Positional("TABLE", "table", Kind.TEXT, "a table name", completes_tables=True)

COMMANDS = (
    Command(
        CommandSpec(
            "ls",
            GROUP,
            "list the tables",
            options=(
                Option(("-a", "--all"), "all", Kind.FLAG, "include dropped tables (recallable)"),
                Option(("-d", "--detailed"), "detailed", Kind.FLAG, "add partition health per table"),
            ),
            prints_data=True,
        ),
        run_ls,
    ),
    Command(
        CommandSpec(
            "app",
            GROUP,
            "one table: its settings and health; -d: every partition and node",
            positionals=(TABLE,),
            options=(Option(("-d", "--detailed"), "detailed", Kind.FLAG, "list partitions and nodes"),),
            prints_data=True,
        ),
        run_app,
    ),
    Command(
        CommandSpec(
            "create",
            GROUP,
            "create a table and wait until its partitions have a primary",
            positionals=(Positional("TABLE", "table", Kind.TEXT, "the new table's name"),),
            options=(
                Option(
                    ("-p", "--partition_count"),
                    "partition_count",
                    Kind.INT,
                    f"partitions, a power of two (default {DEFAULT_PARTITION_COUNT})",
                    metavar="N",
                    minimum=1,
                    maximum=MAX_PARTITION_COUNT,
                ),
                Option(
                    ("-r", "--replica_count"),
                    "replica_count",
                    Kind.INT,
                    f"replicas per partition (default {DEFAULT_REPLICA_COUNT})",
                    metavar="N",
                    minimum=1,
                    maximum=5,
                ),
                Option(("-e", "--envs"), "envs", Kind.TEXT, "app envs", metavar="K=V[,K=V...]"),
            ),
            mutates=True,
            prints_data=True,
        ),
        run_create,
    ),
    Command(
        CommandSpec(
            "drop",
            GROUP,
            "drop a table; it stays recallable for the hold period",
            positionals=(TABLE,),
            options=(
                Option(
                    ("--hold-seconds", "-r", "--reserve_seconds"),
                    "hold_seconds",
                    Kind.INT,
                    "keep it recallable this long (default: meta's hold period)",
                    metavar="S",
                    minimum=0,
                    maximum=MAX_HOLD_SECONDS,
                ),
            ),
            mutates=True,
            prints_data=True,
        ),
        run_drop,
    ),
    Command(
        CommandSpec(
            "recall",
            GROUP,
            "undo the drop of a table, by its app id",
            positionals=(
                Positional(
                    "APP_ID",
                    "app_id",
                    Kind.INT,
                    "the dropped table's app id (ls -a)",
                    minimum=1,
                    maximum=2**31 - 1,
                ),
                Positional("NEW_NAME", "new_name", Kind.TEXT, "recall it under this name", required=False),
            ),
            mutates=True,
            prints_data=True,
        ),
        run_recall,
    ),
    Command(
        CommandSpec(
            "rename",
            GROUP,
            "rename a table",
            positionals=(
                Positional("OLD_NAME", "old_name", Kind.TEXT, "the table's name", completes_tables=True),
                Positional("NEW_NAME", "new_name", Kind.TEXT, "its new name"),
            ),
            mutates=True,
        ),
        run_rename,
    ),
)
