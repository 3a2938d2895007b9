"""The simulated replica server: the pure ReplicaNode driven by ticks and messages, with one log
file and one store per replica on a simulated disk, executing every NodeReady and Ready in the
order node.py and ready.py demand.

What survives a crash: each replica's durable log prefix (plus a random part of the unsynced tail,
disk.py) and its newest checkpoint (written atomically, so always durable). The store's contents
beyond the checkpoint are lost (RocksDB runs without its own WAL). A restart loads every replica
found on disk with `load_replica`: the store at its checkpoint decree, the log in append order.

The runtime's own duties are here, as they would be in pegasus_kv/replication/replica:
- report `on_log_durable` in append order, once per fsync completion, for the last mutation the
  fsync covered (fsyncs may complete out of order; a later one covers the earlier ones);
- hold `send_after_persist` until the log is durable through everything persisted so far;
- apply committed mutations in order and answer the waiting clients;
- checkpoint the store now and then and collect the log below the checkpoint (on_log_truncated);
- serve the core's requests: read the log, make a checkpoint, copy a checkpoint from another server.

Test-only bug hooks (`BugHooks`) make this server misbehave on purpose, to prove the checkers catch it.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import msgspec

from pegasus_kv.core.codec import Decoded, FrameKind
from pegasus_kv.core.errors import ErrorCode
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import (
    CheckAndSetRequest,
    DeleteRequest,
    ErrorReply,
    GetRequest,
    GetResponse,
    SetRequest,
)
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.pacifica.config import PartitionStatus
from pegasus_kv.replication.pacifica.node import NodeReady, ReplicaNode
from pegasus_kv.replication.pacifica.options import NodeOptions
from pegasus_kv.replication.pacifica.prepare_list import PrepareList
from pegasus_kv.replication.pacifica.ready import (
    InstallCheckpoint,
    MakeCheckpoint,
    Outbound,
    ReadLog,
    Ready,
    RuntimeRequest,
)
from pegasus_kv.replication.pacifica.write_queue import QueuedWrite
from tests.sim.checkers import InvariantChecker, MutationContent, ReplicaView, content_of
from tests.sim.disk import Disk, DurableLog
from tests.sim.network import Network, NodeName
from tests.sim.scheduler import Scheduler, Timer, require
from tests.sim.storage import Checkpoint, KvStore

# Client writes waiting for an answer on one server; the core bounds its queues, this bounds ours.
MAX_WAITING_CLIENTS = 10_000


@dataclasses.dataclass
class BugHooks:
    """Deliberate bugs, for the tests that prove the checkers can fail. All off by default."""

    # The server's primaries keep answering reads after the lease lapsed (ignores check_read).
    serve_reads_without_lease: bool = False
    # The disk acknowledges fsyncs without making anything durable (a crash loses it all).
    disk_lies: bool = False
    # Reads are answered from the store's last checkpoint instead of its current state.
    stale_reads_from_checkpoint: bool = False


@dataclasses.dataclass
class ReplicaServerOptions:
    tick_ms: int = 10
    # Checkpoint a replica's store once it applied this many decrees past its last checkpoint.
    checkpoint_every_decrees: int = 20
    # Latency of reading the log / copying a checkpoint between servers.
    min_io_ms: int = 1
    max_io_ms: int = 10


def log_file(gpid: Gpid) -> str:
    return f"log-{gpid}"


def checkpoint_file(gpid: Gpid) -> str:
    return f"checkpoint-{gpid}"


def log_meta_file(gpid: Gpid) -> str:
    """The log's metadata: the highest ballot of the records collected from its front (ready.py)."""
    return f"logmeta-{gpid}"


