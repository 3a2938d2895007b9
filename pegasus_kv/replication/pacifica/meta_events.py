"""The events of the meta log: the meta state is their fold (DESIGN.md section 5).

Every durable change the configuration manager makes is one of these events, appended to the meta
store (an fsynced local file, or ZooKeeper) BEFORE anyone is told about it. `MetaState.apply`
(meta_state.py) folds them; a restarted meta replays them (after the newest snapshot) and loses
nothing that was acknowledged.

They form a msgspec tagged union (field "event" names the type) encoded as msgpack maps, so a store
can hold them one per record, new optional fields can be added later, and an operator can decode a
record by hand. `encode_event` / `decode_event` are the codec; tags are part of the store format:
never rename one.

What is NOT an event, and why:
- Node liveness (beacons, deaths, revivals). A restarted meta can trust neither a recorded "alive"
  (time has passed) nor a recorded "dead" (the node may have come back while meta was down), so it
  must re-observe beacons anyway: every node starts PENDING with a fresh grace period. Persisting
  each liveness flip would also tie beacon handling to store latency. Everything a death changes
  that matters (a member dropped, a primary promoted) is persisted as ConfigurationChanged.
- The self-freeze (too few live nodes): derived from liveness, so soft as well. The level an
  operator sets is durable (MetaLevelChanged).
- Learner requests (ADD_SECONDARY) and what servers reported in config syncs: soft; a lost
  request is re-issued, reports are re-sent periodically.
"""

from __future__ import annotations

import msgspec

from pegasus_kv.replication.pacifica.config import ConfigType, NodeAddress, PartitionConfiguration
from pegasus_kv.replication.pacifica.meta_types import MetaLevel


class MetaEventBase(msgspec.Struct, frozen=True, kw_only=True, tag_field="event"):
    """Base of the meta events (not itself an event)."""


class TableCreated(MetaEventBase, frozen=True, kw_only=True, tag="table_created"):
    """A table with `partition_count` (a power of two) partitions, each with ballot 0 and no
    members; cure then assigns primaries on live nodes."""

    app_id: int
    name: str
    partition_count: int
    replica_count: int
    envs: dict[str, str]
    create_tick: int


class TableDropped(MetaEventBase, frozen=True, kw_only=True, tag="table_dropped"):
    """Soft drop (Pegasus `drop`): the table disappears from clients but its configurations and
    replicas are kept until expire_tick, so TableRecalled can undo it."""

    app_id: int
    drop_tick: int
    expire_tick: int


class TableRecalled(MetaEventBase, frozen=True, kw_only=True, tag="table_recalled"):
    """Undo a drop, under `name` (the old one, or a new one if the old is taken meanwhile)."""

    app_id: int
    name: str


class TableRenamed(MetaEventBase, frozen=True, kw_only=True, tag="table_renamed"):
    app_id: int
    new_name: str


class TablePurged(MetaEventBase, frozen=True, kw_only=True, tag="table_purged"):
    """The hold of a dropped table expired: it and its configurations are forgotten; servers are
    told to delete its replicas (config sync gc)."""

    app_id: int


class AppEnvsChanged(MetaEventBase, frozen=True, kw_only=True, tag="app_envs_changed"):
    """The table's envs are now exactly `envs` (set / del / clear all produce the full new map)."""

    app_id: int
    envs: dict[str, str]


class ConfigurationChanged(MetaEventBase, frozen=True, kw_only=True, tag="configuration_changed"):
    """Partition configuration `config.gpid` is now `config`, reached from the previous one by
    `config_type` applied to `node` with ballot + 1 (meta_transitions.py checks the step)."""

    config: PartitionConfiguration
    config_type: ConfigType
    node: NodeAddress


class MetaLevelChanged(MetaEventBase, frozen=True, kw_only=True, tag="meta_level_changed"):
    """The operator set the function level (set_meta_level)."""

    level: MetaLevel


MetaEvent = (
    TableCreated
    | TableDropped
    | TableRecalled
    | TableRenamed
    | TablePurged
    | AppEnvsChanged
    | ConfigurationChanged
    | MetaLevelChanged
)

_ENCODER = msgspec.msgpack.Encoder()
_DECODER: msgspec.msgpack.Decoder[MetaEvent] = msgspec.msgpack.Decoder(MetaEvent)


def encode_event(event: MetaEvent) -> bytes:
    """One event as a msgpack map (a self-describing store record)."""
    return _ENCODER.encode(event)


def decode_event(data: bytes) -> MetaEvent:
    """Inverse of encode_event; raises msgspec.ValidationError / DecodeError on a bad record."""
    return _DECODER.decode(data)
