"""Stories of how the replica runtime applies committed mutations (replica_runtime.py, point 3).

Applies run on the event loop as soon as nothing is ahead of them, and the waiting clients are
answered in the same pass; a write RocksDB would stall goes to a worker thread instead, and every
apply after it waits its turn, so the store still sees decrees in order.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pegasus_kv.core.errors import ErrorCode, ShuttingDownError
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import GetRequest, GetResponse, SetRequest, WriteResponse
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.pacifica.ready import Apply, ClientToken, Outbound
from pegasus_kv.replication.replica.layout import AppliedDecreeFile, ReplicaPaths, read_applied_decree
from pegasus_kv.replication.replica.mutation_log import MutationLog, MutationLogOptions
from pegasus_kv.replication.replica.replica_runtime import ReplicaRuntime, RuntimeSettings
from pegasus_kv.storage import PartitionStore, StoreOptions, WriteStall
from tests.unit.replica_cluster_support import eventually, run

GPID = Gpid(1, 0)


class AnsweringHost:
    """Records the answers the runtime gives to waiting clients."""

    def __init__(self) -> None:
        self.answers: list[tuple[ClientToken, Message]] = []
        self.failures: list[str] = []

    def on_log_durable(self, runtime: ReplicaRuntime, ballot: int, decree: int) -> None:
        pass

    def send_to_peer(self, outbound: Outbound) -> None:
        raise AssertionError("nothing is sent in this story")

    def answer_writes(self, tokens: Sequence[ClientToken], replies: Sequence[Message]) -> None:
        for token, reply in zip(tokens, replies, strict=True):
            self.answers.append((token, reply))

    def refuse_write(self, token: ClientToken, code: ErrorCode, reason: str) -> None:
        raise AssertionError(f"write {token} refused: {code.name} {reason}")

    def on_local_failure(self, runtime: ReplicaRuntime, reason: str) -> None:
        self.failures.append(reason)


def settings() -> RuntimeSettings:
    return RuntimeSettings(
        log_options=MutationLogOptions(),
        store_options=StoreOptions(),
        prepare_list_capacity=16,
    )


def committed(decree: int) -> Apply:
    mutation = Mutation(
        ballot=1,
        decree=decree,
        timestamp_us=1_700_000_000_000_000 + decree,
        writes=[SetRequest(b"hk", b"sk%03d" % decree, b"value %d" % decree)],
    )
    return Apply(mutation, (100 + decree,))


async def open_runtime(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> tuple[ReplicaPaths, AnsweringHost, ReplicaRuntime]:
    """A fresh replica runtime in tmp_path, open, with a host that records the answers."""
    paths = ReplicaPaths(tmp_path, GPID)
    host = AnsweringHost()
    runtime = ReplicaRuntime(GPID, paths, settings(), host, executor=executor, log_executor=executor)
    await runtime.open(fresh=True)
    return paths, host, runtime


def test_a_committed_mutation_is_applied_and_answered_before_apply_returns(tmp_path: Path) -> None:
    async def story() -> None:
        executor = ThreadPoolExecutor(2)
        host = AnsweringHost()
        runtime = ReplicaRuntime(
            GPID, ReplicaPaths(tmp_path, GPID), settings(), host, executor=executor, log_executor=executor
        )
        await runtime.open(fresh=True)
        runtime.apply([committed(1), committed(2)])
        # No thread hop and no pass of the event loop between the commit and the answers.
        assert [token for token, _ in host.answers] == [101, 102]
        assert all(isinstance(reply, WriteResponse) for _, reply in host.answers)
        assert runtime.applied_decree == 2
        await runtime.close(drain_s=1.0)
        executor.shutdown()

    run(story)


def test_a_write_rocksdb_would_stall_goes_to_a_worker_thread_and_later_ones_wait_for_it(
    tmp_path: Path,
) -> None:
    real_apply = PartitionStore.apply
    calls: list[tuple[int, bool]] = []

    def stalling_once(store: PartitionStore, mutation: Mutation, *, no_stall: bool = False) -> list[Message]:
        calls.append((mutation.decree, no_stall))
        if no_stall and mutation.decree == 2:
            raise WriteStall("Result incomplete: Write stall")
        return real_apply(store, mutation, no_stall=no_stall)

    async def story() -> None:
        executor = ThreadPoolExecutor(2)
        host = AnsweringHost()
        runtime = ReplicaRuntime(
            GPID, ReplicaPaths(tmp_path, GPID), settings(), host, executor=executor, log_executor=executor
        )
        await runtime.open(fresh=True)
        runtime.apply([committed(1), committed(2), committed(3)])
        assert [token for token, _ in host.answers] == [101]  # the stalled one and the rest wait
        runtime.apply([committed(4)])

        async def all_applied() -> bool:
            return runtime.applied_decree == 4

        await eventually(all_applied)
        assert [token for token, _ in host.answers] == [101, 102, 103, 104]
        # Decree 2 was refused on the loop and applied, with 3, where waiting is allowed; the
        # runtime went back to the loop for 4.
        assert calls == [(1, True), (2, True), (2, False), (3, False), (4, True)]
        assert host.failures == []
        await runtime.close(drain_s=1.0)
        executor.shutdown()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PartitionStore, "apply", stalling_once)
        run(story)


def test_each_logged_record_vouches_for_the_decrees_handed_to_apply_before_it(tmp_path: Path) -> None:
    async def story() -> None:
        executor = ThreadPoolExecutor(2)
        paths, host, runtime = await open_runtime(tmp_path, executor)
        # As a replica runs: each mutation is logged when prepared, applied once committed.
        for decree in (1, 2, 3):
            runtime.persist([committed(decree).mutation])
            runtime.apply([committed(decree)])
        runtime.persist([committed(4).mutation])  # prepared, not committed

        async def all_durable() -> bool:
            return runtime.durable_pending == 0

        await eventually(all_durable)
        assert read_applied_decree(paths) == 0  # no file write while the replica runs
        await runtime.close(drain_s=1.0)
        assert read_applied_decree(paths) == 3  # close records where the store stands
        assert host.failures == []
        # The records of decrees 2, 3 and 4 were logged after 1, 2 and 3 were handed to apply.
        async with await MutationLog.open(paths.log_dir, MutationLogOptions()) as log:
            assert log.replayed_commit_point == 3
        executor.shutdown()

    run(story)


def test_applies_go_on_while_the_store_flushes_and_later_store_jobs_and_close_wait_for_it(
    tmp_path: Path,
) -> None:
    release = threading.Event()
    started = threading.Event()
    real_flush = PartitionStore.flush

    def slow_flush(store: PartitionStore) -> int:
        started.set()
        release.wait(10.0)  # a memtable flush takes its time
        return real_flush(store)

    async def story() -> None:
        executor = ThreadPoolExecutor(2)
        paths, host, runtime = await open_runtime(tmp_path, executor)
        loop = asyncio.get_running_loop()
        runtime.apply([committed(1), committed(2)])
        flushing = asyncio.ensure_future(runtime.flush_and_collect(keep_from_decree=1))
        await loop.run_in_executor(None, started.wait, 10.0)
        # The flush is in its thread: applies are answered at once all the same.
        runtime.apply([committed(3), committed(4)])
        assert runtime.applied_through(4)
        assert [token for token, _ in host.answers] == [101, 102, 103, 104]
        # A job that needs the store to itself waits for the flush.
        later_job = asyncio.ensure_future(runtime.call_store(lambda store: store.last_applied_decree))
        await asyncio.sleep(0.05)
        assert not later_job.done() and not flushing.done()
        release.set()
        await flushing
        assert await later_job == 4
        assert read_applied_decree(paths) == 4  # the flush recorded where the store stood

        # Close waits for a flush in progress rather than closing the store under it.
        release.clear()
        started.clear()
        runtime.apply([committed(5)])
        flushing = asyncio.ensure_future(runtime.flush_and_collect(keep_from_decree=1))
        await loop.run_in_executor(None, started.wait, 10.0)
        closing = asyncio.ensure_future(runtime.close(drain_s=1.0))
        await asyncio.sleep(0.05)
        assert not closing.done()
        release.set()
        await closing
        with pytest.raises(ShuttingDownError):  # flushed, but the log is closed: nothing collected
            await flushing
        assert read_applied_decree(paths) == 5
        assert host.failures == []
        executor.shutdown()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PartitionStore, "flush", slow_flush)
        run(story)


def test_the_applied_decree_file_only_moves_forward_unless_reset(tmp_path: Path) -> None:
    paths = ReplicaPaths(tmp_path, GPID)
    paths.root.mkdir(parents=True)
    applied_file = AppliedDecreeFile(paths)
    applied_file.record(7)
    applied_file.record(5)  # a slower record of an older decree
    assert read_applied_decree(paths) == 7
    applied_file.reset(3)  # a checkpoint install replaced the store
    assert read_applied_decree(paths) == 3
    applied_file.record(4)
    assert read_applied_decree(paths) == 4


def test_a_point_read_is_served_at_once_only_when_every_apply_handed_out_reached_the_store(
    tmp_path: Path,
) -> None:
    async def story() -> None:
        executor = ThreadPoolExecutor(2)
        host = AnsweringHost()
        runtime = ReplicaRuntime(
            GPID, ReplicaPaths(tmp_path, GPID), settings(), host, executor=executor, log_executor=executor
        )
        read = GetRequest(b"hk", b"sk001")
        assert runtime.read_if_ready(read) is None  # its files are not open yet: the read waits
        await runtime.open(fresh=True)
        runtime.apply([committed(1)])
        assert runtime.read_if_ready(read) == GetResponse(b"value 1")
        # A store job in a worker thread holds the apply of decree 2 back: a read admitted now
        # must not miss it, so it waits (wait_applied) instead of reading the store as it stands.
        release = threading.Event()
        job = asyncio.ensure_future(runtime.call_store(lambda store: release.wait(10.0)))
        await asyncio.sleep(0)  # the job is queued and goes to its thread
        runtime.apply([committed(2)])
        assert runtime.apply_handed_decree == 2
        assert runtime.read_if_ready(GetRequest(b"hk", b"sk002")) is None
        release.set()
        await job
        await runtime.wait_applied(2)
        assert runtime.read_if_ready(GetRequest(b"hk", b"sk002")) == GetResponse(b"value 2")
        await runtime.close(drain_s=1.0)
        with pytest.raises(ShuttingDownError):
            runtime.read_if_ready(read)
        executor.shutdown()

    run(story)
