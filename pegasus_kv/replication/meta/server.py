"""The meta server: the meta core behind an RPC port, over a meta store, led by election.

    server = MetaServer(config)            # config: MetaServerConfig (config.py)
    await server.start()                   # listening; leads once it wins the store's election
    await server.wait_until_leader(5.0)    # tests and onebox
    await server.stop()

Lifecycle (DESIGN.md section 5). The server opens its store (`local`: a directory; `zookeeper`:
hosts and cluster name), campaigns for leadership (a local store leads at once) and, once it leads,
loads the snapshot and the records after it, folds them into a MetaState and starts a leader term
(leader_term.py): a MetaCore ticking on a real timer, its MetaReady executed in order. When the term
ends (the store reports leadership lost, a write to the store failed, or a bug), the server stops
acting at once, closes that store and starts over with a fresh one: campaign, reload, new core. So a
new leader replays the state, and a write of unknown outcome is never built upon. While a term runs,
the server also serves the SSH admin shell when [ssh] port is set (pegasus_kv/shell/ssh_server.py);
the shell stops when the term ends, so only the leader answers on it.

Not leading (campaigning, loading, between terms), the server answers every request with
NotLeaderError whose message is exactly the leader's advertised "host:port", or "" when it does not
know it (the client follows the redirect or walks its list of metas; client/meta.py). The leader's
address is looked up in the store every tick while campaigning.

Fatal errors: a meta log that does not decode or does not fold (MetaLogCorruptError,
MetaInvariantError) and bugs stop the server (`failure` says why, `wait_stopped` returns): retrying
would only fail the same way, and in a ZooKeeper cluster another meta takes over. Store errors
(ZooKeeper unreachable, a failed fsync) are retried with capped backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from pegasus_kv.core.codec import Decoded
from pegasus_kv.core.errors import InvalidStateError, NotLeaderError, PegasusError
from pegasus_kv.metrics.endpoint import MetricsEndpoint
from pegasus_kv.metrics.meta import MetaMetrics
from pegasus_kv.replication.connection_pool import ConnectionPool
from pegasus_kv.replication.meta.admin_messages import ClusterInfoResponse
from pegasus_kv.replication.meta.command_sender import CommandSender
from pegasus_kv.replication.meta.config import LocalStoreConfig, MetaServerConfig
from pegasus_kv.replication.meta.leader_term import (
    LeaderTerm,
    MetaLogCorruptError,
    TermSettings,
    load_meta_state,
)
from pegasus_kv.replication.meta.local_store import LocalMetaStore
from pegasus_kv.replication.meta.store import MetaStore
from pegasus_kv.replication.meta.tick_clock import TickClock
from pegasus_kv.replication.meta.zk_store import ZooKeeperMetaStore
from pegasus_kv.replication.pacifica.meta_core import MetaCore
from pegasus_kv.replication.rpc_server import HandlerResult, RpcServer
from pegasus_kv.replication.transport import format_address

if TYPE_CHECKING:
    from pegasus_kv.shell.ssh_server import AdminShellServer

logger = logging.getLogger(__name__)

StoreOpener = Callable[[], Awaitable[MetaStore]]

# Reopening a store after a failure: capped exponential backoff.
REOPEN_BACKOFF_INITIAL_S = 0.1
REOPEN_BACKOFF_MAX_S = 5.0
# How often a campaigning meta looks up the leader's address (at most, and at least).
LEADER_LOOKUP_MIN_S = 0.1
LEADER_LOOKUP_MAX_S = 2.0


def store_opener(config: MetaServerConfig) -> StoreOpener:
    """Opens the store the configuration names (a new one on each call)."""
    store_config = config.store
    if isinstance(store_config, LocalStoreConfig):
        data_dir = store_config.data_dir

        async def open_local() -> MetaStore:
            return await LocalMetaStore.open(data_dir)

        return open_local
    zookeeper = store_config

    async def open_zookeeper() -> MetaStore:
        return await ZooKeeperMetaStore.connect(
            zookeeper.hosts,
            config.cluster_name,
            root=zookeeper.root,
            session_timeout_s=zookeeper.session_timeout_s,
            connect_timeout_s=zookeeper.connect_timeout_s,
        )

    return open_zookeeper


class MetaServer:
    def __init__(
        self,
        config: MetaServerConfig,
        *,
        open_store: StoreOpener | None = None,
        rng: random.Random | None = None,
        clock: TickClock | None = None,
    ) -> None:
        """`open_store` defaults to the store of `config.store`; `rng` seeds the core's tie-breaks."""
        self.config = config
        self._open_store = open_store or store_opener(config)
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock or TickClock(config.tick_ms)
        self._options = config.meta_options()
        self._rpc = RpcServer(self._handle, config.host, config.port, name="meta")
        self._pool: ConnectionPool | None = None
        self._sender: CommandSender | None = None
        self._store: MetaStore | None = None
        self._term: LeaderTerm | None = None
        self._known_leader = ""
        self._runner: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = False
        self._leading = asyncio.Event()
        self.failure: BaseException | None = None
        self.terms_started = 0  # leadership terms so far (operators' logs, tests)
        self._admin_shell: AdminShellServer | None = None  # the SSH admin shell, while leading
        self.metrics = MetaMetrics(is_leader=lambda: self.is_leader, cluster_info=self._leader_cluster_info)
        self._metrics_endpoint = (
            MetricsEndpoint(
                self.metrics.registry, config.metrics_host or config.host, config.metrics_port, name="meta"
            )
            if config.metrics_port
            else None
        )

    # ------------------------------------------------------------------ readers

    @property
    def address(self) -> str:
        """The advertised "host:port": what other metas redirect clients to."""
        return self.config.advertised_address or format_address(self.config.host, self._rpc.port)

    @property
    def listen_address(self) -> str:
        return self._rpc.address

    @property
    def is_leader(self) -> bool:
        """Leading and serving (a term is running and the store has not reported leadership lost)."""
        term = self._term
        return term is not None and term.active

    @property
    def core(self) -> MetaCore | None:
        """The current leader term's core (None while not leading). Read only."""
        term = self._term
        return None if term is None else term.core

    @property
    def store(self) -> MetaStore | None:
        """The store in use (None between a failure and the reopen). Read only."""
        return self._store

    @property
    def known_leader(self) -> str:
        """What a request to this meta is redirected to while it does not lead ("" if unknown)."""
        leader = self._known_leader
        return "" if leader == self.address else leader

    @property
    def metrics_url(self) -> str:
        """Where Prometheus scrapes this server ("" when metrics_port is 0 or before start)."""
        endpoint = self._metrics_endpoint
        return endpoint.url if endpoint is not None and endpoint.started else ""

    def _leader_cluster_info(self) -> ClusterInfoResponse | None:
        term = self._term
        return term.cluster_info() if term is not None and term.active else None

    @property
    def admin_shell_address(self) -> str:
        """Where the SSH admin shell listens: "host:port" while this meta leads with ssh on, else ""."""
        shell = self._admin_shell
        return "" if shell is None else shell.address

    # ------------------------------------------------------------------ lifetime

    async def start(self) -> None:
        """Listen, open the store (raises if it cannot be opened) and start campaigning."""
        if self._started:
            raise InvalidStateError("a meta server starts once")
        self._started = True
        await self._rpc.start()
        self._pool = ConnectionPool(connect_timeout_s=self.config.command_timeout_s)
        self._sender = CommandSender(
            self._pool,
            timeout_s=self.config.command_timeout_s,
            max_in_flight=self.config.max_outgoing_commands,
        )
        try:
            if self._metrics_endpoint is not None:
                await self._metrics_endpoint.start()
            store = await self._open_store()
        except BaseException:
            await self._close_transport()
            raise
        self._store = store
        self._runner = asyncio.get_running_loop().create_task(self._run(store), name="meta server")
        logger.info(
            "meta server of cluster %r listening on %s (advertised as %s), store %s",
            self.config.cluster_name,
            self.listen_address,
            self.address,
            self.config.store.kind,
        )

    async def wait_until_leader(self, timeout_s: float) -> None:
        """Return once this meta leads (TimeoutError after timeout_s)."""
        async with asyncio.timeout(timeout_s):
            while not self.is_leader:
                if self._runner is None or self._runner.done():
                    raise InvalidStateError(f"the meta server is not running (failure: {self.failure!r})")
                await self._leading.wait()
                if not self.is_leader:
                    await asyncio.sleep(0.01)  # a term ended right after it started: look again

    async def wait_stopped(self) -> None:
        """Return once the server stopped (stop() or a fatal failure, see `failure`)."""
        if self._runner is not None:
            await asyncio.gather(self._runner, return_exceptions=True)

    async def stop(self) -> None:
        """Stop serving, end the term (an append in flight finishes), close the store and sockets."""
        if self._stopping:
            await self.wait_stopped()
            return
        self._stopping = True
        runner = self._runner
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        await self._close_transport()

    async def _close_transport(self) -> None:
        if self._metrics_endpoint is not None:
            await self._metrics_endpoint.close()
        await self._rpc.close()
        if self._sender is not None:
            await self._sender.close()
        if self._pool is not None:
            await self._pool.close()

    # ------------------------------------------------------------------ leadership

    async def _run(self, first_store: MetaStore) -> None:
        store: MetaStore | None = first_store
        failures = 0
        while not self._stopping:
            try:
                if store is None:
                    store = self._store = await self._open_store()
                await self._campaign(store)
                failures = 0
                await self._lead(store)
            except PegasusError as exc:
                if self._is_fatal(exc):
                    self._fail(exc)
                    return
                failures += 1
                logger.warning("meta %s: %s; starting over", self.address, exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._fail(exc)
                return
            finally:
                self._known_leader = ""
                if store is not None:
                    self._store = None
                    await _close_quietly(store)
                    store = None
            # stop() cancels this task, so the pause never delays a shutdown.
            delay_s = min(REOPEN_BACKOFF_MAX_S, REOPEN_BACKOFF_INITIAL_S * 2 ** min(failures, 16))
            await asyncio.sleep(delay_s if failures else 0.0)

    async def _campaign(self, store: MetaStore) -> None:
        follower = asyncio.get_running_loop().create_task(self._follow_leader(store), name="meta follower")
        try:
            await store.campaign(self.address)
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)

    async def _follow_leader(self, store: MetaStore) -> None:
        period_s = min(LEADER_LOOKUP_MAX_S, max(LEADER_LOOKUP_MIN_S, self.config.tick_ms / 1000.0))
        while True:
            try:
                leader = await store.leader_address()
            except PegasusError as exc:
                logger.debug("meta %s: looking up the leader failed: %s", self.address, exc)
            else:
                if (leader or "") != self._known_leader:
                    logger.info("meta %s follows; the leader is %s", self.address, leader or "unknown")
                self._known_leader = leader or ""
            await asyncio.sleep(period_s)

    async def _lead(self, store: MetaStore) -> None:
        """One term: load, serve until it ends; raises what ended it (nothing on a plain close)."""
        state = await load_meta_state(store)
        if not store.is_leader or store.leadership_lost.is_set():
            # Lost again while loading (a ZooKeeper session that expired meanwhile): campaign anew.
            raise NotLeaderError("meta leadership was lost while the state was loading")
        core = MetaCore(state, self._options, self._rng, now_tick=self._clock.now())
        assert self._sender is not None  # set by start()
        term = LeaderTerm(
            core,
            store,
            clock=self._clock,
            sender=self._sender,
            on_event=self.metrics.on_event,
            settings=TermSettings(
                cluster_name=self.config.cluster_name,
                address=self.address,
                meta_servers=list(self.config.meta_servers),
                snapshot_every_records=self.config.snapshot_every_records,
                max_pending_persists=self.config.max_pending_persists,
                max_append_records=self.config.max_append_records,
            ),
        )
        self._known_leader = self.address
        self._term = term
        self.terms_started += 1
        term.start()
        self._leading.set()
        try:
            await self._start_admin_shell()
            await term.ended.wait()
        finally:
            self._term = None  # from here on every request is redirected
            self._leading.clear()
            await self._stop_admin_shell()
            await term.close()
        if term.end_error is not None:
            raise term.end_error

    async def _start_admin_shell(self) -> None:
        """Serve the admin shell for this term (DESIGN.md section 7: the leader serves it). A shell
        that cannot start (port taken, unreadable host key) is logged; the meta still leads."""
        ssh = self.config.ssh
        if not ssh.enabled:
            return
        from pegasus_kv.shell.ssh_server import AdminShellServer, AdminShellSettings  # asyncssh: only if on

        assert ssh.authorized_keys is not None  # the config's validator requires it with a port
        server = AdminShellServer(
            AdminShellSettings(
                host=ssh.host or self.config.host,
                port=ssh.port,
                host_key_path=self.config.ssh_host_key_path(),
                authorized_keys_path=ssh.authorized_keys,
                audit_log_path=self.config.ssh_audit_log_path(),
                cluster_name=self.config.cluster_name,
                meta_addresses=tuple(self.config.meta_servers) or (self.address,),
                audit_log_max_bytes=ssh.audit_log_max_bytes,
                audit_log_backups=ssh.audit_log_backups,
                max_connections=ssh.max_connections,
            )
        )
        try:
            await server.start()
        except Exception as exc:
            logger.error("meta %s leads without its admin shell: %s", self.address, exc, exc_info=exc)
            return
        self._admin_shell = server

    async def _stop_admin_shell(self) -> None:
        server, self._admin_shell = self._admin_shell, None
        if server is not None:
            await server.stop()

    def _is_fatal(self, error: PegasusError) -> bool:
        return isinstance(error, MetaLogCorruptError)

    def _fail(self, error: BaseException) -> None:
        self.failure = error
        logger.critical("meta %s stops: %r", self.address, error, exc_info=error)

    # ------------------------------------------------------------------ requests

    def _handle(self, request: Decoded, peer: str) -> HandlerResult:
        self.metrics.count_request(type(request.message))
        term = self._term
        if term is None or not term.active:
            raise NotLeaderError(self.known_leader)
        return term.handle(request.message)


async def _close_quietly(store: MetaStore) -> None:
    try:
        await store.close()
    except PegasusError as exc:
        logger.warning("closing the meta store failed: %s", exc)
