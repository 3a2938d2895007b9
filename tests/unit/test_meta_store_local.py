"""The local meta store gives back every acknowledged event, across restarts, crashes and snapshots."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from pegasus_kv.core.errors import InvalidArgumentError, InvalidStateError, StorageError
from pegasus_kv.replication.meta.local_store import LocalMetaStore
from pegasus_kv.replication.meta.record_file import encode_frame
from pegasus_kv.replication.meta.store import MetaLog

T = TypeVar("T")


def run(story: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await story()

    return asyncio.run(main())


async def append_all(directory: Path, *batches: list[bytes]) -> None:
    async with await LocalMetaStore.open(directory) as store:
        for batch in batches:
            await store.append(batch)


async def reload(directory: Path) -> MetaLog:
    async with await LocalMetaStore.open(directory) as store:
        return await store.load()


def events_file(directory: Path) -> Path:
    (found,) = directory.glob("events.*.log")
    return found


def test_appended_events_come_back_after_a_restart(tmp_path: Path) -> None:
    run(
        lambda: append_all(
            tmp_path, [b"table temp created"], [b"config 1.0 ballot 1", b"config 1.1 ballot 1"]
        )
    )

    snapshot, records = run(lambda: reload(tmp_path))

    assert snapshot is None
    assert records == [b"table temp created", b"config 1.0 ballot 1", b"config 1.1 ballot 1"]


def test_a_torn_tail_is_dropped_and_appending_continues(tmp_path: Path) -> None:
    run(lambda: append_all(tmp_path, [b"first", b"second", b"third"]))
    path = events_file(tmp_path)
    full_size = path.stat().st_size
    last_frame_start = full_size - len(encode_frame(b"third"))

    for cut in range(last_frame_start, full_size):
        crashed = tmp_path / f"cut-{cut}"
        crashed.mkdir()
        shutil.copy(path, crashed / path.name)
        os.truncate(crashed / path.name, cut)

        async def recover(crashed: Path = crashed) -> MetaLog:
            async with await LocalMetaStore.open(crashed) as store:
                assert (await store.load()).records == [b"first", b"second"]
                assert store.records_since_snapshot == 2
                await store.append([b"third, again"])
            return await reload(crashed)

        assert run(recover).records == [b"first", b"second", b"third, again"], cut


def test_a_damaged_event_before_valid_ones_is_reported_not_dropped(tmp_path: Path) -> None:
    run(lambda: append_all(tmp_path, [b"first", b"second", b"third"]))
    path = events_file(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(encode_frame(b"first")) + 14] ^= 0xFF  # inside "second"
    path.write_bytes(bytes(data))

    with pytest.raises(StorageError, match="followed by valid records"):
        run(lambda: reload(tmp_path))


def test_a_snapshot_replaces_the_events_it_covers(tmp_path: Path) -> None:
    async def story() -> None:
        async with await LocalMetaStore.open(tmp_path) as store:
            await store.append([b"e1", b"e2"])
            await store.write_snapshot(b"fold(e1, e2)")
            assert store.records_since_snapshot == 0
            await store.append([b"e3"])
            assert await store.load() == MetaLog(b"fold(e1, e2)", [b"e3"])
            assert store.records_since_snapshot == 1

    run(story)
    assert run(lambda: reload(tmp_path)) == MetaLog(b"fold(e1, e2)", [b"e3"])


def test_snapshots_follow_each_other_and_old_event_files_go(tmp_path: Path) -> None:
    async def story() -> None:
        async with await LocalMetaStore.open(tmp_path) as store:
            for round_number in range(3):
                await store.append([b"event %d" % round_number])
                await store.write_snapshot(b"state after round %d" % round_number)
            await store.append([b"last"])

    run(story)
    assert len(list(tmp_path.glob("events.*.log"))) == 1
    assert run(lambda: reload(tmp_path)) == MetaLog(b"state after round 2", [b"last"])


def test_a_crash_before_the_old_event_file_was_deleted_applies_nothing_twice(tmp_path: Path) -> None:
    async def story() -> None:
        async with await LocalMetaStore.open(tmp_path) as store:
            await store.append([b"e1", b"e2"])
            old_events = events_file(tmp_path).read_bytes()
            old_name = events_file(tmp_path).name
            await store.write_snapshot(b"fold(e1, e2)")
        (tmp_path / old_name).write_bytes(old_events)  # as if the crash came before its deletion
        (tmp_path / "snapshot.tmp").write_bytes(b"half a snapshot")  # and a later snapshot was cut short

    run(story)
    assert run(lambda: reload(tmp_path)) == MetaLog(b"fold(e1, e2)", [])
    assert len(list(tmp_path.glob("events.*.log"))) == 1
    assert not (tmp_path / "snapshot.tmp").exists()


def test_a_damaged_snapshot_is_reported(tmp_path: Path) -> None:
    async def story() -> None:
        async with await LocalMetaStore.open(tmp_path) as store:
            await store.write_snapshot(b"state")

    run(story)
    snapshot = tmp_path / "snapshot"
    snapshot.write_bytes(snapshot.read_bytes()[:-1] + b"!")

    with pytest.raises(StorageError, match="damaged"):
        run(lambda: reload(tmp_path))


def test_the_local_store_is_always_the_leader_and_only_one_process_opens_it(tmp_path: Path) -> None:
    async def story() -> None:
        store = await LocalMetaStore.open(tmp_path)
        await store.campaign("meta-1:34601")
        assert store.is_leader
        assert await store.leader_address() == "meta-1:34601"
        with pytest.raises(StorageError, match="in use"):
            await LocalMetaStore.open(tmp_path)
        await store.close()
        assert store.leadership_lost.is_set()
        with pytest.raises(InvalidStateError):
            await store.append([b"after close"])

    run(story)


def test_records_must_be_bytes(tmp_path: Path) -> None:
    async def story() -> None:
        async with await LocalMetaStore.open(tmp_path) as store:
            with pytest.raises(InvalidArgumentError):
                await store.append(["not bytes"])  # type: ignore[list-item]

    run(story)
