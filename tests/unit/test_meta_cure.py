"""Cure stories: meta brings every partition back to a serving, fully replicated group."""

from __future__ import annotations

import dataclasses
from collections import Counter

from pegasus_kv.core.ids import Gpid
from pegasus_kv.replication.pacifica.config import (
    ConfigType,
    NodeAddress,
    PartitionConfiguration,
    PartitionStatus,
)
from pegasus_kv.replication.pacifica.meta_events import ConfigurationChanged
from pegasus_kv.replication.pacifica.meta_types import MetaLevel

from .meta_harness import N1, N2, N3, N4, TEST_OPTIONS, MetaHarness, proposal_response, replica


def test_a_new_table_gets_a_primary_on_a_live_node_for_every_partition_spread_evenly() -> None:
    meta = MetaHarness((N1, N2, N3, N4))
    app_id = meta.create_table("temp", partition_count=8)
    assert all(c.primary is None for c in meta.configs(app_id))  # nothing before a tick

    meta.advance(1)

    configs = meta.configs(app_id)
    assert all(c.ballot == 1 and c.primary in (N1, N2, N3, N4) and c.secondaries == () for c in configs)
    assert sorted(Counter(c.primary for c in configs).values()) == [2, 2, 2, 2]
    # Each chosen node was told, with the persisted configuration, and nobody else.
    assigned = meta.commands()
    assert {(cmd.config.gpid, cmd.node) for cmd in assigned} == {(c.gpid, c.primary) for c in configs}
    assert all(cmd.config_type == ConfigType.ASSIGN_PRIMARY for cmd in assigned)


def test_primaries_are_only_assigned_to_nodes_that_are_alive() -> None:
    meta = MetaHarness((N1, N2, N3))
    meta.stop(N3)
    meta.advance(7)  # N3 silent for more than grace_ticks: dead
    app_id = meta.create_table("temp", partition_count=4)
    meta.advance(1)
    assert {c.primary for c in meta.configs(app_id)} == {N1, N2}


def test_the_primary_adds_learners_until_the_group_has_replica_count_members() -> None:
    meta = MetaHarness((N1, N2, N3))
    app_id = meta.create_table("temp", partition_count=2)
    meta.advance(1)

    # A fresh partition has nobody to wait for: the primary is asked for a learner at once.
    meta.advance(1)
    asks = [cmd for cmd in meta.commands() if cmd.config_type == ConfigType.ADD_SECONDARY]
    assert len(asks) == 2
    for cmd in asks:
        assert cmd.node != cmd.config.primary
        assert meta.commands(to=cmd.config.primary)  # sent to the primary that teaches it

    meta.fill_groups(app_id)
    for config in meta.configs(app_id):
        assert len(config.members) == 3
        assert len(set(config.members)) == 3


def test_an_unanswered_learner_request_is_sent_again_until_it_times_out() -> None:
    """ConfigCommands are fire-and-forget: a lost ADD_SECONDARY must not leave the group short (and a
    sole primary unwritable) for the whole add_secondary_timeout."""
    options = dataclasses.replace(TEST_OPTIONS, learner_resend_ticks=5, add_secondary_timeout_ticks=30)
    meta = MetaHarness((N1, N2, N3), options=options)
    app_id = meta.create_table("temp", partition_count=1)
    meta.advance(2)
    first = [c for c in meta.commands() if c.config_type == ConfigType.ADD_SECONDARY]
    assert len(first) == 1
    learner, primary = first[0].node, first[0].config.primary

    # Nobody learns (the command was lost): the same request goes to the same primary every 5 ticks.
    meta.advance(12)
    again = [c for c in meta.commands() if c.config_type == ConfigType.ADD_SECONDARY]
    assert 3 <= len(again) <= 4
    assert {(c.node, c.config.primary) for c in again} == {(learner, primary)}

    # The timeout still counts from the first request: then cure may choose afresh.
    gpid = meta.configs(app_id)[0].gpid
    request = meta.core._book.learner_requests[gpid]
    assert request.tick < request.last_sent_tick


