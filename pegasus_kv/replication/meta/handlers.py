"""What the meta server answers beside the core, and how it classifies requests and logs events.

- `MAY_CHANGE_STATE`: the request types whose handling may hand the store a batch to persist; the
  server refuses them with BUSY while its persist backlog is full (queries, beacons and config syncs
  persist nothing and are always served).
- `cluster_info`: the ClusterInfoResponse of admin_messages.py, from the core's durable state.
- `partition_health`: Pegasus's health classes of one partition configuration.
- `describe_event`: the one log line each durable meta event gets.
"""

from __future__ import annotations

import enum

from pegasus_kv.core.registry import Message
from pegasus_kv.replication.meta.admin_messages import ClusterInfoResponse
from pegasus_kv.replication.pacifica.config import PartitionConfiguration
from pegasus_kv.replication.pacifica.meta_core import MetaCore
from pegasus_kv.replication.pacifica.meta_events import (
    AppEnvsChanged,
    ConfigurationChanged,
    MetaEvent,
    MetaLevelChanged,
    TableCreated,
    TableDropped,
    TablePurged,
    TableRecalled,
    TableRenamed,
)
from pegasus_kv.replication.pacifica.meta_messages import ConfigProposalRequest
from pegasus_kv.replication.pacifica.meta_requests import (
    ClearAppEnvsRequest,
    CreateTableRequest,
    DelAppEnvsRequest,
    DropTableRequest,
    GetMetaLevelRequest,
    ListNodesRequest,
    RecallTableRequest,
    RenameTableRequest,
    SetAppEnvsRequest,
    SetMetaLevelRequest,
)
from pegasus_kv.replication.pacifica.meta_types import NodeLiveness, TableStatus
from pegasus_kv.replication.pacifica.operator_messages import OperatorProposalRequest

MAY_CHANGE_STATE: tuple[type[Message], ...] = (
    ConfigProposalRequest,
    CreateTableRequest,
    DropTableRequest,
    RecallTableRequest,
    RenameTableRequest,
    SetAppEnvsRequest,
    DelAppEnvsRequest,
    ClearAppEnvsRequest,
    SetMetaLevelRequest,
    OperatorProposalRequest,
)


class PartitionHealth(enum.Enum):
    HEALTHY = "healthy"  # primary and every secondary
    WRITABLE_ILL = "writable_ill"  # primary and a majority, not all
    UNWRITABLE = "unwritable"  # primary, but fewer members than a majority
    UNREADABLE = "unreadable"  # no primary


def partition_health(config: PartitionConfiguration) -> PartitionHealth:
    """Reads need the primary; writes need the primary and a majority of max_replica_count members
    (Pegasus's shell counts write-unhealthy below max_replica_count / 2 + 1)."""
    if config.primary is None:
        return PartitionHealth.UNREADABLE
    members = len(config.members)
    if members >= config.max_replica_count:
        return PartitionHealth.HEALTHY
    if members >= config.max_replica_count // 2 + 1:
        return PartitionHealth.WRITABLE_ILL
    return PartitionHealth.UNWRITABLE


def cluster_info(
    core: MetaCore, *, cluster_name: str, leader: str, meta_servers: list[str], tick_ms: int
) -> ClusterInfoResponse:
    state = core.state
    tables = state.tables()
    available = [table for table in tables if table.status == TableStatus.AVAILABLE]
    health = dict.fromkeys(PartitionHealth, 0)
    for table in available:
        for config in state.configs(table.app_id):
            health[partition_health(config)] += 1
    liveness = dict.fromkeys(NodeLiveness, 0)
    for node in core.list_nodes(ListNodesRequest()).nodes:
        liveness[node.liveness] += 1
    level = core.get_meta_level(GetMetaLevelRequest())
    return ClusterInfoResponse(
        cluster_name=cluster_name,
        leader=leader,
        meta_servers=list(meta_servers),
        tick_ms=tick_ms,
        level=level.level,
        effective_level=level.effective_level,
        table_count=len(available),
        dropped_table_count=len(tables) - len(available),
        alive_node_count=liveness[NodeLiveness.ALIVE],
        pending_node_count=liveness[NodeLiveness.PENDING],
        dead_node_count=liveness[NodeLiveness.DEAD],
        partition_count=sum(health.values()),
        healthy_partition_count=health[PartitionHealth.HEALTHY],
        writable_ill_partition_count=health[PartitionHealth.WRITABLE_ILL],
        unwritable_partition_count=health[PartitionHealth.UNWRITABLE],
        unreadable_partition_count=health[PartitionHealth.UNREADABLE],
    )


def describe_event(event: MetaEvent) -> str:
    match event:
        case ConfigurationChanged():
            config = event.config
            return (
                f"partition {config.gpid} ballot {config.ballot}: {event.config_type.name} {event.node} -> "
                f"primary {config.primary or '-'}, secondaries [{', '.join(config.secondaries)}]"
            )
        case TableCreated():
            return (
                f"table {event.name!r} created: app id {event.app_id}, {event.partition_count} partitions, "
                f"{event.replica_count} replicas"
            )
        case TableDropped():
            return f"table app id {event.app_id} dropped, kept until tick {event.expire_tick}"
        case TableRecalled():
            return f"table app id {event.app_id} recalled as {event.name!r}"
        case TableRenamed():
            return f"table app id {event.app_id} renamed to {event.new_name!r}"
        case TablePurged():
            return f"table app id {event.app_id} purged"
        case AppEnvsChanged():
            return f"table app id {event.app_id} envs are now {sorted(event.envs)}"
        case MetaLevelChanged():
            return f"meta function level set to {event.level.name}"
