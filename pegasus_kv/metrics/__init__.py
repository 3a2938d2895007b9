"""Prometheus metrics of the servers: one registry per server, served over HTTP from its event loop.

- endpoint.py: MetricsEndpoint, GET /metrics on the configured host and metrics port.
- latency.py: cheap single-thread latency histograms for the request hot path.
- labels.py: label values from the domain (operations, error codes).
- replica.py: ReplicaMetrics (pegasus_replica_*); meta.py: MetaMetrics (pegasus_meta_*).

A registry per server (not prometheus_client's global one) keeps servers in one process (tests,
the simulator) from clashing over metric names, and lets each serve only its own metrics.
"""

from __future__ import annotations

from pegasus_kv.metrics.endpoint import METRICS_PATH, MetricsEndpoint
from pegasus_kv.metrics.latency import LatencyFamily, LatencySeries

__all__ = ["METRICS_PATH", "LatencyFamily", "LatencySeries", "MetricsEndpoint"]