def test_a_dead_primary_is_replaced_by_its_best_secondary_with_ballot_plus_one_after_the_grace() -> None:
    meta = MetaHarness((N1, N2, N3))
    app_id = meta.create_table("temp", partition_count=1)
    meta.fill_groups(app_id)
    gpid = Gpid(app_id, 0)
    before = meta.config(gpid)
    old_primary = before.primary
    assert old_primary is not None
    behind, ahead = before.secondaries
    meta.sync(behind, replica(gpid, before.ballot, last_committed_decree=40))
    meta.sync(ahead, replica(gpid, before.ballot, last_committed_decree=42))

    meta.stop(old_primary)
    silent_since = meta.tick
    # Its lease (4 ticks) lapses first; meta waits for the longer grace (6) before acting.
    meta.advance(6)
    assert meta.config(gpid).primary == old_primary
    meta.advance(1)

    after = meta.config(gpid)
    assert meta.tick - silent_since == 7 > meta.options.grace_ticks > meta.options.lease_ticks
    assert after.primary == ahead  # the secondary with the highest last committed decree
    assert after.ballot == before.ballot + 1
    assert old_primary not in after.members and after.last_drops[-1] == old_primary
    promote = meta.commands(to=ahead)[-1]
    assert promote.config_type == ConfigType.UPGRADE_TO_PRIMARY and promote.config == after


def test_a_dead_secondary_is_dropped_and_replaced_after_waiting_for_it_to_come_back() -> None:
    meta = MetaHarness((N1, N2, N3, N4))
    app_id = meta.create_table("temp", partition_count=1, replica_count=3)
    meta.fill_groups(app_id)
    gpid = Gpid(app_id, 0)
    config = meta.config(gpid)
    victim = config.secondaries[0]
    spare = next(n for n in (N1, N2, N3, N4) if n not in config.members)

    meta.stop(victim)
    meta.advance(7)
    dropped = meta.config(gpid)
    assert victim not in dropped.members and dropped.last_drops[-1] == victim
    assert dropped.ballot == config.ballot + 1
    tell_primary = meta.commands(to=config.primary)[-1]
    assert tell_primary.config_type == ConfigType.DOWNGRADE_TO_INACTIVE and tell_primary.node == victim

    # The group is short, but the dropped node may come back: no learner before the wait, which
    # runs from the first tick cure sees the shorter group (the one after the drop).
    asks_before = len(meta.commands())
    meta.advance(1)
    shortage_seen = meta.tick
    meta.advance(meta.options.add_secondary_wait_ticks - 1)
    assert [c for c in meta.commands()[asks_before:] if c.config_type == ConfigType.ADD_SECONDARY] == []
    meta.advance(1)
    asks = [c for c in meta.commands()[asks_before:] if c.config_type == ConfigType.ADD_SECONDARY]
    assert meta.tick - shortage_seen == meta.options.add_secondary_wait_ticks
    assert [(c.node, c.config.primary) for c in asks] == [(spare, config.primary)]


def test_a_dropped_secondary_that_comes_back_is_added_again_without_waiting() -> None:
    meta = MetaHarness((N1, N2, N3, N4))
    app_id = meta.create_table("temp", partition_count=1)
    meta.fill_groups(app_id)
    gpid = Gpid(app_id, 0)
    victim = meta.config(gpid).secondaries[0]
    meta.stop(victim)
    meta.advance(7)
    assert victim not in meta.config(gpid).members

    # It restarts: beacons are refused until it resyncs, then it is the preferred learner.
    meta.up.add(victim)
    assert meta.beacon(victim).alive is False
    meta.sync(victim, replica(gpid, meta.config(gpid).ballot - 1, PartitionStatus.INACTIVE))
    asks_before = len(meta.commands())
    meta.advance(1)
    asks = [c for c in meta.commands()[asks_before:] if c.config_type == ConfigType.ADD_SECONDARY]
    assert [c.node for c in asks] == [victim]


