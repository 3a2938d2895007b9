"""The meta state is the fold of its event log; snapshots are that fold; bad events are refused."""

from __future__ import annotations

import pytest

from pegasus_kv.core.ids import Gpid
from pegasus_kv.replication.pacifica.config import ConfigType, PartitionConfiguration
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
    decode_event,
    encode_event,
)
from pegasus_kv.replication.pacifica.meta_invariants import MetaInvariantError
from pegasus_kv.replication.pacifica.meta_state import MetaState, decode_snapshot, encode_snapshot
from pegasus_kv.replication.pacifica.meta_transitions import TransitionError, next_configuration
from pegasus_kv.replication.pacifica.meta_types import MetaLevel, TableStatus

from .meta_harness import N1, N2, N3, N4, MetaHarness

G = Gpid(1, 0)


def _created(app_id: int = 1, name: str = "temp", partitions: int = 2) -> TableCreated:
    return TableCreated(
        app_id=app_id, name=name, partition_count=partitions, replica_count=3, envs={}, create_tick=0
    )


def _change(state: MetaState, config_type: ConfigType, node: str, gpid: Gpid = G) -> ConfigurationChanged:
    current = state.config(gpid)
    assert current is not None
    return ConfigurationChanged(
        config=next_configuration(current, config_type, node), config_type=config_type, node=node
    )


def test_a_table_lifecycle_folds_into_the_state() -> None:
    state = MetaState()
    state.apply(_created())
    state.apply(_change(state, ConfigType.ASSIGN_PRIMARY, N1))
    state.apply(_change(state, ConfigType.UPGRADE_TO_SECONDARY, N2))
    state.apply(AppEnvsChanged(app_id=1, envs={"rocksdb.usage_scenario": "bulk_load"}))
    state.apply(TableRenamed(app_id=1, new_name="renamed"))
    state.apply(TableDropped(app_id=1, drop_tick=5, expire_tick=9))
    assert state.table_by_name("renamed") is None
    table = state.table(1)
    assert table is not None and table.status == TableStatus.DROPPED and table.expire_tick == 9
    state.apply(TableRecalled(app_id=1, name="back"))
    back = state.table_by_name("back")
    assert back is not None and back.envs == {"rocksdb.usage_scenario": "bulk_load"}
    config = state.config(G)
    assert config is not None and config.primary == N1 and config.secondaries == (N2,) and config.ballot == 2
    assert state.gpids_of(N2) == [G]
    state.apply(MetaLevelChanged(level=MetaLevel.LIVELY))
    assert state.level == MetaLevel.LIVELY
    assert state.event_count == 8 and state.next_app_id == 2


def test_a_purged_table_is_forgotten_and_its_app_id_never_reused() -> None:
    state = MetaState()
    state.apply(_created())
    state.apply(_change(state, ConfigType.ASSIGN_PRIMARY, N1))
    state.apply(TableDropped(app_id=1, drop_tick=0, expire_tick=0))
    state.apply(TablePurged(app_id=1))
    assert state.tables() == [] and state.config(G) is None and state.gpids_of(N1) == []
    with pytest.raises(MetaInvariantError, match="reused"):
        state.apply(_created(app_id=1))
    state.apply(_created(app_id=2))


def test_snapshot_restore_and_replay_of_the_tail_equals_the_full_fold() -> None:
    meta = MetaHarness((N1, N2, N3, N4))
    app_id = meta.create_table("temp", partition_count=4)
    meta.fill_groups(app_id)
    cut = len(meta.store)
    meta.stop(N2)
    meta.advance(12)
    full = MetaState.from_events(meta.store)

    snapshot = decode_snapshot(encode_snapshot(MetaState.from_events(meta.store[:cut]).snapshot()))
    assert snapshot.event_count == cut
    resumed = MetaState.restore(snapshot)
    for event in meta.store[snapshot.event_count :]:
        resumed.apply(event)
    assert resumed.snapshot() == full.snapshot()
    assert resumed.gpids_of(N1) == full.gpids_of(N1)


