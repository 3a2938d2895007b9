"""Tunables of the replica core and the replica-server core, in ticks and counts.

Time is a tick count chosen by the runtime (DESIGN.md section 10: time is an input). The defaults
assume one tick = 100 ms and follow Pegasus's defaults where Pegasus has one:
prepare_timeout_ms_for_secondaries 1 s, ..._for_potential_secondaries 3 s, group_check_interval_ms
10 s, config_sync_interval_ms 30 s, fd_beacon_interval_seconds 3 s, lease 20 s,
max_mutation_count_in_prepare_list 110, staleness_for_commit 10, mutation_2pc_min_replica_count 2.
"""

from __future__ import annotations

import dataclasses

from pegasus_kv.replication.pacifica.invariant import require


@dataclasses.dataclass(frozen=True, slots=True)
class ReplicaOptions:
    # The prepare list holds at most this many mutations (committed ones are kept as a cache for
    # learners until room is needed; uncommitted ones are never evicted).
    prepare_list_capacity: int = 110
    # At most this many prepared but uncommitted mutations on a primary (Pegasus staleness_for_commit);
    # client writes arriving meanwhile wait in the write queue and are batched together.
    max_inflight_mutations: int = 10
    # Client writes waiting for a mutation; beyond this the primary answers BUSY.
    max_queued_writes: int = 1000
    # Bounds of one mutation (a batch of queued writes). One write larger than max_batch_bytes still
    # goes alone in a mutation: the size limit of a single write is the data API's business.
    max_batch_writes: int = 64
    max_batch_bytes: int = 1 << 20
    # Writes are refused (NOT_ENOUGH_MEMBER) while primary + secondaries < this.
    min_replica_count: int = 2
    # A member that has not acknowledged a prepare within this many ticks is proposed for removal.
    prepare_timeout_ticks: int = 10
    # A learner that has not acknowledged a prepare within this many ticks is dropped.
    learner_prepare_timeout_ticks: int = 30
    # The primary sends a group check (configuration + commit point) to everyone this often.
    group_check_period_ticks: int = 100
    # A learner that heard nothing about its learn request for this long starts a new attempt.
    learn_timeout_ticks: int = 50
    # A learner gives up (becomes inactive) after this many attempts that timed out.
    max_learn_attempts: int = 5
    # A proposal meta has not answered within this many ticks is sent again (meta may have lost it).
    proposal_timeout_ticks: int = 50
    # At most this many mutations travel in one learn response.
    max_learn_batch_mutations: int = 500
    # At most this many learners per partition on one primary.
    max_learners: int = 3

    def __post_init__(self) -> None:
        require(self.prepare_list_capacity >= 2, "prepare_list_capacity must be at least 2")
        require(
            1 <= self.max_inflight_mutations <= self.prepare_list_capacity,
            "max_inflight_mutations must be in 1..prepare_list_capacity",
        )
        require(self.max_queued_writes >= 1, "max_queued_writes must be positive")
        require(self.max_batch_writes >= 1, "max_batch_writes must be positive")
        require(self.max_batch_bytes >= 1, "max_batch_bytes must be positive")
        require(self.min_replica_count >= 1, "min_replica_count must be positive")
        for name in (
            "prepare_timeout_ticks",
            "learner_prepare_timeout_ticks",
            "group_check_period_ticks",
            "learn_timeout_ticks",
            "max_learn_attempts",
            "proposal_timeout_ticks",
            "max_learn_batch_mutations",
            "max_learners",
        ):
            require(getattr(self, name) >= 1, f"{name} must be positive")


@dataclasses.dataclass(frozen=True, slots=True)
class NodeOptions:
    # A beacon to meta this often; the lease runs from the send tick of the last acknowledged one.
    beacon_period_ticks: int = 30
    # Must be shorter than meta's grace period, by more than one tick (checks happen on ticks).
    lease_ticks: int = 200
    # A ConfigSyncRequest this often (repairs lost ConfigCommands, reports replicas to meta).
    config_sync_period_ticks: int = 300
    # An unanswered ConfigSyncRequest may be repeated after this long.
    config_sync_timeout_ticks: int = 50
    # At most this many replicas on one server.
    max_replicas: int = 10_000
    replica: ReplicaOptions = dataclasses.field(default_factory=ReplicaOptions)

    def __post_init__(self) -> None:
        require(self.beacon_period_ticks >= 1, "beacon_period_ticks must be positive")
        require(self.lease_ticks > self.beacon_period_ticks, "lease_ticks must exceed beacon_period_ticks")
        require(self.config_sync_period_ticks >= 1, "config_sync_period_ticks must be positive")
        require(self.config_sync_timeout_ticks >= 1, "config_sync_timeout_ticks must be positive")
        require(self.max_replicas >= 1, "max_replicas must be positive")
