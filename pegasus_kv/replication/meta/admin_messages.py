"""Cluster-wide questions to the meta server that the meta core does not answer (wire ids 290-299).

`ClusterInfoRequest` is what the admin shell's `cluster_info` shows (Pegasus `cluster_info` and the
health summary of `ls -d`): who leads, the function level, how many tables and nodes, and how healthy
the partitions are. The meta server answers it from the core's durable state and failure detector
(handlers.cluster_info); like every request, a meta that is not the leader answers NotLeaderError.
"""

from __future__ import annotations

from pegasus_kv.core.registry import Message, message
from pegasus_kv.replication.pacifica.meta_types import MetaLevel


@message
class ClusterInfoRequest(Message, tag=290):
    pass


@message
class ClusterInfoResponse(Message, tag=291):
    cluster_name: str
    # The leader's advertised "host:port" (the meta that answered) and every meta of the cluster
    # as configured.
    leader: str
    meta_servers: list[str]
    # Length of a meta tick. Meta ticks count from the Unix epoch (tick_clock.py), so a tick in a
    # reply (drop expire_tick, create_tick) times tick_ms / 1000 is a Unix time in seconds.
    tick_ms: int
    level: MetaLevel
    effective_level: MetaLevel
    table_count: int  # available tables
    dropped_table_count: int  # soft-dropped, recallable until they expire
    alive_node_count: int
    pending_node_count: int  # heard of, not yet re-synced with this meta (e.g. after a restart)
    dead_node_count: int
    # Partitions of available tables, each counted in exactly one health class below (they add up
    # to partition_count):
    partition_count: int
    healthy_partition_count: int  # a primary and every secondary (max_replica_count members)
    writable_ill_partition_count: int  # a primary and a majority of members, but not all of them
    unwritable_partition_count: int  # a primary (reads work) but fewer members than a majority
    unreadable_partition_count: int  # no primary: neither reads nor writes
