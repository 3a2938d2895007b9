"""The shared log: one synced write per group-commit round for every replica's log, and nothing
acknowledged lost when a power failure takes the private logs' unsynced tails."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from pathlib import Path
from typing import TypeVar

import pytest

from pegasus_kv.core.errors import StorageError
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.replication.replica import log_store
from pegasus_kv.replication.replica.log_record import encode_record
from pegasus_kv.replication.replica.log_segment import segment_file_name
from pegasus_kv.replication.replica.log_store import RepairRecord, SegmentedLog
from pegasus_kv.replication.replica.log_writer import LogWriter
from pegasus_kv.replication.replica.mutation_log import (
    FsyncPolicy,
    MutationLog,
    MutationLogOptions,
    encode_for_log,
)
from pegasus_kv.replication.replica.shared_log import SharedLog, SharedRecord
from tests.unit.test_mutation_log import mutation, run

T = TypeVar("T")

GROUP = MutationLogOptions(fsync_policy=FsyncPolicy.GROUP)


def shared_records(log_id: int, decrees: range, segment_seq: int = 1) -> list[SharedRecord]:
    records = []
    offset = 0
    for decree in decrees:
        payload = encode_record(mutation(decree))
        records.append(SharedRecord(log_id, segment_seq, offset, payload))
        offset += len(payload)
    return records


def never_collects(segments: list[int]) -> None:
    raise AssertionError(f"no rotation expected here, yet {segments} were handed to collection")


def shared_segments(directory: Path) -> list[str]:
    return sorted(entry.name for entry in directory.iterdir() if entry.name.startswith("slog."))


def private_segments(directory: Path) -> list[Path]:
    return sorted(entry for entry in directory.iterdir() if entry.name.startswith("mlog."))


async def submit_and_wait(log: MutationLog, mutations: list[Mutation]) -> None:
    """Submit a group and wait until the log reports it durable."""
    durable: asyncio.Future[StorageError | None] = asyncio.get_running_loop().create_future()
    log.submit([encode_for_log(m) for m in mutations], durable.set_result)
    assert await durable is None


# --- (a) the shared log's own file -----------------------------------------------------------------


def test_records_come_back_per_private_log_in_append_order_after_a_reopen(tmp_path: Path) -> None:
    shared = SharedLog.open(tmp_path)
    log_a = shared_records(11, range(1, 4))
    log_b = shared_records(22, range(1, 3), segment_seq=7)
    shared.append([log_a[0], log_b[0]], never_collects)
    shared.append([*log_a[1:], log_b[1]], never_collects)
    assert shared.appends == 2  # one synced write per round
    shared.close()

    reopened = SharedLog.open(tmp_path)
    assert reopened.recovered(11) == [RepairRecord(r.segment_seq, r.offset, r.payload) for r in log_a]
    assert reopened.recovered(22) == [RepairRecord(r.segment_seq, r.offset, r.payload) for r in log_b]
    assert reopened.recovered(33) == []
    # New appends go to a fresh segment; dropping the recovered ones leaves only it.
    reopened.append(shared_records(11, range(4, 5)), never_collects)
    assert shared_segments(tmp_path) == ["slog.0000000001", "slog.0000000002"]
    reopened.drop_recovered()
    assert shared_segments(tmp_path) == ["slog.0000000002"]
    assert reopened.recovered(11) == []
    reopened.close()


def test_a_torn_last_append_is_truncated_and_the_rounds_before_it_kept(tmp_path: Path) -> None:
    shared = SharedLog.open(tmp_path)
    shared.append(shared_records(11, range(1, 3)), never_collects)
    shared.append(shared_records(11, range(3, 4)), never_collects)
    shared.close()
    segment = tmp_path / "slog.0000000001"
    size = segment.stat().st_size
    os.truncate(segment, size - 5)  # the crash cut the last write short: it was never acknowledged

    reopened = SharedLog.open(tmp_path)
    assert [record.offset for record in reopened.recovered(11)] == [
        record.offset for record in shared_records(11, range(1, 3))
    ]
    assert reopened.torn_tail_bytes_truncated > 0
    assert segment.stat().st_size < size - 5
    reopened.close()


def test_a_damaged_record_followed_by_valid_ones_is_refused(tmp_path: Path) -> None:
    shared = SharedLog.open(tmp_path)
    shared.append(shared_records(11, range(1, 2)), never_collects)
    shared.append(shared_records(11, range(2, 4)), never_collects)
    shared.close()
    segment = tmp_path / "slog.0000000001"
    data = bytearray(segment.read_bytes())
    data[40] ^= 0xFF  # inside the first record's payload: acknowledged data rotted
    segment.write_bytes(bytes(data))

    with pytest.raises(StorageError, match="followed by valid records"):
        SharedLog.open(tmp_path)


# --- (b) collection ---------------------------------------------------------------------------------


def test_a_rotation_syncs_every_private_log_that_wrote_before_deleting_the_older_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Log b writes once and then stays quiet; log a fills the shared segment. Before the segment
    holding b's record goes, b's private log must be synced: else a power loss would take it."""
    synced: list[tuple[Path, list[str]]] = []  # (private log, shared segments on disk at that time)
    real_sync_written = SegmentedLog.sync_written

    def observed_sync_written(store: SegmentedLog) -> None:
        synced.append((store.directory, shared_segments(tmp_path / "slog")))
        real_sync_written(store)

    monkeypatch.setattr(SegmentedLog, "sync_written", observed_sync_written)

    async def story() -> None:
        shared = SharedLog.open(tmp_path / "slog", segment_bytes=4096)
        writer = LogWriter("test-log-writer", shared_log=shared)
        log_a = await MutationLog.open(tmp_path / "a", GROUP, writer=writer)
        log_b = await MutationLog.open(tmp_path / "b", GROUP, writer=writer)
        await submit_and_wait(log_b, [mutation(1)])
        decree = 1
        while shared.collections == 0:
            await submit_and_wait(log_a, [mutation(decree, value=b"x" * 500)])
            decree += 1
        # The collector works on its own thread: the writer went on at once.
        for _ in range(500):
            if shared_segments(tmp_path / "slog") == ["slog.0000000002"]:
                break
            await asyncio.sleep(0.01)
        assert shared_segments(tmp_path / "slog") == ["slog.0000000002"]
        assert sorted(directory.name for directory, _ in synced) == ["a", "b"]
        assert all("slog.0000000001" in segments for _, segments in synced)  # synced before it went
        for log in (log_a, log_b):
            await log.close()
        await writer.close()
        shared.close()

    run(story)


