"""Table DDL: validate a request against the meta state and say which event it becomes.

Pure functions over a MetaState (the core passes its projected state: the durable one plus the
changes still being persisted, so two concurrent creates of one name cannot both pass). Bad input
raises the typed errors of core/errors.py; nothing here changes any state.

Pegasus semantics: partition counts are powers of two; replica count 1..5; drop is soft (the table
is kept for a hold period and can be recalled); a dropped table gives up its name, so recall may
need a new one.
"""

from __future__ import annotations

from pegasus_kv.core.errors import (
    InvalidArgumentError,
    InvalidStateError,
    TableExistsError,
    TableNotFoundError,
)
from pegasus_kv.core.hashing import is_power_of_two
from pegasus_kv.replication.pacifica.meta_events import (
    AppEnvsChanged,
    TableCreated,
    TableDropped,
    TableRecalled,
    TableRenamed,
)
from pegasus_kv.replication.pacifica.meta_invariants import MAX_REPLICA_COUNT
from pegasus_kv.replication.pacifica.meta_options import MetaOptions
from pegasus_kv.replication.pacifica.meta_requests import (
    ClearAppEnvsRequest,
    CreateTableRequest,
    DelAppEnvsRequest,
    DropTableRequest,
    RecallTableRequest,
    RenameTableRequest,
    SetAppEnvsRequest,
)
from pegasus_kv.replication.pacifica.meta_state import MetaState
from pegasus_kv.replication.pacifica.meta_types import MetaLevel, TableInfo, TableStatus

MAX_TABLE_NAME_LENGTH = 128
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
MAX_ENV_COUNT = 128
MAX_ENV_KEY_LENGTH = 256
MAX_ENV_VALUE_LENGTH = 4096


def check_ddl_allowed(level: MetaLevel) -> None:
    """DDL that changes state needs function level BLIND or above (Pegasus: STOPPED does nothing)."""
    if not level.allows_ddl:
        raise InvalidStateError(f"meta function level is {level.name}: table changes are refused")


def check_table_name(name: str) -> None:
    if not name:
        raise InvalidArgumentError("table name is empty")
    if len(name) > MAX_TABLE_NAME_LENGTH:
        raise InvalidArgumentError(f"table name longer than {MAX_TABLE_NAME_LENGTH} characters")
    bad = sorted(set(name) - _NAME_CHARS)
    if bad:
        raise InvalidArgumentError(f"table name {name!r} has characters outside [A-Za-z0-9_.-]: {bad}")


def check_envs(envs: dict[str, str]) -> None:
    if len(envs) > MAX_ENV_COUNT:
        raise InvalidArgumentError(f"more than {MAX_ENV_COUNT} app envs")
    for key, value in envs.items():
        if not key:
            raise InvalidArgumentError("app env with an empty key")
        if len(key) > MAX_ENV_KEY_LENGTH:
            raise InvalidArgumentError(f"app env key longer than {MAX_ENV_KEY_LENGTH}: {key[:40]!r}...")
        if len(value) > MAX_ENV_VALUE_LENGTH:
            raise InvalidArgumentError(f"app env {key!r}: value longer than {MAX_ENV_VALUE_LENGTH}")


def available_table(state: MetaState, name: str) -> TableInfo:
    table = state.table_by_name(name)
    if table is None:
        raise TableNotFoundError(f"no table named {name!r}")
    return table


def plan_create(
    state: MetaState, options: MetaOptions, request: CreateTableRequest, now_tick: int
) -> TableCreated | TableInfo:
    """The TableCreated event, or the existing table when success_if_exist allows it."""
    check_table_name(request.name)
    if not is_power_of_two(request.partition_count):
        raise InvalidArgumentError(f"partition count {request.partition_count} is not a power of two")
    if request.partition_count > options.max_partition_count:
        raise InvalidArgumentError(
            f"partition count {request.partition_count} over the limit {options.max_partition_count}"
        )
    if not 1 <= request.replica_count <= MAX_REPLICA_COUNT:
        raise InvalidArgumentError(f"replica count {request.replica_count} outside 1..{MAX_REPLICA_COUNT}")
    check_envs(request.envs)
    existing = state.table_by_name(request.name)
    if existing is not None:
        same_shape = (
            existing.partition_count == request.partition_count
            and existing.replica_count == request.replica_count
        )
        if request.success_if_exist and same_shape:
            return existing
        raise TableExistsError(
            f"table {request.name!r} exists (app id {existing.app_id}, "
            f"{existing.partition_count} partitions, {existing.replica_count} replicas)"
        )
    if len(state.tables()) >= options.max_table_count:
        raise InvalidStateError(f"the cluster holds {options.max_table_count} tables (the limit)")
    return TableCreated(
        app_id=state.next_app_id,
        name=request.name,
        partition_count=request.partition_count,
        replica_count=request.replica_count,
        envs=dict(request.envs),
        create_tick=now_tick,
    )


def plan_drop(
    state: MetaState, options: MetaOptions, request: DropTableRequest, now_tick: int
) -> TableDropped:
    table = available_table(state, request.name)
    hold_ticks = options.drop_hold_ticks if request.hold_ticks is None else request.hold_ticks
    if hold_ticks < 0:
        raise InvalidArgumentError(f"negative hold period {hold_ticks}")
    return TableDropped(app_id=table.app_id, drop_tick=now_tick, expire_tick=now_tick + hold_ticks)


def plan_recall(state: MetaState, request: RecallTableRequest) -> TableRecalled:
    table = state.table(request.app_id)
    if table is None:
        raise TableNotFoundError(f"no table with app id {request.app_id} (never existed, or purged)")
    if table.status != TableStatus.DROPPED:
        raise InvalidStateError(f"table {table.name!r} (app id {table.app_id}) is not dropped")
    name = request.new_name or table.name
    check_table_name(name)
    if state.table_by_name(name) is not None:
        raise TableExistsError(f"table name {name!r} is taken: recall under a new name")
    return TableRecalled(app_id=table.app_id, name=name)


def plan_rename(state: MetaState, request: RenameTableRequest) -> TableRenamed:
    table = available_table(state, request.old_name)
    check_table_name(request.new_name)
    if request.new_name == request.old_name:
        raise InvalidArgumentError(f"table {request.old_name!r} already has that name")
    if state.table_by_name(request.new_name) is not None:
        raise TableExistsError(f"table name {request.new_name!r} is taken")
    return TableRenamed(app_id=table.app_id, new_name=request.new_name)


def plan_envs(
    state: MetaState, request: SetAppEnvsRequest | DelAppEnvsRequest | ClearAppEnvsRequest
) -> tuple[TableInfo, AppEnvsChanged | None]:
    """The table and its envs change (None when the request changes nothing)."""
    table = available_table(state, request.name)
    envs = dict(table.envs)
    if isinstance(request, SetAppEnvsRequest):
        if not request.envs:
            raise InvalidArgumentError("no app envs to set")
        check_envs(request.envs)
        envs.update(request.envs)
    elif isinstance(request, DelAppEnvsRequest):
        if not request.keys:
            raise InvalidArgumentError("no app env keys to delete")
        for key in request.keys:
            envs.pop(key, None)
    else:
        envs = {key: value for key, value in envs.items() if not key.startswith(request.prefix)}
    check_envs(envs)
    if envs == table.envs:
        return table, None
    return table, AppEnvsChanged(app_id=table.app_id, envs=envs)