def test_the_primary_upgrades_its_learner_to_secondary() -> None:
    meta = MetaHarness((N1, N2, N3))
    app_id = meta.create_table("temp", partition_count=1)
    meta.advance(2)
    gpid = Gpid(app_id, 0)
    ask = next(c for c in meta.commands() if c.config_type == ConfigType.ADD_SECONDARY)
    current = meta.config(gpid)

    token, _ = meta.propose(current, ConfigType.UPGRADE_TO_SECONDARY, ask.node)

    response = proposal_response(meta, token)
    assert response.accepted
    assert response.config.secondaries == (ask.node,)
    assert response.config.ballot == current.ballot + 1
    assert meta.config(gpid) == response.config


def test_all_replicas_down_then_back_recovers_on_the_last_member_and_never_recreates_empty() -> None:
    # Four nodes, so that one stays alive and meta does not freeze itself (see test_meta_levels).
    meta = MetaHarness((N1, N2, N3, N4))
    app_id = meta.create_table("temp", partition_count=1, replica_count=3)
    meta.fill_groups(app_id)
    gpid = Gpid(app_id, 0)
    first = meta.config(gpid)
    primary = first.primary
    assert primary is not None
    s1, s2 = first.secondaries

    # The secondaries die first: the primary keeps going alone and commits more writes.
    meta.stop(s1)
    meta.stop(s2)
    meta.advance(8)
    assert meta.config(gpid).members == (primary,)
    # Then the last member dies: the group becomes empty; the primary is the newest drop.
    meta.stop(primary)
    meta.advance(7)
    empty = meta.config(gpid)
    assert empty.members == () and empty.last_drops[-1] == primary and empty.ballot > 0

    # The earlier members come back first, even with a replica: they may miss the primary's
    # solo writes, so meta waits and never hands the partition to them (nor to an empty replica).
    for node in (s1, s2):
        meta.up.add(node)
        meta.sync(node, replica(gpid, first.ballot, PartitionStatus.INACTIVE, last_committed_decree=99))
    meta.advance(5)
    assert meta.config(gpid).members == ()

    # The last member returns and reports its replica: it becomes primary again.
    meta.up.add(primary)
    meta.sync(primary, replica(gpid, empty.ballot - 1, PartitionStatus.INACTIVE, last_committed_decree=50))
    meta.advance(1)
    recovered = meta.config(gpid)
    assert recovered.primary == primary and recovered.ballot == empty.ballot + 1
    assert meta.commands(to=primary)[-1].config_type == ConfigType.ASSIGN_PRIMARY
    # Then the group is refilled through learners.
    meta.fill_groups(app_id)
    assert len(meta.config(gpid).members) == 3


def test_when_every_member_dies_at_once_the_first_to_come_back_takes_over() -> None:
    meta = MetaHarness((N1, N2, N3, N4))  # the fourth node stays up: meta does not freeze
    app_id = meta.create_table("temp", partition_count=1)
    meta.fill_groups(app_id)
    gpid = Gpid(app_id, 0)
    config = meta.config(gpid)
    for node in config.members:
        meta.stop(node)
    meta.advance(10)
    assert meta.core.effective_level == MetaLevel.STEADY
    # Nobody to promote, and the members hold the data: the configuration waits untouched, and
    # no learner is added (there is no live primary to teach it).
    assert meta.config(gpid) == config

    comeback = config.secondaries[1]
    meta.up.add(comeback)
    meta.sync(comeback, replica(gpid, config.ballot))
    meta.advance(1)
    after = meta.config(gpid)
    assert after.primary == comeback and after.ballot == config.ballot + 1


def test_every_logged_configuration_change_moves_the_ballot_by_exactly_one() -> None:
    meta = MetaHarness((N1, N2, N3, N4))
    app_id = meta.create_table("temp", partition_count=4)
    meta.fill_groups(app_id)
    meta.stop(N2)
    meta.advance(20)
    ballots: dict[Gpid, int] = {}
    for event in meta.store:
        if isinstance(event, ConfigurationChanged):
            gpid = event.config.gpid
            assert event.config.ballot == ballots.get(gpid, 0) + 1
            ballots[gpid] = event.config.ballot
    assert all(N2 not in c.members for c in meta.configs(app_id))


