"""`pegasus-kv replica --config FILE`: run one replica server until SIGTERM or SIGINT.

    exit_status = run_replica("replica.toml")

Exit status: 0 after a graceful shutdown (queued log appends and applies finish, stores are flushed),
1 when the server failed (a replica could not be reopened, a bug: the log says why), 2 when the
configuration is invalid.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from pegasus_kv.core.errors import PegasusError
from pegasus_kv.replication import loop
from pegasus_kv.replication.replica.config import ReplicaServerConfig, load_replica_config
from pegasus_kv.replication.replica.server import ReplicaServer

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def run_replica(config_path: str | os.PathLike[str]) -> int:
    try:
        config = load_replica_config(Path(config_path))
    except PegasusError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level, format=LOG_FORMAT)
    return loop.run(serve_replica(config))


async def serve_replica(config: ReplicaServerConfig) -> int:
    """Run a replica server on the running loop until SIGTERM/SIGINT; returns the exit status."""
    event_loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        event_loop.add_signal_handler(signum, stop_requested.set)
    server = ReplicaServer(config)
    try:
        try:
            await server.start()
        except PegasusError as exc:
            logger.error("replica server could not start: %s", exc)
            return 1
        stopped = event_loop.create_task(server.wait_stopped())
        requested = event_loop.create_task(stop_requested.wait())
        await asyncio.wait({stopped, requested}, return_when=asyncio.FIRST_COMPLETED)
        requested.cancel()
        if stop_requested.is_set():
            logger.info("replica server %s shutting down", server.address)
        await server.stop()
        stopped.cancel()
        await asyncio.gather(stopped, requested, return_exceptions=True)
    finally:
        for signum in signals:
            event_loop.remove_signal_handler(signum)
    return 1 if server.failure is not None else 0
