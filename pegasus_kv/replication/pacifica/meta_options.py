"""Options of the meta core. Every period is in ticks: the runtime decides how long a tick is.

The defaults assume one tick = 100 ms, like the replica core's (options.py), and follow Pegasus:
beacons every 3 s, lease 20 s, grace 22 s, wait 5 minutes for a dropped replica to come back before
copying a new one, hold a dropped table 7 days. `lease_ticks` must be the replica servers' own
lease (NodeOptions.lease_ticks in options.py): configure both from one setting, since the
guarantee is meta's grace > the servers' lease.
"""

from __future__ import annotations

import dataclasses

from pegasus_kv.core.errors import InvalidArgumentError


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetaOptions:
    # Failure detection. A replica server beacons every beacon_interval_ticks; the lease a beacon
    # reply grants lasts lease_ticks from the beacon's send time; meta declares the server dead only
    # grace_ticks after the last beacon it received. grace > lease is what makes a dead server's
    # primaries stop serving before meta names new ones (PacificA primary invariant).
    beacon_interval_ticks: int = 30
    lease_ticks: int = 200
    grace_ticks: int = 220
    # Cure. How long a partition short of replicas waits for its dropped member's node to come back
    # (cheap: it catches up from its own log) before a learner is added on another node (a copy).
    add_secondary_wait_ticks: int = 3_000
    # A learner request (ADD_SECONDARY) not turned into a secondary within this many ticks is
    # forgotten, and cure may ask again (possibly on another node).
    add_secondary_timeout_ticks: int = 6_000
    # Meta's ConfigCommands are fire-and-forget, and config sync repairs a lost configuration but
    # not a lost ADD_SECONDARY: while a learner request is outstanding it is sent again this often
    # (the primary takes a repeat as a nudge: it re-invites the same learner, it adds nothing).
    # Without it, one lost command left a restarted sole primary without secondaries, and so
    # unwritable, for add_secondary_timeout.
    learner_resend_ticks: int = 50
    # The balancer's preferred new primary is forgotten after this many ticks (cure then promotes
    # whichever secondary is best).
    role_switch_timeout_ticks: int = 6_000
    # Self-freeze: meta behaves as FREEZED while fewer than min_live_node_count servers, or fewer
    # than min_live_node_percent of the known ones, are not dead (Pegasus: 3 and 65%).
    min_live_node_count: int = 3
    min_live_node_percent: int = 65
    # DDL.
    drop_hold_ticks: int = 7 * 24 * 3600 * 10
    max_partition_count: int = 4096
    max_table_count: int = 4096
    # Bounds on soft state and on the work of one tick.
    max_node_count: int = 10_000
    max_changes_per_tick: int = 256
    max_replicas_per_sync: int = 100_000
    # Batches handed out and not yet durable. Beyond this the store is not keeping up: meta makes no
    # new change (cure waits, DDL gets BUSY, proposals are refused) until it catches up.
    max_batches_in_flight: int = 1_000

    def __post_init__(self) -> None:
        positive = (
            "beacon_interval_ticks",
            "lease_ticks",
            "grace_ticks",
            "add_secondary_timeout_ticks",
            "learner_resend_ticks",
            "role_switch_timeout_ticks",
            "min_live_node_count",
            "max_partition_count",
            "max_table_count",
            "max_node_count",
            "max_changes_per_tick",
            "max_replicas_per_sync",
            "max_batches_in_flight",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"meta option {name} must be >= 1, got {getattr(self, name)}")
        for name in ("add_secondary_wait_ticks", "drop_hold_ticks"):
            if getattr(self, name) < 0:
                raise InvalidArgumentError(f"meta option {name} must be >= 0, got {getattr(self, name)}")
        if self.beacon_interval_ticks >= self.lease_ticks:
            raise InvalidArgumentError(
                f"beacon_interval_ticks ({self.beacon_interval_ticks}) must be < lease_ticks "
                f"({self.lease_ticks}): otherwise leases lapse between beacons"
            )
        if self.grace_ticks <= self.lease_ticks:
            raise InvalidArgumentError(
                f"grace_ticks ({self.grace_ticks}) must be > lease_ticks ({self.lease_ticks}): a server "
                "must have stopped serving before meta declares it dead and names new primaries"
            )
        if not 0 <= self.min_live_node_percent <= 100:
            raise InvalidArgumentError(
                f"min_live_node_percent must be in 0..100, got {self.min_live_node_percent}"
            )
