"""`pegasus-kv meta --config FILE`: run one meta server until SIGTERM or SIGINT.

    exit_status = run_meta("meta.toml")

Exit status: 0 after a graceful shutdown, 1 when the server failed (could not open its store, a
corrupt meta log, a bug: the log says why), 2 when the configuration is invalid.
"""

from __future__ import annotations

import os
from pathlib import Path

from pegasus_kv.replication.meta.config import MetaServerConfig, load_meta_config
from pegasus_kv.replication.meta.server import MetaServer
from pegasus_kv.replication.server_process import run_server, serve_until_signalled


def run_meta(config_path: str | os.PathLike[str]) -> int:
    return run_server("meta", Path(config_path), load_meta_config, MetaServer)


async def serve_meta(config: MetaServerConfig) -> int:
    """Run a meta server on the running loop until SIGTERM/SIGINT; returns the exit status."""
    return await serve_until_signalled("meta", MetaServer(config))
