"""The replica server: hosts replicas, drives the replica-server core with real timers, serves clients.

    server = ReplicaServer(config)        # config: ReplicaServerConfig (config.py)
    await server.start()                  # reopens the replicas on disk, listens, starts ticking
    ...
    await server.stop()                   # graceful: queued appends and applies finish first

Start. Every replica directory under <data_dir>/replicas is reopened (replica_runtime.py recovery:
store, log, re-apply of recorded committed decrees) and loaded into the core INACTIVE; configuration
sync with meta then decides roles (node.py). Only then does the server listen, so nothing arrives
before the core knows its replicas.

Time. The core counts ticks; a tick is tick_ms of the monotonic clock since start, and the tick loop
calls on_tick for every tick boundary it reaches (a late loop skips ticks, it never replays them).

Requests (one RPC port, DESIGN.md section 6), dispatched by message type (client reads and writes
by the RPC server's routes, straight to their handlers):
- ReplicaEnvelope (one-way, from peers) and ConfigCommand (one-way, from meta) -> node.on_message.
- Client writes: validated (core/validation.py: a bad write gets its typed error and never reaches
  the log), checked to hash to the frame's partition, then given to the core with a token; the RPC
  answer is a PendingReply (rpc_server.py) completed with the store's reply once the mutation is
  applied, or with the error the core or the runtime reports (write_waiters.py): the reply is
  framed right then, with no future and no done-callback in between.
- Client reads: the core admits them (primary, lease valid at the current real tick, reconciliation
  done), the keys must hash here, and the read waits until every apply handed out before it reached
  the store; point reads run inline, the rest in a worker thread (client_requests.py).
- CheckpointManifestRequest / CheckpointChunkRequest from learners (learning.py).
An unknown gpid or a replica that is not the serving primary answers NotPrimaryError (retriable:
the client refreshes its configuration).

Meta. Beacons, config syncs and proposals go through the meta link (leader following) in the
background; answers come back as node events. The partition count of each hosted table, needed for
the partition check, comes from meta's table list (ListTablesRequest), fetched when a replica of an
unknown table appears; until it is known, requests for that table are answered BUSY (retriable).

Every core event runs through `_run_event`, which executes the NodeReady it returns
(ready_executor.py). A broken invariant of the core or the runtime is a bug: the server logs it,
records it in `failure` and stops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec

from pegasus_kv.core.codec import Decoded
from pegasus_kv.core.errors import (
    BusyError,
    ErrorCode,
    InvalidArgumentError,
    InvalidStateError,
    NotPrimaryError,
    PegasusError,
    ShuttingDownError,
    UnsupportedError,
    error_from_code,
)
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.registry import Message
from pegasus_kv.core.validation import validate_read, validate_write
from pegasus_kv.metrics.endpoint import MetricsEndpoint
from pegasus_kv.metrics.replica import ReplicaMetrics, ReplicaSample
from pegasus_kv.replication.connection_pool import ConnectionPool
from pegasus_kv.replication.pacifica.config import PartitionStatus
from pegasus_kv.replication.pacifica.messages import REPLICA_MESSAGE_TYPES, PrepareAck
from pegasus_kv.replication.pacifica.meta_messages import (
    BeaconResponse,
    ConfigCommand,
    ConfigProposalResponse,
    ConfigSyncResponse,
)
from pegasus_kv.replication.pacifica.meta_requests import ListTablesRequest, ListTablesResponse
from pegasus_kv.replication.pacifica.node import NodeReady, ReplicaNode
from pegasus_kv.replication.pacifica.ready import ClientToken, Outbound, RuntimeRequest
from pegasus_kv.replication.pacifica.write_queue import QueuedWrite
from pegasus_kv.replication.replica.client_requests import (
    READ_TYPES,
    WRITE_TYPES,
    admit_read,
    admit_write,
    check_partition,
)
from pegasus_kv.replication.replica.config import ReplicaServerConfig
from pegasus_kv.replication.replica.invariants import invariant, violated
from pegasus_kv.replication.replica.layout import (
    ReplicaPaths,
    remove_leftovers,
    remove_replica,
    replica_gpids_on_disk,
)
from pegasus_kv.replication.replica.learn_messages import (
    CheckpointChunkRequest,
    CheckpointManifestRequest,
    ReplicaEnvelope,
)
from pegasus_kv.replication.replica.learning import CheckpointShelf
from pegasus_kv.replication.replica.log_writer import LogWriter
from pegasus_kv.replication.replica.maintenance import Maintenance
from pegasus_kv.replication.replica.meta_link import MetaLink
from pegasus_kv.replication.replica.peer_outbox import PeerOutbox
from pegasus_kv.replication.replica.ready_executor import execute_node_ready
from pegasus_kv.replication.replica.replica_runtime import ReplicaRuntime, RuntimeSettings
from pegasus_kv.replication.replica.runtime_requests import RuntimeRequests
from pegasus_kv.replication.replica.shared_log import SHARED_LOG_DIR, SharedLog
from pegasus_kv.replication.replica.write_waiters import WriteWaiters
from pegasus_kv.replication.rpc_server import HandlerResult, PendingReply, RpcServer
from pegasus_kv.replication.transport import format_address

logger = logging.getLogger(__name__)

# How long stop() lets queued log appends and applies finish, per replica (they run in parallel).
STOP_DRAIN_S = 3.0
# A dropped replica's queued work gets this long before its data is deleted.
DROP_DRAIN_S = 1.0
# Every this many ticks, every replica's role is compared with the last one logged.
ROLE_SCAN_PERIOD_TICKS = 10
_META_REPLIES = (BeaconResponse, ConfigSyncResponse, ConfigProposalResponse)
_OK = ErrorCode.OK  # read per client read: a module global, not an enum class attribute lookup
_NOT_PRIMARY = ErrorCode.NOT_PRIMARY


class ReplicaServer:
    def __init__(self, config: ReplicaServerConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self._node_options = config.node_options()
        self._rng = rng if rng is not None else random.Random()
        # Client reads and writes go straight to their handlers (a call less each than via _handle).
        routes: dict[type[Message], Callable[[Decoded, str], HandlerResult]] = {
            kind: self._metered_write for kind in WRITE_TYPES
        }
        routes.update((kind, self._client_read) for kind in READ_TYPES)
        self._rpc = RpcServer(self._handle, config.host, config.port, name="replica", routes=routes)
        self.metrics = ReplicaMetrics(samples=self._metric_samples, waiting_writes=lambda: len(self._waiters))
        # (request type, app id) -> its RequestMeter if cached (ReplicaMetrics.cached_meter): a dict
        # lookup in C per client request; metrics.meter(...) makes a missing one.
        self._cached_meter = self.metrics.cached_meter
        self._metrics_endpoint = (
            MetricsEndpoint(
                self.metrics.registry, config.metrics_host or config.host, config.metrics_port, name="replica"
            )
            if config.metrics_port
            else None
        )
        self._executor = ThreadPoolExecutor(config.io_threads, thread_name_prefix="replica-io")
        self._log_executor = ThreadPoolExecutor(config.io_threads, thread_name_prefix="replica-log")
        # Writes and fsyncs every replica's log batches (log_writer.py); made at start.
        self._log_writer: LogWriter | None = None
        # Under policy `group`: makes each round of every log's batches durable in one write
        # (shared_log.py); opened at start, where it also repairs the private logs.
        self._shared_log: SharedLog | None = None
        self._pool = ConnectionPool(rng=self._rng, connect_timeout_s=config.rpc_timeout_s)
        self._outbox = PeerOutbox(
            self._pool,
            max_queued_per_peer=config.max_queued_messages_per_peer,
            timeout_s=config.rpc_timeout_s,
        )
        self._meta = MetaLink(
            self._pool,
            config.meta_servers,
            timeout_s=config.meta_timeout_s,
            max_in_flight=config.max_meta_calls_in_flight,
        )
        self._shelf = CheckpointShelf(
            executor=self._executor,
            hold_s=config.learn_hold_s,
            max_per_replica=config.max_checkpoints_per_replica,
            reuse_s=min(30.0, config.learn_hold_s / 10),
        )
        self._requests = RuntimeRequests(
            shelf=self._shelf,
            pool=self._pool,
            executor=self._executor,
            deliver=self._deliver,
            chunk_bytes=config.learn_chunk_bytes,
            timeout_s=config.rpc_timeout_s,
            on_checkpoint_bytes=self.metrics.on_checkpoint_bytes,
        )
        self._maintenance = Maintenance(
            runtimes=lambda: list(self._runtimes.values()),
            shelf=self._shelf,
            on_log_truncated=self._on_log_truncated,
            flush_interval_s=config.flush_interval_s,
            sweep_interval_s=config.sweep_interval_s,
            sweep_max_keys=config.sweep_max_keys,
        )
        options = self._node_options.replica
        self._settings = RuntimeSettings(
            log_options=dataclasses.replace(
                config.log_options(), fsync_observer=self.metrics.observe_fsync_ns
            ),
            store_options=config.store_options(),
            prepare_list_capacity=options.prepare_list_capacity,
        )
        self._waiters = WriteWaiters(config.max_waiting_writes)
        # Client writes that arrived in this pass of the event loop, per partition, handed to the core
        # together at the end of the pass (_flush_write_inbox). Each holds a waiter token, so the
        # waiter table's bound (max_waiting_writes) bounds them too.
        self._write_inbox: dict[Gpid, list[QueuedWrite]] = {}
        self._inbox_flush_scheduled = False
        self._node: ReplicaNode | None = None
        self._runtimes: dict[Gpid, ReplicaRuntime] = {}
        self._dropping: dict[Gpid, asyncio.Task[None]] = {}
        self._opening: set[asyncio.Task[None]] = set()
        self._partition_counts: dict[int, int] = {}
        self._table_query_in_flight = False
        self._roles: dict[Gpid, tuple[PartitionStatus, int]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._start_s = 0.0
        # The loop's clock, kept from start(): asyncio.get_running_loop() costs a getpid() system
        # call on Python 3.11, and the lease check of every client read asks for the tick.
        self._loop_time: Callable[[], float] = time.monotonic
        # The loop's call_soon, kept from start() for the same reason: once per loop pass with
        # client writes (strace: ~1,400 getpid() calls per 4 s per server under YCSB A).
        self._call_soon: Callable[[Callable[[], None]], object] = _not_started
        self._tick_ms = config.tick_ms  # read per client read (the lease check)
        self._address = ""
        self._started = False
        self._stopping = False
        self._stopped = asyncio.Event()
        self.failure: BaseException | None = None

    # --- readers ------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The advertised "host:port" (what meta and peers know this server by)."""
        return self.config.advertised_address or format_address(self.config.host, self._rpc.port)

    @property
    def node(self) -> ReplicaNode:
        """The replica-server core (read only: use it for queries)."""
        invariant(self._node is not None, "the replica server has not started")
        assert self._node is not None
        return self._node

    def runtime(self, gpid: Gpid) -> ReplicaRuntime | None:
        return self._runtimes.get(gpid)

    @property
    def maintenance(self) -> Maintenance:
        return self._maintenance

    @property
    def outbox(self) -> PeerOutbox:
        return self._outbox

    @property
    def waiting_writes(self) -> int:
        return len(self._waiters)

    @property
    def metrics_url(self) -> str:
        """Where Prometheus scrapes this server ("" when metrics_port is 0 or before start)."""
        endpoint = self._metrics_endpoint
        return endpoint.url if endpoint is not None and endpoint.started else ""

    def _metric_samples(self) -> list[ReplicaSample]:
        """Every hosted replica as a scrape sees it (metrics/replica.py; runs on the event loop)."""
        node = self._node
        if node is None:
            return []
        samples = []
        for gpid in node.gpids():
            replica = node.replica(gpid)
            if replica is None:
                continue
            runtime = self._runtimes.get(gpid)
            usable = runtime is not None and runtime.is_open and not runtime.closing and not runtime.failed
            samples.append(
                ReplicaSample(
                    app_id=gpid.app_id,
                    status=replica.status,
                    queued_writes=replica.queued_writes,
                    prepare_list_depth=replica.plist.uncommitted_count,
                    last_committed_decree=replica.last_committed_decree,
                    applied_decree=runtime.applied_decree if usable and runtime is not None else None,
                    log_size_bytes=runtime.log.size_bytes if usable and runtime is not None else 0,
                    learner_phase=replica.learner_phase,
                )
            )
        return samples

    # --- lifetime -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Reopen the replicas on disk, listen, start ticking. Raises if a replica cannot be opened."""
        if self._started:
            raise InvalidStateError("a replica server starts once")
        self._started = True
        loop = asyncio.get_running_loop()
        data_dir = self.config.data_dir
        gpids = await loop.run_in_executor(self._executor, _discover, data_dir)
        recovered = []
        try:
            shared_log = await self._open_shared_log()
            group = self.config.log.fsync_policy == "group"
            self._log_writer = LogWriter("replica-log-writer", shared_log=shared_log if group else None)
            for gpid in gpids:
                runtime = self._new_runtime(gpid)
                self._runtimes[gpid] = runtime
                shared_records = shared_log.recovered if shared_log is not None else None
                recovered.append((runtime, await runtime.open(fresh=False, shared_records=shared_records)))
            if shared_log is not None:
                # Every private log was repaired and fsynced: the records found are not needed again.
                await loop.run_in_executor(self._executor, shared_log.drop_recovered)
                if not group:
                    self._shared_log = None
                    await loop.run_in_executor(self._executor, shared_log.close)
            await self._rpc.start()
            if self._metrics_endpoint is not None:
                await self._metrics_endpoint.start()
        except BaseException:
            await self._close_everything()
            raise
        self._address = self.address
        node = ReplicaNode(self._address, self._node_options, self._rng)
        for runtime, state in recovered:
            node.load_replica(
                runtime.gpid,
                last_committed_decree=state.last_committed_decree,
                log=state.log,
                log_start_decree=state.log_start_decree,
                # Kept across log collection by the runtime (layout.py, max_ballot).
                ballot=state.ballot,
            )
        self._node = node
        self._loop_time = loop.time
        self._call_soon = loop.call_soon
        self._start_s = loop.time()
        for gpid in gpids:
            self._want_table_info(gpid.app_id)
        self._tasks.append(loop.create_task(self._tick_loop(), name="replica ticks"))
        self._tasks.append(loop.create_task(self._maintenance.run(), name="replica maintenance"))
        logger.info(
            "replica server listening on %s (advertised as %s), %d replica(s) reopened from %s",
            self._rpc.address,
            self.address,
            len(gpids),
            data_dir,
        )

    async def _open_shared_log(self) -> SharedLog | None:
        """The shared log, under policy `group`. Under the others it is opened only if a run under
        `group` left one, to repair the private logs from it before they replay; then it goes."""
        directory = self.config.data_dir / SHARED_LOG_DIR
        loop = asyncio.get_running_loop()
        if self.config.log.fsync_policy != "group" and not await loop.run_in_executor(
            self._executor, directory.is_dir
        ):
            return None
        self._shared_log = await loop.run_in_executor(
            self._executor, SharedLog.open, directory, self.config.log.shared_segment_bytes
        )
        self._shared_log.fsync_observer = self.metrics.observe_fsync_ns
        return self._shared_log

    async def stop(self) -> None:
        """Stop ticking and serving, let queued appends and applies finish, close everything."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        await asyncio.gather(*(t for t in self._tasks if t is not current), return_exceptions=True)
        await self._rpc.close()
        await self._close_everything()
        self._stopped.set()
        logger.info("replica server %s stopped", self._address or "(never listened)")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _close_everything(self) -> None:
        if self._metrics_endpoint is not None:
            await self._metrics_endpoint.close()
        await self._requests.close()
        for task in list(self._opening):
            task.cancel()
        await asyncio.gather(*self._opening, return_exceptions=True)
        runtimes = list(self._runtimes.values())
        self._runtimes.clear()
        await asyncio.gather(*(r.close(drain_s=STOP_DRAIN_S) for r in runtimes), return_exceptions=True)
        await asyncio.gather(*self._dropping.values(), return_exceptions=True)
        if self._log_writer is not None:
            await self._log_writer.close()
        if self._shared_log is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._shared_log.close)
        self._waiters.refuse_all(ErrorCode.SHUTTING_DOWN, "the replica server is stopping")
        await self._outbox.close()
        await self._meta.close()
        await self._pool.close()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._executor.shutdown)
        await loop.run_in_executor(None, self._log_executor.shutdown)

    def _fatal(self, error: BaseException) -> None:
        if self.failure is None:
            self.failure = error
            logger.critical("replica server %s stops: %r", self.address, error, exc_info=error)
        if not self._stopping:
            asyncio.get_running_loop().create_task(self.stop(), name="replica server stop")

    # --- ticks --------------------------------------------------------------------------------

    def _current_tick(self) -> int:
        elapsed_s = self._loop_time() - self._start_s
        return int(elapsed_s * 1000.0 // self.config.tick_ms)

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        tick_s = self.config.tick_ms / 1000.0
        last_scan = 0
        while True:
            tick = self._current_tick()
            self._run_event(functools.partial(ReplicaNode.on_tick, tick=tick))
            if tick - last_scan >= ROLE_SCAN_PERIOD_TICKS:
                last_scan = tick
                self._log_role_changes(self.node.gpids())
                self._refresh_table_infos()
            next_s = self._start_s + (tick + 1) * tick_s
            await asyncio.sleep(max(0.0, next_s - loop.time()))

    # --- core events --------------------------------------------------------------------------

    def _run_event(self, event: Callable[..., NodeReady], *args: object, roles: bool = True) -> None:
        """Run one core event, event(node, *args), and execute what it asks for (never awaits).

        roles=False for the events that never change a replica's role or ballot (client writes, log
        durability): the per-event role bookkeeping is skipped for them."""
        node = self._node
        if node is None or self._stopping:
            return
        try:
            out = event(node, *args)
            # Most events under load ask for nothing (writes that only queue, a secondary's log
            # durability): execute_node_ready's own field tests, without its call.
            if out.replicas or out.created or out.to_meta or out.send or out.dropped:
                execute_node_ready(out, self)
        except AssertionError as exc:  # a core or runtime invariant: a bug, nothing can be trusted
            self._fatal(exc)
            return
        if roles and (out.replicas or out.created):
            self._log_role_changes([*out.created, *out.replicas])

    def _deliver(
        self, runtime: ReplicaRuntime, event: Callable[..., NodeReady], *args: object, roles: bool = True
    ) -> None:
        """An event about `runtime`'s replica, dropped if another runtime hosts it now (or none)."""
        if self._runtimes.get(runtime.gpid) is runtime:
            self._run_event(event, *args, roles=roles)

    def _log_role_changes(self, gpids: list[Gpid]) -> None:
        node = self._node
        if node is None:
            return
        for gpid in gpids:
            replica = node.replica(gpid)
            if replica is None:
                if (dropped := self._roles.pop(gpid, None)) is not None:
                    logger.info("%s: replica %s dropped", self.address, gpid)
                    self.metrics.on_role_change(gpid, dropped[0], None, 0)
                continue
            role = (replica.status, replica.ballot)
            before = self._roles.get(gpid)
            if before is None or before[0] != role[0]:
                self.metrics.on_role_change(
                    gpid, None if before is None else before[0], replica.status, replica.last_committed_decree
                )
                logger.info(
                    "%s: replica %s is %s at ballot %d (committed decree %d)",
                    self.address,
                    gpid,
                    replica.status.name,
                    replica.ballot,
                    replica.last_committed_decree,
                )
            self._roles[gpid] = role

    # --- ReadyTarget (ready_executor.py) ------------------------------------------------------

    def create_runtime(self, gpid: Gpid) -> ReplicaRuntime:
        invariant(gpid not in self._runtimes, f"{gpid} created while a runtime hosts it")
        runtime = self._new_runtime(gpid)
        self._runtimes[gpid] = runtime
        self._roles.pop(gpid, None)
        task = asyncio.get_running_loop().create_task(self._open_created(runtime), name=f"open {gpid}")
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)
        self._want_table_info(gpid.app_id)
        return runtime

    def _new_runtime(self, gpid: Gpid) -> ReplicaRuntime:
        invariant(self._log_writer is not None, "a replica runtime made before the server started")
        return ReplicaRuntime(
            gpid,
            ReplicaPaths(self.config.data_dir, gpid),
            self._settings,
            self,
            executor=self._executor,
            log_executor=self._log_executor,
            log_writer=self._log_writer,
        )

    async def _open_created(self, runtime: ReplicaRuntime) -> None:
        dropping = self._dropping.get(runtime.gpid)
        if dropping is not None:
            await asyncio.gather(dropping, return_exceptions=True)  # its files must be gone first
        try:
            await runtime.open(fresh=True)
        except PegasusError as exc:
            reason = f"cannot create the replica's files: {exc}"
            logger.error("%s: %s", runtime.gpid, reason)
            gpid = runtime.gpid
            self._deliver(runtime, lambda node: node.on_local_failure(gpid, reason))

    def drop_runtime(self, gpid: Gpid) -> None:
        runtime = self._runtimes.pop(gpid, None)
        self._shelf.forget(gpid)
        if runtime is None:
            return
        task = asyncio.get_running_loop().create_task(self._close_and_delete(runtime), name=f"drop {gpid}")
        self._dropping[gpid] = task
        task.add_done_callback(lambda _: self._forget_drop(gpid, task))

    def _forget_drop(self, gpid: Gpid, task: asyncio.Task[None]) -> None:
        if self._dropping.get(gpid) is task:
            del self._dropping[gpid]

    async def _close_and_delete(self, runtime: ReplicaRuntime) -> None:
        await self._requests.cancel(runtime)
        await runtime.close(drain_s=DROP_DRAIN_S)
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, remove_replica, runtime.paths)
        except OSError as exc:
            logger.warning("%s: deleting the dropped replica's data failed: %s", runtime.gpid, exc)
        else:
            logger.info("%s: replica %s dropped and its data deleted", self.address, runtime.gpid)

    def send_to_peer(self, outbound: Outbound) -> None:
        message = outbound.message
        if not isinstance(message, REPLICA_MESSAGE_TYPES):  # per message: format only on failure
            violated(f"not a replica message: {message!r}")
        envelope = ReplicaEnvelope(sender=self._address or self.address, message=message)  # type: ignore[arg-type]
        self._outbox.send(outbound.to, envelope)

    def send_to_meta(self, message: Message) -> None:
        self._meta.submit(message, self._on_meta_reply)

    def _on_meta_reply(self, reply: Message) -> None:
        if not isinstance(reply, _META_REPLIES):
            logger.warning("meta answered with an unexpected %s", type(reply).__name__)
            return
        sender = self._meta.leader or ""
        self._run_event(lambda node: node.on_message(sender, reply))

    def refuse_write(self, token: ClientToken, code: ErrorCode, reason: str) -> None:
        self._waiters.refuse(token, code, reason)

    def start_request(self, runtime: ReplicaRuntime, request: RuntimeRequest) -> None:
        self._requests.start(runtime, request)

    # --- RuntimeHost (replica_runtime.py) -----------------------------------------------------

    def on_log_durable(self, runtime: ReplicaRuntime, ballot: int, decree: int) -> None:
        # _deliver, inlined: once per durable log group of every replica.
        gpid = runtime.gpid
        if self._runtimes.get(gpid) is runtime:
            self._run_event(ReplicaNode.on_log_durable, gpid, ballot, decree, roles=False)

    @property
    def answer_writes(self) -> Callable[[Sequence[ClientToken], Sequence[Message]], None]:
        """answer_writes(tokens, replies): the waiter table's own answer_all, so that a runtime
        answering the writes of a mutation calls it directly, once per mutation (write_waiters.py)."""
        return self._waiters.answer_all

    def on_local_failure(self, runtime: ReplicaRuntime, reason: str) -> None:
        gpid = runtime.gpid
        self._deliver(runtime, lambda node: node.on_local_failure(gpid, reason))

    def _on_log_truncated(self, runtime: ReplicaRuntime, start_decree: int) -> None:
        gpid = runtime.gpid
        self._deliver(runtime, lambda node: node.on_log_truncated(gpid, start_decree))

    # --- table information (the partition check) ---------------------------------------------

    def _want_table_info(self, app_id: int) -> None:
        if app_id not in self._partition_counts:
            self._query_tables()

    def _refresh_table_infos(self) -> None:
        node = self._node
        if node is not None and any(g.app_id not in self._partition_counts for g in node.gpids()):
            self._query_tables()

    def _query_tables(self) -> None:
        if self._table_query_in_flight or self._stopping:
            return
        self._table_query_in_flight = True
        if not self._meta.submit(ListTablesRequest(include_dropped=True), self._on_tables):
            self._table_query_in_flight = False
            return
        # A failed query leaves no answer: allow the next attempt after the meta timeout.
        asyncio.get_running_loop().call_later(self.config.meta_timeout_s * 2, self._table_query_done)

    def _table_query_done(self) -> None:
        self._table_query_in_flight = False

    def _on_tables(self, reply: Message) -> None:
        self._table_query_in_flight = False
        if not isinstance(reply, ListTablesResponse):
            return
        for table in reply.tables:
            self._partition_counts[table.app_id] = table.partition_count
        self.metrics.set_table_names({table.app_id: table.name for table in reply.tables})

    def _check_partition(self, gpid: Gpid, request: Message) -> None:
        count = self._partition_counts.get(gpid.app_id)
        if count is None:
            self._want_table_info(gpid.app_id)
            raise BusyError(f"table of app id {gpid.app_id} not known here yet; retry shortly")
        check_partition(gpid, request, count)

    # --- requests -----------------------------------------------------------------------------

    def _handle(self, request: Decoded, peer: str) -> HandlerResult:
        if self._node is None or self._stopping:
            raise ShuttingDownError("the replica server is not serving")
        message = request.message
        kind = type(message)
        if kind is ReplicaEnvelope:
            assert isinstance(message, ReplicaEnvelope)
            inner = message.message
            # An acknowledgement never changes a replica's role (replica.py _on_prepare_ack).
            self._run_event(
                ReplicaNode.on_message, message.sender, inner, roles=type(inner) is not PrepareAck
            )
            return None
        if kind is ConfigCommand:
            self._run_event(lambda node: node.on_message(peer, message))
            return None
        if kind in WRITE_TYPES:  # routed to _metered_write by the RPC server: for other callers
            return self._metered_write(request, peer)
        if kind in READ_TYPES:  # likewise
            return self._client_read(request, peer)
        if kind is CheckpointManifestRequest:
            assert isinstance(message, CheckpointManifestRequest)
            return self._shelf.serve_manifest(message)
        if kind is CheckpointChunkRequest:
            assert isinstance(message, CheckpointChunkRequest)
            return self._shelf.serve_chunk(message, self.config.learn_chunk_bytes)
        raise UnsupportedError(f"a replica server does not serve {kind.__name__}")

    def _metered_write(self, decoded: Decoded, peer: str) -> PendingReply:
        """Queue a client write for the core; its answer goes straight to the connection it came on
        (a PendingReply the waiter table completes: no future, no done-callback). Its latency and
        errors are counted per operation and table: once the write waits, the waiter table tells
        the meter how it ended (write_waiters.py), cheaper than a done-callback. One function, not
        a metering wrapper around the write: a call less per client write. Its entry checks and
        metering preamble are _client_read's, repeated on purpose: keep the two in step."""
        if self._node is None or self._stopping:  # what _handle answers first
            raise ShuttingDownError("the replica server is not serving")
        request = decoded.message
        gpid = decoded.gpid
        kind = type(request)
        app_id = -1 if gpid is None else gpid.app_id
        meter = self._cached_meter((kind, app_id)) or self.metrics.meter(kind, app_id)
        started_s = time.perf_counter()
        try:
            if gpid is None:
                raise InvalidArgumentError("a data request must name its partition (gpid)")
            node = self._node
            assert node is not None  # checked on entry
            if gpid not in self._runtimes or node.replica(gpid) is None:
                raise NotPrimaryError(f"partition {gpid} is not served here")
            count = self._partition_counts.get(gpid.app_id)
            if count is None:  # the table is not known yet: a bad write's own error comes first
                validate_write(request)
                self._check_partition(gpid, request)  # raises BusyError
                violated(f"{gpid}: the partition check passed for a table of unknown partition count")
            # validate_write and the partition check in one pass (client_requests.py).
            admit_write(gpid, request, count)
            reply = PendingReply()
            token = self._waiters.add_sink(gpid, reply, meter, started_s)
            write = QueuedWrite(token, request, time.time_ns() // 1000, len(msgspec.msgpack.encode(request)))  # type: ignore[arg-type]
            inbox = self._write_inbox.get(gpid)
            if inbox is None:
                inbox = self._write_inbox[gpid] = []
            inbox.append(write)
            if not self._inbox_flush_scheduled:
                self._inbox_flush_scheduled = True
                self._call_soon(self._flush_write_inbox)
            return reply
        except Exception as error:
            meter.failed(started_s, error)
            raise

    def _flush_write_inbox(self) -> None:
        """Hand the writes gathered in this loop pass to the core, one event per partition, so the
        primary batches them into as few mutations as its bounds allow (replica.on_client_writes)."""
        self._inbox_flush_scheduled = False
        inbox, self._write_inbox = self._write_inbox, {}
        for gpid, writes in inbox.items():
            self._run_event(ReplicaNode.on_client_writes, gpid, writes, roles=False)

    def _client_read(self, decoded: Decoded, peer: str) -> Message | Awaitable[Message]:
        """Admit and serve a client read; its latency and errors counted per operation and table.
        The metering is inlined, not a wrapper around the read: a call less per client read. Its
        entry checks and metering preamble are _metered_write's, repeated on purpose: keep them in
        step."""
        if self._node is None or self._stopping:  # what _handle answers first
            raise ShuttingDownError("the replica server is not serving")
        request = decoded.message
        gpid = decoded.gpid
        kind = type(request)
        app_id = -1 if gpid is None else gpid.app_id
        meter = self._cached_meter((kind, app_id)) or self.metrics.meter(kind, app_id)
        started_s = time.perf_counter()
        try:
            if gpid is None:
                raise InvalidArgumentError("a data request must name its partition (gpid)")
            node = self._node
            assert node is not None  # checked on entry
            runtime = self._runtimes.get(gpid)
            if runtime is None:
                raise NotPrimaryError(f"partition {gpid} is not served here")
            # The replica's check at the node's tick and the lease at the real tick (_current_tick(),
            # inlined) in one call: the tick loop may not have noticed a lapse yet.
            code = node.check_read(gpid, int((self._loop_time() - self._start_s) * 1000.0 // self._tick_ms))
            if code is not _OK:
                if code is _NOT_PRIMARY and node.check_read(gpid) is _OK:
                    raise NotPrimaryError(f"the lease of {self.address} has lapsed")
                raise error_from_code(code, f"partition {gpid} cannot serve reads here now ({code.name})")
            count = self._partition_counts.get(gpid.app_id)
            if count is None:  # the table is not known yet: a bad request's own error comes first
                validate_read(request)
                self._check_partition(gpid, request)  # raises BusyError
                violated(f"{gpid}: the partition check passed for a table of unknown partition count")
            # validate_read, the partition check and reads_inline in one pass (client_requests.py).
            inline = admit_read(gpid, request, count)
            # Served at once if the store has applied every apply handed out before (most reads).
            reply = runtime.read_if_ready(request) if inline else None
            if reply is None:
                later = self._read_later(runtime, request, runtime.apply_handed_decree, inline)
        except Exception as error:
            meter.failed(started_s, error)
            raise
        if reply is not None:
            meter.observe(time.perf_counter() - started_s)
            return reply
        return meter.track(started_s, later)

    async def _read_later(
        self, runtime: ReplicaRuntime, request: Message, target: int, inline: bool
    ) -> Message:
        await runtime.wait_applied(target)
        if inline:
            return runtime.read_now(request, validated=True)
        return await runtime.read_in_thread(request)


def _not_started(callback: Callable[[], None]) -> object:
    violated("a client write before the replica server started")


def _discover(data_dir: Path) -> list[Gpid]:
    data_dir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(data_dir)
    return replica_gpids_on_disk(data_dir)
