"""The expiry sweep: bounded, resumable, and never ahead of the mutation log's own time."""

from __future__ import annotations

from pathlib import Path

import pytest
import rocksdict

import pegasus_kv.storage.store as store_module
from pegasus_kv.core.errors import InvalidArgumentError
from pegasus_kv.core.messages import IncrRequest, IncrResponse, MultiSetRequest, SetRequest
from pegasus_kv.core.schema import encode_key
from pegasus_kv.storage import PartitionStore, StoreOptions, SweepResult
from pegasus_kv.storage.engine import Engine
from pegasus_kv.storage.sweep import SweepScan, find_expired

from .storage_fixtures import FakeClock, Writer, expect, get


def open_store(path: Path, clock: FakeClock, margin_s: int = 0) -> PartitionStore:
    return PartitionStore.open(str(path), options=StoreOptions(sweep_safety_margin_s=margin_s), clock=clock)


def stored_keys(path: Path) -> set[bytes]:
    """What is physically in RocksDB, expired or not (the store must be closed)."""
    db = rocksdict.Rdict(
        str(path),
        rocksdict.Options(raw_mode=True),
        column_families={"meta": rocksdict.Options(raw_mode=True)},
        access_type=rocksdict.AccessType.read_only(),
    )
    try:
        keys = db.keys()  # Rdict has no __iter__
        return {key for key in keys if isinstance(key, bytes) and not key.startswith(b"\xff\xff")}
    finally:
        db.close()


def test_the_sweep_deletes_expired_records_in_bounded_resumable_steps(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = open_store(tmp_path / "replica", clock)
    writer = Writer(store, clock)
    writer.one(MultiSetRequest(b"h", [(b"keep%d" % i, b"v") for i in range(5)]))
    writer.one(MultiSetRequest(b"h", [(b"temp%d" % i, b"v") for i in range(5)], ttl_s=10))
    clock.advance(10)
    writer.apply()  # the log's time passes the expiry too

    steps = [store.sweep_expired(max_keys=4) for _ in range(3)]
    assert steps == [
        SweepResult(examined=4, deleted=0, cycle_complete=False),  # keep0..keep3
        SweepResult(examined=4, deleted=3, cycle_complete=False),  # keep4, temp0..temp2
        SweepResult(examined=2, deleted=2, cycle_complete=True),  # temp3, temp4
    ]
    # The next cycle starts over and finds only the live records.
    assert store.sweep_expired(max_keys=100) == SweepResult(examined=5, deleted=0, cycle_complete=True)
    assert get(store, b"h", b"keep0") == b"v"
    store.close()
    assert stored_keys(tmp_path / "replica") == {encode_key(b"h", b"keep%d" % i) for i in range(5)}


def test_the_sweep_waits_for_the_log_to_pass_the_expiry(tmp_path: Path, clock: FakeClock) -> None:
    store = open_store(tmp_path / "secondary", clock)
    writer = Writer(store, clock)
    stamp_s = clock.now_s
    writer.one(SetRequest(b"h", b"n", b"41", ttl_s=10))

    # By this replica's clock the record has expired: reads no longer see it ...
    clock.advance(1000)
    assert get(store, b"h", b"n") is None
    # ... but the newest mutation it applied is older than the expiry, and a mutation stamped
    # before the expiry may still arrive (this replica lags): the record must stay.
    assert store.sweep_expired(max_keys=100).deleted == 0
    late = writer.one(IncrRequest(b"h", b"n", 1), at_s=stamp_s + 5)
    assert expect(late, IncrResponse).new_value == 42

    writer.apply(at_s=stamp_s + 15)  # the log's time passes the expiry
    assert store.sweep_expired(max_keys=100).deleted == 1
    store.close()


def test_the_safety_margin_keeps_recently_expired_records(tmp_path: Path, clock: FakeClock) -> None:
    store = open_store(tmp_path / "replica", clock, margin_s=300)
    writer = Writer(store, clock)
    writer.one(SetRequest(b"h", b"s", b"v", ttl_s=10))
    clock.advance(200)
    writer.apply()
    assert store.sweep_expired(max_keys=100).deleted == 0
    clock.advance(110)
    writer.apply()
    assert store.sweep_expired(max_keys=100).deleted == 1
    store.close()


def test_the_sweep_never_deletes_a_key_that_a_write_just_refreshed(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(tmp_path / "replica", clock)
    writer = Writer(store, clock)
    writer.one(MultiSetRequest(b"h", [(b"a", b"old"), (b"b", b"old")], ttl_s=5))
    clock.advance(5)
    writer.apply()

    def find_then_refresh(engine: Engine, cursor: bytes, max_keys: int, threshold_epoch_s: int) -> SweepScan:
        found = find_expired(engine, cursor, max_keys, threshold_epoch_s)
        assert len(found.candidates) == 2
        # A client rewrites "a" between the search and the delete.
        writer.one(SetRequest(b"h", b"a", b"refreshed"))
        return found

    monkeypatch.setattr(store_module, "find_expired", find_then_refresh)
    assert store.sweep_expired(max_keys=100).deleted == 1
    assert get(store, b"h", b"a") == b"refreshed"
    store.close()
    assert stored_keys(tmp_path / "replica") == {encode_key(b"h", b"a")}


def test_sweep_steps_are_bounded(tmp_path: Path, clock: FakeClock) -> None:
    store = PartitionStore.open(
        str(tmp_path / "replica"), options=StoreOptions(sweep_max_keys_per_step=3), clock=clock
    )
    Writer(store, clock).one(MultiSetRequest(b"h", [(b"%d" % i, b"v") for i in range(5)]))
    with pytest.raises(InvalidArgumentError):
        store.sweep_expired(max_keys=0)
    assert store.sweep_expired(max_keys=1_000_000).examined == 3
    store.close()
