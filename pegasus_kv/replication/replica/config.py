"""The replica server's configuration: a TOML file with environment overrides, checked by pydantic.

    config = load_replica_config(Path("replica.toml"))   # PEGASUS_KV_REPLICA__* variables override it

Example (only meta_servers and data_dir have no default; durations in seconds, the tick in ms):

    host = "127.0.0.1"                 # where to listen
    port = 34801                       # 0 picks a free port (tests)
    advertised_address = ""            # "host:port" meta and peers dial; default host:<bound port>
    meta_servers = ["127.0.0.1:34601"]
    data_dir = "replica-data"          # relative to this file's directory
    metrics_port = 0                   # Prometheus metrics on http://<metrics_host>:<port>/metrics; 0: off
    metrics_host = ""                  # "" listens on `host`
    tick_ms = 100
    beacon_interval_s = 3.0            # must match the meta server's ...
    lease_s = 20.0                     # ... (meta's grace_s must exceed this)

    [log]
    fsync_policy = "group"             # group | always | none
    shared_segment_bytes = 33554432    # policy group: the server's shared log rotates past this

Environment overrides work as for the meta server (meta/toml_settings.py):
PEGASUS_KV_REPLICA__PORT=34802, PEGASUS_KV_REPLICA__LOG__FSYNC_POLICY=none,
PEGASUS_KV_REPLICA__META_SERVERS=h1:34601,h2:34601.

Periods become ticks of the replica core (options.py) with `node_options()`. The lease is rounded
DOWN (a server must never believe its lease longer than meta granted it: PacificA's primary
invariant rests on the lease ending before meta's grace period); every other period rounds up.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from pegasus_kv.core.errors import InvalidArgumentError
from pegasus_kv.replication.address_fields import AdvertisedAddress, MetaServerList
from pegasus_kv.replication.meta.toml_settings import load_toml_settings
from pegasus_kv.replication.pacifica.options import NodeOptions, ReplicaOptions
from pegasus_kv.replication.replica.log_store import FsyncPolicy
from pegasus_kv.replication.replica.mutation_log import MutationLogOptions
from pegasus_kv.storage import StoreOptions

ENV_PREFIX = "PEGASUS_KV_REPLICA__"
MiB = 1024 * 1024

Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(ge=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogConfig(_Strict):
    """The mutation log of every replica (mutation_log.py)."""

    fsync_policy: Literal["group", "always", "none"] = "group"
    segment_bytes: Annotated[int, Field(ge=4096, le=1 << 34)] = 32 * MiB
    max_batch_bytes: Annotated[int, Field(ge=4096, le=1 << 30)] = 4 * MiB
    # Under policy `group` every log's batch of a group-commit round is made durable by one write to
    # the server's shared log (shared_log.py). Its segment rotates once the next round would take it
    # past this; each rotation syncs every private log first, then deletes the older segments. So
    # this bounds what a restart reads back (a few segments) against how often private logs sync.
    shared_segment_bytes: Annotated[int, Field(ge=4096, le=1 << 34)] = 32 * MiB


class StoreConfig(_Strict):
    """The partition store of every replica (storage/options.py)."""

    write_buffer_bytes: Annotated[int, Field(ge=MiB, le=1 << 34)] = 64 * MiB
    sweep_safety_margin_s: Annotated[int, Field(ge=0)] = 300


class ReplicaServerConfig(_Strict):
    host: Annotated[str, Field(min_length=1, max_length=253)] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 34801
    advertised_address: AdvertisedAddress = ""
    meta_servers: Annotated[MetaServerList, Field(min_length=1)]
    data_dir: Path
    # Prometheus metrics over HTTP (pegasus_kv/metrics); port 0 serves none, host "" means `host`.
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0
    metrics_host: Annotated[str, Field(max_length=253)] = ""

    # Time (seconds; converted to ticks of tick_ms).
    tick_ms: Annotated[int, Field(ge=1, le=60_000)] = 100
    beacon_interval_s: PositiveSeconds = 3.0
    lease_s: PositiveSeconds = 20.0
    config_sync_interval_s: PositiveSeconds = 30.0
    config_sync_timeout_s: PositiveSeconds = 5.0
    prepare_timeout_s: PositiveSeconds = 1.0  # Pegasus prepare_timeout_ms_for_secondaries
    learner_prepare_timeout_s: PositiveSeconds = 3.0  # ..._for_potential_secondaries
    group_check_interval_s: PositiveSeconds = 10.0
    learn_timeout_s: PositiveSeconds = 5.0
    proposal_timeout_s: PositiveSeconds = 5.0

    # The replica core's bounds (options.py).
    prepare_list_capacity: Annotated[int, Field(ge=2, le=100_000)] = 110
    # One mutation in two-phase commit per partition at a time (Pegasus allows 10): writes arriving
    # meanwhile wait in the queue and go together in the next mutation. Every mutation costs three
    # log fsyncs, four replica messages and a core event per member, whatever its size, so under
    # load fewer, larger mutations win: on onebox (64 writers, 8 partitions) 1 gave 4 writes per
    # mutation and ~4,700 writes/s, 2 gave 2.7 and ~3,500, 10 gave 1.7 and ~3,100.
    max_inflight_mutations: Annotated[int, Field(ge=1, le=100_000)] = 1
    max_queued_writes: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    max_batch_writes: Annotated[int, Field(ge=1, le=100_000)] = 64
    max_batch_bytes: Annotated[int, Field(ge=1, le=1 << 30)] = MiB
    min_replica_count: Annotated[int, Field(ge=1, le=16)] = 2
    max_learn_batch_mutations: Annotated[int, Field(ge=1, le=100_000)] = 500
    max_learners: Annotated[int, Field(ge=1, le=64)] = 3
    max_replicas: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000

    # The runtime.
    # Client writes waiting for their mutation to apply, on the whole server; beyond it: BUSY.
    max_waiting_writes: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    # Outgoing one-way messages queued per peer server (prepares, acks, learn responses); beyond it
    # the newest are dropped and counted (the protocol resends on its timeouts).
    max_queued_messages_per_peer: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000
    # Requests to meta (beacons, syncs, proposals, table queries) in flight at once.
    max_meta_calls_in_flight: Annotated[int, Field(ge=1, le=10_000)] = 64
    rpc_timeout_s: PositiveSeconds = 5.0
    meta_timeout_s: PositiveSeconds = 3.0
    # Every flush_interval_s each replica's store is flushed and its log collected below it.
    flush_interval_s: PositiveSeconds = 60.0
    # Every sweep_interval_s each primary runs one bounded step of the expiry sweep.
    sweep_interval_s: PositiveSeconds = 60.0
    sweep_max_keys: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    # Learning: bytes of checkpoint file per message, how long a learner's checkpoint or log range
    # is kept for it without being asked for, and how many checkpoints each replica keeps.
    learn_chunk_bytes: Annotated[int, Field(ge=4096, le=8 * MiB)] = MiB
    learn_hold_s: PositiveSeconds = 300.0
    max_checkpoints_per_replica: Annotated[int, Field(ge=1, le=16)] = 2
    # Worker threads for stores and checkpoint files (the mutation logs use their own executor).
    io_threads: Annotated[int, Field(ge=1, le=256)] = 8
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    log: LogConfig = LogConfig()
    store: StoreConfig = StoreConfig()

    @field_validator("data_dir")
    @classmethod
    def _relative_to_config_file(cls, value: Path, info: ValidationInfo) -> Path:
        base_dir = (info.context or {}).get("base_dir")
        if value.is_absolute() or base_dir is None:
            return value
        return Path(base_dir) / value

    @model_validator(mode="after")
    def _check_periods(self) -> ReplicaServerConfig:
        if not self.beacon_interval_s < self.lease_s:
            raise ValueError(
                f"need beacon_interval_s ({self.beacon_interval_s}) < lease_s ({self.lease_s}): "
                "otherwise the lease lapses between beacons"
            )
        if self.max_inflight_mutations > self.prepare_list_capacity:
            raise ValueError("max_inflight_mutations must not exceed prepare_list_capacity")
        try:
            self.node_options()
        except InvalidArgumentError as exc:
            raise ValueError(f"with tick_ms = {self.tick_ms}: {exc.message}") from exc
        except AssertionError as exc:  # the core's require() on its options
            raise ValueError(f"with tick_ms = {self.tick_ms}: {exc}") from exc
        return self

    def ticks(self, seconds: float) -> int:
        """`seconds` in ticks, rounded up (a timeout never fires early), at least 1."""
        return max(1, math.ceil(round(seconds * 1000.0 / self.tick_ms, 6)))

    def lease_ticks(self) -> int:
        """The lease in ticks, rounded down (never longer than meta granted)."""
        return math.floor(round(self.lease_s * 1000.0 / self.tick_ms, 6))

    def node_options(self) -> NodeOptions:
        replica = ReplicaOptions(
            prepare_list_capacity=self.prepare_list_capacity,
            max_inflight_mutations=self.max_inflight_mutations,
            max_queued_writes=self.max_queued_writes,
            max_batch_writes=self.max_batch_writes,
            max_batch_bytes=self.max_batch_bytes,
            min_replica_count=self.min_replica_count,
            prepare_timeout_ticks=self.ticks(self.prepare_timeout_s),
            learner_prepare_timeout_ticks=self.ticks(self.learner_prepare_timeout_s),
            group_check_period_ticks=self.ticks(self.group_check_interval_s),
            learn_timeout_ticks=self.ticks(self.learn_timeout_s),
            proposal_timeout_ticks=self.ticks(self.proposal_timeout_s),
            max_learn_batch_mutations=self.max_learn_batch_mutations,
            max_learners=self.max_learners,
        )
        beacon_ticks = self.ticks(self.beacon_interval_s)
        lease_ticks = self.lease_ticks()
        if lease_ticks <= beacon_ticks:
            raise InvalidArgumentError(
                f"lease_s ({self.lease_s}) is {lease_ticks} ticks, not more than the beacon's {beacon_ticks}"
            )
        return NodeOptions(
            beacon_period_ticks=beacon_ticks,
            lease_ticks=lease_ticks,
            config_sync_period_ticks=self.ticks(self.config_sync_interval_s),
            config_sync_timeout_ticks=self.ticks(self.config_sync_timeout_s),
            max_replicas=self.max_replicas,
            replica=replica,
        )

    def log_options(self) -> MutationLogOptions:
        return MutationLogOptions(
            segment_bytes=self.log.segment_bytes,
            fsync_policy=FsyncPolicy(self.log.fsync_policy),
            max_batch_bytes=self.log.max_batch_bytes,
        )

    def store_options(self) -> StoreOptions:
        return StoreOptions(
            write_buffer_bytes=self.store.write_buffer_bytes,
            sweep_safety_margin_s=self.store.sweep_safety_margin_s,
        )


def load_replica_config(path: Path, environ: dict[str, str] | None = None) -> ReplicaServerConfig:
    """Read the TOML file at `path`, apply PEGASUS_KV_REPLICA__* overrides (os.environ by default)."""
    return load_toml_settings(path, ReplicaServerConfig, env_prefix=ENV_PREFIX, environ=environ)
