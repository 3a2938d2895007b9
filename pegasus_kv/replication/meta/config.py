"""The meta server's configuration: a TOML file with environment overrides, checked by pydantic.

    config = load_meta_config(Path("meta.toml"))        # PEGASUS_KV_META__* variables override it

Example (every key but [store] has a default; durations are in seconds, the tick in milliseconds):

    cluster_name = "onebox"
    host = "127.0.0.1"                 # where to listen
    port = 34601                       # 0 picks a free port (tests)
    advertised_address = ""            # "host:port" others dial; default host:<bound port>
    meta_servers = ["127.0.0.1:34601", "127.0.0.1:34602"]  # every meta, for cluster_info
    metrics_port = 0                   # Prometheus metrics on http://<metrics_host>:<port>/metrics; 0: off
    metrics_host = ""                  # "" listens on `host`
    tick_ms = 1000
    beacon_interval_s = 3.0            # replica servers beacon this often ...
    lease_s = 20.0                     # ... get a lease this long ...
    grace_s = 22.0                     # ... and are declared dead after this much silence (> lease)

    [store]
    kind = "local"                     # an fsynced event log plus snapshots, one meta
    data_dir = "meta-data"             # relative to this file's directory

    # or: kind = "zookeeper", hosts = "zk1:2181,zk2:2181", root = "/pegasus-kv", session_timeout_s = 10

    [ssh]                              # the admin shell, served by the leader (pegasus_kv/shell/)
    port = 34701                       # 0 (the default): no admin shell
    host = ""                          # where it listens; "" = the meta's host
    authorized_keys = "authorized_keys"  # OpenSSH format, role="admin"|"readonly" per key; re-read on change
    host_key = ""                      # "" = <store data_dir>/ssh_host_ed25519_key, made if missing
    audit_log = ""                     # "" = <store data_dir>/audit.log (JSON lines, rotated)
    audit_log_max_bytes = 16777216
    audit_log_backups = 3
    max_connections = 32

With the zookeeper store there is no local data dir: name host_key and audit_log (share one host key
between the metas, so clients meet the same key after a failover).

Environment overrides (toml_settings.py): PEGASUS_KV_META__PORT=34602,
PEGASUS_KV_META__STORE__DATA_DIR=/data/meta, PEGASUS_KV_META__META_SERVERS=h1:34601,h2:34601.

Periods are converted to meta ticks rounding up (`meta_options()`); the rules of the meta core
(beacon < lease < grace, meta_options.py) are checked on the converted values too, so a tick too
coarse to tell lease and grace apart is refused at startup rather than at the first beacon.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from pegasus_kv.core.errors import InvalidArgumentError
from pegasus_kv.replication.address_fields import AdvertisedAddress, MetaServerList
from pegasus_kv.replication.meta.store import MAX_APPEND_RECORDS
from pegasus_kv.replication.meta.toml_settings import load_toml_settings
from pegasus_kv.replication.meta.zk_store import MAX_LOG_ZNODES
from pegasus_kv.replication.pacifica.meta_options import MetaOptions

ENV_PREFIX = "PEGASUS_KV_META__"
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")  # a ZooKeeper path component, a Kafka topic part
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve(path: Path, info: ValidationInfo) -> Path:
    base_dir = (info.context or {}).get("base_dir")
    if path.is_absolute() or base_dir is None:
        return path
    return Path(base_dir) / path


class LocalStoreConfig(_Strict):
    """One meta server, its state in a local directory (an fsynced event log plus snapshots)."""

    kind: Literal["local"] = "local"
    data_dir: Path

    @field_validator("data_dir")
    @classmethod
    def _relative_to_config_file(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve(value, info)


class ZooKeeperStoreConfig(_Strict):
    """Several meta servers sharing their state in ZooKeeper; one leads, the others redirect."""

    kind: Literal["zookeeper"]
    hosts: Annotated[str, Field(min_length=1, max_length=4096)]  # "zk1:2181,zk2:2181"
    root: Annotated[str, Field(pattern=r"^/[A-Za-z0-9_./-]*$", max_length=512)] = "/pegasus-kv"
    session_timeout_s: PositiveSeconds = 10.0
    connect_timeout_s: PositiveSeconds = 15.0


StoreConfig = Annotated[LocalStoreConfig | ZooKeeperStoreConfig, Field(discriminator="kind")]

HOST_KEY_FILE = "ssh_host_ed25519_key"
AUDIT_LOG_FILE = "audit.log"


class AdminShellConfig(_Strict):
    """The SSH admin shell the leading meta serves (DESIGN.md section 7). Disabled while port = 0."""

    port: Annotated[int, Field(ge=0, le=65535)] = 0
    host: Annotated[str, Field(max_length=253)] = ""
    authorized_keys: Path | None = None
    host_key: Path | None = None
    audit_log: Path | None = None
    audit_log_max_bytes: Annotated[int, Field(ge=4096, le=1 << 40)] = 16 * 1024 * 1024
    audit_log_backups: Annotated[int, Field(ge=0, le=100)] = 3
    max_connections: Annotated[int, Field(ge=1, le=10_000)] = 32

    @field_validator("authorized_keys", "host_key", "audit_log", mode="before")
    @classmethod
    def _empty_is_default(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("authorized_keys", "host_key", "audit_log")
    @classmethod
    def _relative_to_config_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)

    @property
    def enabled(self) -> bool:
        return self.port != 0


class MetaServerConfig(_Strict):
    cluster_name: str = "pegasus"
    host: Annotated[str, Field(min_length=1, max_length=253)] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 34601
    advertised_address: AdvertisedAddress = ""
    meta_servers: MetaServerList = Field(default_factory=list)
    # Prometheus metrics over HTTP (pegasus_kv/metrics); port 0 serves none, host "" means `host`.
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0
    metrics_host: Annotated[str, Field(max_length=253)] = ""
    store: StoreConfig
    ssh: AdminShellConfig = Field(default_factory=AdminShellConfig)

    # Time. Ticks count from the Unix epoch (tick_clock.py); changing tick_ms between runs is fine.
    tick_ms: Annotated[int, Field(ge=1, le=60_000)] = 1000
    beacon_interval_s: PositiveSeconds = 3.0
    lease_s: PositiveSeconds = 20.0
    grace_s: PositiveSeconds = 22.0
    add_secondary_wait_s: Seconds = 300.0
    add_secondary_timeout_s: PositiveSeconds = 600.0
    learner_resend_s: PositiveSeconds = 5.0  # an outstanding ADD_SECONDARY is sent again this often
    role_switch_timeout_s: PositiveSeconds = 600.0
    drop_hold_s: Seconds = 7 * 24 * 3600.0

    # Self-freeze and limits of the meta core (meta_options.py).
    min_live_node_count: Annotated[int, Field(ge=1)] = 3
    min_live_node_percent: Annotated[int, Field(ge=0, le=100)] = 65
    max_partition_count: Annotated[int, Field(ge=1, le=65536)] = 4096
    max_table_count: Annotated[int, Field(ge=1, le=65536)] = 4096
    max_node_count: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    max_changes_per_tick: Annotated[int, Field(ge=1, le=MAX_APPEND_RECORDS)] = 256

    # The runtime. A snapshot replaces the log every snapshot_every_records records (ZooKeeper cannot
    # list many more than MAX_LOG_ZNODES log znodes, so the bound keeps far below it).
    snapshot_every_records: Annotated[int, Field(ge=1, le=MAX_LOG_ZNODES // 5)] = 1000
    # Batches handed out by the core and not yet durable; at the bound, requests that may change
    # the state are refused with BUSY (retriable) until the store catches up.
    max_pending_persists: Annotated[int, Field(ge=1, le=1_000_000)] = 4096
    # Records in one store append (several batches are coalesced up to this).
    max_append_records: Annotated[int, Field(ge=1, le=MAX_APPEND_RECORDS)] = 1000
    # ConfigCommands to replica servers in flight at once; beyond it they are dropped (logged):
    # the servers' periodic config sync repairs a lost command.
    max_outgoing_commands: Annotated[int, Field(ge=1, le=1_000_000)] = 4096
    command_timeout_s: PositiveSeconds = 3.0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("cluster_name")
    @classmethod
    def _check_cluster_name(cls, value: str) -> str:
        if not _CLUSTER_NAME.match(value):
            raise ValueError("cluster_name must be 1-128 characters of [A-Za-z0-9_.-]")
        return value

    @model_validator(mode="after")
    def _check_periods(self) -> MetaServerConfig:
        if not self.beacon_interval_s < self.lease_s < self.grace_s:
            raise ValueError(
                f"need beacon_interval_s ({self.beacon_interval_s}) < lease_s ({self.lease_s}) < grace_s "
                f"({self.grace_s}): a replica server must stop serving before meta declares it dead"
            )
        try:
            self.meta_options()
        except InvalidArgumentError as exc:
            raise ValueError(f"with tick_ms = {self.tick_ms}: {exc.message}") from exc
        if self.ssh.enabled:
            if self.ssh.authorized_keys is None:
                raise ValueError("ssh.authorized_keys is required when ssh.port is set (who may log in?)")
            if not isinstance(self.store, LocalStoreConfig) and (
                self.ssh.host_key is None or self.ssh.audit_log is None
            ):
                raise ValueError(
                    "with the zookeeper store, ssh.host_key and ssh.audit_log must be set (no local data dir)"
                )
        return self

    def ssh_host_key_path(self) -> Path:
        """The admin shell's host key file (default: in the local store's data dir)."""
        if self.ssh.host_key is not None:
            return self.ssh.host_key
        if not isinstance(self.store, LocalStoreConfig):
            raise InvalidArgumentError("ssh.host_key is not set")
        return self.store.data_dir / HOST_KEY_FILE

    def ssh_audit_log_path(self) -> Path:
        """The admin shell's audit log (default: in the local store's data dir)."""
        if self.ssh.audit_log is not None:
            return self.ssh.audit_log
        if not isinstance(self.store, LocalStoreConfig):
            raise InvalidArgumentError("ssh.audit_log is not set")
        return self.store.data_dir / AUDIT_LOG_FILE

    def ticks(self, seconds: float) -> int:
        """`seconds` in meta ticks, rounded up (a period never ends early)."""
        # 0.3 s of 100 ms ticks is 3.0000000000000004 in floating point: 3 ticks, not 4.
        return math.ceil(round(seconds * 1000.0 / self.tick_ms, 6))

    def meta_options(self) -> MetaOptions:
        return MetaOptions(
            beacon_interval_ticks=self.ticks(self.beacon_interval_s),
            lease_ticks=self.ticks(self.lease_s),
            grace_ticks=self.ticks(self.grace_s),
            add_secondary_wait_ticks=self.ticks(self.add_secondary_wait_s),
            add_secondary_timeout_ticks=self.ticks(self.add_secondary_timeout_s),
            learner_resend_ticks=self.ticks(self.learner_resend_s),
            role_switch_timeout_ticks=self.ticks(self.role_switch_timeout_s),
            min_live_node_count=self.min_live_node_count,
            min_live_node_percent=self.min_live_node_percent,
            drop_hold_ticks=self.ticks(self.drop_hold_s),
            max_partition_count=self.max_partition_count,
            max_table_count=self.max_table_count,
            max_node_count=self.max_node_count,
            max_changes_per_tick=self.max_changes_per_tick,
        )


def load_meta_config(path: Path, environ: dict[str, str] | None = None) -> MetaServerConfig:
    """Read the TOML file at `path`, apply PEGASUS_KV_META__* overrides (os.environ by default)."""
    return load_toml_settings(path, MetaServerConfig, env_prefix=ENV_PREFIX, environ=environ)
