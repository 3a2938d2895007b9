"""A mutation: the unit the primary orders, replicates, logs and applies.

The primary batches the client writes waiting in its queue into one mutation, stamps it with the
next decree and a timestamp, and every replica applies it atomically in decree order. The
timestamp (not each replica's own clock) decides TTLs and timetags, so all replicas compute the
same bytes. `cluster_id` is the cluster the writes originated in (duplication keeps it).
"""

from __future__ import annotations

import msgspec

from pegasus_kv.core.messages import WriteRequest


class Mutation(msgspec.Struct, array_like=True, frozen=True):
    ballot: int
    decree: int
    timestamp_us: int
    writes: list[WriteRequest]
    cluster_id: int = 0

    @property
    def is_empty(self) -> bool:
        """An empty mutation (a new primary's no-op) still advances the applied decree."""
        return not self.writes
