"""The meta server's metrics: requests by type, configuration changes by type, and the cluster as
the leader sees it (nodes by liveness, tables, partitions by health), absent while not leading."""

from __future__ import annotations

from pegasus_kv.core.ids import Gpid
from pegasus_kv.metrics.meta import MetaMetrics
from pegasus_kv.replication.meta.admin_messages import ClusterInfoResponse
from pegasus_kv.replication.pacifica.config import ConfigType, PartitionConfiguration
from pegasus_kv.replication.pacifica.meta_events import ConfigurationChanged, TableCreated
from pegasus_kv.replication.pacifica.meta_messages import BeaconRequest, ConfigSyncRequest
from pegasus_kv.replication.pacifica.meta_requests import QueryConfigRequest
from pegasus_kv.replication.pacifica.meta_types import MetaLevel
from tests.unit.metrics_support import rendered, value


def cluster(alive: int, dead: int, healthy: int, writable_ill: int) -> ClusterInfoResponse:
    return ClusterInfoResponse(
        cluster_name="onebox",
        leader="127.0.0.1:34601",
        meta_servers=["127.0.0.1:34601"],
        tick_ms=100,
        level=MetaLevel.STEADY,
        effective_level=MetaLevel.STEADY,
        table_count=1,
        dropped_table_count=0,
        alive_node_count=alive,
        pending_node_count=0,
        dead_node_count=dead,
        partition_count=healthy + writable_ill,
        healthy_partition_count=healthy,
        writable_ill_partition_count=writable_ill,
        unwritable_partition_count=0,
        unreadable_partition_count=0,
    )


def changed(config_type: ConfigType, index: int) -> ConfigurationChanged:
    config = PartitionConfiguration(Gpid(2, index), ballot=2, primary="127.0.0.1:34801")
    return ConfigurationChanged(config=config, config_type=config_type, node="127.0.0.1:34801")


class Leadership:
    """What the meta server tells its metrics: whether it leads, and the cluster it sees then."""

    def __init__(self, info: ClusterInfoResponse) -> None:
        self.leading = True
        self.info = info

    def cluster_info(self) -> ClusterInfoResponse | None:
        return self.info if self.leading else None


def test_a_leader_reports_requests_changes_and_the_cluster_it_sees() -> None:
    leadership = Leadership(cluster(alive=3, dead=0, healthy=8, writable_ill=0))
    metrics = MetaMetrics(
        is_leader=lambda: leadership.leading, cluster_info=leadership.cluster_info, process_metrics=False
    )
    for _ in range(3):
        metrics.count_request(BeaconRequest)
    metrics.count_request(ConfigSyncRequest)
    metrics.count_request(QueryConfigRequest)
    metrics.on_event(
        TableCreated(app_id=2, name="temp", partition_count=8, replica_count=3, envs={}, create_tick=1)
    )
    for index in range(8):
        metrics.on_event(changed(ConfigType.ASSIGN_PRIMARY, index))
    metrics.on_event(changed(ConfigType.DOWNGRADE_TO_INACTIVE, 0))

    samples = rendered(metrics.registry)
    assert value(samples, "pegasus_meta_requests_total", type="beacon") == 3
    assert value(samples, "pegasus_meta_requests_total", type="config_sync") == 1
    assert value(samples, "pegasus_meta_requests_total", type="query_config") == 1
    assert value(samples, "pegasus_meta_config_changes_total", config_type="assign_primary") == 8
    assert value(samples, "pegasus_meta_config_changes_total", config_type="downgrade_to_inactive") == 1
    assert value(samples, "pegasus_meta_config_changes_total", config_type="upgrade_to_primary") == 0
    assert value(samples, "pegasus_meta_is_leader") == 1
    assert value(samples, "pegasus_meta_live_nodes") == 3
    assert value(samples, "pegasus_meta_dead_nodes") == 0
    assert value(samples, "pegasus_meta_tables") == 1
    assert value(samples, "pegasus_meta_partitions", health="healthy") == 8
    assert value(samples, "pegasus_meta_partitions", health="unreadable") == 0

    # A replica server dies: the next scrape sees the leader's new view.
    leadership.info = cluster(alive=2, dead=1, healthy=0, writable_ill=8)
    samples = rendered(metrics.registry)
    assert value(samples, "pegasus_meta_dead_nodes") == 1
    assert value(samples, "pegasus_meta_partitions", health="writable_ill") == 8

    # Leadership lost: the cluster figures are not this meta's to report any more.
    leadership.leading = False
    samples = rendered(metrics.registry)
    assert value(samples, "pegasus_meta_is_leader") == 0
    assert not [name for name, _ in samples if name in ("pegasus_meta_live_nodes", "pegasus_meta_partitions")]
