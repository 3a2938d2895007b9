"""The mutation log keeps what it acknowledged, drops only a torn tail, and follows PacificA rewrites."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import msgspec
import pytest

from pegasus_kv.core.errors import InvalidStateError, StaleBallotError, StorageError
from pegasus_kv.core.messages import SetRequest
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.replication.replica import log_record, log_store
from pegasus_kv.replication.replica.log_record import encode_record
from pegasus_kv.replication.replica.log_writer import LogWriter
from pegasus_kv.replication.replica.mutation_log import (
    FsyncPolicy,
    MutationLog,
    MutationLogOptions,
    encode_for_log,
)

T = TypeVar("T")

FAST = MutationLogOptions(fsync_policy=FsyncPolicy.NONE)


def run(test: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await test()

    return asyncio.run(main())


def mutation(decree: int, ballot: int = 1, value: bytes = b"v") -> Mutation:
    return Mutation(
        ballot=ballot,
        decree=decree,
        timestamp_us=1_700_000_000_000_000 + decree,
        writes=[SetRequest(b"hk", b"sk%d" % decree, value)],
    )


async def log_all(directory: Path, mutations: list[Mutation], options: MutationLogOptions = FAST) -> None:
    async with await MutationLog.open(directory, options) as log:
        for item in mutations:
            await log.append(item)


async def replayed(directory: Path, options: MutationLogOptions = FAST) -> list[Mutation]:
    async with await MutationLog.open(directory, options) as log:
        return [item async for item in log.replay()]


def only_segment(directory: Path) -> Path:
    segments = sorted(directory.glob("mlog.*"))
    assert len(segments) == 1
    return segments[0]


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


# --- what was acknowledged comes back ---------------------------------------------------------------


def test_appended_mutations_come_back_in_decree_order_after_reopen(tmp_path: Path) -> None:
    mutations = [mutation(decree) for decree in range(1, 21)]
    run(lambda: log_all(tmp_path, mutations, MutationLogOptions()))

    async def reopen() -> None:
        async with await MutationLog.open(tmp_path) as log:
            assert (log.first_decree, log.last_decree) == (1, 20)
            assert [item async for item in log.replay()] == mutations
            assert [item async for item in log.replay(15)] == mutations[14:]
            assert log.size_bytes == sum(len(encode_record(item)) for item in mutations)

    run(reopen)


def test_the_commit_point_the_records_vouch_for_is_found_at_open(tmp_path: Path) -> None:
    async def story() -> None:
        async with await MutationLog.open(tmp_path, FAST) as log:
            assert log.replayed_commit_point == 0
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            items = [encode_for_log(mutation(decree), committed=decree - 1) for decree in (1, 2, 3)]
            log.submit(items, lambda error: done.set_result(error))
            assert await done is None
        async with await MutationLog.open(tmp_path, FAST) as log:
            assert log.replayed_commit_point == 2
            assert [item async for item in log.replay()] == [mutation(1), mutation(2), mutation(3)]

    run(story)


def first_layout_record(item: Mutation) -> bytes:
    """A record as pegasus-kv wrote it before records carried a commit point (log_record.py)."""
    return log_record.RECORD_V1.encode(msgspec.msgpack.encode(item), item.ballot, item.decree)


def test_records_of_the_first_layout_are_still_read_and_vouch_for_nothing(tmp_path: Path) -> None:
    # A log an older version wrote, then appended to by this one: one segment, both layouts.
    run(lambda: log_all(tmp_path, [mutation(1)]))
    segment = only_segment(tmp_path)
    segment.write_bytes(first_layout_record(mutation(1)) + first_layout_record(mutation(2)))

    async def story() -> None:
        async with await MutationLog.open(tmp_path, FAST) as log:
            assert log.replayed_commit_point == 0
            await log.append(mutation(3))
        async with await MutationLog.open(tmp_path, FAST) as log:
            assert [item async for item in log.replay()] == [mutation(1), mutation(2), mutation(3)]
            assert [item.decree for item in await log.read(1, 3, 1 << 20)] == [1, 2, 3]

    run(story)


def test_a_damaged_first_layout_record_before_valid_ones_is_corruption(tmp_path: Path) -> None:
    run(lambda: log_all(tmp_path, [mutation(1)]))
    segment = only_segment(tmp_path)
    old = first_layout_record(mutation(1))
    segment.write_bytes(old + first_layout_record(mutation(2)))
    flip_byte(segment, len(old) // 2)  # record 1 damaged, record 2 (first layout) intact
    with pytest.raises(StorageError, match="followed by valid records"):
        run(lambda: replayed(tmp_path))


def test_an_empty_directory_is_an_empty_log(tmp_path: Path) -> None:
    async def story() -> None:
        async with await MutationLog.open(tmp_path / "new") as log:
            assert (log.first_decree, log.last_decree, log.size_bytes) == (0, 0, 0)
            assert await log.read(1, 100, 1 << 20) == []

    run(story)


def test_a_second_opener_of_the_same_directory_is_refused(tmp_path: Path) -> None:
    async def story() -> None:
        async with await MutationLog.open(tmp_path):
            with pytest.raises(StorageError, match="in use"):
                await MutationLog.open(tmp_path)

    run(story)


def test_append_after_close_is_refused(tmp_path: Path) -> None:
    async def story() -> None:
        log = await MutationLog.open(tmp_path)
        await log.close()
        with pytest.raises(InvalidStateError):
            await log.append(mutation(1))

    run(story)


# --- crashes: torn tails and real corruption -----------------------------------------------------------


def test_a_tail_torn_at_any_byte_is_truncated_and_the_log_stays_appendable(tmp_path: Path) -> None:
    original = tmp_path / "original"
    run(lambda: log_all(original, [mutation(1), mutation(2), mutation(3)]))
    segment_name = only_segment(original).name
    full_size = (original / segment_name).stat().st_size
    last_record_start = full_size - len(encode_record(mutation(3)))

    for cut in range(last_record_start, full_size):
        crashed = tmp_path / f"cut-{cut}"
        shutil.copytree(original, crashed)
        os.truncate(crashed / segment_name, cut)

        async def recover(crashed: Path = crashed, cut: int = cut) -> None:
            async with await MutationLog.open(crashed, FAST) as log:
                assert [item async for item in log.replay()] == [mutation(1), mutation(2)], cut
                assert log.counters.torn_tail_bytes_truncated == cut - last_record_start
                await log.append(mutation(3, value=b"rewritten after the crash"))

        run(recover)
        assert run(functools.partial(replayed, crashed)) == [
            mutation(1),
            mutation(2),
            mutation(3, value=b"rewritten after the crash"),
        ]
        shutil.rmtree(crashed)


def test_a_flipped_byte_in_the_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    original = tmp_path / "original"
    run(lambda: log_all(original, [mutation(1), mutation(2), mutation(3)]))
    segment_name = only_segment(original).name
    full_size = (original / segment_name).stat().st_size
    last_record_start = full_size - len(encode_record(mutation(3)))

    for offset in range(last_record_start, full_size):
        damaged = tmp_path / f"flip-{offset}"
        shutil.copytree(original, damaged)
        flip_byte(damaged / segment_name, offset)
        assert run(functools.partial(replayed, damaged)) == [mutation(1), mutation(2)], offset
        shutil.rmtree(damaged)


def test_a_flipped_byte_before_valid_records_is_corruption_not_a_torn_tail(tmp_path: Path) -> None:
    run(lambda: log_all(tmp_path, [mutation(1), mutation(2), mutation(3)]))
    segment = only_segment(tmp_path)
    record_size = len(encode_record(mutation(2)))
    flip_byte(segment, record_size + record_size // 2)  # inside record 2, record 3 is intact

    with pytest.raises(StorageError, match="followed by valid records"):
        run(lambda: replayed(tmp_path))
    assert segment.stat().st_size == 3 * record_size  # nothing was truncated


def test_corruption_in_an_older_segment_is_reported(tmp_path: Path) -> None:
    small_segments = MutationLogOptions(fsync_policy=FsyncPolicy.NONE, segment_bytes=1)  # one record each
    run(lambda: log_all(tmp_path, [mutation(decree) for decree in range(1, 4)], small_segments))
    first_segment = sorted(tmp_path.glob("mlog.*"))[0]
    flip_byte(first_segment, first_segment.stat().st_size - 1)

    with pytest.raises(StorageError, match="followed by valid records"):
        run(lambda: replayed(tmp_path, small_segments))


def test_a_segment_created_just_before_a_crash_is_removed(tmp_path: Path) -> None:
    run(lambda: log_all(tmp_path, [mutation(1), mutation(2)]))
    (tmp_path / "mlog.0000000002.3").touch()  # rotated, then crashed before writing a byte

    async def story() -> None:
        async with await MutationLog.open(tmp_path, FAST) as log:
            assert log.segment_count == 1
            await log.append(mutation(3))
        assert await replayed(tmp_path) == [mutation(1), mutation(2), mutation(3)]

    run(story)


# --- fsync policies ------------------------------------------------------------------------------------


def test_group_commit_acknowledges_concurrent_appends_with_fewer_fsyncs(tmp_path: Path) -> None:
    async def story() -> None:
        async with await MutationLog.open(
            tmp_path, MutationLogOptions(fsync_policy=FsyncPolicy.GROUP)
        ) as log:
            await asyncio.gather(*(log.append(mutation(decree)) for decree in range(1, 201)))
            counters = log.counters
            assert log.last_decree == 200
            assert counters.appended_records == 200
            assert 1 <= counters.fsyncs < 200
            assert counters.fsyncs == counters.batches  # one fsync per batch
            assert counters.fsync_ns_total > 0

    run(story)
    assert run(lambda: replayed(tmp_path)) == [mutation(decree) for decree in range(1, 201)]


def test_group_commit_batches_are_bounded(tmp_path: Path) -> None:
    options = MutationLogOptions(max_batch_records=7, max_pending_records=10)

    async def story() -> None:
        async with await MutationLog.open(tmp_path, options) as log:
            await asyncio.gather(*(log.append(mutation(decree)) for decree in range(1, 101)))
            assert log.counters.batches >= 100 // 7 + 1

    run(story)
    assert run(lambda: replayed(tmp_path)) == [mutation(decree) for decree in range(1, 101)]


def test_policy_always_fsyncs_every_append(tmp_path: Path) -> None:
    async def story() -> None:
        async with await MutationLog.open(
            tmp_path, MutationLogOptions(fsync_policy=FsyncPolicy.ALWAYS)
        ) as log:
            await asyncio.gather(*(log.append(mutation(decree)) for decree in range(1, 31)))
            assert log.counters.fsyncs == 30

    run(story)


def test_policy_none_never_fsyncs(tmp_path: Path) -> None:
    async def story() -> None:
        log = await MutationLog.open(tmp_path, MutationLogOptions(fsync_policy=FsyncPolicy.NONE))
        await asyncio.gather(*(log.append(mutation(decree)) for decree in range(1, 31)))
        await log.close()
        assert log.counters.fsyncs == 0
        assert log.counters.appended_records == 30

    run(story)
    assert len(run(lambda: replayed(tmp_path))) == 30


def broken_fsync(fd: int) -> None:
    raise OSError(5, "Input/output error")


def broken_synced_write(fd: int, data: bytes) -> None:
    """An O_DSYNC append whose sync fails: the write reports the I/O error."""
    raise OSError(5, "Input/output error")


def test_a_failed_fsync_fails_the_append_and_every_later_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    async def story() -> None:
        log = await MutationLog.open(tmp_path)
        await log.append(mutation(1))
        monkeypatch.setattr(log_store, "sync_data", broken_fsync)
        monkeypatch.setattr(log_store, "write_synced", broken_synced_write)
        with pytest.raises(StorageError, match="Input/output error"):
            await log.append(mutation(2))
        with pytest.raises(StorageError, match="failed"):
            await log.append(mutation(3))
        monkeypatch.undo()
        await log.close()

    run(story)


# --- submit: no waiting, a callback once durable ------------------------------------------------------


def test_submitted_groups_are_reported_durable_in_order_after_their_fsync(tmp_path: Path) -> None:
    """Two logs sharing one writer thread, as on a replica server: each group is reported once it
    and everything queued before it in its log went through an fsync, in submit order."""
    fsynced_files: list[int] = []
    real_sync = log_store.sync_data
    real_synced_write = log_store.write_synced

    def counting_fsync(fd: int) -> None:
        real_sync(fd)
        fsynced_files.append(fd)

    def counting_synced_write(fd: int, data: bytes) -> None:
        real_synced_write(fd, data)
        fsynced_files.append(fd)

    async def story() -> None:
        writer = LogWriter("test-log-writer")
        logs = [
            await MutationLog.open(tmp_path / name, MutationLogOptions(), writer=writer)
            for name in ("a", "b")
        ]
        reports: list[tuple[str, int, StorageError | None]] = []
        loop = asyncio.get_running_loop()
        all_reported = loop.create_future()

        def done(name: str, last: int, error: StorageError | None) -> None:
            # Durable means fsynced: the fsync of this group ran before the report.
            assert fsynced_files, "reported durable before any fsync"
            reports.append((name, last, error))
            if len(reports) == 6:
                all_reported.set_result(None)

        for first in (1, 3, 5):
            for name, log in zip("ab", logs, strict=True):
                items = [encode_for_log(mutation(first)), encode_for_log(mutation(first + 1))]
                assert log.has_room_for(len(items), sum(len(item.record) for item in items))
                log.submit(items, functools.partial(done, name, first + 1))
        await all_reported
        assert [(name, last) for name, last, _ in reports if name == "a"] == [("a", 2), ("a", 4), ("a", 6)]
        assert [(name, last) for name, last, _ in reports if name == "b"] == [("b", 2), ("b", 4), ("b", 6)]
        assert all(error is None for _, _, error in reports)
        assert [log.last_decree for log in logs] == [6, 6]
        for log in logs:
            await log.close()
        await writer.close()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(log_store, "sync_data", counting_fsync)
        patch.setattr(log_store, "write_synced", counting_synced_write)
        run(story)
    assert run(lambda: replayed(tmp_path / "a")) == [mutation(decree) for decree in range(1, 7)]


def test_a_failed_write_reports_every_submitted_group_failed(tmp_path: Path) -> None:
    async def story() -> None:
        writer = LogWriter("test-log-writer")
        log = await MutationLog.open(tmp_path, writer=writer)
        errors: list[StorageError | None] = []
        finished = asyncio.get_running_loop().create_future()

        def done(error: StorageError | None) -> None:
            errors.append(error)
            if len(errors) == 2:
                finished.set_result(None)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(log_store, "sync_data", broken_fsync)
            patch.setattr(log_store, "write_synced", broken_synced_write)
            log.submit([encode_for_log(mutation(1))], done)
            log.submit([encode_for_log(mutation(2))], done)
            await finished
        assert all(isinstance(error, StorageError) for error in errors)
        with pytest.raises(StorageError, match="failed"):
            log.submit([encode_for_log(mutation(3))], done)
        await log.close()
        await writer.close()

    run(story)


def test_a_submit_beyond_the_pending_bounds_is_a_bug(tmp_path: Path) -> None:
    async def story() -> None:
        log = await MutationLog.open(tmp_path, MutationLogOptions(max_pending_records=2))
        items = [encode_for_log(mutation(decree)) for decree in (1, 2, 3, 4)]
        log.submit(items[:1], lambda error: None)  # taken at once into the batch being written
        log.submit(items[1:3], lambda error: None)  # queued behind it: the bound is reached
        assert not log.has_room_for(1, len(items[3].record))
        with pytest.raises(AssertionError, match="beyond the pending bounds"):
            log.submit(items[3:], lambda error: None)
        await log.close()
        assert log.last_decree == 3

    run(story)


# --- the supersede rule (log_index.py) -------------------------------------------------------------------


def test_a_new_primary_rewriting_a_decree_discards_the_old_ballots_later_decrees(tmp_path: Path) -> None:
    # Ballot 1 prepared 1..5 here. The primary of ballot 2 never had decree 3 of ballot 1, so it
    # assigned 3 to a different mutation: 3..5 of ballot 1 were never committed.
    old = [mutation(decree, ballot=1) for decree in range(1, 6)]
    rewrite = mutation(3, ballot=2, value=b"new primary's decree 3")

    async def story() -> None:
        async with await MutationLog.open(tmp_path, FAST) as log:
            for item in [*old, rewrite]:
                await log.append(item)
            assert log.last_decree == 3
            assert log.counters.superseded_records == 2
            assert await log.read(1, 10, 1 << 20) == [old[0], old[1], rewrite]

    run(story)
    assert run(lambda: replayed(tmp_path)) == [old[0], old[1], rewrite]


def test_a_reprepare_of_the_same_mutation_keeps_the_later_decrees(tmp_path: Path) -> None:
    # Re-preparing decree 3 unchanged under ballot 2 says nothing against 4 and 5: they may have
    # been committed, and the new primary re-prepares them next.
    old = [mutation(decree, ballot=1) for decree in range(1, 6)]
    reprepared = mutation(3, ballot=2)
    run(lambda: log_all(tmp_path, [*old, reprepared]))

    assert run(lambda: replayed(tmp_path)) == [old[0], old[1], reprepared, old[3], old[4]]


def test_out_of_order_prepares_within_a_ballot_are_all_kept(tmp_path: Path) -> None:
    arrived = [mutation(1), mutation(2), mutation(4), mutation(3)]
    run(lambda: log_all(tmp_path, arrived))

    assert run(lambda: replayed(tmp_path)) == [mutation(1), mutation(2), mutation(3), mutation(4)]


def test_the_later_record_of_a_decree_wins(tmp_path: Path) -> None:
    run(lambda: log_all(tmp_path, [mutation(1), mutation(2), mutation(2, ballot=3, value=b"x")]))

    assert run(lambda: replayed(tmp_path)) == [mutation(1), mutation(2, ballot=3, value=b"x")]


def test_an_append_from_an_older_ballot_is_refused(tmp_path: Path) -> None:
    async def story() -> None:
        async with await MutationLog.open(tmp_path, FAST) as log:
            await log.append(mutation(1, ballot=4))
        async with await MutationLog.open(tmp_path, FAST) as log:  # the ballot survives a restart
            with pytest.raises(StaleBallotError):
                await log.append(mutation(2, ballot=3))
            await log.append(mutation(2, ballot=4))

    run(story)


def test_the_supersede_rule_holds_across_segments(tmp_path: Path) -> None:
    one_record_each = MutationLogOptions(fsync_policy=FsyncPolicy.NONE, segment_bytes=1)
    old = [mutation(decree, ballot=1) for decree in range(1, 6)]
    rewrite = mutation(2, ballot=2, value=b"different")
    run(lambda: log_all(tmp_path, [*old, rewrite], one_record_each))

    assert run(lambda: replayed(tmp_path, one_record_each)) == [old[0], rewrite]


# --- segments, garbage collection, bounded reads ---------------------------------------------------------


def test_segments_rotate_by_size_and_gc_deletes_only_whole_old_segments(tmp_path: Path) -> None:
    record_bytes = len(encode_record(mutation(1)))
    three_records_a_segment = 3 * record_bytes
    options = MutationLogOptions(fsync_policy=FsyncPolicy.GROUP, segment_bytes=three_records_a_segment)

    async def story() -> None:
        async with await MutationLog.open(tmp_path, options) as log:
            for decree in range(1, 11):
                await log.append(mutation(decree))
            assert log.segment_count == 4  # 1-3, 4-6, 7-9, 10
            assert sorted(path.name for path in tmp_path.glob("mlog.*")) == [
                "mlog.0000000001.1",
                "mlog.0000000002.4",
                "mlog.0000000003.7",
                "mlog.0000000004.10",
            ]
            assert await log.gc(below_decree=6) == 1  # 4-6 holds decree 6, which is still needed
            assert (log.first_decree, log.last_decree) == (4, 10)
            assert await log.read(1, 5, 1 << 20) == [mutation(4), mutation(5)]
            assert await log.gc(below_decree=1000) == 2  # never the active segment
            assert log.segment_count == 1
            assert log.size_bytes == len(encode_record(mutation(10)))

    run(story)
    assert run(lambda: replayed(tmp_path, options)) == [mutation(10)]


def test_reads_are_bounded_by_max_bytes_and_always_make_progress(tmp_path: Path) -> None:
    mutations = [mutation(decree, value=b"x" * (decree * 10)) for decree in range(1, 31)]
    run(lambda: log_all(tmp_path, mutations))

    async def story() -> None:
        async with await MutationLog.open(tmp_path, FAST) as log:
            budget = 700
            learned: list[Mutation] = []
            next_decree = 1
            while batch := await log.read(next_decree, 30, budget):
                assert len(batch) == 1 or sum(len(encode_record(item)) for item in batch) <= budget
                learned.extend(batch)
                next_decree = batch[-1].decree + 1
            assert learned == mutations
            assert await log.read(5, 7, 1) == [mutations[4]]  # one record even over the budget
            assert await log.read(29, 10_000, 1 << 20) == mutations[28:]

    run(story)


def test_a_writer_with_two_threads_logs_every_submit_in_order_and_closes(tmp_path: Path) -> None:
    # Each thread takes its share of the queued batches; every log still sees its own batches
    # durable in submit order, and close() runs what is queued before both threads stop.
    async def story() -> None:
        writer = LogWriter("test-log-writer", threads=2)
        names = ("a", "b", "c", "d")
        logs = {name: await MutationLog.open(tmp_path / name, FAST, writer=writer) for name in names}
        reported: dict[str, list[int]] = {name: [] for name in names}
        loop = asyncio.get_running_loop()
        all_reported = loop.create_future()

        def done(name: str, decree: int, error: StorageError | None) -> None:
            assert error is None
            reported[name].append(decree)
            if all(len(decrees) == 20 for decrees in reported.values()):
                all_reported.set_result(None)

        for decree in range(1, 21):
            for name, log in logs.items():
                log.submit([encode_for_log(mutation(decree))], functools.partial(done, name, decree))
        await asyncio.wait_for(all_reported, timeout=30)
        assert all(decrees == list(range(1, 21)) for decrees in reported.values())
        for log in logs.values():
            await log.close()
        await asyncio.wait_for(writer.close(), timeout=30)
        await writer.close()  # idempotent

    run(story)
    for name in ("a", "b", "c", "d"):
        directory = tmp_path / name
        assert run(functools.partial(replayed, directory, FAST)) == [mutation(d) for d in range(1, 21)]
