"""The I/O the replica core asks for in Ready.requests (ready.py), run in the background.

Each request runs as a task of its replica; the result goes back to the core as the matching node
event (on_log_read, on_checkpoint_made, on_checkpoint_installed) or on_request_failed(reason) - but
only while the same runtime still hosts the replica (a dropped and re-created replica never gets an
answer meant for its predecessor). The tasks are bounded per replica: the core keeps at most one
request per learner session and one install per learner, so a replica over the bound has a bug.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
from collections.abc import Callable
from concurrent.futures import Executor

from pegasus_kv.core.errors import PegasusError, StorageError
from pegasus_kv.replication.connection_pool import ConnectionPool
from pegasus_kv.replication.pacifica.node import NodeReady, ReplicaNode
from pegasus_kv.replication.pacifica.ready import InstallCheckpoint, MakeCheckpoint, ReadLog, RuntimeRequest
from pegasus_kv.replication.replica.learning import INCOMING_PREFIX, CheckpointShelf, fetch_checkpoint
from pegasus_kv.replication.replica.replica_runtime import ReplicaRuntime

logger = logging.getLogger(__name__)

# Deliver a node event for `runtime`, if it still hosts its replica.
Deliver = Callable[[ReplicaRuntime, Callable[[ReplicaNode], NodeReady]], None]

MAX_REQUESTS_PER_REPLICA = 64


class RuntimeRequests:
    def __init__(
        self,
        *,
        shelf: CheckpointShelf,
        pool: ConnectionPool,
        executor: Executor,
        deliver: Deliver,
        chunk_bytes: int,
        timeout_s: float,
        on_checkpoint_bytes: Callable[[int], None] | None = None,
    ) -> None:
        """`on_checkpoint_bytes` is told the bytes of each checkpoint chunk a learner fetches."""
        self._on_checkpoint_bytes = on_checkpoint_bytes
        self._shelf = shelf
        self._pool = pool
        self._executor = executor
        self._deliver = deliver
        self._chunk_bytes = chunk_bytes
        self._timeout_s = timeout_s
        self._tasks: dict[int, set[asyncio.Task[None]]] = {}  # runtime incarnation -> its tasks
        self._incoming = itertools.count(1)

    def start(self, runtime: ReplicaRuntime, request: RuntimeRequest) -> None:
        tasks = self._tasks.setdefault(runtime.incarnation, set())
        if len(tasks) >= MAX_REQUESTS_PER_REPLICA:
            logger.error("%s: %d runtime requests in flight; failing a new one", runtime.gpid, len(tasks))
            self._fail(runtime, request, "too many runtime requests in flight")
            return
        task = asyncio.get_running_loop().create_task(
            self._run(runtime, request), name=f"{runtime.gpid} {type(request).__name__}"
        )
        tasks.add(task)
        task.add_done_callback(lambda done: self._forget(runtime.incarnation, done))

    def _forget(self, incarnation: int, task: asyncio.Task[None]) -> None:
        tasks = self._tasks.get(incarnation)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._tasks[incarnation]

    async def _run(self, runtime: ReplicaRuntime, request: RuntimeRequest) -> None:
        try:
            if isinstance(request, ReadLog):
                await self._read_log(runtime, request)
            elif isinstance(request, MakeCheckpoint):
                await self._make_checkpoint(runtime, request)
            else:
                await self._install(runtime, request)
        except PegasusError as exc:
            logger.info("%s: %s failed: %s", runtime.gpid, type(request).__name__, exc)
            self._fail(runtime, request, str(exc))
        except OSError as exc:
            logger.warning("%s: %s failed: %s", runtime.gpid, type(request).__name__, exc)
            self._fail(runtime, request, f"I/O error: {exc}")

    def _fail(self, runtime: ReplicaRuntime, request: RuntimeRequest, reason: str) -> None:
        gpid = runtime.gpid
        request_id = request.request_id
        self._deliver(runtime, lambda node: node.on_request_failed(gpid, request_id, reason))

    async def _read_log(self, runtime: ReplicaRuntime, request: ReadLog) -> None:
        gpid = runtime.gpid
        self._shelf.note_log_read(gpid, request.from_decree)  # hold the range before reading it
        mutations = await runtime.read_log(request.from_decree, request.to_decree)
        request_id = request.request_id
        self._deliver(runtime, lambda node: node.on_log_read(gpid, request_id, mutations))

    async def _make_checkpoint(self, runtime: ReplicaRuntime, request: MakeCheckpoint) -> None:
        gpid = runtime.gpid
        decree, ref = await self._shelf.make(runtime)
        request_id = request.request_id
        self._deliver(runtime, lambda node: node.on_checkpoint_made(gpid, request_id, decree, ref))

    async def _install(self, runtime: ReplicaRuntime, request: InstallCheckpoint) -> None:
        gpid = runtime.gpid
        destination = runtime.paths.learn_dir / f"{INCOMING_PREFIX}{next(self._incoming)}"
        try:
            decree = await fetch_checkpoint(
                self._pool,
                request.source,
                gpid,
                request.checkpoint_ref,
                destination,
                chunk_bytes=self._chunk_bytes,
                timeout_s=self._timeout_s,
                executor=self._executor,
                on_bytes=self._on_checkpoint_bytes,
            )
            if decree != request.checkpoint_decree:
                raise StorageError(
                    f"checkpoint {request.checkpoint_ref} stands at {decree}, not {request.checkpoint_decree}"
                )
            await runtime.install_checkpoint(str(destination), decree)
        finally:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, lambda: shutil.rmtree(destination, ignore_errors=True)
            )
        request_id = request.request_id
        self._deliver(runtime, lambda node: node.on_checkpoint_installed(gpid, request_id))

    async def cancel(self, runtime: ReplicaRuntime) -> None:
        tasks = list(self._tasks.pop(runtime.incarnation, ()))
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        tasks = [task for tasks in self._tasks.values() for task in tasks]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
