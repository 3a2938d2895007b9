"""The replica core driven event by event: what a runtime relies on beyond the golden transcripts."""

from __future__ import annotations

import pytest

from pegasus_kv.core.errors import ErrorCode
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import SetRequest
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.replication.pacifica.config import NodeAddress, PartitionConfiguration, PartitionStatus
from pegasus_kv.replication.pacifica.invariant import ReplicaInvariantError
from pegasus_kv.replication.pacifica.learner_state import LearnerPhase
from pegasus_kv.replication.pacifica.messages import (
    GroupCheck,
    LearnKind,
    LearnResponse,
    Prepare,
    PrepareAck,
    PrepareOutcome,
)
from pegasus_kv.replication.pacifica.options import ReplicaOptions
from pegasus_kv.replication.pacifica.ready import InstallCheckpoint, Ready
from pegasus_kv.replication.pacifica.replica import Replica
from pegasus_kv.replication.pacifica.write_queue import QueuedWrite

GPID = Gpid(1, 0)


def status(replica: Replica | None) -> PartitionStatus | None:
    """Read the status afresh (a property: events change it behind mypy's narrowing)."""
    return replica.status if replica is not None else None


OPTIONS = ReplicaOptions(max_inflight_mutations=3, max_queued_writes=2, max_batch_writes=2)


def config(ballot: int, primary: NodeAddress | None, *secondaries: NodeAddress) -> PartitionConfiguration:
    return PartitionConfiguration(gpid=GPID, ballot=ballot, primary=primary, secondaries=secondaries)


def put(value: str) -> SetRequest:
    return SetRequest(hash_key=b"k", sort_key=b"", value=value.encode())


def primary_of(*secondaries: NodeAddress, options: ReplicaOptions = OPTIONS) -> Replica:
    """A primary of ballot 1 that has committed its empty first mutation (d1) and serves."""
    replica = Replica(GPID, "r1", options)
    replica.on_lease(1000)
    ready = replica.on_config(config(1, "r1", *secondaries))
    [empty] = ready.persist
    assert (empty.decree, empty.ballot, empty.writes) == (1, 1, [])
    durable(replica, ready)
    for node in secondaries:
        replica.on_message(node, ack(1))
    assert replica.check_read(0) == ErrorCode.OK
    return replica


def ack(decree: int, ballot: int = 1, outcome: PrepareOutcome = PrepareOutcome.OK) -> PrepareAck:
    return PrepareAck(GPID, ballot, decree, outcome, confirmed_decree=decree, last_committed_decree=0)


def durable(replica: Replica, ready: Ready) -> Ready:
    last = ready.persist[-1]
    return replica.on_log_durable(last.ballot, last.decree)


def test_the_primary_commits_once_durable_locally_and_acknowledged_by_every_secondary() -> None:
    primary = primary_of("r2", "r3")
    ready = primary.on_client_write(7, put("a"), timestamp_us=100)
    assert [m.decree for m in ready.persist] == [2]
    assert sorted(o.to for o in ready.send) == ["r2", "r3"]
    assert primary.on_message("r2", ack(2)).apply == []
    assert primary.on_message("r3", ack(2)).apply == []  # acknowledged by all, not durable here yet
    applied = durable(primary, ready).apply
    assert [(a.mutation.decree, a.tokens) for a in applied] == [(2, (7,))]
    assert primary.last_committed_decree == 2


def test_acks_of_an_older_ballot_do_not_count() -> None:
    primary = primary_of("r2")
    ready = primary.on_client_write(1, put("a"), timestamp_us=100)
    durable(primary, ready)
    assert primary.on_message("r2", ack(2, ballot=0)).apply == []
    assert primary.last_committed_decree == 1


def test_a_durability_report_covers_every_earlier_append() -> None:
    primary = primary_of("r2", options=ReplicaOptions(max_batch_writes=1))
    first = primary.on_client_write(1, put("a"), timestamp_us=100)
    second = primary.on_client_write(2, put("b"), timestamp_us=100)
    primary.on_message("r2", ack(2))
    primary.on_message("r2", ack(3))
    applied = durable(primary, second).apply
    assert [a.mutation.decree for a in applied] == [2, 3]
    assert durable(primary, first).is_empty  # reported again: nothing left to do