def test_writes_go_on_while_the_collector_syncs_and_a_failed_collection_fails_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotation hands the private syncs to the collector's thread: the writer's rounds go on
    while those syncs take their time. If a sync fails, the older segment is kept and the shared
    log fails: the next round fails every log that writes through it."""
    release = threading.Event()
    sync_started = threading.Event()

    def slow_then_failing_sync(store: SegmentedLog) -> None:
        sync_started.set()
        assert release.wait(10.0)
        raise StorageError(f"mutation log {store.directory}: fsync failed: injected")

    monkeypatch.setattr(SegmentedLog, "sync_written", slow_then_failing_sync)

    async def story() -> None:
        shared = SharedLog.open(tmp_path / "slog", segment_bytes=4096)
        writer = LogWriter("test-log-writer", shared_log=shared)
        log = await MutationLog.open(tmp_path / "a", GROUP, writer=writer)
        decree = 1
        while shared.collections == 0:
            await submit_and_wait(log, [mutation(decree, value=b"x" * 500)])
            decree += 1
        await asyncio.get_running_loop().run_in_executor(None, sync_started.wait, 5.0)
        # The collector is stuck in its sync; rounds still complete.
        for _ in range(3):
            await submit_and_wait(log, [mutation(decree)])
            decree += 1
        assert shared_segments(tmp_path / "slog") == ["slog.0000000001", "slog.0000000002"]
        release.set()
        failed: asyncio.Future[StorageError | None] = asyncio.get_running_loop().create_future()
        for _ in range(500):
            log.submit([encode_for_log(mutation(decree))], failed.set_result)
            error = await failed
            if error is not None:
                break
            failed = asyncio.get_running_loop().create_future()
            decree += 1
            await asyncio.sleep(0.01)
        assert isinstance(error, StorageError) and "collection failed" in error.message
        assert "slog.0000000001" in shared_segments(tmp_path / "slog")  # nothing was deleted
        await log.close()
        await writer.close()
        shared.close()

    run(story)


# --- (c) power loss ---------------------------------------------------------------------------------


def test_after_a_power_loss_every_acknowledged_mutation_comes_back_from_the_shared_log(
    tmp_path: Path,
) -> None:
    """Two replicas' logs write through one writer and its shared log. The power fails: the private
    logs lose everything they never synced (one keeps its file size but not its bytes, the other
    loses the segment it was writing). Reopening the shared log and the logs with its records
    replays every mutation that was acknowledged."""
    live = tmp_path / "live"
    image = tmp_path / "image"
    small_segments = MutationLogOptions(fsync_policy=FsyncPolicy.GROUP, segment_bytes=1024)

    async def story() -> None:
        shared = SharedLog.open(live / "slog")
        writer = LogWriter("test-log-writer", shared_log=shared)
        log_a = await MutationLog.open(live / "a", GROUP, writer=writer)
        log_b = await MutationLog.open(live / "b", small_segments, writer=writer)
        for first in range(1, 31, 3):
            await asyncio.gather(
                submit_and_wait(log_a, [mutation(d) for d in range(first, first + 3)]),
                submit_and_wait(log_b, [mutation(d, value=b"y" * 100) for d in range(first, first + 3)]),
            )
        assert log_a.last_decree == log_b.last_decree == 30
        assert len(private_segments(live / "b")) > 2  # b rotated: its older segments were synced then
        # Every acknowledged mutation is durable; take the disk as a power loss leaves it.
        await asyncio.get_running_loop().run_in_executor(None, shutil.copytree, live, image)
        for log in (log_a, log_b):
            await log.close()
        await writer.close()
        shared.close()

    run(story)

    # a never synced its segment: its size survived, its bytes did not.
    (segment_a,) = private_segments(image / "a")
    segment_a.write_bytes(bytes(segment_a.stat().st_size))
    # b's newest segment was created after its last sync: gone, and the one before lost its tail
    # beyond what the rotation synced (nothing: rotation synced all of it), so it stays.
    newest_b = private_segments(image / "b")[-1]
    newest_b.unlink()

    async def recovery() -> None:
        shared = SharedLog.open(image / "slog")
        writer = LogWriter("test-log-writer", shared_log=shared)
        logs = [
            await MutationLog.open(image / name, options, writer=writer, shared_records=shared.recovered)
            for name, options in (("a", GROUP), ("b", small_segments))
        ]
        for log in logs:
            assert [m.decree async for m in log.replay()] == list(range(1, 31))
        shared.drop_recovered()
        # The repaired logs take new writes after what they replayed.
        await submit_and_wait(logs[0], [mutation(31)])
        assert logs[0].last_decree == 31
        for log in logs:
            await log.close()
        await writer.close()
        shared.close()

    run(recovery)


def test_unacknowledged_bytes_after_the_last_shared_record_are_cut_even_when_mangled(tmp_path: Path) -> None:
    """After a power loss the private log may hold, beyond what the shared log kept, records written
    back out of order: damage, then a valid record, then a whole later segment. None of it was
    acknowledged; the repair cuts it, so the replica opens instead of refusing the log as corrupt."""
    (tmp_path / "log").mkdir()
    store = SegmentedLog.open(tmp_path / "log", 1 << 20, FsyncPolicy.GROUP)
    log_id = store.log_id
    store.close()
    acknowledged = shared_records(log_id, range(1, 4), segment_seq=1)
    unacknowledged = encode_record(mutation(5))
    segment = tmp_path / "log" / segment_file_name(1, 1)
    segment.write_bytes(b"".join(record.payload for record in acknowledged) + b"\xff" * 40 + unacknowledged)
    later_segment = tmp_path / "log" / segment_file_name(2, 6)
    later_segment.write_bytes(encode_record(mutation(6)))

    def recovered(wanted: int) -> list[RepairRecord]:
        assert wanted == log_id
        return [RepairRecord(r.segment_seq, r.offset, r.payload) for r in acknowledged]

    store = SegmentedLog.open(tmp_path / "log", 1 << 20, FsyncPolicy.GROUP, shared_records=recovered)
    assert [m.decree for m in store.read(1, 10, 1 << 20)] == [1, 2, 3]
    assert not later_segment.exists()
    store.close()


def test_a_missing_segment_whose_start_the_shared_log_lacks_is_refused(tmp_path: Path) -> None:
    """Repairing a segment that is gone needs its first record: without it, a hole would be replayed."""
    (tmp_path / "log").mkdir()
    store = SegmentedLog.open(tmp_path / "log", 1 << 20, FsyncPolicy.GROUP)
    log_id = store.log_id
    store.close()
    later_record = shared_records(log_id, range(1, 3), segment_seq=1)[1]

    def recovered(wanted: int) -> list[RepairRecord]:
        assert wanted == log_id
        return [RepairRecord(later_record.segment_seq, later_record.offset, later_record.payload)]

    with pytest.raises(StorageError, match="hole"):
        SegmentedLog.open(tmp_path / "log", 1 << 20, FsyncPolicy.GROUP, shared_records=recovered)


# --- (d) one flush per round ------------------------------------------------------------------------


def test_a_round_of_many_logs_costs_one_synced_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    syncs: list[str] = []
    counting = threading.Event()
    real_synced_write = log_store.write_synced
    real_sync = log_store.sync_data

    def counted_synced_write(fd: int, data: bytes) -> None:
        if counting.is_set():
            syncs.append("synced write")
        real_synced_write(fd, data)

    def counted_sync(fd: int) -> None:
        if counting.is_set():
            syncs.append("fdatasync")
        real_sync(fd)

    monkeypatch.setattr(log_store, "write_synced", counted_synced_write)
    monkeypatch.setattr(log_store, "sync_data", counted_sync)

    async def story() -> None:
        shared = SharedLog.open(tmp_path / "slog")
        writer = LogWriter("test-log-writer", shared_log=shared)
        logs = [await MutationLog.open(tmp_path / f"log{n}", GROUP, writer=writer) for n in range(8)]
        for log in logs:  # every log and the shared log have their segment files by now
            await submit_and_wait(log, [mutation(1)])
        # Hold the writer thread so that the next batch of every log lands in one round.
        loop = asyncio.get_running_loop()
        release = threading.Event()
        held: asyncio.Future[BaseException | None] = loop.create_future()

        def hold() -> None:
            release.wait()

        writer.submit(hold, held.set_result)
        durable: list[asyncio.Future[StorageError | None]] = []
        for log in logs:
            durable.append(loop.create_future())
            log.submit([encode_for_log(mutation(2)), encode_for_log(mutation(3))], durable[-1].set_result)
        counting.set()
        release.set()
        assert await held is None
        assert await asyncio.gather(*durable) == [None] * len(logs)
        counting.clear()
        assert syncs == ["synced write"]  # not one per log
        assert all(log.last_decree == 3 for log in logs)
        for log in logs:
            await log.close()
        await writer.close()
        shared.close()

    run(story)
