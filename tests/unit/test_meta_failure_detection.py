"""Failure detection by ticks: leases, grace, and what a dead or restarted node goes through."""

from __future__ import annotations

import pytest

from pegasus_kv.core.errors import InvalidArgumentError
from pegasus_kv.core.ids import Gpid
from pegasus_kv.replication.pacifica.config import ConfigType, PartitionStatus
from pegasus_kv.replication.pacifica.meta_options import MetaOptions
from pegasus_kv.replication.pacifica.meta_types import NodeLiveness

from .meta_harness import N1, N2, N3, N4, MetaHarness, replica


def test_grace_must_be_longer_than_the_lease_and_beacons_more_frequent_than_it() -> None:
    with pytest.raises(InvalidArgumentError, match="grace_ticks"):
        MetaOptions(lease_ticks=200, grace_ticks=200)
    with pytest.raises(InvalidArgumentError, match="beacon_interval_ticks"):
        MetaOptions(beacon_interval_ticks=200, lease_ticks=200, grace_ticks=220)
    with pytest.raises(InvalidArgumentError, match="min_live_node_count"):
        MetaOptions(min_live_node_count=0)
    assert MetaOptions().grace_ticks > MetaOptions().lease_ticks


def test_a_node_is_alive_while_it_beacons_within_the_grace_period() -> None:
    meta = MetaHarness((N1, N2))
    meta.stop(N2)
    meta.advance(meta.options.grace_ticks)
    assert meta.core.liveness(N2) == NodeLiveness.ALIVE  # silent for exactly grace ticks: still alive
    meta.advance(1)
    assert meta.core.liveness(N2) == NodeLiveness.DEAD
    assert meta.core.liveness(N1) == NodeLiveness.ALIVE


def test_a_dead_node_is_refused_a_lease_until_it_resyncs() -> None:
    meta = MetaHarness((N1, N2))
    meta.stop(N2)
    meta.advance(7)
    assert meta.beacon(N2, resync=False).alive is False
    assert meta.beacon(N2, resync=False).alive is False  # beacons alone do not bring it back
    meta.sync(N2)
    reply = meta.beacon(N2, resync=False)
    assert reply.alive is True and reply.sent_tick == meta.tick
    assert meta.core.liveness(N2) == NodeLiveness.ALIVE


def test_a_new_node_gets_its_first_lease_only_after_a_config_sync() -> None:
    meta = MetaHarness((N1,))
    assert meta.beacon(N4, resync=False).alive is False
    assert meta.core.liveness(N4) == NodeLiveness.PENDING
    meta.sync(N4)
    assert meta.beacon(N4, resync=False).alive is True


def test_a_node_that_still_claims_a_primary_it_lost_gets_no_lease_until_it_learns() -> None:
    meta = MetaHarness((N1, N2, N3))
    app_id = meta.create_table("temp", partition_count=1)
    meta.fill_groups(app_id)
    gpid = Gpid(app_id, 0)
    old = meta.config(gpid)
    assert old.primary is not None
    meta.stop(old.primary)
    meta.advance(8)
    assert meta.config(gpid).primary != old.primary

    # Partitioned away, it still believes it is primary under the old ballot.
    meta.up.add(old.primary)
    answer = meta.sync(old.primary, replica(gpid, old.ballot, PartitionStatus.PRIMARY))
    assert meta.core.liveness(old.primary) == NodeLiveness.DEAD
    assert meta.beacon(old.primary, resync=False).alive is False
    assert answer.configs == []  # what tells it that it is no longer a member
    # Having applied the answer, it reports the replica inactive and is welcome back.
    meta.sync(old.primary, replica(gpid, old.ballot, PartitionStatus.INACTIVE))
    assert meta.core.liveness(old.primary) == NodeLiveness.ALIVE
    assert meta.beacon(old.primary, resync=False).alive is True


