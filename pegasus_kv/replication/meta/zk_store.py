"""The ZooKeeper meta store: several meta servers, one leader by election, fenced writes (kazoo).

Layout under `<root>/<cluster>` (root defaults to /pegasus-kv):

    election/            kazoo Lock recipe: one ephemeral sequential node per contender, holding its
                         advertised address; the lowest is the leader, so `leader_address()` reads
                         it from there, and a leader's node vanishes with its session
    epoch                the leader fence: each new leader bumps its version (data: its address)
    log/r-<seq>          record chunks, sequential znodes, in append order
    snapshots/<name>/c-<index>   chunks of a snapshot
    snapshot             pointer to the current snapshot (JSON), or empty

Fencing. A leader's session can expire without it noticing in time (a GC pause, a partition), and
another meta then wins the lock. So every write is a ZooKeeper transaction that first checks the
version of `epoch` that this leader set when it won; a new leader bumps that version (in a
transaction that checks its own lock node still exists) before it loads the state, so a deposed
leader's writes fail as a whole with BadVersion -> NotLeaderError, and every write that did succeed
is visible to the new leader's load.

Chunking. A znode holds at most 1 MB (jute.maxbuffer) and so does one transaction, so a record is
cut into chunks of CHUNK_BYTES, each with a header naming its record (leader epoch, counter) and
index; a record appears in `load` only once its last chunk is there. A record cut short by a
deposed or crashed leader is ignored. Commands are retried after a connection loss, which may
create a chunk twice: `load` keeps the first copy of each record id.

Limits. Listing the log is one ZooKeeper reply, itself under 1 MB: about 60,000 znodes. The meta
core snapshots long before that (watch `records_since_snapshot`; a few thousand is plenty). A
snapshot is at most MAX_SNAPSHOT_BYTES and is read back in full at load.

Every kazoo call runs in a worker thread; kazoo exceptions are translated here, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError,
    CancelledError,
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    NodeExistsError,
    NoNodeError,
    OperationTimeoutError,
    RolledBackError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.retry import KazooRetry

from pegasus_kv.core.errors import (
    InvalidStateError,
    NetworkError,
    NotLeaderError,
    PegasusError,
    StorageError,
)
from pegasus_kv.replication.meta.store import MetaLog, MetaStore, check_append, check_snapshot

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

CHUNK_BYTES = 900 * 1024  # under ZooKeeper's 1 MB per znode and per request, with room for headers
TRANSACTION_BYTES = 950 * 1024
TRANSACTION_OPS = 500
READ_BATCH = 256  # znodes fetched concurrently while loading
MAX_LOG_ZNODES = 50_000  # past this `load` could not list the log (see Limits): snapshot first

# Chunk header: format version, flags, leader epoch, record counter, chunk index.
_CHUNK = struct.Struct("<BBIQI")
_CHUNK_VERSION = 1
_LAST_CHUNK = 0x01


@dataclasses.dataclass(frozen=True, slots=True)
class _Paths:
    base: str

    @property
    def election(self) -> str:
        return f"{self.base}/election"

    @property
    def epoch(self) -> str:
        return f"{self.base}/epoch"

    @property
    def log(self) -> str:
        return f"{self.base}/log"

    @property
    def snapshots(self) -> str:
        return f"{self.base}/snapshots"

    @property
    def snapshot_pointer(self) -> str:
        return f"{self.base}/snapshot"


@dataclasses.dataclass(frozen=True, slots=True)
class _Create:
    path: str
    data: bytes
    sequence: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class _SetData:
    path: str
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class _Delete:
    path: str


_Op = _Create | _SetData | _Delete


def _translate(exc: BaseException, doing: str) -> PegasusError:
    """The one place where kazoo's exceptions become pegasus-kv's."""
    if isinstance(exc, BadVersionError):  # only the epoch check is versioned: another leader won
        return NotLeaderError(f"{doing}: fenced out, another meta server became leader")
    if isinstance(exc, ConnectionLoss | ConnectionClosedError | SessionExpiredError | OperationTimeoutError):
        return NetworkError(f"{doing}: ZooKeeper connection problem: {type(exc).__name__}")
    if isinstance(exc, KazooTimeoutError):
        return NetworkError(f"{doing}: ZooKeeper did not answer in time")
    return StorageError(f"{doing}: ZooKeeper error {type(exc).__name__}: {exc}")


def _sequence_number(path: str) -> int:
    return int(path[-10:])


def _chunks(data: bytes) -> list[bytes]:
    return [data[start : start + CHUNK_BYTES] for start in range(0, len(data), CHUNK_BYTES)] or [b""]


def _group_into_transactions(ops: list[_Op]) -> list[list[_Op]]:
    groups: list[list[_Op]] = []
    current: list[_Op] = []
    current_bytes = 0
    for op in ops:
        size = len(op.path) + (len(op.data) if isinstance(op, _Create | _SetData) else 0)
        if current and (current_bytes + size > TRANSACTION_BYTES or len(current) >= TRANSACTION_OPS):
            groups.append(current)
            current, current_bytes = [], 0
        current.append(op)
        current_bytes += size
    if current:
        groups.append(current)
    return groups


def encode_chunk(epoch: int, counter: int, index: int, last: bool, piece: bytes) -> bytes:
    """One log znode's data: the chunk header (record id = leader epoch + counter) and the bytes."""
    return _CHUNK.pack(_CHUNK_VERSION, _LAST_CHUNK if last else 0, epoch, counter, index) + piece