def test_mutation_timestamps_always_increase_and_tokens_follow_the_writes() -> None:
    primary = primary_of("r2", options=ReplicaOptions(max_inflight_mutations=1, max_batch_writes=5))
    first = primary.on_client_write(1, put("a"), timestamp_us=500)
    # The next two wait for d1 and are batched together; their clock went backwards.
    primary.on_client_write(2, put("b"), timestamp_us=400)
    primary.on_client_write(3, put("c"), timestamp_us=450)
    durable(primary, first)
    ready = primary.on_message("r2", ack(2))
    mutation = ready.persist[0]
    assert (mutation.decree, mutation.timestamp_us, len(mutation.writes)) == (3, 501, 2)
    durable(primary, ready)
    applied = primary.on_message("r2", ack(3)).apply
    assert applied[0].tokens == (2, 3)


def test_writes_arriving_together_become_one_mutation_within_the_batch_bound() -> None:
    primary = primary_of("r2", options=ReplicaOptions(max_batch_writes=3))
    writes = [QueuedWrite(token, put(str(token)), 100 + token, 10) for token in range(1, 6)]
    ready = primary.on_client_writes(writes)
    # Five writes of one loop pass: a mutation of three and one of two, not five of one.
    assert [len(m.writes) for m in ready.persist] == [3, 2]
    assert [m.writes for m in ready.persist] == [[put("1"), put("2"), put("3")], [put("4"), put("5")]]
    durable(primary, ready)
    applied = [*primary.on_message("r2", ack(2)).apply, *primary.on_message("r2", ack(3)).apply]
    assert [a.tokens for a in applied] == [(1, 2, 3), (4, 5)]


def test_writes_arriving_together_are_each_refused_where_they_cannot_be_served() -> None:
    primary = primary_of("r2", options=ReplicaOptions(max_inflight_mutations=1, max_queued_writes=2))
    ready = primary.on_client_writes([QueuedWrite(token, put("x"), 1, 10) for token in (1, 2, 3)])
    # The queue takes two; the third finds it full (the first mutation is only made after).
    assert [(r.token, r.code) for r in ready.replies] == [(3, ErrorCode.BUSY)]
    assert [len(m.writes) for m in ready.persist] == [2]

    secondary = Replica(GPID, "r2", OPTIONS)
    secondary.on_lease(1000)
    secondary.on_config(config(1, "r1", "r2"))
    refused = secondary.on_client_writes([QueuedWrite(token, put("y"), 1, 10) for token in (4, 5)])
    assert [(r.token, r.code) for r in refused.replies] == [
        (4, ErrorCode.NOT_PRIMARY),
        (5, ErrorCode.NOT_PRIMARY),
    ]
    assert refused.persist == []


def test_writes_arriving_together_past_a_full_queue_are_all_busy_in_arrival_order() -> None:
    primary = primary_of("r2", options=ReplicaOptions(max_inflight_mutations=1, max_queued_writes=2))
    ready = primary.on_client_writes([QueuedWrite(token, put(str(token)), 1, 10) for token in range(1, 6)])
    assert [(r.token, r.code) for r in ready.replies] == [(token, ErrorCode.BUSY) for token in (3, 4, 5)]
    assert [m.writes for m in ready.persist] == [[put("1"), put("2")]]

    alone = primary_of()  # one member < min_replica_count 2
    refused = alone.on_client_writes([QueuedWrite(token, put("x"), 1, 10) for token in (6, 7)])
    assert [(r.token, r.code) for r in refused.replies] == [
        (6, ErrorCode.NOT_ENOUGH_MEMBER),
        (7, ErrorCode.NOT_ENOUGH_MEMBER),
    ]
    assert refused.persist == []


def test_a_batched_mutation_takes_the_newest_timestamp_of_its_writes_and_never_goes_back() -> None:
    primary = primary_of("r2", options=ReplicaOptions(max_inflight_mutations=1, max_batch_writes=5))
    first = primary.on_client_writes([QueuedWrite(1, put("a"), 500, 10), QueuedWrite(2, put("b"), 700, 10)])
    [mutation] = first.persist
    assert (mutation.timestamp_us, mutation.writes) == (700, [put("a"), put("b")])
    # Queued behind d2 with clocks that went backwards: the next mutation still moves forward.
    primary.on_client_writes([QueuedWrite(3, put("c"), 600, 10), QueuedWrite(4, put("d"), 650, 10)])
    durable(primary, first)
    [second] = primary.on_message("r2", ack(2)).persist
    assert (second.decree, second.timestamp_us) == (3, 701)


