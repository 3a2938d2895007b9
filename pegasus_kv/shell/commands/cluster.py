"""Cluster and meta commands: cluster_info, nodes, get_meta_level, set_meta_level, balance, propose.

`balance` and `propose` hand one configuration change to meta (Pegasus's names and options). Meta
may refuse it (the partition is not in the state the change needs, meta's level is too low ...):
the shell prints the answer and exits 1 with the reason, so scripts notice.
"""

from __future__ import annotations

from pegasus_kv.client.admin import OperatorProposalResult
from pegasus_kv.core.errors import InvalidArgumentError
from pegasus_kv.core.ids import Gpid
from pegasus_kv.replication.pacifica.config import PartitionConfiguration
from pegasus_kv.replication.pacifica.meta_types import MetaLevel, NodeLiveness
from pegasus_kv.replication.pacifica.operator_messages import PROPOSABLE_BY_OPERATOR, BalanceKind
from pegasus_kv.replication.transport import parse_address
from pegasus_kv.shell.commands.base import Command, CommandFailed, Context
from pegasus_kv.shell.output import format_fields, format_table
from pegasus_kv.shell.parsing import CommandSpec, Kind, Option, ParsedArgs, Positional, UsageError

GROUP_CLUSTER = "cluster"
GROUP_META = "meta"

LEVEL_NAMES = tuple(level.name.lower() for level in MetaLevel)
BALANCE_KINDS = tuple(kind.name.lower() for kind in BalanceKind)
PROPOSE_TYPES = tuple(config_type.name.lower() for config_type in PROPOSABLE_BY_OPERATOR)


async def run_cluster_info(ctx: Context) -> None:
    info = await ctx.client.admin.cluster_info()
    level = info.level.name.lower()
    effective = info.effective_level.name.lower()
    fields = [
        ("cluster_name", info.cluster_name),
        ("meta_servers", ",".join(info.meta_servers)),
        ("primary_meta_server", info.leader),
        ("meta_function_level", level if level == effective else f"{level} (acting as {effective})"),
        ("tick_ms", str(info.tick_ms)),
        ("table_count", str(info.table_count)),
        ("dropped_table_count", str(info.dropped_table_count)),
        ("alive_node_count", str(info.alive_node_count)),
        ("pending_node_count", str(info.pending_node_count)),
        ("dead_node_count", str(info.dead_node_count)),
        ("partition_count", str(info.partition_count)),
        ("healthy_partition_count", str(info.healthy_partition_count)),
        ("writable_ill_partition_count", str(info.writable_ill_partition_count)),
        ("unwritable_partition_count", str(info.unwritable_partition_count)),
        ("unreadable_partition_count", str(info.unreadable_partition_count)),
    ]
    document = {
        "cluster_name": info.cluster_name,
        "meta_servers": list(info.meta_servers),
        "primary_meta_server": info.leader,
        "meta_function_level": level,
        "effective_meta_function_level": effective,
        "tick_ms": info.tick_ms,
        "table_count": info.table_count,
        "dropped_table_count": info.dropped_table_count,
        "alive_node_count": info.alive_node_count,
        "pending_node_count": info.pending_node_count,
        "dead_node_count": info.dead_node_count,
        "partition_count": info.partition_count,
        "healthy_partition_count": info.healthy_partition_count,
        "writable_ill_partition_count": info.writable_ill_partition_count,
        "unwritable_partition_count": info.unwritable_partition_count,
        "unreadable_partition_count": info.unreadable_partition_count,
    }
    ctx.emit(format_fields(fields), document)


def _liveness(liveness: NodeLiveness) -> str:
    return {NodeLiveness.ALIVE: "alive", NodeLiveness.PENDING: "pending", NodeLiveness.DEAD: "unalive"}[
        liveness
    ]


