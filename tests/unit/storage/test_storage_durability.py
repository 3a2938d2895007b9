"""Durability: reopening, crashes with the WAL off, checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import rocksdict

from pegasus_kv.core.errors import InvalidStateError, ShuttingDownError, StorageError, UnsupportedError
from pegasus_kv.core.messages import (
    GetRequest,
    GetScannerRequest,
    IncrRequest,
    ScanResponse,
    SetRequest,
)
from pegasus_kv.storage import PartitionStore, restore_checkpoint

from .storage_fixtures import FakeClock, Writer, apply_story, get, read

Row = tuple[bytes, bytes, bytes, int]


def snapshot(store: PartitionStore) -> list[Row]:
    reply = read(
        store, GetScannerRequest(full_scan=True, batch_size=1000, return_expire_ts=True), ScanResponse
    )
    assert reply.context_id == -1
    return reply.rows


def assert_story_at(store: PartitionStore, decree: int) -> None:
    assert store.last_applied_decree == decree
    assert get(store, b"story", b"counter") == (str(decree).encode() if decree else None)
    live = {row[1] for row in snapshot(store)} - {b"counter"}
    assert live == {b"k%d" % d for d in (decree - 1, decree) if d >= 1}


def test_closing_and_reopening_gives_back_the_data_and_the_decree(tmp_path: Path, clock: FakeClock) -> None:
    path = str(tmp_path / "replica")
    store = PartitionStore.open(path, clock=clock)
    apply_story(Writer(store, clock), 7)
    before = snapshot(store)
    store.close()

    reopened = PartitionStore.open(path, clock=clock)
    assert reopened.last_applied_decree == 7
    assert reopened.last_durable_decree == 7
    assert snapshot(reopened) == before
    assert_story_at(reopened, 7)

    # The log picks up where the store left off.
    writer = Writer(reopened, clock)
    apply_story(writer, 1)
    assert_story_at(reopened, 8)
    reopened.close()


def test_flush_reports_the_decree_that_is_now_durable(store: PartitionStore, writer: Writer) -> None:
    assert store.last_durable_decree == 0
    apply_story(writer, 3)
    assert store.last_durable_decree == 0
    assert store.flush() == 3
    assert store.last_durable_decree == 3
    apply_story(writer, 2)
    assert (store.last_applied_decree, store.last_durable_decree) == (5, 3)


CRASHING_REPLICA = textwrap.dedent(
    """
    import os, sys
    sys.path[:0] = [{repo_root!r}]
    from tests.unit.storage.storage_fixtures import FakeClock, Writer, apply_story
    from pegasus_kv.storage import PartitionStore, StoreOptions

    clock = FakeClock()
    store = PartitionStore.open({path!r}, options=StoreOptions(write_buffer_bytes={buffer}), clock=clock)
    writer = Writer(store, clock)
    apply_story(writer, {flushed})
    store.flush()
    apply_story(writer, {unflushed})
    os._exit(0)  # a crash: no close, no flush
    """
)


def crash_after(path: str, flushed: int, unflushed: int, buffer: int) -> None:
    repo_root = str(Path(__file__).resolve().parents[3])
    script = CRASHING_REPLICA.format(
        repo_root=repo_root, path=path, flushed=flushed, unflushed=unflushed, buffer=buffer
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_after_a_crash_only_flushed_mutations_survive(tmp_path: Path, clock: FakeClock) -> None:
    path = str(tmp_path / "replica")
    crash_after(path, flushed=4, unflushed=3, buffer=64 * 1024 * 1024)

    store = PartitionStore.open(path, clock=clock)
    # The WAL is off: the three unflushed mutations are gone, and the decree says so.
    assert_story_at(store, 4)
    assert store.last_durable_decree == 4
    store.close()


def test_after_a_crash_the_decree_matches_the_data_rocksdb_flushed_on_its_own(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = str(tmp_path / "replica")
    # A tiny memtable makes RocksDB flush by itself, at moments nobody chose.
    crash_after(path, flushed=1, unflushed=3000, buffer=64 * 1024)

    store = PartitionStore.open(path, clock=clock)
    decree = store.last_applied_decree
    assert 1 < decree <= 3001
    assert_story_at(store, decree)
    store.close()


FLUSHING_WHILE_APPLYING = textwrap.dedent(
    """
    import os, sys, threading
    sys.path[:0] = [{repo_root!r}]
    from tests.unit.storage.storage_fixtures import FakeClock, Writer, apply_story
    from pegasus_kv.storage import PartitionStore

    clock = FakeClock()
    store = PartitionStore.open({path!r}, clock=clock)
    writer = Writer(store, clock)
    apply_story(writer, 50)
    stop = threading.Event()

    def keep_applying():
        while not stop.is_set():
            apply_story(writer, 1)

    applier = threading.Thread(target=keep_applying, daemon=True)
    applier.start()
    flushed = store.flush()  # the replica runtime flushes beside its applies
    print(flushed, flush=True)
    os._exit(0)  # a crash while the applies go on: no close, no flush
    """
)


def test_a_flush_beside_applies_makes_the_decree_it_returns_durable(tmp_path: Path, clock: FakeClock) -> None:
    path = str(tmp_path / "replica")
    repo_root = str(Path(__file__).resolve().parents[3])
    script = FLUSHING_WHILE_APPLYING.format(repo_root=repo_root, path=path)
    done = subprocess.run(
        [sys.executable, "-c", script], check=True, timeout=60, capture_output=True, text=True
    )
    flushed = int(done.stdout.strip())
    assert flushed >= 50

    store = PartitionStore.open(path, clock=clock)
    # What the flush returned survived the crash, and the data matches whatever decree it stands at.
    decree = store.last_applied_decree
    assert decree >= flushed
    assert_story_at(store, decree)
    store.close()


def test_a_checkpoint_holds_exactly_the_data_at_its_decree(tmp_path: Path, clock: FakeClock) -> None:
    store = PartitionStore.open(str(tmp_path / "replica"), clock=clock)
    writer = Writer(store, clock)
    apply_story(writer, 5)
    at_checkpoint = snapshot(store)

    assert store.checkpoint(str(tmp_path / "checkpoint")) == 5
    apply_story(writer, 3)  # the store goes on; the checkpoint does not see it
    assert_story_at(store, 8)

    learner = PartitionStore.open(str(tmp_path / "checkpoint"), clock=clock)
    assert learner.last_applied_decree == 5
    assert snapshot(learner) == at_checkpoint
    # A learner continues from the checkpoint with the log tail.
    apply_story(Writer(learner, clock), 3)
    assert snapshot(learner) == snapshot(store)
    learner.close()
    store.close()


def test_restore_checkpoint_makes_a_private_copy(tmp_path: Path, clock: FakeClock) -> None:
    store = PartitionStore.open(str(tmp_path / "replica"), clock=clock)
    apply_story(Writer(store, clock), 4)
    store.checkpoint(str(tmp_path / "checkpoint"))
    store.close()
    checkpoint_files = sorted(os.listdir(tmp_path / "checkpoint"))

    restore_checkpoint(str(tmp_path / "checkpoint"), str(tmp_path / "restored"))
    restored = PartitionStore.open(str(tmp_path / "restored"), clock=clock)
    apply_story(Writer(restored, clock), 2)
    assert_story_at(restored, 6)
    restored.close()

    # The checkpoint itself was not touched and still opens at its own decree.
    assert sorted(os.listdir(tmp_path / "checkpoint")) == checkpoint_files
    again = PartitionStore.open(str(tmp_path / "checkpoint"), clock=clock)
    assert_story_at(again, 4)
    again.close()


def test_a_checkpoint_needs_a_fresh_directory(store: PartitionStore, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(StorageError):
        store.checkpoint(str(tmp_path / "taken"))


def test_a_closed_store_refuses_work(tmp_path: Path, clock: FakeClock) -> None:
    store = PartitionStore.open(str(tmp_path / "replica"), clock=clock)
    writer = Writer(store, clock)
    mutation = writer.mutation(SetRequest(b"h", b"s", b"v"))
    store.close()
    store.close()  # harmless
    with pytest.raises(ShuttingDownError):
        store.apply(mutation)
    with pytest.raises(ShuttingDownError):
        store.read(GetRequest(b"h", b"s"))
    with pytest.raises(ShuttingDownError):
        store.flush()


def test_a_store_of_another_data_version_does_not_open(tmp_path: Path, clock: FakeClock) -> None:
    path = str(tmp_path / "replica")
    PartitionStore.open(path, clock=clock).close()
    db = rocksdict.Rdict(
        path, rocksdict.Options(raw_mode=True), column_families={"meta": rocksdict.Options(raw_mode=True)}
    )
    meta = db.get_column_family("meta")
    meta.put(b"data_version", b"2")
    meta.flush(True)
    del meta
    db.close()
    with pytest.raises(UnsupportedError):
        PartitionStore.open(path, clock=clock)


def test_a_mutation_that_fails_to_reach_rocksdb_is_not_applied(
    store: PartitionStore, writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer.one(SetRequest(b"h", b"s", b"before"))
    mutation = writer.mutation(SetRequest(b"h", b"s", b"after"), IncrRequest(b"h", b"n", 1))

    def broken_write(*args: object) -> None:
        raise StorageError("disk full")

    monkeypatch.setattr(store._engine, "commit", broken_write)
    with pytest.raises(StorageError):
        store.apply(mutation)
    monkeypatch.undo()

    assert store.last_applied_decree == 1
    assert get(store, b"h", b"s") == b"before"
    # The same mutation can be retried once RocksDB works again.
    assert len(store.apply(mutation)) == 2
    assert get(store, b"h", b"s") == b"after"
    with pytest.raises(InvalidStateError):  # and only once
        store.apply(mutation)