def replay_log(
    checkpoint_decree: int, records: list[Mutation], capacity: int | None = None
) -> dict[int, Mutation]:
    """Which mutation a restart recovers for each decree after the checkpoint: exactly what the
    replica core's own recovery keeps (PrepareList.recover, the rule load_replica applies to the
    log), so the checkers judge what a restarted replica really holds. `capacity` None: no bound
    (reading the log for a learner)."""
    bound = capacity if capacity is not None else len(records) + 1
    recovery = PrepareList.recover(bound, checkpoint_decree, records)
    plist = recovery.plist
    # The decrees the replay proved committed come first (the restarted replica applies them).
    recovered = {mutation.decree: mutation for mutation in recovery.committed}
    if plist.max_decree > plist.last_committed_decree:
        held = plist.entries(plist.last_committed_decree + 1, plist.max_decree)
        recovered.update((mutation.decree, mutation) for mutation in held)
    return recovered


class _ReplicaFiles:
    """What the runtime keeps for one replica: its log, its store, what waits on the log."""

    def __init__(self, disk: Disk, gpid: Gpid) -> None:
        self.log: DurableLog[Mutation] = disk.file(log_file(gpid), Mutation)
        self.checkpoints: DurableLog[Checkpoint] = disk.file(checkpoint_file(gpid), Checkpoint)
        self.log_meta: DurableLog[int] = disk.file(log_meta_file(gpid), int)
        durable = self.checkpoints.durable_records()
        self.store = KvStore(durable[-1] if durable else None)
        # Log positions (absolute) of persisted mutations not yet reported durable, in order.
        self.unreported: list[tuple[int, Mutation]] = []
        # Messages held until the log is durable up to a position.
        self.held: list[tuple[int, Outbound]] = []
        # The log position the completed fsyncs promised durable (the runtime trusts its disk).
        self.synced_end = self.log.end