def assemble_records(chunks: list[bytes], where: str) -> list[bytes]:
    """Records from chunks in log order; incomplete records are dropped, retried duplicates too."""
    records: list[bytes] = []
    seen: set[tuple[int, int]] = set()
    partial_id: tuple[int, int] | None = None
    pieces: list[bytes] = []
    for chunk in chunks:
        if len(chunk) < _CHUNK.size:
            raise StorageError(f"{where}: a log chunk of {len(chunk)} bytes has no header")
        version, flags, epoch, counter, index = _CHUNK.unpack_from(chunk, 0)
        if version != _CHUNK_VERSION:
            raise StorageError(f"{where}: log chunk format {version} is unknown")
        record_id = (epoch, counter)
        if record_id in seen:
            continue  # a transaction retried after a lost connection had already been applied
        if index == 0:
            partial_id, pieces = record_id, []  # anything partial before it was cut short
        elif record_id == partial_id and index < len(pieces):
            continue  # the same retry, caught while the record was still incomplete
        elif record_id != partial_id or index != len(pieces):
            raise StorageError(f"{where}: chunk {index} of record {record_id} is out of place")
        pieces.append(chunk[_CHUNK.size :])
        if flags & _LAST_CHUNK:
            seen.add(record_id)
            records.append(b"".join(pieces))
            partial_id, pieces = None, []
    return records


