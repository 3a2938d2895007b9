"""`pegasus-kv meta --config FILE`: run one meta server until SIGTERM or SIGINT.

    exit_status = run_meta("meta.toml")

Exit status: 0 after a graceful shutdown, 1 when the server failed (could not open its store, a
corrupt meta log, a bug: the log says why), 2 when the configuration is invalid.
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
from pegasus_kv.replication.meta.config import MetaServerConfig, load_meta_config
from pegasus_kv.replication.meta.server import MetaServer

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def run_meta(config_path: str | os.PathLike[str]) -> int:
    try:
        config = load_meta_config(Path(config_path))
    except PegasusError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level, format=LOG_FORMAT)
    return loop.run(serve_meta(config))


async def serve_meta(config: MetaServerConfig) -> int:
    """Run a meta server on the running loop until SIGTERM/SIGINT; returns the exit status."""
    event_loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        event_loop.add_signal_handler(signum, stop_requested.set)
    server = MetaServer(config)
    try:
        try:
            await server.start()
        except PegasusError as exc:
            logger.error("meta server could not start: %s", exc)
            await server.stop()
            return 1
        stopped = event_loop.create_task(server.wait_stopped())
        requested = event_loop.create_task(stop_requested.wait())
        await asyncio.wait({stopped, requested}, return_when=asyncio.FIRST_COMPLETED)
        requested.cancel()
        if stop_requested.is_set():
            logger.info("meta server %s shutting down", server.address)
        await server.stop()
        stopped.cancel()
        await asyncio.gather(stopped, requested, return_exceptions=True)
    finally:
        for signum in signals:
            event_loop.remove_signal_handler(signum)
    if server.failure is not None:
        return 1
    logger.info("meta server %s stopped", server.address)
    return 0