def test_writes_are_refused_where_they_could_not_be_served() -> None:
    secondary = Replica(GPID, "r2", OPTIONS)
    secondary.on_lease(1000)
    secondary.on_config(config(1, "r1", "r2"))
    assert [r.code for r in secondary.on_client_write(1, put("a"), 1).replies] == [ErrorCode.NOT_PRIMARY]

    alone = primary_of()  # one member < min_replica_count 2 (it commits its empty mutation alone)
    assert [r.code for r in alone.on_client_write(2, put("a"), 1).replies] == [ErrorCode.NOT_ENOUGH_MEMBER]

    primary = primary_of("r2", options=ReplicaOptions(max_inflight_mutations=1, max_queued_writes=1))
    primary.on_client_write(3, put("a"), 1)  # prepared
    primary.on_client_write(4, put("b"), 1)  # queued
    assert [r.code for r in primary.on_client_write(5, put("c"), 1).replies] == [ErrorCode.BUSY]

    primary.on_lease(0)  # the lease lapsed: queued writes are refused, new ones too
    primary.on_tick(1)
    assert [r.code for r in primary.on_client_write(6, put("d"), 1).replies] == [ErrorCode.NOT_PRIMARY]


def test_reads_need_a_valid_lease_and_a_finished_reconciliation() -> None:
    log = [Mutation(ballot=1, decree=1, timestamp_us=1, writes=[put("a")])]
    replica = Replica(GPID, "r2", OPTIONS, log=log)
    assert replica.check_read(0) == ErrorCode.NOT_PRIMARY
    replica.on_lease(100)
    ready = replica.on_config(config(2, "r2", "r3"))  # promoted: re-prepares d1 under ballot 2
    assert [(m.decree, m.ballot) for m in ready.persist] == [(1, 2)]
    assert replica.check_read(0) == ErrorCode.BUSY
    durable(replica, ready)
    replica.on_message("r3", ack(1, ballot=2))
    assert replica.check_read(0) == ErrorCode.OK
    assert replica.check_read(100) == ErrorCode.NOT_PRIMARY  # the lease runs until tick 100


def test_a_secondary_acknowledges_only_after_the_log_is_durable() -> None:
    secondary = Replica(GPID, "r2", OPTIONS)
    cfg = config(1, "r1", "r2")
    mutation = Mutation(ballot=1, decree=1, timestamp_us=1, writes=[put("a")])
    ready = secondary.on_message("r1", Prepare(GPID, cfg, mutation, last_committed_decree=0))
    assert secondary.status == PartitionStatus.SECONDARY  # adopted ballot 1 from the primary named in it
    assert ready.persist == [mutation]
    assert ready.send == []
    [outbound] = ready.send_after_persist
    assert isinstance(outbound.message, PrepareAck) and outbound.message.outcome == PrepareOutcome.OK


def test_a_prepare_from_a_node_the_configuration_does_not_name_primary_is_not_trusted() -> None:
    secondary = Replica(GPID, "r2", OPTIONS)
    mutation = Mutation(ballot=1, decree=1, timestamp_us=1, writes=[put("a")])
    ready = secondary.on_message("r9", Prepare(GPID, config(1, "r1", "r2"), mutation, 0))
    assert ready.request_config_sync
    assert ready.persist == []
    assert secondary.status == PartitionStatus.INACTIVE


def test_a_local_failure_answers_every_waiting_client_and_stops_the_replica() -> None:
    primary = primary_of("r2", options=ReplicaOptions(max_inflight_mutations=1))
    primary.on_client_write(1, put("a"), 1)
    primary.on_client_write(2, put("b"), 1)
    ready = primary.on_local_failure("disk gone")
    assert {(r.token, r.code) for r in ready.replies} == {(1, ErrorCode.TIMEOUT), (2, ErrorCode.NOT_PRIMARY)}
    assert primary.status == PartitionStatus.ERROR
    mutation = Mutation(ballot=2, decree=3, timestamp_us=1, writes=[])
    answer = primary.on_message("r3", Prepare(GPID, config(2, "r3", "r1"), mutation, 0)).send[0].message
    assert isinstance(answer, PrepareAck) and answer.outcome == PrepareOutcome.NOT_MEMBER


