"""The meta server's metrics (prefix `pegasus_meta_`), in a registry of its own.

    metrics = MetaMetrics(is_leader=lambda: server.is_leader, cluster_info=server_cluster_info)
    metrics.count_request(type(message))       # every request the meta server takes
    metrics.on_event(event)                    # every meta event once it is durable

Counted as it happens:
- pegasus_meta_requests_total{type}: requests taken, by message type (beacon, config_sync,
  query_config, create_table ...), led or redirected alike.
- pegasus_meta_config_changes_total{config_type}: partition configuration changes made durable
  by this meta while it led (Pegasus config_type: assign_primary, upgrade_to_primary, ...).

Computed when scraped, from the leader's durable state and failure detector (the figures of
`cluster_info`, handlers.py), and absent while this meta does not lead:
- pegasus_meta_live_nodes, pegasus_meta_dead_nodes, pegasus_meta_pending_nodes: replica servers by
  liveness (pending: heard of, not yet re-synced with this meta).
- pegasus_meta_tables: available tables; pegasus_meta_dropped_tables: soft-dropped, recallable.
- pegasus_meta_partitions{health}: partitions of available tables by health (healthy,
  writable_ill, unwritable, unreadable; handlers.py partition_health).
And always:
- pegasus_meta_is_leader: 1 while this meta leads and serves, else 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric

from pegasus_kv.metrics.labels import op_label
from pegasus_kv.replication.meta.admin_messages import ClusterInfoResponse
from pegasus_kv.replication.meta.handlers import PartitionHealth
from pegasus_kv.replication.pacifica.config import ConfigType
from pegasus_kv.replication.pacifica.meta_events import ConfigurationChanged, MetaEvent


class MetaMetrics:
    def __init__(
        self,
        *,
        is_leader: Callable[[], bool],
        cluster_info: Callable[[], ClusterInfoResponse | None],
        process_metrics: bool = True,
    ) -> None:
        """`cluster_info` gives the leader's figures (None while not leading); called at each scrape."""
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "pegasus_meta_requests",
            "Requests this meta server took, by message type.",
            ("type",),
            registry=self.registry,
        )
        self._request_children: dict[type, Counter] = {}
        config_changes = Counter(
            "pegasus_meta_config_changes",
            "Partition configuration changes made durable while this meta led, by config type.",
            ("config_type",),
            registry=self.registry,
        )
        self._config_changes = {kind: config_changes.labels(kind.name.lower()) for kind in ConfigType}
        self.registry.register(_MetaStateCollector(is_leader, cluster_info))
        if process_metrics:
            ProcessCollector(registry=self.registry)

    def count_request(self, request_type: type) -> None:
        child = self._request_children.get(request_type)
        if child is None:
            # Bounded: message types are a closed, registered set (core/registry.py).
            child = self._request_children[request_type] = self._requests.labels(op_label(request_type))
        child.inc()

    def on_event(self, event: MetaEvent) -> None:
        """A meta event is durable (leader_term.py): count configuration changes."""
        if isinstance(event, ConfigurationChanged):
            self._config_changes[event.config_type].inc()


class _MetaStateCollector:
    def __init__(
        self, is_leader: Callable[[], bool], cluster_info: Callable[[], ClusterInfoResponse | None]
    ) -> None:
        self._is_leader = is_leader
        self._cluster_info = cluster_info

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        leader, live, dead, pending, tables, dropped, partitions = self._families()
        leader.add_metric([], 1 if self._is_leader() else 0)
        info = self._cluster_info()
        if info is not None:
            live.add_metric([], info.alive_node_count)
            dead.add_metric([], info.dead_node_count)
            pending.add_metric([], info.pending_node_count)
            tables.add_metric([], info.table_count)
            dropped.add_metric([], info.dropped_table_count)
            by_health = {
                PartitionHealth.HEALTHY: info.healthy_partition_count,
                PartitionHealth.WRITABLE_ILL: info.writable_ill_partition_count,
                PartitionHealth.UNWRITABLE: info.unwritable_partition_count,
                PartitionHealth.UNREADABLE: info.unreadable_partition_count,
            }
            for health, count in by_health.items():
                partitions.add_metric([health.value], count)
        yield from (leader, live, dead, pending, tables, dropped, partitions)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily("pegasus_meta_is_leader", "1 while this meta server leads and serves, else 0."),
            GaugeMetricFamily("pegasus_meta_live_nodes", "Replica servers alive (synced, beaconing)."),
            GaugeMetricFamily(
                "pegasus_meta_dead_nodes", "Replica servers declared dead (silent past grace)."
            ),
            GaugeMetricFamily(
                "pegasus_meta_pending_nodes", "Replica servers heard of but not yet re-synced with this meta."
            ),
            GaugeMetricFamily("pegasus_meta_tables", "Available tables."),
            GaugeMetricFamily(
                "pegasus_meta_dropped_tables", "Soft-dropped tables, recallable until they expire."
            ),
            GaugeMetricFamily(
                "pegasus_meta_partitions", "Partitions of available tables by health.", labels=["health"]
            ),
        )
