"""The durable meta state: a pure fold of the meta event log (DESIGN.md section 5).

`MetaState.apply(event)` is the only way it changes. It checks each event against the state before
folding it (the configuration step through meta_transitions.next_configuration, table names, app
ids) and raises MetaInvariantError on one that does not fit: that is a bug or a corrupt log, never
an operating error. `snapshot()` is the fold so far as a msgspec Struct (for log compaction: store
it, then replay only the events after `event_count`); `MetaState.restore(snapshot)` rebuilds it.

Readers (the core, queries) use the accessors; the returned records are immutable.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import msgspec

from pegasus_kv.core.hashing import is_power_of_two
from pegasus_kv.core.ids import Gpid
from pegasus_kv.replication.pacifica.config import ConfigType, NodeAddress, PartitionConfiguration
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
from pegasus_kv.replication.pacifica.meta_invariants import (
    MAX_REPLICA_COUNT,
    MetaInvariantError,
    check_configuration,
    invariant,
)
from pegasus_kv.replication.pacifica.meta_transitions import (
    TransitionError,
    next_configuration,
    same_group,
)
from pegasus_kv.replication.pacifica.meta_types import MetaLevel, TableInfo, TableStatus


class PartitionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A partition's configuration and the change that produced it.

    The last change matters after a restart: a group with no primary whose last change was a
    DOWNGRADE_TO_SECONDARY still waits for the old primary to confirm it stepped down (cure.py).
    """

    config: PartitionConfiguration
    last_change: ConfigType | None = None
    last_change_node: NodeAddress = ""


class MetaSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The fold of the first `event_count` events of the meta log."""

    level: MetaLevel
    next_app_id: int
    event_count: int
    tables: list[TableInfo]
    partitions: list[PartitionRecord]


_SNAPSHOT_ENCODER = msgspec.msgpack.Encoder()
_SNAPSHOT_DECODER = msgspec.msgpack.Decoder(MetaSnapshot)


def encode_snapshot(snapshot: MetaSnapshot) -> bytes:
    return _SNAPSHOT_ENCODER.encode(snapshot)


def decode_snapshot(data: bytes) -> MetaSnapshot:
    return _SNAPSHOT_DECODER.decode(data)


class MetaState:
    """Tables, partition configurations and the function level, as the fold of meta events."""

    def __init__(self) -> None:
        self._level = MetaLevel.STEADY
        self._next_app_id = 1
        self._event_count = 0
        self._tables: dict[int, TableInfo] = {}
        self._app_id_by_name: dict[str, int] = {}  # available tables only
        self._partitions: dict[int, list[PartitionRecord]] = {}
        # Index: the partitions each node is a member (primary or secondary) of.
        self._gpids_by_node: dict[NodeAddress, set[Gpid]] = {}

    # ------------------------------------------------------------------ the fold

    @classmethod
    def from_events(cls, events: Iterable[MetaEvent]) -> MetaState:
        state = cls()
        for event in events:
            state.apply(event)
        return state

    def apply(self, event: MetaEvent) -> None:
        """Fold one event. Raises MetaInvariantError if it does not fit the state."""
        match event:
            case TableCreated():
                self._table_created(event)
            case TableDropped():
                table = self._table_with_status(event.app_id, TableStatus.AVAILABLE)
                invariant(event.expire_tick >= event.drop_tick, f"app {event.app_id}: expires before drop")
                del self._app_id_by_name[table.name]
                self._tables[event.app_id] = msgspec.structs.replace(
                    table,
                    status=TableStatus.DROPPED,
                    drop_tick=event.drop_tick,
                    expire_tick=event.expire_tick,
                )
            case TableRecalled():
                table = self._table_with_status(event.app_id, TableStatus.DROPPED)
                self._check_name_free(event.name)
                self._app_id_by_name[event.name] = event.app_id
                self._tables[event.app_id] = msgspec.structs.replace(
                    table, name=event.name, status=TableStatus.AVAILABLE, drop_tick=-1, expire_tick=-1
                )
            case TableRenamed():
                table = self._table_with_status(event.app_id, TableStatus.AVAILABLE)
                self._check_name_free(event.new_name)
                del self._app_id_by_name[table.name]
                self._app_id_by_name[event.new_name] = event.app_id
                self._tables[event.app_id] = msgspec.structs.replace(table, name=event.new_name)
            case TablePurged():
                self._table_with_status(event.app_id, TableStatus.DROPPED)
                for record in self._partitions[event.app_id]:
                    self._unindex(record.config)
                del self._tables[event.app_id]
                del self._partitions[event.app_id]
            case AppEnvsChanged():
                table = self._table_with_status(event.app_id, TableStatus.AVAILABLE)
                self._tables[event.app_id] = msgspec.structs.replace(table, envs=dict(event.envs))
            case ConfigurationChanged():
                self._configuration_changed(event)
            case MetaLevelChanged():
                self._level = MetaLevel(event.level)
        self._event_count += 1

    def _table_created(self, event: TableCreated) -> None:
        invariant(event.app_id >= self._next_app_id, f"app id {event.app_id} reused")
        invariant(is_power_of_two(event.partition_count), f"partition count {event.partition_count}")
        invariant(
            1 <= event.replica_count <= MAX_REPLICA_COUNT, f"replica count {event.replica_count} out of range"
        )
        self._check_name_free(event.name)
        self._tables[event.app_id] = TableInfo(
            app_id=event.app_id,
            name=event.name,
            status=TableStatus.AVAILABLE,
            partition_count=event.partition_count,
            replica_count=event.replica_count,
            envs=dict(event.envs),
            create_tick=event.create_tick,
        )
        self._app_id_by_name[event.name] = event.app_id
        self._partitions[event.app_id] = [
            PartitionRecord(
                config=PartitionConfiguration(
                    gpid=Gpid(event.app_id, index), ballot=0, max_replica_count=event.replica_count
                )
            )
            for index in range(event.partition_count)
        ]
        self._next_app_id = event.app_id + 1

    def _configuration_changed(self, event: ConfigurationChanged) -> None:
        new = event.config
        gpid = new.gpid
        self._table_with_status(gpid.app_id, TableStatus.AVAILABLE)
        records = self._partitions[gpid.app_id]
        invariant(0 <= gpid.partition_index < len(records), f"{gpid}: no such partition")
        old = records[gpid.partition_index].config
        invariant(new.ballot == old.ballot + 1, f"{gpid}: ballot {new.ballot} does not follow {old.ballot}")
        check_configuration(new)
        try:
            expected = next_configuration(old, event.config_type, event.node)
        except TransitionError as e:
            raise MetaInvariantError(f"{gpid}: logged change does not apply: {e}") from e
        invariant(same_group(expected, new), f"{gpid}: logged configuration {new} is not {expected}")
        self._unindex(old)
        self._index(new)
        records[gpid.partition_index] = PartitionRecord(
            config=new, last_change=event.config_type, last_change_node=event.node
        )

    def _index(self, config: PartitionConfiguration) -> None:
        for node in config.members:
            self._gpids_by_node.setdefault(node, set()).add(config.gpid)

    def _unindex(self, config: PartitionConfiguration) -> None:
        for node in config.members:
            gpids = self._gpids_by_node[node]
            gpids.discard(config.gpid)
            if not gpids:
                del self._gpids_by_node[node]

    def _table_with_status(self, app_id: int, status: TableStatus) -> TableInfo:
        table = self._tables.get(app_id)
        invariant(table is not None, f"app {app_id}: no such table")
        assert table is not None  # for mypy; the invariant above raised otherwise
        invariant(table.status == status, f"app {app_id}: is {table.status.name}, not {status.name}")
        return table

    def _check_name_free(self, name: str) -> None:
        invariant(name not in self._app_id_by_name, f"table name {name!r} already taken")

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> MetaSnapshot:
        return MetaSnapshot(
            level=self._level,
            next_app_id=self._next_app_id,
            event_count=self._event_count,
            tables=[self._tables[app_id] for app_id in sorted(self._tables)],
            partitions=[record for app_id in sorted(self._partitions) for record in self._partitions[app_id]],
        )

    @classmethod
    def restore(cls, snapshot: MetaSnapshot) -> MetaState:
        state = cls()
        state._level = MetaLevel(snapshot.level)
        state._next_app_id = snapshot.next_app_id
        state._event_count = snapshot.event_count
        for table in snapshot.tables:
            invariant(table.app_id < snapshot.next_app_id, f"app {table.app_id} beyond next_app_id")
            state._tables[table.app_id] = table
            state._partitions[table.app_id] = []
            if table.status == TableStatus.AVAILABLE:
                invariant(table.name not in state._app_id_by_name, f"name {table.name!r} twice in snapshot")
                state._app_id_by_name[table.name] = table.app_id
        for record in snapshot.partitions:
            gpid = record.config.gpid
            invariant(gpid.app_id in state._partitions, f"{gpid}: partition of an unknown table")
            records = state._partitions[gpid.app_id]
            invariant(gpid.partition_index == len(records), f"{gpid}: partitions out of order")
            check_configuration(record.config)
            records.append(record)
            state._index(record.config)
        for app_id, table in state._tables.items():
            invariant(
                len(state._partitions[app_id]) == table.partition_count, f"app {app_id}: partitions missing"
            )
        return state

    def copy(self) -> MetaState:
        return MetaState.restore(self.snapshot())

    # ------------------------------------------------------------------ readers

    @property
    def level(self) -> MetaLevel:
        return self._level

    @property
    def next_app_id(self) -> int:
        return self._next_app_id

    @property
    def event_count(self) -> int:
        """How many events this state is the fold of (where replay resumes after a snapshot)."""
        return self._event_count

    def tables(self) -> list[TableInfo]:
        """Every table, available and dropped, by app id."""
        return [self._tables[app_id] for app_id in sorted(self._tables)]

    def table(self, app_id: int) -> TableInfo | None:
        return self._tables.get(app_id)

    def table_by_name(self, name: str) -> TableInfo | None:
        """The AVAILABLE table called `name` (dropped tables keep their name but do not own it)."""
        app_id = self._app_id_by_name.get(name)
        return None if app_id is None else self._tables[app_id]

    def record(self, gpid: Gpid) -> PartitionRecord | None:
        records = self._partitions.get(gpid.app_id)
        if records is None or not 0 <= gpid.partition_index < len(records):
            return None
        return records[gpid.partition_index]

    def config(self, gpid: Gpid) -> PartitionConfiguration | None:
        record = self.record(gpid)
        return None if record is None else record.config

    def configs(self, app_id: int) -> list[PartitionConfiguration]:
        return [record.config for record in self._partitions.get(app_id, [])]

    def records(self) -> Iterator[PartitionRecord]:
        """Every partition of every table (available and dropped), by gpid."""
        for app_id in sorted(self._partitions):
            yield from self._partitions[app_id]

    def gpids_of(self, node: NodeAddress) -> list[Gpid]:
        """The partitions `node` is primary or secondary of (of available and dropped tables)."""
        return sorted(self._gpids_by_node.get(node, ()))

    def nodes(self) -> set[NodeAddress]:
        """Every node named in a configuration, as a member or in last_drops."""
        found: set[NodeAddress] = set()
        for record in self.records():
            found.update(record.config.members)
            found.update(record.config.last_drops)
        return found