def test_a_restarted_replica_never_takes_a_role_under_the_ballot_it_had() -> None:
    log = [Mutation(ballot=3, decree=d, timestamp_us=d, writes=[put("x")]) for d in (1, 2)]
    replica = Replica(GPID, "r1", OPTIONS, last_committed_decree=1, log=log)
    replica.on_lease(100)
    assert (status(replica), replica.ballot, replica.max_prepared_decree) == (PartitionStatus.INACTIVE, 3, 2)
    replica.on_config(config(3, "r1", "r2"))
    assert status(replica) == PartitionStatus.INACTIVE
    replica.on_config(config(4, "r1", "r2"))
    assert status(replica) == PartitionStatus.PRIMARY


def _learner() -> Replica:
    learner = Replica(GPID, "r4", OPTIONS)
    learner.on_message("r1", GroupCheck(GPID, config(2, "r1", "r2"), 0, learner_signature=99))
    assert learner.status == PartitionStatus.POTENTIAL_SECONDARY
    return learner


def test_a_learner_named_secondary_before_it_finished_learning_refuses_the_role() -> None:
    learner = _learner()
    learner.on_config(config(3, "r1", "r2", "r4"))
    assert learner.status == PartitionStatus.INACTIVE


def test_a_learner_applies_nothing_while_its_store_is_being_replaced() -> None:
    learner = _learner()
    checkpoint = LearnResponse(
        GPID,
        2,
        99,
        1,
        PrepareOutcome.OK,
        LearnKind.CHECKPOINT,
        [],
        5,
        6,
        checkpoint_decree=5,
        checkpoint_ref="c",
    )
    [request] = learner.on_message("r1", checkpoint).requests
    assert isinstance(request, InstallCheckpoint) and request.checkpoint_decree == 5
    assert learner.learner_phase == LearnerPhase.INSTALLING
    prepare = Prepare(GPID, config(2, "r1", "r2"), Mutation(ballot=2, decree=6, timestamp_us=1, writes=[]), 5)
    ready = learner.on_message("r1", prepare)
    assert ready.apply == [] and len(ready.send_after_persist) == 1  # held and acknowledged
    assert learner.on_checkpoint_installed(request.request_id + 1).is_empty  # not ours
    ready = learner.on_checkpoint_installed(request.request_id)
    assert learner.last_committed_decree == 5
    assert ready.send[0].message.last_prepared_decree == 5  # type: ignore[attr-defined]


def test_results_of_unknown_runtime_requests_are_ignored() -> None:
    primary = primary_of("r2")
    assert primary.on_log_read(12345, []).is_empty
    assert primary.on_checkpoint_made(12345, 0, "x").is_empty
    assert primary.on_request_failed(12345, "gone").is_empty


def test_time_never_goes_back() -> None:
    replica = primary_of("r2")
    replica.on_tick(5)
    with pytest.raises(ReplicaInvariantError):
        replica.on_tick(4)


def test_options_are_validated() -> None:
    with pytest.raises(ReplicaInvariantError):
        ReplicaOptions(max_inflight_mutations=0)
    with pytest.raises(ReplicaInvariantError):
        ReplicaOptions(prepare_list_capacity=10, max_inflight_mutations=11)


def test_nothing_prepared_under_a_new_ballot_leaves_before_the_ballot_is_durable_here() -> None:
    # Otherwise a primary that crashed before its log held ballot 1 could come back with an older
    # ballot, be named primary under ballot 1 again, and hand out decree 1 a second time.
    replica = Replica(GPID, "r1", OPTIONS)
    replica.on_lease(1000)
    ready = replica.on_config(config(1, "r1", "r2"))
    assert [type(o.message) for o in ready.send] == [GroupCheck]
    assert [type(o.message) for o in ready.send_after_persist] == [Prepare]
    early = replica.on_client_write(1, put("a"), timestamp_us=1)
    assert early.send == [] and [o.to for o in early.send_after_persist] == ["r2"]
    durable(replica, ready)  # ballot 1 is in the log now
    late = replica.on_client_write(2, put("b"), timestamp_us=1)
    assert [o.to for o in late.send] == ["r2"] and late.send_after_persist == []


def test_the_ballot_survives_log_collection_through_the_runtime() -> None:
    # The log was collected below the store's decree 20: no record shows ballot 5 any more, but the
    # runtime kept it. Named primary again under ballot 5, the replica refuses; under 6 it serves.
    replica = Replica(GPID, "r1", OPTIONS, last_committed_decree=20, log=[], log_start_decree=21, ballot=5)
    replica.on_lease(100)
    replica.on_config(config(5, "r1", "r2"))
    assert status(replica) == PartitionStatus.INACTIVE
    ready = replica.on_config(config(6, "r1", "r2"))
    assert status(replica) == PartitionStatus.PRIMARY
    assert [(m.decree, m.ballot, m.writes) for m in ready.persist] == [(21, 6, [])]