def test_a_primary_that_restarted_within_the_grace_is_replaced_when_it_reports_its_replica_inactive() -> None:
    meta = MetaHarness((N1, N2, N3))
    app_id = meta.create_table("temp", partition_count=1)
    meta.fill_groups(app_id)
    gpid = Gpid(app_id, 0)
    before = meta.config(gpid)
    assert before.primary is not None
    # The process restarted: its replica came back INACTIVE under the same ballot, and the replica
    # core never takes its role back under a ballot it already holds. Meta must move on.
    meta.sync(before.primary, replica(gpid, before.ballot, PartitionStatus.INACTIVE, last_committed_decree=9))
    meta.advance(1)
    after = meta.config(gpid)
    assert after.primary in before.secondaries and after.ballot == before.ballot + 1
    # The old primary is alive with its data: it comes back as a learner at once.
    meta.advance(1)
    asks = [c for c in meta.commands() if c.config_type == ConfigType.ADD_SECONDARY]
    assert asks[-1].node == before.primary


def test_a_whole_group_restarted_at_once_gets_a_new_primary_under_a_higher_ballot() -> None:
    meta = MetaHarness((N1, N2, N3))
    app_id = meta.create_table("temp", partition_count=1)
    meta.fill_groups(app_id)
    gpid = Gpid(app_id, 0)
    before = meta.config(gpid)
    for node in before.members:
        meta.sync(node, replica(gpid, before.ballot, PartitionStatus.INACTIVE))
    meta.advance(1)
    after = meta.config(gpid)
    assert after.primary in before.secondaries and after.ballot == before.ballot + 1
    # The other secondary restarted too, but under the old ballot: it simply adopts the new one.
    meta.advance(1)
    assert meta.config(gpid).secondaries == after.secondaries


def test_a_sole_primary_that_restarted_is_made_primary_again_under_a_higher_ballot() -> None:
    meta = MetaHarness((N1, N2))
    app_id = meta.create_table("temp", partition_count=1, replica_count=1)
    meta.advance(1)
    gpid = Gpid(app_id, 0)
    before = meta.config(gpid)
    assert before.primary is not None
    meta.sync(before.primary, replica(gpid, before.ballot, PartitionStatus.INACTIVE, last_committed_decree=5))
    meta.advance(2)
    after = meta.config(gpid)
    assert after.primary == before.primary and after.ballot == before.ballot + 2
    assert [c.config_type for c in meta.commands(to=before.primary)][-1] == ConfigType.ASSIGN_PRIMARY
    assert after.last_committed_decree == 5  # so the node opens its data instead of starting empty


def test_a_restarted_primary_whose_secondaries_are_dead_steps_down_then_is_promoted() -> None:
    meta = MetaHarness((N1, N2, N3, N4))
    app_id = meta.create_table("temp", partition_count=1)
    meta.fill_groups(app_id)
    gpid = Gpid(app_id, 0)
    before = meta.config(gpid)
    primary = before.primary
    assert primary is not None
    for node in before.secondaries:
        meta.stop(node)
    meta.stop(primary)
    meta.advance(8)
    assert meta.config(gpid) == before  # everyone dead: wait

    meta.up.add(primary)
    meta.sync(primary, replica(gpid, before.ballot, PartitionStatus.INACTIVE))
    meta.advance(1)
    stepped_down = meta.config(gpid)
    assert stepped_down.primary is None and primary in stepped_down.secondaries
    meta.advance(1)
    promoted = meta.config(gpid)
    assert promoted.primary == primary and promoted.ballot == before.ballot + 2


def test_a_replica_in_error_is_dropped_and_never_promoted() -> None:
    meta = MetaHarness((N1, N2, N3))
    app_id = meta.create_table("temp", partition_count=1)
    meta.fill_groups(app_id)
    gpid = Gpid(app_id, 0)
    before = meta.config(gpid)
    assert before.primary is not None
    broken, healthy = before.secondaries
    meta.sync(broken, replica(gpid, before.ballot, PartitionStatus.ERROR, last_committed_decree=99))
    meta.sync(healthy, replica(gpid, before.ballot, last_committed_decree=1))
    meta.stop(before.primary)
    meta.advance(7)
    after = meta.config(gpid)
    # The broken one reported the highest decree, but a replica in ERROR takes no new role.
    assert after.primary == healthy
    meta.advance(1)
    assert broken not in meta.config(gpid).members


