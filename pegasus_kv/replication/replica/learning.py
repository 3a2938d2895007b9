"""Learning over the network: the runtime half of PacificA's "adding a replica".

The replica core decides how a learner catches up (prepare list, log, or checkpoint plus log tail)
and asks the runtime for the I/O through Ready.requests (ready.py):

- ReadLog (primary): read committed mutations from the log -> core.on_log_read. The log range is
  held (not collected) for learn_hold_s while learners read it.
- MakeCheckpoint (primary): checkpoint the store (or reuse a recent checkpoint the log still covers),
  list its files with their sizes and CRC-32 -> core.on_checkpoint_made(decree, ref). The reference
  "<app>.<partition>/<name>" names the checkpoint on this server; the log after its decree is held
  while learners fetch it.
- InstallCheckpoint (learner): fetch the manifest and then every file in chunks of at most
  learn_chunk_bytes from the source server (learn_messages.py), verify each chunk's CRC-32, each
  file's size and CRC-32, fsync, and install the copy as the store (replica_runtime.py) ->
  core.on_checkpoint_installed. Any failure -> core.on_request_failed (the core starts a new attempt).

The serving side answers CheckpointManifestRequest / CheckpointChunkRequest from checkpoints made
here, reading files in a worker thread; a file name must be one of the manifest's (no path escapes).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import shutil
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import BinaryIO, TypeVar

from pegasus_kv.core.errors import InvalidArgumentError, NotPrimaryError, StorageError
from pegasus_kv.core.ids import Gpid
from pegasus_kv.replication.connection_pool import ConnectionPool
from pegasus_kv.replication.pacifica.config import NodeAddress
from pegasus_kv.replication.replica.learn_messages import (
    MAX_CHECKPOINT_FILES,
    MAX_CHUNK_BYTES,
    CheckpointChunkRequest,
    CheckpointChunkResponse,
    CheckpointFile,
    CheckpointManifestRequest,
    CheckpointManifestResponse,
)
from pegasus_kv.replication.replica.replica_runtime import ReplicaRuntime
from pegasus_kv.storage import PartitionStore

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

CHECKPOINT_PREFIX = "ckpt-"
INCOMING_PREFIX = "incoming-"
# Log-range holds remembered per replica (one per learner read; older ones are merged away).
MAX_LOG_HOLDS = 64
_CRC_READ_BYTES = 1024 * 1024


@dataclasses.dataclass(slots=True)
class _Checkpoint:
    ref: str
    directory: Path
    decree: int
    manifest: CheckpointManifestResponse
    made_at_s: float
    last_used_s: float
    runtime_incarnation: int


def checkpoint_ref(gpid: Gpid, name: str) -> str:
    return f"{gpid.app_id}.{gpid.partition_index}/{name}"


def _is_plain_file_name(name: str) -> bool:
    return (
        bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name
    )


class CheckpointShelf:
    """Checkpoints this server made for learners, and the log ranges learners are reading."""

    def __init__(
        self,
        *,
        executor: Executor,
        hold_s: float,
        max_per_replica: int,
        reuse_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._executor = executor
        self._hold_s = hold_s
        self._max_per_replica = max_per_replica
        self._reuse_s = reuse_s
        self._clock = clock
        self._checkpoints: dict[Gpid, list[_Checkpoint]] = {}
        self._log_holds: dict[Gpid, list[tuple[int, float]]] = {}
        self._names = itertools.count(1)

    # --- the log range learners still need ------------------------------------------------------

    def note_log_read(self, gpid: Gpid, from_decree: int) -> None:
        holds = self._log_holds.setdefault(gpid, [])
        holds.append((from_decree, self._clock()))
        if len(holds) > MAX_LOG_HOLDS:
            holds.sort()
            del holds[1 : len(holds) - MAX_LOG_HOLDS + 1]  # keep the lowest and the newest ones

    def keep_from_decree(self, gpid: Gpid) -> int:
        """The log must keep every decree from here on for learners (a huge number: no hold)."""
        now = self._clock()
        floor = 1 << 62
        holds = [(decree, at) for decree, at in self._log_holds.get(gpid, []) if now - at < self._hold_s]
        if holds:
            self._log_holds[gpid] = holds
            floor = min(floor, min(decree for decree, _ in holds))
        else:
            self._log_holds.pop(gpid, None)
        for checkpoint in self._checkpoints.get(gpid, []):
            if now - checkpoint.last_used_s < self._hold_s:
                floor = min(floor, checkpoint.decree + 1)
        return floor

    # --- making checkpoints (primary) -----------------------------------------------------------

    async def make(self, runtime: ReplicaRuntime) -> tuple[int, str]:
        """A checkpoint of runtime's store for a learner: (decree, ref)."""
        gpid = runtime.gpid
        now = self._clock()
        shelf = [c for c in self._checkpoints.get(gpid, []) if c.runtime_incarnation == runtime.incarnation]
        if shelf:
            newest = shelf[-1]
            log_first = runtime.log.first_decree
            if now - newest.made_at_s < self._reuse_s and (log_first == 0 or newest.decree + 1 >= log_first):
                newest.last_used_s = now
                return newest.decree, newest.ref
        name = f"{CHECKPOINT_PREFIX}{next(self._names)}"
        directory = runtime.paths.learn_dir / name

        def checkpoint(store: PartitionStore) -> int:
            shutil.rmtree(directory, ignore_errors=True)
            return store.checkpoint(str(directory))

        decree = await runtime.call_store(checkpoint)
        files = await self._in_thread(_list_files, directory)
        manifest = CheckpointManifestResponse(checkpoint_decree=decree, files=files)
        made = _Checkpoint(
            ref=checkpoint_ref(gpid, name),
            directory=directory,
            decree=decree,
            manifest=manifest,
            made_at_s=now,
            last_used_s=now,
            runtime_incarnation=runtime.incarnation,
        )
        shelf.append(made)
        doomed = shelf[: max(0, len(shelf) - self._max_per_replica)]
        self._checkpoints[gpid] = shelf[len(doomed) :]
        for old in doomed:
            await self._in_thread(shutil.rmtree, old.directory, True)
        logger.info("%s: checkpoint %s at decree %d for a learner (%d files)", gpid, name, decree, len(files))
        return decree, made.ref

    def forget(self, gpid: Gpid) -> None:
        """The replica is gone (its directory, checkpoints included, is deleted with it)."""
        self._checkpoints.pop(gpid, None)
        self._log_holds.pop(gpid, None)

    # --- serving checkpoint files ---------------------------------------------------------------

    def _find(self, gpid: Gpid, ref: str) -> _Checkpoint:
        for checkpoint in self._checkpoints.get(gpid, []):
            if checkpoint.ref == ref:
                checkpoint.last_used_s = self._clock()
                return checkpoint
        raise NotPrimaryError(f"no checkpoint {ref!r} of {gpid} here (collected, or the server restarted)")

    def serve_manifest(self, request: CheckpointManifestRequest) -> CheckpointManifestResponse:
        return self._find(request.gpid, request.checkpoint_ref).manifest

    async def serve_chunk(
        self, request: CheckpointChunkRequest, max_chunk_bytes: int
    ) -> CheckpointChunkResponse:
        checkpoint = self._find(request.gpid, request.checkpoint_ref)
        entry = next((f for f in checkpoint.manifest.files if f.name == request.file_name), None)
        if entry is None:
            raise InvalidArgumentError(
                f"{request.file_name!r} is not a file of checkpoint {request.checkpoint_ref}"
            )
        if not 0 <= request.offset <= entry.size_bytes:
            raise InvalidArgumentError(
                f"offset {request.offset} outside {request.file_name} ({entry.size_bytes} B)"
            )
        if request.max_bytes <= 0:
            raise InvalidArgumentError("max_bytes must be positive")
        length = min(request.max_bytes, max_chunk_bytes, MAX_CHUNK_BYTES, entry.size_bytes - request.offset)
        data = await self._in_thread(_read_chunk, checkpoint.directory / entry.name, request.offset, length)
        return CheckpointChunkResponse(data=data, crc32=zlib.crc32(data))

    def _in_thread(self, function: Callable[..., _T], *args: object) -> asyncio.Future[_T]:
        return asyncio.get_running_loop().run_in_executor(self._executor, function, *args)