def test_a_learner_with_an_old_uncommitted_tail_holds_no_prepare_that_recovery_could_join_to_it() -> None:
    # A replica comes back with decrees 1..5 of ballot 1 in its log, none known committed, and is
    # invited to learn under ballot 2. Were it to log a ballot-2 prepare right after that stale
    # tail (say d4) and crash, recovery would read the log as one run and could treat stale
    # entries as committed. So it refuses prepares that would continue the stale tail (FULL: the
    # primary resends later) and holds only those that cannot be joined to it.
    stale = [Mutation(ballot=1, decree=d, timestamp_us=d, writes=[put(f"stale{d}")]) for d in range(1, 6)]
    learner = Replica(GPID, "r4", OPTIONS, last_committed_decree=0, log=stale)
    learner.on_message("r1", GroupCheck(GPID, config(2, "r1", "r2"), 0, learner_signature=99))
    assert learner.status is PartitionStatus.POTENTIAL_SECONDARY

    def prepare(decree: int) -> tuple[list[int], list[PrepareOutcome]]:
        mutation = Mutation(ballot=2, decree=decree, timestamp_us=100 + decree, writes=[put(f"new{decree}")])
        ready = learner.on_message("r1", Prepare(GPID, config(2, "r1", "r2"), mutation, 0))
        acks = [out.message for out in ready.send + ready.send_after_persist]
        return [m.decree for m in ready.persist], [a.outcome for a in acks if isinstance(a, PrepareAck)]

    assert prepare(4) == ([], [PrepareOutcome.FULL])  # would sit on the stale tail: refused
    assert prepare(7) == ([7], [PrepareOutcome.OK])  # beyond the log's end: held
    assert prepare(1) == ([1], [PrepareOutcome.OK])  # continues what it learned: held


def test_writes_queue_quietly_only_while_a_round_fills_the_window() -> None:
    primary = primary_of("r2", options=ReplicaOptions(max_inflight_mutations=1, max_queued_writes=3))
    # The window has room: queueing alone is not all on_client_writes would do.
    assert not primary.queue_writes([QueuedWrite(1, put("a"), 100, 10)])
    assert primary.queued_writes == 0
    first = primary.on_client_writes([QueuedWrite(1, put("a"), 100, 10)])
    assert [m.decree for m in first.persist] == [2]
    # d2 fills the window: later writes only wait in the queue.
    assert primary.queue_writes([QueuedWrite(2, put("b"), 100, 10), QueuedWrite(3, put("c"), 100, 10)])
    assert primary.queued_writes == 2
    # One more than the queue holds would be refused BUSY: that is a reply, so not quiet.
    assert not primary.queue_writes([QueuedWrite(4, put("d"), 100, 10), QueuedWrite(5, put("e"), 100, 10)])
    assert primary.queued_writes == 2
    durable(primary, first)
    ready = primary.on_message("r2", ack(2))
    # The quietly queued writes leave as the next mutation, as if on_client_writes had queued them.
    assert [a.mutation.decree for a in ready.apply] == [2]
    assert [(m.decree, m.writes) for m in ready.persist] == [(3, [put("b"), put("c")])]
    durable(primary, ready)
    assert [a.tokens for a in primary.on_message("r2", ack(3)).apply] == [(2, 3)]


def test_only_a_replica_that_is_not_primary_takes_a_durability_report_quietly() -> None:
    primary = primary_of("r2")
    ready = primary.on_client_write(1, put("a"), timestamp_us=100)
    primary.on_message("r2", ack(2))
    last = ready.persist[-1]
    assert not primary.log_durable_quietly(last.ballot, last.decree)  # it commits on durability
    assert [a.mutation.decree for a in durable(primary, ready).apply] == [2]

    secondary = Replica(GPID, "r2", OPTIONS)
    secondary.on_lease(1000)
    secondary.on_config(config(1, "r1", "r2"))
    mutation = Mutation(ballot=1, decree=1, timestamp_us=100, writes=[])
    prepared = secondary.on_message("r1", Prepare(GPID, config(1, "r1", "r2"), mutation, 0))
    assert prepared.persist == [mutation]
    assert secondary.last_durable_decree == 0
    assert secondary.log_durable_quietly(1, 1)
    assert secondary.last_durable_decree == 1
