"""`pegasus-kv replica --config FILE`: run one replica server until SIGTERM or SIGINT.

    exit_status = run_replica("replica.toml")

Exit status: 0 after a graceful shutdown (queued log appends and applies finish, stores are flushed),
1 when the server failed (a replica could not be reopened, a bug: the log says why), 2 when the
configuration is invalid.
"""

from __future__ import annotations

import os
from pathlib import Path

from pegasus_kv.replication.replica.config import ReplicaServerConfig, load_replica_config
from pegasus_kv.replication.replica.server import ReplicaServer
from pegasus_kv.replication.server_process import run_server, serve_until_signalled


def run_replica(config_path: str | os.PathLike[str]) -> int:
    return run_server("replica", Path(config_path), load_replica_config, ReplicaServer)


async def serve_replica(config: ReplicaServerConfig) -> int:
    """Run a replica server on the running loop until SIGTERM/SIGINT; returns the exit status."""
    return await serve_until_signalled("replica", ReplicaServer(config))