def test_a_dead_node_is_not_revived_while_a_change_about_its_partitions_is_being_persisted() -> None:
    meta = MetaHarness((N1, N2, N3))
    app_id = meta.create_table("temp", partition_count=1)
    meta.fill_groups(app_id)
    gpid = Gpid(app_id, 0)
    primary = meta.config(gpid).primary
    assert primary is not None
    meta.stop(primary)
    meta.auto_persist = False
    meta.advance(7)  # declared dead; its replacement is decided but not yet durable
    assert meta.core.has_pending_change(gpid)

    # Revived now, it would read the old configuration (naming it primary) and get a lease.
    answer = meta.sync(primary, replica(gpid, meta.config(gpid).ballot, PartitionStatus.INACTIVE))
    assert meta.core.liveness(primary) == NodeLiveness.DEAD
    assert meta.beacon(primary, resync=False).alive is False
    assert [c.primary for c in answer.configs] == [primary]  # durable state only, and no lease

    meta.persist()
    answer = meta.sync(primary, replica(gpid, meta.config(gpid).ballot - 1, PartitionStatus.INACTIVE))
    assert meta.core.liveness(primary) == NodeLiveness.ALIVE
    assert answer.configs == []  # it is no longer a member of anything
    assert meta.config(gpid).primary != primary


def test_config_sync_answers_with_durable_memberships_and_garbage() -> None:
    meta = MetaHarness((N1, N2, N3, N4))
    app_id = meta.create_table("temp", partition_count=2)
    meta.fill_groups(app_id)
    member_of = {c.gpid for c in meta.configs(app_id) if N1 in c.members}
    outsider_of = [c.gpid for c in meta.configs(app_id) if N1 not in c.members]

    answer = meta.sync(
        N1,
        *(replica(g, meta.config(g).ballot) for g in member_of),
        *(replica(g, 1, PartitionStatus.INACTIVE) for g in outsider_of),
        replica(Gpid(app_id, 7), 1, PartitionStatus.INACTIVE),  # beyond the partition count
        # An app id meta never handed out: kept, since meta may be the one that lost its data.
        replica(Gpid(99, 0), 3, PartitionStatus.SECONDARY),
    )
    assert {c.gpid for c in answer.configs} == member_of
    assert sorted(answer.gc_gpids) == sorted([*outsider_of, Gpid(app_id, 7)])


def test_a_learner_in_progress_is_never_garbage_collected() -> None:
    meta = MetaHarness((N1, N2, N3))
    app_id = meta.create_table("temp", partition_count=1)
    meta.advance(2)
    gpid = Gpid(app_id, 0)
    ask = next(c for c in meta.commands() if c.config_type == ConfigType.ADD_SECONDARY)
    answer = meta.sync(ask.node, replica(gpid, 1, PartitionStatus.POTENTIAL_SECONDARY))
    assert answer.gc_gpids == []
    answer = meta.sync(ask.node, replica(gpid, 1, PartitionStatus.INACTIVE))
    assert answer.gc_gpids == []  # the group is short and meta asked for it there


def test_after_a_meta_restart_every_known_node_gets_a_fresh_grace_period() -> None:
    meta = MetaHarness((N1, N2, N3))
    app_id = meta.create_table("temp", partition_count=2)
    meta.fill_groups(app_id)
    before = meta.configs(app_id)
    meta.advance(5)

    meta.crash_and_restart()
    for node in (N1, N2, N3):
        assert meta.core.liveness(node) == NodeLiveness.PENDING
        assert meta.beacon(node, resync=False).alive is False  # no lease before a re-sync
    # Nobody has beaconed the new meta for longer than the old grace would allow: no one dies.
    meta.stop(N3)
    meta.advance(meta.options.grace_ticks)
    assert meta.core.liveness(N1) == NodeLiveness.ALIVE
    assert meta.core.liveness(N3) == NodeLiveness.PENDING
    assert meta.configs(app_id) == before
    # A node that stays silent through the fresh grace is declared dead, and cured.
    meta.advance(1)
    assert meta.core.liveness(N3) == NodeLiveness.DEAD
    meta.advance(1)
    assert all(N3 not in c.members for c in meta.configs(app_id))


def test_unknown_nodes_beyond_the_limit_are_refused() -> None:
    options = MetaOptions(
        beacon_interval_ticks=1, lease_ticks=4, grace_ticks=6, min_live_node_count=1, max_node_count=3
    )
    meta = MetaHarness((N1, N2, N3), options=options)
    assert meta.beacon(N4, resync=False).alive is False
    meta.sync(N4)
    assert meta.beacon(N4, resync=False).alive is False
    assert meta.core.liveness(N4) is None