def test_every_event_round_trips_through_the_store_codec() -> None:
    config = PartitionConfiguration(gpid=G, ballot=3, primary=N1, secondaries=(N2,), last_drops=(N3,))
    events: list[MetaEvent] = [
        _created(),
        TableDropped(app_id=1, drop_tick=1, expire_tick=2),
        TableRecalled(app_id=1, name="x"),
        TableRenamed(app_id=1, new_name="y"),
        TablePurged(app_id=1),
        AppEnvsChanged(app_id=1, envs={"k": "v"}),
        ConfigurationChanged(config=config, config_type=ConfigType.DOWNGRADE_TO_INACTIVE, node=N3),
        MetaLevelChanged(level=MetaLevel.BLIND),
    ]
    for event in events:
        assert decode_event(encode_event(event)) == event


def test_the_fold_refuses_a_configuration_that_does_not_follow_from_the_last_one() -> None:
    state = MetaState()
    state.apply(_created())
    state.apply(_change(state, ConfigType.ASSIGN_PRIMARY, N1))
    current = state.config(G)
    assert current is not None
    skipped = ConfigurationChanged(
        config=PartitionConfiguration(gpid=G, ballot=current.ballot + 2, primary=N1, secondaries=(N2,)),
        config_type=ConfigType.UPGRADE_TO_SECONDARY,
        node=N2,
    )
    with pytest.raises(MetaInvariantError, match="does not follow"):
        state.apply(skipped)
    unexplained = ConfigurationChanged(
        config=PartitionConfiguration(gpid=G, ballot=current.ballot + 1, primary=N3),
        config_type=ConfigType.UPGRADE_TO_SECONDARY,
        node=N2,
    )
    with pytest.raises(MetaInvariantError, match="is not"):
        state.apply(unexplained)
    twice = ConfigurationChanged(
        config=PartitionConfiguration(gpid=G, ballot=current.ballot + 1, primary=N1, secondaries=(N1,)),
        config_type=ConfigType.UPGRADE_TO_SECONDARY,
        node=N1,
    )
    with pytest.raises(MetaInvariantError, match="primary"):
        state.apply(twice)


def test_transitions_keep_the_group_well_formed() -> None:
    empty = PartitionConfiguration(gpid=G, ballot=0, max_replica_count=2)
    one = next_configuration(empty, ConfigType.ASSIGN_PRIMARY, N1)
    two = next_configuration(one, ConfigType.UPGRADE_TO_SECONDARY, N2)
    with pytest.raises(TransitionError, match="full"):
        next_configuration(two, ConfigType.UPGRADE_TO_SECONDARY, N3)
    with pytest.raises(TransitionError, match="already a member"):
        next_configuration(one, ConfigType.UPGRADE_TO_SECONDARY, N1)
    with pytest.raises(TransitionError, match="empty group"):
        next_configuration(one, ConfigType.ASSIGN_PRIMARY, N2)
    with pytest.raises(TransitionError, match="not a configuration change"):
        next_configuration(one, ConfigType.ADD_SECONDARY, N2)

    promoted = next_configuration(two, ConfigType.UPGRADE_TO_PRIMARY, N2)
    assert (promoted.primary, promoted.secondaries, promoted.last_drops) == (N2, (), (N1,))
    stepped_down = next_configuration(two, ConfigType.DOWNGRADE_TO_SECONDARY, N1)
    assert (stepped_down.primary, stepped_down.secondaries) == (None, (N2, N1))
    # A node coming back into the group leaves last_drops: never both member and dropped.
    back = next_configuration(promoted, ConfigType.UPGRADE_TO_SECONDARY, N1)
    assert back.secondaries == (N1,) and back.last_drops == ()
    assert [c.ballot for c in (empty, one, two, promoted, back)] == [0, 1, 2, 3, 4]


def test_last_drops_is_bounded_and_keeps_the_newest() -> None:
    config = PartitionConfiguration(gpid=G, ballot=0, max_replica_count=5)
    config = next_configuration(config, ConfigType.ASSIGN_PRIMARY, "p:1")
    for i in range(8):
        node = f"s{i}:1"
        config = next_configuration(config, ConfigType.UPGRADE_TO_SECONDARY, node)
        config = next_configuration(config, ConfigType.DOWNGRADE_TO_INACTIVE, node)
    assert config.last_drops == ("s3:1", "s4:1", "s5:1", "s6:1", "s7:1")