class ZooKeeperMetaStore(MetaStore):
    """Meta state in ZooKeeper. Connect with `await ZooKeeperMetaStore.connect(hosts, cluster)`."""

    def __init__(self, client: Any, paths: _Paths, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._client = client
        self._paths = paths
        self._loop = loop
        self._leader = False
        self._closed = False
        self._epoch = -1  # version of the epoch znode this leader set when it won
        self._record_counter = 0
        self._last_seq = -1  # highest log znode sequence number known (covered by a snapshot taken now)
        self._records_since_snapshot = 0
        self._log_znodes = 0  # log znodes after the snapshot (chunks, not records)
        self._election_lock: Any = None
        self._campaign_cancelled = threading.Event()
        self._operation = asyncio.Lock()  # appends and snapshots one at a time, in order
        client.add_listener(self._on_connection_state)

    @classmethod
    async def connect(
        cls,
        hosts: str,
        cluster: str,
        *,
        root: str = "/pegasus-kv",
        session_timeout_s: float = 10.0,
        connect_timeout_s: float = 15.0,
    ) -> ZooKeeperMetaStore:
        """Connect to ZooKeeper (`host:port,host:port`) and make sure the cluster's znodes exist."""
        client = KazooClient(
            hosts=hosts,
            timeout=session_timeout_s,
            connection_retry=KazooRetry(max_tries=-1, delay=0.1, max_delay=2.0),
            command_retry=KazooRetry(max_tries=5, delay=0.1, max_delay=2.0, ignore_expire=False),
        )
        paths = _Paths(f"{root.rstrip('/')}/{cluster}")

        def start() -> None:
            client.start(timeout=connect_timeout_s)
            for path in (paths.election, paths.log, paths.snapshots):
                client.ensure_path(path)
            for path in (paths.epoch, paths.snapshot_pointer):
                with contextlib.suppress(NodeExistsError):  # another meta made it first
                    client.create(path, b"")

        try:
            await asyncio.to_thread(start)
        except (KazooException, KazooTimeoutError) as exc:
            await asyncio.to_thread(_stop_client, client)
            raise _translate(exc, f"connecting to ZooKeeper at {hosts}") from exc
        return cls(client, paths, asyncio.get_running_loop())

    # --- leadership ---------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._leader

    @property
    def records_since_snapshot(self) -> int:
        return self._records_since_snapshot

    @property
    def client_id(self) -> tuple[int, bytes] | None:
        """The ZooKeeper session (id, password): for operators' logs and fault-injection tests."""
        client_id = self._client.client_id
        return None if client_id is None else (int(client_id[0]), bytes(client_id[1]))

    async def campaign(self, my_address: str) -> None:
        self._check_open()
        while not self._leader:
            lock = self._client.Lock(self._paths.election, identifier=my_address)
            self._election_lock = lock
            self._campaign_cancelled.clear()
            try:
                # Waiting for the lock can last as long as another meta leads: in a thread of its
                # own, so the shared executor stays free for real work.
                acquired = await self._zk(
                    "campaigning for meta leadership", self._acquire, lock, own_thread=True
                )
            except asyncio.CancelledError:
                self._campaign_cancelled.set()
                lock.cancel()
                raise
            if not acquired:
                raise InvalidStateError("the campaign was cancelled (the store is closing)")
            try:
                epoch = await self._zk("taking meta leadership", self._bump_epoch, lock, my_address)
                if epoch is None:
                    logger.warning("meta leadership slipped away before it was taken (session expired)")
                    await asyncio.to_thread(_release_quietly, lock)
                    continue
                children = await self._zk("reading the meta log", self._client.get_children, self._paths.log)
            except BaseException:
                await asyncio.to_thread(_release_quietly, lock)
                raise
            self._epoch = epoch
            self._last_seq = max([self._last_seq, *(_sequence_number(child) for child in children)])
            self._log_znodes = len(children)  # at most: some may be covered by the snapshot
            self._record_counter = 0
            if self._leadership_lost.is_set():
                self._leadership_lost = asyncio.Event()
            self._leader = True
            logger.info("meta leadership won by %s (epoch %d)", my_address, self._epoch)

    def _acquire(self, lock: Any) -> bool:
        try:
            acquired = bool(lock.acquire())
        except CancelledError:
            return False
        if acquired and self._campaign_cancelled.is_set():
            lock.release()  # the campaign was abandoned while the lock came our way
            return False
        return acquired

    def _bump_epoch(self, lock: Any, my_address: str) -> int | None:
        """Fence out every earlier leader, only while our lock node still exists (we still hold it).

        Returns the new epoch, or None when our lock node is gone (the session expired meanwhile).
        """
        transaction = self._client.transaction()
        transaction.check(f"{self._paths.election}/{lock.node}", 0)
        transaction.set_data(self._paths.epoch, my_address.encode())
        results = transaction.commit()
        if isinstance(results[0], NoNodeError):
            return None
        _raise_first_failure(results)
        return int(results[1].version)

    async def leader_address(self) -> str | None:
        self._check_open()
        contenders = await self._zk(
            "looking up the meta leader", lambda: self._client.Lock(self._paths.election).contenders()
        )
        return str(contenders[0]) if contenders else None

    def _on_connection_state(self, state: str) -> None:
        """Kazoo calls this on its own thread: hop to the loop, do nothing blocking here."""
        if state == KazooState.LOST:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to tell
                self._loop.call_soon_threadsafe(self._lose_leadership, "the ZooKeeper session expired")

    def _lose_leadership(self, reason: str) -> None:
        if not self._leader and not self._closed:
            return  # a follower's session came and went: nothing was lost
        if self._leader:
            logger.warning("meta leadership lost: %s", reason)
        self._leader = False
        self._leadership_lost.set()

    # --- the log ------------------------------------------------------------------------------------

    async def load(self) -> MetaLog:
        self._check_open()
        snapshot, covered_seq = await self._zk("loading the meta snapshot", self._read_snapshot)
        children = await self._zk("listing the meta log", self._client.get_children, self._paths.log)
        live = sorted((seq, child) for child in children if (seq := _sequence_number(child)) > covered_seq)
        paths = [f"{self._paths.log}/{child}" for _, child in live]
        chunks = await self._zk("loading the meta log", self._read_all, paths)
        records = assemble_records(chunks, self._paths.log)
        self._last_seq = max([self._last_seq, covered_seq, *(seq for seq, _ in live)])
        self._records_since_snapshot = len(records)
        self._log_znodes = len(live)
        return MetaLog(snapshot, records)

    async def append(self, records: Sequence[bytes]) -> None:
        check_append(records)
        if not records:
            return
        async with self._operation:
            self._check_writable()
            ops: list[_Op] = []
            for record in records:
                self._record_counter += 1
                pieces = _chunks(record)
                for index, piece in enumerate(pieces):
                    data = encode_chunk(
                        self._epoch, self._record_counter, index, index == len(pieces) - 1, piece
                    )
                    ops.append(_Create(f"{self._paths.log}/r-", data, sequence=True))
            if self._log_znodes + len(ops) > MAX_LOG_ZNODES:
                raise StorageError(
                    f"the meta log holds {self._log_znodes} znodes since its snapshot; "
                    f"write a snapshot before appending more (limit {MAX_LOG_ZNODES})"
                )
            for group in _group_into_transactions(ops):
                results = await self._fenced("appending to the meta log", group)
                self._log_znodes += len(group)
                self._last_seq = max([self._last_seq, *(_sequence_number(str(path)) for path in results)])
            self._records_since_snapshot += len(records)

    async def write_snapshot(self, snapshot: bytes) -> None:
        check_snapshot(snapshot)
        async with self._operation:
            self._check_writable()
            self._record_counter += 1
            name = f"s-{self._epoch:010d}-{self._record_counter:012d}"
            covered_seq = self._last_seq
            directory = f"{self._paths.snapshots}/{name}"
            pieces = _chunks(snapshot)
            ops: list[_Op] = [_Create(directory, b"")]
            ops += [_Create(f"{directory}/c-{index:06d}", piece) for index, piece in enumerate(pieces)]
            for group in _group_into_transactions(ops):
                await self._fenced("writing a meta snapshot", group)
            pointer = {
                "name": name,
                "chunks": len(pieces),
                "bytes": len(snapshot),
                "crc32": zlib.crc32(snapshot),
                "covers_log_seq": covered_seq,
            }
            switch = _SetData(self._paths.snapshot_pointer, json.dumps(pointer).encode())
            await self._fenced("switching to the new meta snapshot", [switch])
            self._records_since_snapshot = 0
            self._log_znodes = 0
            try:
                await self._collect_garbage(name, covered_seq)
            except NotLeaderError:
                raise
            except PegasusError as exc:  # the snapshot holds; leftovers go with the next one
                logger.warning("meta snapshot %s written, cleaning up after it failed: %s", name, exc)

    async def _collect_garbage(self, current_snapshot: str, covered_seq: int) -> None:
        children = await self._zk("listing the meta log", self._client.get_children, self._paths.log)
        covered = [child for child in children if _sequence_number(child) <= covered_seq]
        ops: list[_Op] = [_Delete(f"{self._paths.log}/{child}") for child in covered]
        for old in await self._zk("listing meta snapshots", self._client.get_children, self._paths.snapshots):
            if old == current_snapshot:
                continue
            directory = f"{self._paths.snapshots}/{old}"
            chunk_names = await self._zk("listing a meta snapshot", self._client.get_children, directory)
            ops += [_Delete(f"{directory}/{chunk}") for chunk in chunk_names]
            ops.append(_Delete(directory))
        for group in _group_into_transactions(ops):
            await self._fenced("deleting what a meta snapshot covers", group)

    # --- plumbing -----------------------------------------------------------------------------------

    async def _fenced(self, doing: str, ops: list[_Op]) -> list[Any]:
        """Run ops as one transaction that first checks this leader's epoch (see the module doc)."""

        def commit() -> list[Any]:
            transaction = self._client.transaction()
            transaction.check(self._paths.epoch, self._epoch)
            for op in ops:
                if isinstance(op, _Create):
                    transaction.create(op.path, op.data, sequence=op.sequence)
                elif isinstance(op, _SetData):
                    transaction.set_data(op.path, op.data)
                else:
                    transaction.delete(op.path)
            results = list(transaction.commit())
            _raise_first_failure(results)
            return results[1:]

        try:
            return await self._zk(doing, self._client.retry, commit)
        except NotLeaderError as exc:
            self._lose_leadership(str(exc))
            raise

    async def _zk(
        self, doing: str, function: Callable[..., _T], *args: object, own_thread: bool = False
    ) -> _T:
        """Run a blocking kazoo call in a worker thread, translating its exceptions."""
        try:
            if own_thread:
                return await _in_own_thread(self._loop, functools.partial(function, *args), doing)
            return await asyncio.to_thread(function, *args)
        except (KazooException, KazooTimeoutError) as exc:
            raise _translate(exc, doing) from exc

    def _read_snapshot(self) -> tuple[bytes | None, int]:
        raw, _stat = self._client.get(self._paths.snapshot_pointer)
        if not raw:
            return None, -1
        pointer = json.loads(raw)
        directory = f"{self._paths.snapshots}/{pointer['name']}"
        paths = [f"{directory}/c-{index:06d}" for index in range(int(pointer["chunks"]))]
        snapshot = b"".join(self._read_all(paths))
        if len(snapshot) != pointer["bytes"] or zlib.crc32(snapshot) != pointer["crc32"]:
            raise StorageError(f"meta snapshot {directory} does not match its size or checksum")
        return snapshot, int(pointer["covers_log_seq"])

    def _read_all(self, paths: list[str]) -> list[bytes]:
        """Znode data of every path, fetched READ_BATCH at a time concurrently."""
        found: list[bytes] = []
        for start in range(0, len(paths), READ_BATCH):
            pending = [self._client.get_async(path) for path in paths[start : start + READ_BATCH]]
            found.extend(bytes(result.get()[0]) for result in pending)
        return found

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidStateError("the ZooKeeper meta store is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if not self._leader:
            raise NotLeaderError("this meta server is not the leader")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._lose_leadership("the store was closed")  # before the lock goes: no write after it
        self._campaign_cancelled.set()
        lock = self._election_lock
        if lock is not None:
            lock.cancel()
            await asyncio.to_thread(_release_quietly, lock)
        self._client.remove_listener(self._on_connection_state)
        await asyncio.to_thread(_stop_client, self._client)


def _raise_first_failure(results: list[Any]) -> None:
    """A failed transaction reports an exception per operation: the cause, then RolledBackErrors."""
    failures = [result for result in results if isinstance(result, Exception)]
    causes = [failure for failure in failures if not isinstance(failure, RolledBackError)]
    if causes or failures:
        raise (causes or failures)[0]


def _in_own_thread(
    loop: asyncio.AbstractEventLoop, function: Callable[[], _T], name: str
) -> asyncio.Future[_T]:
    """Run a call that may block for long in a daemon thread of its own; its result comes back on loop."""
    future: asyncio.Future[_T] = loop.create_future()

    def deliver(result: _T) -> None:
        if not future.done():  # else the awaiting task was cancelled
            future.set_result(result)

    def fail(error: BaseException) -> None:
        if not future.done():
            future.set_exception(error)

    def target() -> None:
        try:
            result = function()
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
                loop.call_soon_threadsafe(fail, exc)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(deliver, result)

    threading.Thread(target=target, name=name, daemon=True).start()
    return future


def _release_quietly(lock: Any) -> None:
    try:
        lock.release()
    except KazooException as exc:  # the node goes with the session anyway
        logger.debug("releasing the meta election lock failed: %r", exc)


def _stop_client(client: Any) -> None:
    try:
        client.stop()
        client.close()
    except KazooException as exc:
        logger.debug("closing the ZooKeeper client failed: %r", exc)
