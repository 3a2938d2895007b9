"""Requests to the meta server from clients and the admin shell (wire type ids 250-289).

Table DDL (create, drop, recall, rename, app envs), queries (list tables, a table's partition
configuration, nodes) and the function level. Failures come back as core.messages.ErrorReply with
an ErrorCode (TABLE_NOT_FOUND, TABLE_EXISTS, INVALID_ARGUMENT, INVALID_STATE ...).

Periods are in meta ticks (the runtime converts the seconds an operator types). Strings and lists
carry decode-time bounds; the semantic limits (name characters, env sizes) are checked by
meta_ddl.py so that a request over them gets a typed error instead of a codec error.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from pegasus_kv.core.registry import Message, message
from pegasus_kv.replication.pacifica.config import PartitionConfiguration
from pegasus_kv.replication.pacifica.meta_types import MetaLevel, NodeInfo, TableInfo

# Decode-time bounds (generous; meta_ddl.py holds the real limits).
Name = Annotated[str, msgspec.Meta(max_length=1024)]
EnvText = Annotated[str, msgspec.Meta(max_length=65536)]
Envs = Annotated[dict[EnvText, EnvText], msgspec.Meta(max_length=4096)]
EnvKeys = Annotated[list[EnvText], msgspec.Meta(max_length=4096)]


@message
class CreateTableRequest(Message, tag=250):
    name: Name
    partition_count: int
    replica_count: int = 3
    envs: Envs = msgspec.field(default_factory=dict)
    # Pegasus `create ... success_if_exist`: an existing table with the same name and shape is a
    # success (returns its app id) instead of TABLE_EXISTS.
    success_if_exist: bool = False


@message
class CreateTableResponse(Message, tag=251):
    app_id: int
    partition_count: int


@message
class DropTableRequest(Message, tag=252):
    name: Name
    # How long the dropped table is kept for recall; None = the meta option drop_hold_ticks.
    hold_ticks: int | None = None


@message
class DropTableResponse(Message, tag=253):
    app_id: int
    expire_tick: int


@message
class RecallTableRequest(Message, tag=254):
    app_id: int
    # Empty: recall under the old name (TABLE_EXISTS if another table took it meanwhile).
    new_name: Name = ""


@message
class RecallTableResponse(Message, tag=255):
    app_id: int
    name: str


@message
class RenameTableRequest(Message, tag=256):
    old_name: Name
    new_name: Name


@message
class RenameTableResponse(Message, tag=257):
    app_id: int


@message
class ListTablesRequest(Message, tag=258):
    include_dropped: bool = False


@message
class ListTablesResponse(Message, tag=259):
    tables: list[TableInfo]


@message
class QueryConfigRequest(Message, tag=260):
    """What a client asks to route requests: the partition configurations of a table."""

    name: Name


@message
class QueryConfigResponse(Message, tag=261):
    app_id: int
    partition_count: int
    replica_count: int
    configs: list[PartitionConfiguration]


@message
class SetAppEnvsRequest(Message, tag=262):
    name: Name
    envs: Envs


@message
class DelAppEnvsRequest(Message, tag=263):
    name: Name
    keys: EnvKeys


@message
class ClearAppEnvsRequest(Message, tag=264):
    name: Name
    # Only keys starting with this prefix; empty clears every env.
    prefix: EnvText = ""


@message
class AppEnvsResponse(Message, tag=265):
    app_id: int
    envs: dict[str, str]


@message
class SetMetaLevelRequest(Message, tag=266):
    level: MetaLevel


@message
class GetMetaLevelRequest(Message, tag=267):
    pass


@message
class MetaLevelResponse(Message, tag=268):
    # The level the operator set (durable) and the one meta acts at now (FREEZED while too few
    # nodes are alive, if that is lower).
    level: MetaLevel
    effective_level: MetaLevel


@message
class ListNodesRequest(Message, tag=269):
    pass


@message
class ListNodesResponse(Message, tag=270):
    nodes: list[NodeInfo]
