"""A replica server's metrics as an operator reads them: requests per operation and table with their
errors, replicas by role and the depths of their queues at scrape time, and learning progress."""

from __future__ import annotations

import asyncio
import time

import pytest

from pegasus_kv.core.errors import BusyError, ErrorCode, NotPrimaryError, PegasusError
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import GetRequest, GetResponse, SetRequest, WriteResponse
from pegasus_kv.core.registry import Message
from pegasus_kv.metrics.replica import UNKNOWN_TABLE, ReplicaMetrics, ReplicaSample
from pegasus_kv.replication.pacifica.config import PartitionStatus
from pegasus_kv.replication.pacifica.learner_state import LearnerPhase
from pegasus_kv.replication.replica.write_waiters import WriteWaiters
from tests.unit.metrics_support import rendered, value

LATENCY = "pegasus_replica_request_duration_seconds"
ERRORS = "pegasus_replica_request_errors_total"
TEMP = 2  # app id of table "temp"


def sample(
    status: PartitionStatus,
    *,
    app_id: int = TEMP,
    queued: int = 0,
    prepared: int = 0,
    committed: int = 100,
    applied: int | None = 100,
    log_bytes: int = 0,
    phase: LearnerPhase | None = None,
) -> ReplicaSample:
    return ReplicaSample(
        app_id=app_id,
        status=status,
        queued_writes=queued,
        prepare_list_depth=prepared,
        last_committed_decree=committed,
        applied_decree=applied,
        log_size_bytes=log_bytes,
        learner_phase=phase,
    )


def new_metrics(samples: list[ReplicaSample] | None = None, waiting: int = 0) -> ReplicaMetrics:
    metrics = ReplicaMetrics(
        samples=lambda: samples or [], waiting_writes=lambda: waiting, process_metrics=False
    )
    metrics.set_table_names({TEMP: "temp"})
    return metrics


def test_requests_are_counted_per_operation_and_table_whether_answered_now_later_or_with_an_error() -> None:
    metrics = new_metrics()

    async def story() -> None:
        loop = asyncio.get_running_loop()
        sets = metrics.meter(SetRequest, TEMP)
        # A write answered later, through the future the RPC server waits on.
        pending: asyncio.Future[Message] = loop.create_future()
        assert sets.track(0.0, pending) is pending
        pending.set_result(WriteResponse(decree=1))
        # A write refused after it was queued, and one refused on arrival.
        refused: asyncio.Future[Message] = loop.create_future()
        sets.track(0.0, refused)
        refused.set_exception(BusyError("the write queue is full"))
        sets.failed(0.0, NotPrimaryError())
        # A read answered at once, and one that waited for the store (a coroutine).
        gets = metrics.meter(GetRequest, TEMP)
        reply = GetResponse(value=b"v")
        assert gets.track(0.0, reply) is reply

        async def after_apply() -> Message:
            return reply

        waited = gets.track(0.0, after_apply())
        assert not isinstance(waited, Message)
        assert await waited is reply
        await asyncio.sleep(0)  # done-callbacks run on the next loop iteration

    asyncio.run(story())
    samples = rendered(metrics.registry)
    assert value(samples, f"{LATENCY}_count", op="set", table="temp") == 3
    assert value(samples, f"{LATENCY}_count", op="get", table="temp") == 2
    assert value(samples, ERRORS, op="set", table="temp", code="busy") == 1
    assert value(samples, ERRORS, op="set", table="temp", code="not_primary") == 1
    assert ("pegasus_replica_request_errors_total", frozenset({("op", "get")})) not in samples


def test_requests_for_tables_not_known_yet_are_labelled_unknown_until_meta_names_them() -> None:
    metrics = ReplicaMetrics(samples=list, waiting_writes=lambda: 0, process_metrics=False)
    metrics.meter(SetRequest, 7).done(0.0)
    metrics.meter(SetRequest, 12345).done(0.0)  # a table that does not exist
    metrics.meter(SetRequest, -1).done(0.0)  # a request without a gpid
    metrics.set_table_names({7: "orders"})
    metrics.meter(SetRequest, 7).done(0.0)
    samples = rendered(metrics.registry)
    assert value(samples, f"{LATENCY}_count", op="set", table=UNKNOWN_TABLE) == 3
    assert value(samples, f"{LATENCY}_count", op="set", table="orders") == 1


def test_replicas_by_role_and_queue_depths_are_read_at_scrape_time() -> None:
    hosted = [
        sample(PartitionStatus.PRIMARY, queued=5, prepared=3, log_bytes=1000),
        sample(PartitionStatus.PRIMARY, queued=2, prepared=1, committed=50, applied=40, log_bytes=500),
        sample(PartitionStatus.SECONDARY, prepared=1, log_bytes=700),
        sample(PartitionStatus.POTENTIAL_SECONDARY, applied=None, phase=LearnerPhase.INSTALLING),
        sample(PartitionStatus.SECONDARY, app_id=9, committed=10, applied=7),
    ]
    metrics = new_metrics(hosted, waiting=6)
    samples = rendered(metrics.registry)
    roles = {
        role.name.lower(): value(samples, "pegasus_replica_replicas", role=role.name.lower())
        for role in PartitionStatus
    }
    assert roles == {"inactive": 0, "error": 0, "primary": 2, "secondary": 2, "potential_secondary": 1}
    assert value(samples, "pegasus_replica_write_queue_depth", table="temp") == 7
    assert value(samples, "pegasus_replica_prepare_list_depth", table="temp") == 5
    assert value(samples, "pegasus_replica_log_size_bytes", table="temp") == 2200
    assert value(samples, "pegasus_replica_apply_lag_decrees", table="temp") == 10
    assert value(samples, "pegasus_replica_apply_lag_decrees", table=UNKNOWN_TABLE) == 3
    assert value(samples, "pegasus_replica_learners", phase="installing") == 1
    assert value(samples, "pegasus_replica_learners", phase="requesting") == 0
    assert value(samples, "pegasus_replica_waiting_writes") == 6

    hosted.clear()  # the replicas went away: the next scrape says so
    after = rendered(metrics.registry)
    assert value(after, "pegasus_replica_replicas", role="primary") == 0
    assert ("pegasus_replica_write_queue_depth", frozenset({("table", "temp")})) not in after


