"""One writer and concurrent readers: a mutation becomes visible all at once or not at all."""

from __future__ import annotations

import threading
from pathlib import Path

from pegasus_kv.core.messages import (
    GetScannerRequest,
    MultiGetRequest,
    MultiSetRequest,
    ScanResponse,
    SetRequest,
)
from pegasus_kv.storage import PartitionStore

from .storage_fixtures import FakeClock, Writer, multi_get, read

SORT_KEYS = [b"a", b"b", b"c", b"d", b"e"]
MIN_MUTATIONS = 300
MIN_READS = 100
MAX_MUTATIONS = 20_000


def test_readers_never_see_half_of_a_mutation(tmp_path: Path, clock: FakeClock) -> None:
    store = PartitionStore.open(str(tmp_path / "replica"), clock=clock)
    writer = Writer(store, clock)
    writer.one(MultiSetRequest(b"h", [(sort_key, b"0") for sort_key in SORT_KEYS]))
    done = threading.Event()
    torn: list[object] = []
    reads_done = [0]

    def write_all() -> None:
        try:
            version = 0
            # Keep writing until the readers had their chance, however threads are scheduled.
            while version < MIN_MUTATIONS or (reads_done[0] < MIN_READS and version < MAX_MUTATIONS):
                version += 1
                # Each mutation rewrites every sort key, and some keys twice, with one version.
                writer.apply(
                    SetRequest(b"h", b"a", b"stale"),
                    MultiSetRequest(b"h", [(sort_key, b"%d" % version) for sort_key in SORT_KEYS]),
                )
                if version % 50 == 0:
                    store.sweep_expired(max_keys=100)
        finally:
            done.set()

    def read_all(use_scanner: bool) -> None:
        while not done.is_set():
            if use_scanner:
                reply = read(store, GetScannerRequest(hash_key=b"h", batch_size=10), ScanResponse)
                values = {row[2] for row in reply.rows}
            else:
                values = {value for _, value in multi_get(store, MultiGetRequest(b"h")).kvs}
            if len(values) != 1:
                torn.append(values)
            reads_done[0] += 1

    threads = [threading.Thread(target=read_all, args=(use_scanner,)) for use_scanner in (False, True)]
    threads.append(threading.Thread(target=write_all))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)

    assert torn == []
    assert reads_done[0] >= MIN_READS
    versions = store.last_applied_decree - 1
    assert {value for _, value in multi_get(store, MultiGetRequest(b"h")).kvs} == {b"%d" % versions}
    store.close()