async def run_nodes(ctx: Context) -> None:
    detailed = ctx.args.flag("detailed")
    wanted = ctx.args.text("status", "all")
    nodes = sorted(await ctx.client.admin.list_nodes(), key=lambda node: node.address)
    if wanted == "alive":
        nodes = [node for node in nodes if node.liveness is NodeLiveness.ALIVE]
    elif wanted == "unalive":
        nodes = [node for node in nodes if node.liveness is not NodeLiveness.ALIVE]
    headers = ["address", "status"]
    if detailed:
        headers += ["replica_count", "primary_count", "secondary_count"]
    rows = []
    for node in nodes:
        row = [node.address, _liveness(node.liveness)]
        if detailed:
            row += [
                str(node.replica_count),
                str(node.primary_count),
                str(node.replica_count - node.primary_count),
            ]
        rows.append(row)
    alive = sum(1 for node in nodes if node.liveness is NodeLiveness.ALIVE)
    document = {
        "nodes": [
            {
                "address": node.address,
                "status": _liveness(node.liveness),
                "replica_count": node.replica_count,
                "primary_count": node.primary_count,
                "secondary_count": node.replica_count - node.primary_count,
            }
            for node in nodes
        ]
    }
    summary = f"\n{len(nodes)} nodes, {alive} alive, {len(nodes) - alive} unalive\n"
    ctx.emit(format_table(headers, rows) + summary, document)


async def run_get_meta_level(ctx: Context) -> None:
    reply = await ctx.client.admin.get_meta_level()
    level, effective = reply.level.name.lower(), reply.effective_level.name.lower()
    human = f"{level}\n" if level == effective else f"{level} (acting as {effective}: too few nodes alive)\n"
    ctx.emit(human, {"meta_level": level, "effective_meta_level": effective})


async def run_set_meta_level(ctx: Context) -> None:
    reply = await ctx.client.admin.set_meta_level(ctx.args.text("level"))
    level, effective = reply.level.name.lower(), reply.effective_level.name.lower()
    acting = "" if level == effective else f" (acting as {effective}: too few nodes alive)"
    ctx.emit(
        f"set meta level to {level} succeed{acting}\n",
        {"meta_level": level, "effective_meta_level": effective},
    )


def _gpid(args: ParsedArgs) -> Gpid:
    try:
        return Gpid.parse(args.text("gpid"))
    except ValueError as error:
        raise UsageError(f"-g: {error}") from None


def _address(args: ParsedArgs, dest: str, option: str) -> str:
    address = args.text(dest).strip()
    try:
        parse_address(address)
    except InvalidArgumentError as error:
        raise UsageError(f"{option}: {error.message}") from None
    return address


def _required(args: ParsedArgs, *options: tuple[str, str]) -> None:
    missing = [option for dest, option in options if not args.has(dest)]
    if missing:
        raise UsageError(f"{args.command}: missing {', '.join(missing)}")


def _config_document(config: PartitionConfiguration | None) -> dict[str, object] | None:
    if config is None:
        return None
    return {
        "gpid": str(config.gpid),
        "ballot": config.ballot,
        "primary": config.primary,
        "secondaries": list(config.secondaries),
        "last_committed_decree": config.last_committed_decree,
    }


def _emit_proposal(ctx: Context, what: str, result: OperatorProposalResult) -> None:
    config = result.config
    lines = [f"{what} {'accepted' if result.accepted else 'refused'}: {result.reason}\n"]
    if config is not None:
        lines.append(
            f"partition {config.gpid}: ballot {config.ballot}, primary {config.primary or '-'}, "
            f"secondaries {','.join(config.secondaries) or '-'}\n"
        )
    document = {"accepted": result.accepted, "reason": result.reason, "config": _config_document(config)}
    ctx.emit("".join(lines), document)
    if not result.accepted:
        raise CommandFailed(f"REFUSED: {result.reason}")


async def run_balance(ctx: Context) -> None:
    args = ctx.args
    _required(args, ("gpid", "-g"), ("kind", "-p"), ("from_node", "-f"), ("to_node", "-t"))
    gpid = _gpid(args)
    source, destination = _address(args, "from_node", "-f"), _address(args, "to_node", "-t")
    if source == destination:
        raise UsageError("balance: -f and -t name the same node")
    kind = args.text("kind")
    result = await ctx.client.admin.balance(gpid, kind, source, destination)
    _emit_proposal(ctx, f"balance {kind} of {gpid} from {source} to {destination}", result)


