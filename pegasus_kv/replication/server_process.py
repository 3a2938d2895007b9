"""Running one server process (meta or replica) until SIGTERM or SIGINT.

Both `pegasus-kv meta` and `pegasus-kv replica` load a validated config, start their server, wait
for a signal or for the server to stop by itself, then shut down gracefully. Exit status: 0 after
a graceful shutdown, 1 when the server failed (the log says why), 2 when the config is invalid.

On Linux the process runs under SCHED_BATCH (no privileges needed): a server sends many small
messages per pass of its event loop, and under the default policy each send that wakes a peer on
the same machine lets the peer preempt the sender in the middle of its pass. Profiling onebox on
2 cores, a socket send then took ~100-170 µs of wall time for ~14 µs of CPU, and servers switched
context at nearly every send. SCHED_BATCH only gives up that wake-up preemption (time slices and
fairness stay): YCSB C went from ~29,000 to ~37,000 reads/s and write-only from ~4,400 to ~4,800.

The GIL switch interval is shortened from CPython's 5 ms to GIL_SWITCH_INTERVAL_S. A replica server's
log-writer thread (log_writer.py) gives up the GIL for every system call it makes on a log (at least
one per log per group-commit round) and must take it back afterwards; while the event loop is busy,
which is always the case under load, each take-back waits for the loop thread's switch interval.
With 5 ms a round over a server's logs could spend tens of milliseconds waiting for the GIL, and
every write waits for its round.

Once the server has started, the objects it made on the way (modules, config, the replicas it
opened) go to the collector's permanent generation (`gc.freeze`): they live as long as the process,
and every full collection would otherwise walk them all again while the event loop waits.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from pegasus_kv.core.errors import PegasusError
from pegasus_kv.replication import loop

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# See the module doc. Measured with a busy uvloop thread and an fdatasync thread on this machine:
# the time from an fsync's end to the loop hearing of it, p90, went from 2.8 ms (5 ms interval) to
# 1.3 ms (1 ms) and 1.0 ms (0.5 ms).
GIL_SWITCH_INTERVAL_S = 0.0005

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2


class ServerConfig(Protocol):
    @property
    def log_level(self) -> str: ...


class Server(Protocol):
    @property
    def address(self) -> str: ...

    @property
    def failure(self) -> object | None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def wait_stopped(self) -> None: ...


C = TypeVar("C", bound=ServerConfig)


def run_server(
    kind: str, config_path: Path, load_config: Callable[[Path], C], make_server: Callable[[C], Server]
) -> int:
    """Load the config (exit 2 if invalid), then serve on a fresh (uv)loop until signalled."""
    try:
        config = load_config(config_path)
    except PegasusError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    logging.basicConfig(level=config.log_level, format=LOG_FORMAT)
    _prefer_batch_scheduling(kind)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    return loop.run(serve_until_signalled(kind, make_server(config)))


def _prefer_batch_scheduling(kind: str) -> None:
    """SCHED_BATCH for this process and the threads it starts later (see the module doc)."""
    set_scheduler = getattr(os, "sched_setscheduler", None)
    batch = getattr(os, "SCHED_BATCH", None)
    if set_scheduler is None or batch is None:  # not Linux
        return
    try:
        set_scheduler(0, batch, os.sched_param(0))
    except OSError as exc:  # a container may forbid it: serve anyway
        logger.info("%s server keeps the default CPU scheduling policy: %s", kind, exc)


async def serve_until_signalled(kind: str, server: Server) -> int:
    """Run `server` on the running loop until SIGTERM/SIGINT or until it stops by itself."""
    event_loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        event_loop.add_signal_handler(signum, stop_requested.set)
    try:
        try:
            await server.start()
        except PegasusError as exc:
            logger.error("%s server could not start: %s", kind, exc)
            await server.stop()
            return EXIT_FAILED
        gc.freeze()  # see the module doc
        stopped = event_loop.create_task(server.wait_stopped())
        requested = event_loop.create_task(stop_requested.wait())
        await asyncio.wait({stopped, requested}, return_when=asyncio.FIRST_COMPLETED)
        requested.cancel()
        if stop_requested.is_set():
            logger.info("%s server %s shutting down", kind, server.address)
        await server.stop()
        stopped.cancel()
        await asyncio.gather(stopped, requested, return_exceptions=True)
    finally:
        for signum in signals:
            event_loop.remove_signal_handler(signum)
    if server.failure is not None:
        return EXIT_FAILED
    logger.info("%s server %s stopped", kind, server.address)
    return EXIT_OK