def test_a_learner_that_becomes_secondary_counts_the_decrees_it_learned() -> None:
    metrics = new_metrics()
    learner, abandoned = Gpid(TEMP, 0), Gpid(TEMP, 1)
    metrics.on_role_change(learner, None, PartitionStatus.POTENTIAL_SECONDARY, 0)
    metrics.on_role_change(abandoned, PartitionStatus.INACTIVE, PartitionStatus.POTENTIAL_SECONDARY, 40)
    metrics.on_checkpoint_bytes(4096)
    metrics.on_checkpoint_bytes(1000)
    metrics.on_role_change(learner, PartitionStatus.POTENTIAL_SECONDARY, PartitionStatus.SECONDARY, 250)
    metrics.on_role_change(abandoned, PartitionStatus.POTENTIAL_SECONDARY, None, 0)  # dropped mid-learn
    metrics.observe_fsync_ns(2_000_000)
    samples = rendered(metrics.registry)
    assert value(samples, "pegasus_replica_learns_completed_total") == 1
    assert value(samples, "pegasus_replica_learned_decrees_total") == 250
    assert value(samples, "pegasus_replica_learn_checkpoint_bytes_total") == 5096
    assert value(samples, "pegasus_replica_role_changes_total", role="potential_secondary") == 2
    assert value(samples, "pegasus_replica_role_changes_total", role="secondary") == 1
    assert value(samples, "pegasus_replica_log_fsync_duration_seconds_count") == 1
    assert value(samples, "pegasus_replica_log_fsync_duration_seconds_bucket", le="0.0025") == 1
    assert value(samples, "pegasus_replica_log_fsync_duration_seconds_bucket", le="0.001") == 0


@pytest.mark.parametrize("process_metrics", [True, False])
def test_each_server_has_a_registry_of_its_own(process_metrics: bool) -> None:
    first = ReplicaMetrics(samples=list, waiting_writes=lambda: 0, process_metrics=process_metrics)
    second = ReplicaMetrics(samples=list, waiting_writes=lambda: 0, process_metrics=process_metrics)
    first.set_table_names({TEMP: "temp"})
    first.meter(SetRequest, TEMP).done(0.0)
    assert value(rendered(first.registry), f"{LATENCY}_count", op="set", table="temp") == 1
    assert (f"{LATENCY}_count", frozenset({("op", "set"), ("table", "temp")})) not in rendered(
        second.registry
    )


def test_a_waiting_write_is_observed_when_the_waiter_table_answers_or_refuses_it() -> None:
    metrics = new_metrics()

    async def story() -> None:
        waiters = WriteWaiters(max_waiting=10)
        meter = metrics.meter(SetRequest, TEMP)
        applied, _ = waiters.add(Gpid(TEMP, 0), meter, time.perf_counter())
        refused, refused_future = waiters.add(Gpid(TEMP, 1), meter, time.perf_counter())
        waiters.answer(applied, WriteResponse(decree=7))
        waiters.refuse(refused, ErrorCode.NOT_ENOUGH_MEMBER)
        assert isinstance(refused_future.exception(), PegasusError)

    asyncio.run(story())
    samples = rendered(metrics.registry)
    assert value(samples, f"{LATENCY}_count", op="set", table="temp") == 2
    assert value(samples, ERRORS, op="set", table="temp", code="not_enough_member") == 1


def test_the_writes_of_one_mutation_are_answered_in_order_and_each_observed_once() -> None:
    metrics = new_metrics()

    async def story() -> None:
        waiters = WriteWaiters(max_waiting=10)
        meter = metrics.meter(SetRequest, TEMP)
        gpid = Gpid(TEMP, 0)
        tokens_and_futures = [waiters.add(gpid, meter, time.perf_counter()) for _ in range(3)]
        tokens = [token for token, _ in tokens_and_futures]
        futures = [future for _, future in tokens_and_futures]
        futures[1].cancel()  # its caller gave up: nothing to answer, nothing to observe
        waiters.answer_all(
            tokens, [WriteResponse(decree=7), WriteResponse(decree=8), WriteResponse(decree=9)]
        )
        assert futures[0].result() == WriteResponse(decree=7)
        assert futures[2].result() == WriteResponse(decree=9)
        assert len(waiters) == 0
        # Answered already (or refused meanwhile): a second answer finds nobody and changes nothing.
        waiters.answer_all(tokens[:1], [WriteResponse(decree=10)])
        assert futures[0].result() == WriteResponse(decree=7)
        with pytest.raises(AssertionError):
            waiters.answer_all(tokens, [WriteResponse(decree=11)])  # a reply per token, or a bug

    asyncio.run(story())
    samples = rendered(metrics.registry)
    assert value(samples, f"{LATENCY}_count", op="set", table="temp") == 2