async def run_propose(ctx: Context) -> None:
    args = ctx.args
    _required(args, ("gpid", "-g"), ("config_type", "-p"), ("node", "-n"))
    gpid = _gpid(args)
    node = _address(args, "node", "-n")
    target = _address(args, "target", "-t") if args.has("target") else None
    config_type = args.text("config_type")
    result = await ctx.client.admin.propose(gpid, config_type, node, target=target)
    _emit_proposal(ctx, f"propose {config_type} of {node} on {gpid}", result)


GPID_OPTION = Option(
    ("-g", "--gpid"), "gpid", Kind.TEXT, "the partition, APP_ID.PARTITION_INDEX (required)", metavar="GPID"
)

COMMANDS = (
    Command(
        CommandSpec(
            "cluster_info",
            GROUP_CLUSTER,
            "the meta servers, function level, and health of nodes and partitions",
            prints_data=True,
        ),
        run_cluster_info,
    ),
    Command(
        CommandSpec(
            "nodes",
            GROUP_CLUSTER,
            "the replica servers and whether they are alive; -d: their replicas",
            options=(
                Option(
                    ("-d", "--detailed"), "detailed", Kind.FLAG, "add replica, primary and secondary counts"
                ),
                Option(
                    ("-s", "--status"),
                    "status",
                    Kind.CHOICE,
                    "only nodes in this state",
                    choices=("all", "alive", "unalive"),
                ),
            ),
            prints_data=True,
        ),
        run_nodes,
    ),
    Command(
        CommandSpec("get_meta_level", GROUP_META, "meta's function level", prints_data=True),
        run_get_meta_level,
    ),
    Command(
        CommandSpec(
            "set_meta_level",
            GROUP_META,
            "set meta's function level",
            positionals=(Positional("LEVEL", "level", Kind.CHOICE, "the new level", choices=LEVEL_NAMES),),
            mutates=True,
            prints_data=True,
            description=(
                "stopped: meta changes nothing; blind: DDL only; freezed: DDL and downgrades, no cure;\n"
                "steady (default): cures unhealthy partitions; lively: also balances"
            ),
        ),
        run_set_meta_level,
    ),
    Command(
        CommandSpec(
            "balance",
            GROUP_META,
            "move one replica by hand",
            options=(
                GPID_OPTION,
                Option(
                    ("-p", "--type"), "kind", Kind.CHOICE, "what to move (required)", choices=BALANCE_KINDS
                ),
                Option(
                    ("-f", "--from"),
                    "from_node",
                    Kind.TEXT,
                    "the node it leaves (required)",
                    metavar="HOST:PORT",
                ),
                Option(
                    ("-t", "--to"),
                    "to_node",
                    Kind.TEXT,
                    "the node it goes to (required)",
                    metavar="HOST:PORT",
                ),
            ),
            mutates=True,
            prints_data=True,
            description=(
                "move_pri: the primary role from FROM (the primary) to TO (a secondary), no data copied;\n"
                "copy_pri: the primary's replica to TO outside the group; copy_sec: a secondary's replica\n"
                "to TO outside the group. Accepted means the move started; it completes over meta's\n"
                "next ticks."
            ),
        ),
        run_balance,
    ),
    Command(
        CommandSpec(
            "propose",
            GROUP_META,
            "send a raw configuration change of one partition to meta",
            options=(
                GPID_OPTION,
                Option(
                    ("-p", "--type"),
                    "config_type",
                    Kind.CHOICE,
                    "the change (required)",
                    choices=PROPOSE_TYPES,
                ),
                Option(
                    ("-n", "--node"),
                    "node",
                    Kind.TEXT,
                    "the node the change is about (required)",
                    metavar="HOST:PORT",
                ),
                Option(
                    ("-t", "--target"),
                    "target",
                    Kind.TEXT,
                    "the node the command goes to (checked: the primary, or NODE for assign_primary)",
                    metavar="HOST:PORT",
                ),
            ),
            mutates=True,
            prints_data=True,
        ),
        run_propose,
    ),
)
