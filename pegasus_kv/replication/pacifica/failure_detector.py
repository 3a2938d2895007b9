"""Failure detection by ticks: who is alive, from beacons (soft state, never persisted).

Pegasus moves PacificA's failure detection to the meta server: replica servers beacon meta every
beacon_interval_ticks; a beacon reply with alive=True grants the server a lease of lease_ticks
(counted by the server from when it SENT the beacon); meta declares the server dead only when it
has heard nothing for more than grace_ticks > lease_ticks. So when meta acts on a death (promotes a
secondary), the dead server's lease has lapsed and it serves nothing: no two primaries serve at once.

States (meta_types.NodeLiveness):
- PENDING: heard of (named in the meta state when this meta incarnation started, or beaconing for
  the first time) but not yet re-synced. It gets a fresh grace period, and its beacons are answered
  alive=False: no lease until meta has accepted a config sync from it. A server that was partitioned
  away may still believe it is primary of a partition meta has since given to another node; the
  sync (and its answer) is what corrects that belief before it may serve again.
- ALIVE: synced in this incarnation and heard from within grace_ticks.
- DEAD: silent for more than grace_ticks. Its beacons are answered alive=False; it becomes ALIVE
  again only through a config sync the core accepts.

The core decides whether a sync may make a node ALIVE (`on_sync(..., may_revive=...)`): not while a
change about that node's partitions is still being persisted, nor while the node still reports
itself primary of a partition meta's durable state gives to someone else.

Bounded: at most options.max_node_count nodes are tracked; an unknown node beyond that is refused
(alive=False) rather than tracked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from pegasus_kv.replication.pacifica.config import NodeAddress
from pegasus_kv.replication.pacifica.meta_invariants import invariant
from pegasus_kv.replication.pacifica.meta_options import MetaOptions
from pegasus_kv.replication.pacifica.meta_types import NodeLiveness


@dataclasses.dataclass
class _Node:
    liveness: NodeLiveness
    last_heard_tick: int
    declared_dead_tick: int = -1


class FailureDetector:
    def __init__(self, options: MetaOptions, known_nodes: Iterable[NodeAddress], start_tick: int) -> None:
        self._options = options
        self._now = start_tick
        self._nodes: dict[NodeAddress, _Node] = {}
        # Every node the state names is tracked, even beyond max_node_count: the bound only stops
        # unknown nodes from growing the table.
        for node in sorted(known_nodes):
            self._nodes[node] = _Node(NodeLiveness.PENDING, start_tick)
        self._not_dead = len(self._nodes)

    # ------------------------------------------------------------------ events

    def on_beacon(self, node: NodeAddress, tick: int) -> bool:
        """Record a beacon; returns the `alive` answer: True only for an ALIVE (synced) node."""
        self._advance(tick)
        record = self._nodes.get(node)
        if record is None:
            self._register(node, tick, NodeLiveness.PENDING)
            return False
        if record.liveness == NodeLiveness.DEAD:
            return False
        record.last_heard_tick = tick
        return record.liveness == NodeLiveness.ALIVE

    def on_sync(self, node: NodeAddress, tick: int, *, may_revive: bool) -> bool:
        """Record a config sync. Returns True when the node is ALIVE now: it was, or it was PENDING
        or DEAD and `may_revive` (see the module docstring)."""
        self._advance(tick)
        record = self._nodes.get(node)
        if record is None:
            return self._register(node, tick, NodeLiveness.ALIVE if may_revive else NodeLiveness.PENDING)
        if record.liveness == NodeLiveness.DEAD:
            if not may_revive:
                return False
            self._not_dead += 1
            record.liveness = NodeLiveness.PENDING
        record.last_heard_tick = tick
        if record.liveness == NodeLiveness.PENDING and may_revive:
            record.liveness = NodeLiveness.ALIVE
        return record.liveness == NodeLiveness.ALIVE

    def check(self, tick: int) -> list[NodeAddress]:
        """Declare dead every node silent for more than grace_ticks; returns them, sorted."""
        self._advance(tick)
        newly_dead: list[NodeAddress] = []
        for node in sorted(self._nodes):
            record = self._nodes[node]
            if (
                record.liveness != NodeLiveness.DEAD
                and tick - record.last_heard_tick > self._options.grace_ticks
            ):
                record.liveness = NodeLiveness.DEAD
                record.declared_dead_tick = tick
                self._not_dead -= 1
                newly_dead.append(node)
        invariant(self._not_dead >= 0, "negative count of live nodes")
        return newly_dead

    def _register(self, node: NodeAddress, tick: int, liveness: NodeLiveness) -> bool:
        """Track a new node; returns whether it is ALIVE now (False too when over the limit)."""
        if len(self._nodes) >= self._options.max_node_count:
            return False
        self._nodes[node] = _Node(liveness, tick)
        self._not_dead += 1
        return liveness == NodeLiveness.ALIVE

    def _advance(self, tick: int) -> None:
        invariant(tick >= self._now, f"tick went backwards: {tick} after {self._now}")
        self._now = tick

    # ------------------------------------------------------------------ readers

    def liveness(self, node: NodeAddress) -> NodeLiveness | None:
        """None for a node never heard of."""
        record = self._nodes.get(node)
        return None if record is None else record.liveness

    def is_alive(self, node: NodeAddress) -> bool:
        """Synced in this incarnation and heard from within the grace period (PENDING is not)."""
        record = self._nodes.get(node)
        return record is not None and record.liveness == NodeLiveness.ALIVE

    def is_dead(self, node: NodeAddress) -> bool:
        record = self._nodes.get(node)
        return record is not None and record.liveness == NodeLiveness.DEAD

    def alive_nodes(self) -> list[NodeAddress]:
        return sorted(node for node, record in self._nodes.items() if record.liveness == NodeLiveness.ALIVE)

    def nodes(self) -> list[tuple[NodeAddress, NodeLiveness]]:
        return [(node, self._nodes[node].liveness) for node in sorted(self._nodes)]

    @property
    def known_count(self) -> int:
        return len(self._nodes)

    @property
    def not_dead_count(self) -> int:
        return self._not_dead

    def too_few_alive(self) -> bool:
        """Pegasus's self-freeze condition: fewer than min_live_node_count servers, or fewer than
        min_live_node_percent of the known ones, are not dead. PENDING counts as not dead: right
        after a restart meta has not heard from anyone yet and must not freeze for that."""
        if self._not_dead < self._options.min_live_node_count:
            return True
        return self._not_dead * 100 < self.known_count * self._options.min_live_node_percent
