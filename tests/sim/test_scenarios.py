"""Scripted stories on the simulated cluster: a fault placed at the worst moment instead of at a
random one. Each story still runs every invariant checker after every step and the final checks
(acknowledged writes durable, histories linearizable, every partition serving again)."""

from __future__ import annotations

from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.replication.pacifica.config import PartitionStatus
from tests.sim.cluster import Cluster, SimOptions
from tests.sim.replica_server import SimReplicaServer, log_file

GPID = Gpid(1, 0)


def primary_of(cluster: Cluster, gpid: Gpid) -> SimReplicaServer | None:
    for server in cluster.servers.values():
        if any(view.gpid == gpid and view.status is PartitionStatus.PRIMARY for view in server.views()):
            return server
    return None


def full_group_ballot(cluster: Cluster, gpid: Gpid) -> int:
    """The ballot of meta's durable configuration once the group has three members, else 0."""
    core = cluster.meta.core
    config = core.state.config(gpid) if core is not None else None
    return config.ballot if config is not None and len(config.members) == 3 else 0


def test_a_primary_that_lost_its_first_prepare_of_a_ballot_and_came_back_at_once_keeps_decrees_unique() -> (
    None
):
    """The primary sends the first prepare of a new ballot to its secondaries, which make it durable
    and acknowledge it, but the primary's own append is still in its page cache when it loses power.
    It is back before meta's grace period ends, so meta still names it primary in that ballot. Its
    log no longer shows that ballot: it must not hand the same decree to another write."""
    cluster = Cluster(11, SimOptions(faults=False))
    cluster.boot()
    cluster.advance_while(lambda: full_group_ballot(cluster, GPID) == 0, limit_ms=2_000)
    ballot = full_group_ballot(cluster, GPID)
    assert ballot > 0, "the group never reached three replicas"
    primary = primary_of(cluster, GPID)
    assert primary is not None
    primary.disk.min_fsync_ms = primary.disk.max_fsync_ms = 60  # its own log is slow
    log = primary.disk.file(log_file(GPID), Mutation)

    def no_unsynced_prepare_of_the_ballot() -> bool:
        return not any(m.ballot == ballot for m in log.records[log.durable_end - log.base :])

    cluster.advance_while(no_unsynced_prepare_of_the_ballot, limit_ms=3_000)
    assert not no_unsynced_prepare_of_the_ballot(), "no write reached the primary"
    cluster.advance_until(cluster.scheduler.now_ms + 15)  # the secondaries made it durable and acked
    cluster.crash(primary.name)
    primary.disk.min_fsync_ms, primary.disk.max_fsync_ms = 1, 6
    cluster.scheduler.after(30, "restart the primary", lambda: cluster.restart(primary.name))
    cluster.advance_until(cluster.scheduler.now_ms + 2_000)
    report = cluster.finish()
    assert report.acked_writes > 0


def test_a_primary_that_restarts_within_the_grace_period_lets_its_partition_serve_again() -> None:
    """The primary crashes after a few durable writes in its ballot and is back before meta's grace
    period ends: meta never saw it die. It must not serve again under that ballot (it may have lost
    prepares it sent), yet its partition must not stay without a serving primary."""
    cluster = Cluster(12, SimOptions(faults=False))
    cluster.boot()
    cluster.advance_until(600)
    primary = primary_of(cluster, GPID)
    assert primary is not None
    applied = len(cluster.checker.committed)
    cluster.crash(primary.name)
    cluster.scheduler.after(20, "restart the primary", lambda: cluster.restart(primary.name))
    cluster.advance_until(cluster.scheduler.now_ms + 2_000)
    report = cluster.finish()
    assert len(cluster.checker.committed) > applied  # writes went on after the restart
    assert report.serving_at_end == 2


def test_a_dropped_secondary_that_crashes_while_relearning_keeps_what_it_had_committed() -> None:
    """A secondary that committed decrees durably is down long enough for meta to drop it. Back up,
    it learns again (cure prefers a dropped member's node: it already has most of the log) and
    appends the learned mutations, re-branded with the new ballot, to its log. It loses power before
    that append is durable. Its disk must still recover everything it had committed before: the
    torn append must not take the older, durable records with it."""
    cluster = Cluster(13, SimOptions(faults=False))
    cluster.boot()
    cluster.advance_until(600)
    core = cluster.meta.core
    assert core is not None
    config = core.state.config(GPID)
    assert config is not None and config.secondaries
    secondary = cluster.servers[config.secondaries[0]]
    cluster.crash(secondary.name)
    cluster.advance_until(cluster.scheduler.now_ms + 600)  # past the grace period: dropped
    secondary.disk.min_fsync_ms = secondary.disk.max_fsync_ms = 40
    cluster.restart(secondary.name)
    log = secondary.disk.file(log_file(GPID), Mutation)

    def not_yet_appending_what_it_learned() -> bool:
        node = secondary.node
        replica = node.replica(GPID) if node is not None else None
        learning = replica is not None and replica.status is PartitionStatus.POTENTIAL_SECONDARY
        return not (learning and log.unsynced_count() > 0)

    cluster.advance_while(not_yet_appending_what_it_learned, limit_ms=cluster.scheduler.now_ms + 2_000)
    assert not not_yet_appending_what_it_learned(), "the dropped secondary never learned again"
    cluster.crash(secondary.name)  # the checker compares its recoverable prefix with what it applied
    secondary.disk.min_fsync_ms, secondary.disk.max_fsync_ms = 1, 6
    cluster.restart(secondary.name)
    cluster.advance_until(cluster.scheduler.now_ms + 1_500)
    cluster.finish()


def test_a_replica_whose_store_lags_its_log_by_many_decrees_recovers_all_it_committed() -> None:
    """RocksDB flushes when its memtable fills, not every few decrees, so after a crash the store may
    stand far behind the log. The log is the source of truth (pacifica.md, "Log and checkpoints"):
    a restart must recover every decree it holds durably, however many."""
    cluster = Cluster(21, SimOptions(faults=False))
    for server in cluster.servers.values():
        server.options.checkpoint_every_decrees = 10_000  # the stores never checkpoint
    cluster.boot()
    cluster.advance_until(5_000)
    committed = max(decree for gpid, decree in cluster.checker.committed if gpid == GPID)
    assert committed > 150  # well past one prepare list
    core = cluster.meta.core
    assert core is not None
    config = core.state.config(GPID)
    assert config is not None and config.secondaries
    cluster.crash(config.secondaries[0])  # the checker compares what its disk recovers with what it applied