def lost_learner_request_after_a_rolling_restart() -> tuple[
    MetaHarness, Gpid, PartitionConfiguration, NodeAddress, NodeAddress
]:
    """A rolling restart gone wrong: both secondaries stop and are dropped, leaving the primary the
    sole member; then the primary stops too, and a secondary comes back before meta notices: meta
    asks the (down) primary to take it as a learner, and that ADD_SECONDARY is lost with it.
    Returns the harness, the partition, its configuration with the primary alone, the primary and
    the secondary that came back."""
    meta = MetaHarness((N1, N2, N3, N4))  # the fourth node stays up: meta does not freeze
    app_id = meta.create_table("temp", partition_count=1, replica_count=3)
    meta.fill_groups(app_id)
    gpid = Gpid(app_id, 0)
    first = meta.config(gpid)
    primary = first.primary
    assert primary is not None
    back_first = first.secondaries[0]
    for node in first.secondaries:
        meta.stop(node)
    meta.advance(8)
    alone = meta.config(gpid)
    assert alone.members == (primary,)
    meta.stop(primary)
    meta.up.add(back_first)
    meta.sync(back_first, replica(gpid, first.ballot, PartitionStatus.INACTIVE, last_committed_decree=9))
    meta.advance(1)
    lost = meta.commands(to=primary)[-1]
    assert lost.config_type == ConfigType.ADD_SECONDARY and lost.node == back_first
    return meta, gpid, alone, primary, back_first


def test_a_primary_made_primary_again_is_asked_for_its_learner_again_at_once() -> None:
    """A learner request belongs to one primary incarnation: an ADD_SECONDARY that went to the
    primary before meta knew it was down (lost with it) must not stand in for asking the restarted
    primary, which holds no learner sessions, until the request is re-sent or times out."""
    meta, gpid, _alone, primary, _back_first = lost_learner_request_after_a_rolling_restart()
    meta.advance(7)
    empty = meta.config(gpid)
    assert empty.members == () and empty.last_drops[-1] == primary

    # The primary restarts and is made primary again under a new ballot: its new incarnation is asked
    # for a learner within a tick or two, not only when the lost request is re-sent.
    meta.up.add(primary)
    meta.sync(primary, replica(gpid, empty.ballot - 1, PartitionStatus.INACTIVE, last_committed_decree=20))
    meta.advance(1)
    recovered = meta.config(gpid)
    assert recovered.primary == primary and recovered.ballot == empty.ballot + 1
    since = meta.tick
    meta.advance(2)
    asks = [
        c for c in meta.commands(to=primary, since_tick=since) if c.config_type == ConfigType.ADD_SECONDARY
    ]
    assert asks and asks[0].config.ballot == recovered.ballot


def test_a_primary_that_restarted_unnoticed_is_asked_for_its_learner_again_once_it_syncs() -> None:
    """The primary restarts within the grace, so meta never drops it, but the ADD_SECONDARY sent while
    it was down is lost. Its config sync shows its replica is no longer acting as primary (it holds
    no learner sessions): meta asks it again instead of waiting for the lost request."""
    meta, gpid, alone, primary, back_first = lost_learner_request_after_a_rolling_restart()

    # Within the grace the primary is back. Its replica reopened INACTIVE under the last ballot its
    # log holds (older than meta's) and takes its role back from the configuration meta syncs.
    meta.up.add(primary)
    meta.sync(primary, replica(gpid, alone.ballot - 1, PartitionStatus.INACTIVE, last_committed_decree=20))
    since = meta.tick + 1
    meta.advance(2)
    asks = [
        c for c in meta.commands(to=primary, since_tick=since) if c.config_type == ConfigType.ADD_SECONDARY
    ]
    assert asks and asks[0].config.primary == primary and asks[0].node == back_first