def _list_files(directory: Path) -> list[CheckpointFile]:
    files = []
    for name in sorted(os.listdir(directory)):
        path = directory / name
        if not path.is_file():
            raise StorageError(f"checkpoint {directory} holds a non-file {name}")
        crc = 0
        size = 0
        with open(path, "rb") as handle:
            while chunk := handle.read(_CRC_READ_BYTES):
                crc = zlib.crc32(chunk, crc)
                size += len(chunk)
        files.append(CheckpointFile(name=name, size_bytes=size, crc32=crc))
    if len(files) > MAX_CHECKPOINT_FILES:
        raise StorageError(f"checkpoint {directory} has {len(files)} files, more than {MAX_CHECKPOINT_FILES}")
    return files


def _read_chunk(path: Path, offset: int, length: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(length)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc


# --- the learner side -------------------------------------------------------------------------------


async def fetch_checkpoint(
    pool: ConnectionPool,
    source: NodeAddress,
    gpid: Gpid,
    ref: str,
    destination: Path,
    *,
    chunk_bytes: int,
    timeout_s: float,
    executor: Executor,
    on_bytes: Callable[[int], None] | None = None,
) -> int:
    """Copy checkpoint `ref` of `gpid` from `source` into `destination` (created; must not exist).

    Returns the checkpoint's decree. Raises StorageError when a checksum or size does not match,
    and the transport's errors when the source does not answer. `on_bytes` is told the size of
    each verified chunk as it is written (metrics).
    """
    loop = asyncio.get_running_loop()
    manifest = await pool.call(source, CheckpointManifestRequest(gpid, ref), gpid=gpid, timeout_s=timeout_s)
    if not isinstance(manifest, CheckpointManifestResponse):
        raise StorageError(f"{source} answered {type(manifest).__name__} to a checkpoint manifest request")
    names = [entry.name for entry in manifest.files]
    if len(set(names)) != len(names) or not all(_is_plain_file_name(name) for name in names):
        raise StorageError(f"checkpoint {ref} from {source} names unsafe or duplicate files")
    await loop.run_in_executor(executor, _make_fresh_dir, destination)
    for entry in manifest.files:
        path = destination / entry.name
        await _fetch_file(pool, source, gpid, ref, entry, path, chunk_bytes, timeout_s, executor, on_bytes)
    await loop.run_in_executor(executor, _fsync_dir, destination)
    return manifest.checkpoint_decree


async def _fetch_file(
    pool: ConnectionPool,
    source: NodeAddress,
    gpid: Gpid,
    ref: str,
    entry: CheckpointFile,
    path: Path,
    chunk_bytes: int,
    timeout_s: float,
    executor: Executor,
    on_bytes: Callable[[int], None] | None,
) -> None:
    loop = asyncio.get_running_loop()
    handle = await loop.run_in_executor(executor, _open_for_write, path)
    try:
        offset = 0
        crc = 0
        while offset < entry.size_bytes:
            request = CheckpointChunkRequest(gpid, ref, entry.name, offset, chunk_bytes)
            reply = await pool.call(source, request, gpid=gpid, timeout_s=timeout_s)
            if not isinstance(reply, CheckpointChunkResponse):
                raise StorageError(f"{source} answered {type(reply).__name__} to a chunk request")
            data = reply.data
            if not data or offset + len(data) > entry.size_bytes:
                raise StorageError(f"{entry.name}: a chunk of {len(data)} B at offset {offset} does not fit")
            if zlib.crc32(data) != reply.crc32:
                raise StorageError(f"{entry.name}: the chunk at offset {offset} fails its checksum")
            await loop.run_in_executor(executor, handle.write, data)
            crc = zlib.crc32(data, crc)
            offset += len(data)
            if on_bytes is not None:
                on_bytes(len(data))
        if crc != entry.crc32:
            raise StorageError(f"{entry.name}: the file fails its checksum ({crc:#x} != {entry.crc32:#x})")
        await loop.run_in_executor(executor, _flush_and_sync, handle)
    finally:
        await loop.run_in_executor(executor, handle.close)


def _make_fresh_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def _open_for_write(path: Path) -> BinaryIO:
    return open(path, "wb")


def _flush_and_sync(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
