"""The meta server's vocabulary: function levels, table records, node liveness.

Shared by the meta event log (meta_events.py), the fold (meta_state.py), the admin messages
(meta_requests.py) and the core (meta_core.py).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol, TypeVar

import msgspec

from pegasus_kv.replication.pacifica.config import NodeAddress


class MetaLevel(enum.IntEnum):
    """Meta function levels, ordered: each level allows what the ones below it allow (Pegasus).

    STOPPED: meta changes nothing (DDL refused; queries, beacons and config syncs still answered).
    BLIND:   DDL only; no configuration change at all (replica proposals refused).
    FREEZED: DDL, and downgrades proposed by primaries; no cure, no balancing.
    STEADY:  the default: cures unhealthy partitions, no balancing.
    LIVELY:  cures and balances.
    """

    STOPPED = 0
    BLIND = 1
    FREEZED = 2
    STEADY = 3
    LIVELY = 4

    @property
    def allows_ddl(self) -> bool:
        return self >= MetaLevel.BLIND

    @property
    def allows_downgrades(self) -> bool:
        return self >= MetaLevel.FREEZED

    @property
    def allows_cure(self) -> bool:
        return self >= MetaLevel.STEADY

    @property
    def allows_balance(self) -> bool:
        return self >= MetaLevel.LIVELY


class TableStatus(enum.IntEnum):
    """Durable table statuses. Pegasus's transient creating/dropping/recalling are, here, the time
    between a DDL request and the persistence of its event: nobody sees them."""

    AVAILABLE = 0
    DROPPED = 1  # soft-dropped: kept (configs and replicas) until expire_tick, recall undoes it


class TableInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One table as the meta state holds it."""

    app_id: int
    name: str
    status: TableStatus
    partition_count: int
    replica_count: int
    envs: dict[str, str]
    create_tick: int
    drop_tick: int = -1  # meta tick of the drop; -1 while available
    expire_tick: int = -1  # meta tick after which a dropped table is purged for good


class NodeLiveness(enum.IntEnum):
    """Soft (never persisted) liveness of a replica server, from the failure detector.

    PENDING: heard of, not yet re-synced in this meta incarnation (known from the meta state when
             meta started, or beaconing for the first time). Its beacons get alive=False (no lease)
             until meta accepts a config sync from it. Meta neither drops its replicas nor places new
             ones on it; it is declared DEAD if silent past a fresh grace period.
    ALIVE:   synced, and heard from within grace_ticks.
    DEAD:    no beacon for more than grace_ticks; its lease has lapsed, so it serves nothing. It
             becomes ALIVE again only through a config sync (its beacons get alive=False until then).
    """

    PENDING = 0
    ALIVE = 1
    DEAD = 2


class NodeInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A replica server as `nodes` in the admin shell shows it."""

    address: NodeAddress
    liveness: NodeLiveness
    primary_count: int
    replica_count: int


_T = TypeVar("_T")


class RandomSource(Protocol):
    """The randomness the meta core uses (tie-breaks): pass a seeded `random.Random`."""

    def choice(self, seq: Sequence[_T]) -> _T: ...
