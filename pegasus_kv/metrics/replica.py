"""The replica server's metrics (prefix `pegasus_replica_`), in a registry of its own.

    metrics = ReplicaMetrics(samples=server_samples, waiting_writes=lambda: len(waiters))
    meter = metrics.meter(SetRequest, gpid.app_id)     # cached per (operation, table)
    started_s = time.perf_counter()
    reply = meter.track(started_s, handle(request))    # latency once answered; errors by code

Request metrics (updated on the hot path, so kept cheap: a RequestMeter is bound once per request
type and table and cached; an observation is one bisect and two additions, latency.py):
- pegasus_replica_request_duration_seconds{op, table}: histogram of client data requests, from
  the moment the server takes the request to the moment its answer (or error) is ready. Its
  _count is the number of requests.
- pegasus_replica_request_errors_total{op, table, code}: requests answered with an error, by the
  error code the client gets (labels.py).

State metrics, computed when scraped from `samples()` (nothing to update on the hot path):
- pegasus_replica_replicas{role}: the replicas hosted here by role (Pegasus partition_status).
- pegasus_replica_write_queue_depth{table}: client writes queued at this server's primaries,
  not yet in a mutation.
- pegasus_replica_prepare_list_depth{table}: mutations prepared and not yet committed.
- pegasus_replica_apply_lag_decrees{table}: the largest gap between a replica's committed decree
  and the decree its store has applied.
- pegasus_replica_log_size_bytes{table}: bytes of mutation log segment files.
- pegasus_replica_learners{phase}: replicas learning here (potential secondaries) by phase.
- pegasus_replica_waiting_writes: client writes waiting for their answer on the whole server.

Counted as it happens (off the hot path):
- pegasus_replica_log_fsync_duration_seconds: histogram of mutation log fsyncs (observed on the
  log's worker threads, so prometheus_client's thread-safe Histogram).
- pegasus_replica_role_changes_total{role}: a replica here took this role.
- pegasus_replica_learn_checkpoint_bytes_total: checkpoint bytes fetched by learners here.
- pegasus_replica_learns_completed_total, pegasus_replica_learned_decrees_total: learners here that
  became secondaries, and the decrees they advanced by while learning (committed decree at the
  upgrade minus the one when learning began).

Tables are labelled by name once the server knows it (meta's table list); before that, and for a
request naming a table that does not exist, by UNKNOWN_TABLE.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric

from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.registry import Message
from pegasus_kv.metrics.labels import error_code_label, op_label
from pegasus_kv.metrics.latency import LatencyFamily, LatencySeries
from pegasus_kv.replication.pacifica.config import PartitionStatus
from pegasus_kv.replication.pacifica.learner_state import LearnerPhase

UNKNOWN_TABLE = "unknown"
FSYNC_BUCKETS_S: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)


@dataclasses.dataclass(frozen=True, slots=True)
class ReplicaSample:
    """One hosted replica as a scrape sees it."""

    app_id: int
    status: PartitionStatus
    queued_writes: int
    prepare_list_depth: int
    last_committed_decree: int
    applied_decree: int | None  # None while the replica's store is not open
    log_size_bytes: int
    learner_phase: LearnerPhase | None


class RequestMeter:
    """The metrics of one (operation, table): what each request of that kind updates."""

    __slots__ = ("_errors", "_latency", "observe", "op", "table")

    def __init__(self, op: str, table: str, latency: LatencySeries, errors: Counter) -> None:
        self.op = op
        self.table = table
        self._latency = latency
        self._errors = errors
        # observe(seconds): one request's latency, for a caller that timed it (a bound method kept
        # here: one call per request instead of two through done()).
        self.observe = latency.observe

    def done(self, started_s: float) -> None:
        self._latency.observe(time.perf_counter() - started_s)

    def failed(self, started_s: float, error: BaseException) -> None:
        self._latency.observe(time.perf_counter() - started_s)
        self._errors.labels(self.op, self.table, error_code_label(error)).inc()

    def track(self, started_s: float, result: Message | Awaitable[Message]) -> Message | Awaitable[Message]:
        """Observe `result` (a reply now, or a future or coroutine of one) when it is ready."""
        if isinstance(result, Message):
            self.done(started_s)
            return result
        if isinstance(result, asyncio.Future):
            result.add_done_callback(functools.partial(self._future_done, started_s))
            return result
        return self._awaited(started_s, result)

    def _future_done(self, started_s: float, future: asyncio.Future[Message]) -> None:
        if future.cancelled():
            self.failed(started_s, asyncio.CancelledError())
        elif (error := future.exception()) is not None:
            self.failed(started_s, error)
        else:
            self.done(started_s)

    async def _awaited(self, started_s: float, awaitable: Awaitable[Message]) -> Message:
        try:
            reply = await awaitable
        except BaseException as error:
            self.failed(started_s, error)
            raise
        self.done(started_s)
        return reply


class ReplicaMetrics:
    def __init__(
        self,
        *,
        samples: Callable[[], Iterable[ReplicaSample]],
        waiting_writes: Callable[[], int],
        process_metrics: bool = True,
    ) -> None:
        """`samples` and `waiting_writes` are called at each scrape, on the thread serving it."""
        self.registry = CollectorRegistry()
        self.request_latency = LatencyFamily(
            "pegasus_replica_request_duration_seconds",
            "Client data requests: time from taking the request to its answer being ready.",
            ("op", "table"),
        )
        self.registry.register(self.request_latency)
        self._errors = Counter(
            "pegasus_replica_request_errors",
            "Client data requests answered with an error, by error code.",
            ("op", "table", "code"),
            registry=self.registry,
        )
        self._fsync = Histogram(
            "pegasus_replica_log_fsync_duration_seconds",
            "Mutation log fsyncs of segment files.",
            buckets=FSYNC_BUCKETS_S,
            registry=self.registry,
        )
        self._role_changes = Counter(
            "pegasus_replica_role_changes",
            "Replicas here that took this role.",
            ("role",),
            registry=self.registry,
        )
        self._role_change_children = {
            status: self._role_changes.labels(_role_label(status)) for status in PartitionStatus
        }
        self._checkpoint_bytes = Counter(
            "pegasus_replica_learn_checkpoint_bytes",
            "Checkpoint bytes fetched by learners on this server.",
            registry=self.registry,
        )
        self._learns_completed = Counter(
            "pegasus_replica_learns_completed",
            "Learners on this server that became secondaries.",
            registry=self.registry,
        )
        self._learned_decrees = Counter(
            "pegasus_replica_learned_decrees",
            "Decrees learners on this server advanced by between starting to learn and their upgrade.",
            registry=self.registry,
        )
        self.registry.register(_ReplicaStateCollector(samples, waiting_writes, self.table_label))
        if process_metrics:
            ProcessCollector(registry=self.registry)
        self._table_names: dict[int, str] = {}
        self._meters: dict[tuple[type, int], RequestMeter] = {}
        # cached_meter((request_type, app_id)): the meter `meter` returns if it is cached under that
        # key, else None (then call `meter`). The cache's own dict.get, for a caller on the hot path:
        # a lookup in C instead of a Python call per request. The dict is cleared, never replaced.
        self.cached_meter: Callable[[tuple[type, int]], RequestMeter | None] = self._meters.get
        # Replica -> its committed decree when it began learning (bounded by the replicas hosted).
        self._learning_since: dict[Gpid, int] = {}

    # --- requests (the hot path) --------------------------------------------------------------

    def meter(self, request_type: type, app_id: int) -> RequestMeter:
        """The meter of requests of this type to this table (app id; -1 when the request has none)."""
        meter = self._meters.get((request_type, app_id))
        if meter is not None:
            return meter
        table = self._table_names.get(app_id)
        if table is None:
            # Not cached under the app id: a client may name any number of them, and the name
            # arrives later for a table that exists.
            key = (request_type, -1)
            meter = self._meters.get(key)
            if meter is None:
                meter = self._meters[key] = self._new_meter(request_type, UNKNOWN_TABLE)
            return meter
        meter = self._meters[(request_type, app_id)] = self._new_meter(request_type, table)
        return meter

    def _new_meter(self, request_type: type, table: str) -> RequestMeter:
        op = op_label(request_type)
        return RequestMeter(op, table, self.request_latency.series((op, table)), self._errors)

    def set_table_names(self, names: Mapping[int, str]) -> None:
        """The tables meta knows (app id -> name); meters bind to the new names from now on."""
        if dict(names) != self._table_names:
            self._table_names = dict(names)
            self._meters.clear()

    def table_label(self, app_id: int) -> str:
        return self._table_names.get(app_id, UNKNOWN_TABLE)

    # --- events off the hot path --------------------------------------------------------------

    def observe_fsync_ns(self, elapsed_ns: int) -> None:
        """One fsync of a log segment took elapsed_ns (called on the log's worker threads)."""
        self._fsync.observe(elapsed_ns / 1e9)

    def on_checkpoint_bytes(self, received_bytes: int) -> None:
        self._checkpoint_bytes.inc(received_bytes)

    def on_role_change(
        self,
        gpid: Gpid,
        before: PartitionStatus | None,
        after: PartitionStatus | None,
        last_committed_decree: int,
    ) -> None:
        """A replica here changed role (`after` None: dropped; `before` None: not known before)."""
        if after is not None:
            self._role_change_children[after].inc()
        if after == PartitionStatus.POTENTIAL_SECONDARY and before != after:
            self._learning_since[gpid] = last_committed_decree
            return
        if before == PartitionStatus.POTENTIAL_SECONDARY or after is None:
            began = self._learning_since.pop(gpid, None)
            if began is not None and after == PartitionStatus.SECONDARY:
                self._learns_completed.inc()
                self._learned_decrees.inc(max(0, last_committed_decree - began))


class _ReplicaStateCollector:
    """The gauges computed at scrape time from the replicas hosted."""

    def __init__(
        self,
        samples: Callable[[], Iterable[ReplicaSample]],
        waiting_writes: Callable[[], int],
        table_label: Callable[[int], str],
    ) -> None:
        self._samples = samples
        self._waiting_writes = waiting_writes
        self._table_label = table_label

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        roles = dict.fromkeys(PartitionStatus, 0)
        phases = dict.fromkeys(LearnerPhase, 0)
        queued: dict[str, int] = {}
        prepared: dict[str, int] = {}
        lag: dict[str, int] = {}
        log_bytes: dict[str, int] = {}
        for sample in self._samples():
            roles[sample.status] += 1
            if sample.learner_phase is not None:
                phases[sample.learner_phase] += 1
            table = self._table_label(sample.app_id)
            queued[table] = queued.get(table, 0) + sample.queued_writes
            prepared[table] = prepared.get(table, 0) + sample.prepare_list_depth
            log_bytes[table] = log_bytes.get(table, 0) + sample.log_size_bytes
            behind = (
                0 if sample.applied_decree is None else sample.last_committed_decree - sample.applied_decree
            )
            lag[table] = max(lag.get(table, 0), behind)
        replicas, queue_depth, prepare_depth, apply_lag, log_size, learners, waiting = self._families()
        for status, count in roles.items():
            replicas.add_metric([_role_label(status)], count)
        for table, value in queued.items():
            queue_depth.add_metric([table], value)
        for table, value in prepared.items():
            prepare_depth.add_metric([table], value)
        for table, value in lag.items():
            apply_lag.add_metric([table], value)
        for table, value in log_bytes.items():
            log_size.add_metric([table], value)
        for phase, count in phases.items():
            learners.add_metric([phase.name.lower()], count)
        waiting.add_metric([], self._waiting_writes())
        yield from (replicas, queue_depth, prepare_depth, apply_lag, log_size, learners, waiting)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily("pegasus_replica_replicas", "Replicas hosted here by role.", labels=["role"]),
            GaugeMetricFamily(
                "pegasus_replica_write_queue_depth",
                "Client writes queued at primaries here, not yet in a mutation.",
                labels=["table"],
            ),
            GaugeMetricFamily(
                "pegasus_replica_prepare_list_depth",
                "Mutations prepared and not yet committed.",
                labels=["table"],
            ),
            GaugeMetricFamily(
                "pegasus_replica_apply_lag_decrees",
                "Largest gap between a replica's committed decree and its store's applied decree.",
                labels=["table"],
            ),
            GaugeMetricFamily(
                "pegasus_replica_log_size_bytes", "Bytes of mutation log segment files.", labels=["table"]
            ),
            GaugeMetricFamily(
                "pegasus_replica_learners",
                "Replicas learning here (potential secondaries) by phase.",
                labels=["phase"],
            ),
            GaugeMetricFamily(
                "pegasus_replica_waiting_writes", "Client writes waiting for their answer on this server."
            ),
        )


def _role_label(status: PartitionStatus) -> str:
    return status.name.lower()