class SimReplicaServer:
    def __init__(
        self,
        name: NodeName,
        scheduler: Scheduler,
        network: Network,
        checker: InvariantChecker,
        meta: NodeName,
        node_options: NodeOptions,
        options: ReplicaServerOptions,
        bugs: BugHooks | None = None,
    ) -> None:
        self.name = name
        self.scheduler = scheduler
        self.network = network
        self.checker = checker
        self.meta = meta
        self.node_options = node_options
        self.options = options
        self.bugs = bugs or BugHooks()
        self.disk = Disk(name, scheduler)
        self.disk.lies_about_fsync = self.bugs.disk_lies
        self.node: ReplicaNode | None = None
        self.incarnation = 0
        self.servers: dict[NodeName, SimReplicaServer] = {}  # the cluster's, to copy checkpoints
        self._files: dict[Gpid, _ReplicaFiles] = {}
        self._clients: dict[int, tuple[NodeName, int, Gpid]] = {}
        # Client writes that arrived at the current instant, per partition: like the real server
        # (replica/server.py), the writes of one pass reach the core together (on_client_writes).
        self._write_inbox: dict[Gpid, list[QueuedWrite]] = {}
        self._next_token = 0
        self._next_meta_request = 0
        self._tick_timer: Timer | None = None
        self._phase_ms = scheduler.rng.randrange(options.tick_ms)
        self._views: list[ReplicaView] | None = None
        # Bumped whenever the views may have changed.
        self.generation = 0

    @property
    def up(self) -> bool:
        return self.node is not None

    # --- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        require(self.node is None, f"{self.name} started twice")
        self.incarnation += 1
        rng = random.Random(self.scheduler.rng.getrandbits(64))
        node = ReplicaNode(self.name, self.node_options, rng)
        self._files = {}
        for gpid in self._gpids_on_disk():
            files = _ReplicaFiles(self.disk, gpid)
            records = files.log.durable_records()
            start = min((m.decree for m in records), default=files.store.last_applied_decree + 1)
            # The highest ballot the log ever held durably, collected records included (ready.py).
            ballot = max([0, *files.log_meta.durable_records(), *(m.ballot for m in records)])
            node.load_replica(
                gpid,
                last_committed_decree=files.store.last_applied_decree,
                log=records,
                log_start_decree=max(1, start),
                ballot=ballot,
            )
            self._files[gpid] = files
        self.node = node
        self._views = None
        self.generation += 1
        self._clients = {}
        self.network.attach(self.name, self.on_frame)
        self._schedule_tick()

    def crash(self) -> None:
        """Power loss: memory gone, unsynced tails lost, stores back to their checkpoints."""
        if self.node is None:
            return
        self.node = None
        self._views = None
        self.generation += 1
        self.network.detach(self.name)
        if self._tick_timer is not None:
            self._tick_timer.cancel()
            self._tick_timer = None
        self.disk.crash()
        self._files = {}
        self._clients = {}
        self._write_inbox = {}
        self.checker.on_restart(self.name, self.recoverable_decree)

    def _gpids_on_disk(self) -> list[Gpid]:
        gpids = set()
        for name in self.disk.files:
            kind, _, text = name.partition("-")
            if kind in ("log", "checkpoint"):
                gpids.add(Gpid.parse(text))
        return sorted(gpids)

    # --- what the checkers ask -------------------------------------------------------------------

    def views(self) -> list[ReplicaView]:
        """The replicas as the checkers see them; recomputed only after the core handled an event
        (nothing else changes a replica, and the lease is judged at the node's own tick)."""
        if self._views is None:
            self._views = self._compute_views()
        return self._views

    def _compute_views(self) -> list[ReplicaView]:
        node = self.node
        if node is None:
            return []
        views = []
        for gpid in node.gpids():
            replica = node.replica(gpid)
            assert replica is not None
            serving = node.check_read(gpid) is ErrorCode.OK
            if self.bugs.serve_reads_without_lease and replica.status is PartitionStatus.PRIMARY:
                serving = True
            views.append(
                ReplicaView(
                    self.name, gpid, replica.ballot, replica.status, serving, replica.last_committed_decree
                )
            )
        return views

    def _durable_state(self, gpid: Gpid) -> tuple[int, dict[int, Mutation]]:
        if not self.disk.has_file(log_file(gpid)) and not self.disk.has_file(checkpoint_file(gpid)):
            return (0, {})
        checkpoints = self.disk.file(checkpoint_file(gpid), Checkpoint).durable_records()
        checkpoint_decree = checkpoints[-1].decree if checkpoints else 0
        records = self.disk.file(log_file(gpid), Mutation).durable_records()
        capacity = self.node_options.replica.prepare_list_capacity
        return (checkpoint_decree, replay_log(checkpoint_decree, records, capacity))

    def recoverable_decree(self, node: NodeName, gpid: Gpid) -> int:
        """The highest decree a restart recovers contiguously, each matching what was committed."""
        require(node == self.name, "asked another server's disk")
        checkpoint_decree, held = self._durable_state(gpid)
        decree = checkpoint_decree
        while decree + 1 in held:
            committed = self.checker.committed.get((gpid, decree + 1))
            if committed is not None and committed != content_of(held[decree + 1]):
                break
            decree += 1
        return decree

    def holds_durably(self, gpid: Gpid, decree: int, content: MutationContent) -> bool:
        checkpoint_decree, held = self._durable_state(gpid)
        if decree <= checkpoint_decree:
            return True
        mutation = held.get(decree)
        return mutation is not None and content_of(mutation) == content

    # --- events ----------------------------------------------------------------------------------

    def _core(self) -> ReplicaNode:
        require(self.node is not None, f"{self.name} is down")
        assert self.node is not None
        return self.node

    def _tick_now(self) -> int:
        return self.scheduler.now_ms // self.options.tick_ms

    def _schedule_tick(self) -> None:
        tick_ms = self.options.tick_ms
        next_ms = (self._tick_now() + 1) * tick_ms + self._phase_ms
        if next_ms - tick_ms > self.scheduler.now_ms:
            next_ms -= tick_ms
        self._tick_timer = self.scheduler.at(next_ms, f"{self.name} tick", self._on_tick)

    def _on_tick(self) -> None:
        node = self._core()
        self._maybe_checkpoint()
        self._execute(node.on_tick(self._tick_now()))
        self._schedule_tick()

    def on_frame(self, src: NodeName, frame: Decoded) -> None:
        node = self._core()
        message = frame.message
        if frame.kind is FrameKind.REQUEST and frame.gpid is not None:
            self._on_client_request(src, frame)
            return
        if isinstance(message, ErrorReply):
            return  # meta refused one of our requests; the core repeats what matters
        self._execute(node.on_message(src, message))

    def _on_client_request(self, client: NodeName, frame: Decoded) -> None:
        node = self._core()
        gpid = frame.gpid
        assert gpid is not None
        request = frame.message
        if isinstance(request, GetRequest):
            code = node.check_read(gpid)
            files = self._files.get(gpid)
            replica = node.replica(gpid)
            if (
                self.bugs.serve_reads_without_lease
                and replica is not None
                and replica.status is PartitionStatus.PRIMARY
                and code is ErrorCode.NOT_PRIMARY
            ):
                code = ErrorCode.OK
            if files is None or code is not ErrorCode.OK:
                refusal = ErrorCode.NOT_PRIMARY if code is ErrorCode.OK else code
                self._answer(client, frame.request_id, ErrorReply(int(refusal)))
                return
            value = files.store.get(request.hash_key, request.sort_key)
            if self.bugs.stale_reads_from_checkpoint:
                value = files.store.checkpoint.data.get((request.hash_key, request.sort_key))
            self._answer(client, frame.request_id, GetResponse(value))
            return
        require(
            isinstance(request, SetRequest | DeleteRequest | CheckAndSetRequest), f"unexpected {request!r}"
        )
        assert isinstance(request, SetRequest | DeleteRequest | CheckAndSetRequest)
        if len(self._clients) >= MAX_WAITING_CLIENTS:
            self._answer(client, frame.request_id, ErrorReply(int(ErrorCode.BUSY)))
            return
        self._next_token += 1
        token = self._next_token
        self._clients[token] = (client, frame.request_id, gpid)
        timestamp_us = self.scheduler.now_ms * 1000
        inbox = self._write_inbox.setdefault(gpid, [])
        inbox.append(QueuedWrite(token, request, timestamp_us, len(msgspec.msgpack.encode(request))))
        if len(inbox) == 1:
            incarnation = self.incarnation

            def flush() -> None:
                writes = self._write_inbox.pop(gpid, [])
                if incarnation == self.incarnation and self.node is not None and writes:
                    self._execute(self.node.on_client_writes(gpid, writes))

            self.scheduler.after(0, f"{self.name} client writes {gpid}", flush)

    def _answer(self, client: NodeName, request_id: int, message: Message) -> None:
        self.network.send(self.name, client, message, request_id=request_id, kind=FrameKind.RESPONSE)

    # --- executing a NodeReady (node.py) and its Readies (ready.py) --------------------------------

    def _execute(self, out: NodeReady) -> None:
        self._views = None
        self.generation += 1
        # 1. Open an empty log and store for each new replica.
        for gpid in out.created:
            require(gpid not in self._files, f"{self.name}: {gpid} created twice")
            for name in (log_file(gpid), checkpoint_file(gpid), log_meta_file(gpid)):
                self.disk.remove(name)
            self._files[gpid] = _ReplicaFiles(self.disk, gpid)
        # 2. Each replica's Ready, in the order ready.py prescribes.
        for gpid, ready in out.replicas.items():
            self._execute_replica(gpid, ready)
        # 3. To meta; 4. the node's own answers.
        for message in out.to_meta:
            self._next_meta_request += 1
            self.network.send(
                self.name, self.meta, message, request_id=self._next_meta_request, kind=FrameKind.REQUEST
            )
        for outbound in out.send:
            self.network.send(self.name, outbound.to, outbound.message)
        # 5. Dropped replicas lose their data.
        for gpid in out.dropped:
            self._files.pop(gpid, None)
            for name in (log_file(gpid), checkpoint_file(gpid), log_meta_file(gpid)):
                self.disk.remove(name)
            self.checker.on_replica_dropped(self.name, gpid)

    def _execute_replica(self, gpid: Gpid, ready: Ready) -> None:
        files = self._files.get(gpid)
        if files is None:
            # A replica this server does not host only refuses clients (node.on_client_write).
            require(
                not (ready.persist or ready.send_after_persist or ready.apply or ready.requests),
                f"{self.name}: a Ready for {gpid}, which has no files",
            )
            self._answer_replies(ready)
            for outbound in ready.send:
                self.network.send(self.name, outbound.to, outbound.message)
            return
        # 1. Persist: append in order, fsync, report durability when the fsync completes.
        if ready.persist:
            for mutation in ready.persist:
                position = files.log.append(mutation)
                files.unreported.append((position, mutation))
            incarnation = self.incarnation
            self.disk.fsync(
                log_file(gpid), lambda synced_end: self._on_fsync(incarnation, gpid, files, synced_end)
            )
        # 2. Sends go at once.
        for outbound in ready.send:
            self.network.send(self.name, outbound.to, outbound.message)
        # 3. After-persist sends wait for everything persisted so far.
        if ready.send_after_persist:
            if files.synced_end >= files.log.end:
                for outbound in ready.send_after_persist:
                    self.network.send(self.name, outbound.to, outbound.message)
            else:
                files.held.extend((files.log.end, outbound) for outbound in ready.send_after_persist)
        # 4. Apply committed mutations in order, then answer their clients.
        replica = self.node.replica(gpid) if self.node is not None else None
        as_member = replica is not None and replica.status in (
            PartitionStatus.PRIMARY,
            PartitionStatus.SECONDARY,
        )
        for item in ready.apply:
            results = files.store.apply(item.mutation)
            self.checker.on_apply(self.name, gpid, item.mutation, as_member)
            for token, result in zip(item.tokens, results, strict=False):
                caller = self._clients.pop(token, None)
                if caller is not None:
                    self._answer(caller[0], caller[1], result)
        # 5. Answers that wait for no apply.
        self._answer_replies(ready)
        require(not ready.propose, f"{self.name}: a replica proposal the node did not take over")
        # 7. Requests: I/O whose results come back as events.
        for request in ready.requests:
            self._start_request(gpid, request)

    def _answer_replies(self, ready: Ready) -> None:
        for reply in ready.replies:
            caller = self._clients.pop(reply.token, None)
            if caller is not None:
                self._answer(caller[0], caller[1], ErrorReply(int(reply.code)))

    def _on_fsync(self, incarnation: int, gpid: Gpid, files: _ReplicaFiles, synced_end: int) -> None:
        if incarnation != self.incarnation or self.node is None or self._files.get(gpid) is not files:
            return  # the server crashed, or the replica was dropped, meanwhile
        files.synced_end = max(files.synced_end, synced_end)
        durable_end = files.synced_end
        last: Mutation | None = None
        while files.unreported and files.unreported[0][0] < durable_end:
            last = files.unreported.pop(0)[1]
        ready_now = [outbound for end, outbound in files.held if end <= durable_end]
        files.held = [(end, outbound) for end, outbound in files.held if end > durable_end]
        for outbound in ready_now:
            self.network.send(self.name, outbound.to, outbound.message)
        if last is not None:
            self._execute(self.node.on_log_durable(gpid, last.ballot, last.decree))

    # --- runtime requests ------------------------------------------------------------------------

    def _later(self, label: str, action: Callable[[ReplicaNode], NodeReady]) -> None:
        """Run `action` on the core after an I/O delay, unless the server crashed meanwhile."""
        incarnation = self.incarnation
        delay = self.scheduler.rng.randint(self.options.min_io_ms, self.options.max_io_ms)

        def run() -> None:
            if incarnation == self.incarnation and self.node is not None:
                self._execute(action(self.node))

        self.scheduler.after(delay, f"{self.name} {label}", run)

    def _start_request(self, gpid: Gpid, request: RuntimeRequest) -> None:
        files = self._files[gpid]
        request_id = request.request_id
        if isinstance(request, ReadLog):
            held = replay_log(request.from_decree - 1, files.log.records)
            mutations = []
            for decree in range(request.from_decree, request.to_decree + 1):
                mutation = held.get(decree)
                if mutation is None:
                    break
                mutations.append(mutation)
            self._later("read log", lambda node: node.on_log_read(gpid, request_id, mutations))
        elif isinstance(request, MakeCheckpoint):
            checkpoint = self._checkpoint(gpid)
            ref = f"{self.name}/{gpid}/{checkpoint.decree}"
            self._later(
                "checkpoint made",
                lambda node: node.on_checkpoint_made(gpid, request_id, checkpoint.decree, ref),
            )
        else:
            self._later("install checkpoint", lambda node: self._install(node, gpid, request))

    def _install(self, node: ReplicaNode, gpid: Gpid, request: InstallCheckpoint) -> NodeReady:
        """Copy a checkpoint from its source server (which must be up and reachable)."""
        source = self.servers.get(request.source)
        files = self._files.get(gpid)
        found: Checkpoint | None = None
        if (
            source is not None
            and source.up
            and files is not None
            and not self.network.is_cut(request.source, self.name)
            and source.disk.has_file(checkpoint_file(gpid))
        ):
            for checkpoint in source.disk.file(checkpoint_file(gpid), Checkpoint).durable_records():
                if f"{request.source}/{gpid}/{checkpoint.decree}" == request.checkpoint_ref:
                    found = checkpoint
        if found is None or files is None:
            return node.on_request_failed(
                gpid, request.request_id, f"checkpoint {request.checkpoint_ref} unavailable"
            )
        require(found.decree == request.checkpoint_decree, "a checkpoint reference names another decree")
        # The log stays as it is (append-only): a replay skips what the checkpoint covers.
        files.store.install_checkpoint(found)
        files.checkpoints.rewrite([found])
        self.checker.on_learned_checkpoint(self.name, gpid, found.decree)
        return node.on_checkpoint_installed(gpid, request.request_id)

    # --- checkpoints and log collection ------------------------------------------------------------

    def _checkpoint(self, gpid: Gpid) -> Checkpoint:
        """A durable checkpoint of the store at its applied decree, kept with the previous one."""
        files = self._files[gpid]
        checkpoint = files.store.make_checkpoint()
        kept = files.checkpoints.durable_records()[-1:]
        files.checkpoints.rewrite([*kept, checkpoint])
        return checkpoint

    def _maybe_checkpoint(self) -> None:
        """Now and then checkpoint a store and collect the log below the checkpoint."""
        node = self._core()
        for gpid, files in list(self._files.items()):
            store = files.store
            if store.last_applied_decree - store.checkpoint.decree < self.options.checkpoint_every_decrees:
                continue
            checkpoint = self._checkpoint(gpid)
            log = files.log
            cut = log.base
            while cut < log.durable_end and log.records[cut - log.base].decree <= checkpoint.decree:
                cut += 1
            if cut > log.base:
                # Keep the collected records' highest ballot in the log's metadata first (atomic).
                collected = log.records[: cut - log.base]
                ballot = max([*files.log_meta.durable_records(), *(m.ballot for m in collected)])
                files.log_meta.rewrite([ballot])
                log.truncate_front(cut)
                self._execute(node.on_log_truncated(gpid, checkpoint.decree + 1))
