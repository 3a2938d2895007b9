"""`pegasus-kv demo`: drive one partition store from the command line.

Until the cluster exists this is what a newcomer can run: it opens a RocksDB partition store,
applies a few mutations (the same path a replica takes for committed writes), reads them back with
the data API, takes a checkpoint and reopens it, printing each step.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from pegasus_kv.core import messages as m
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.storage import PartitionStore


def _mutation(decree: int, writes: list[m.WriteRequest]) -> Mutation:
    return Mutation(ballot=1, decree=decree, timestamp_us=int(time.time() * 1_000_000), writes=writes)


def run_demo(data_dir: str | None) -> int:
    with tempfile.TemporaryDirectory(prefix="pegasus-kv-demo-") as scratch:
        root = Path(data_dir) if data_dir else Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        store_dir = root / "store"
        if store_dir.exists():
            print(f"error: {store_dir} already exists; pick an empty --data-dir")
            return 1
        store = PartitionStore.open(str(store_dir))
        try:
            print(f"opened partition store at {store_dir} (last applied decree {store.last_applied_decree})")
            replies = store.apply(
                _mutation(
                    1,
                    [
                        m.SetRequest(b"user1", b"name", b"Ada"),
                        m.SetRequest(b"user1", b"session", b"abc", ttl_s=60),
                        m.MultiSetRequest(b"user1", [(b"city", b"London"), (b"lang", b"en")]),
                    ],
                )
            )
            print(f"decree 1: set, set with ttl=60, multi_set -> {len(replies)} replies")
            (incr,) = store.apply(_mutation(2, [m.IncrRequest(b"user1", b"visits", 5)]))
            print(f"decree 2: incr visits by 5 -> {incr}")
            (cas,) = store.apply(
                _mutation(
                    3,
                    [
                        m.CheckAndSetRequest(
                            b"user1", b"lang", m.CheckType.VALUE_BYTES_EQUAL, b"en", b"lang", b"fr"
                        )
                    ],
                )
            )
            print(f"decree 3: check_and_set lang == 'en' -> 'fr' -> {cas}")
            print("get name        ->", store.read(m.GetRequest(b"user1", b"name")))
            print("ttl session     ->", store.read(m.TtlRequest(b"user1", b"session")))
            result = store.read(m.MultiGetRequest(b"user1", max_kv_count=10))
            print("multi_get user1 ->", result)
            checkpoint_dir = root / "checkpoint"
            decree = store.checkpoint(str(checkpoint_dir))
            print(f"checkpoint at decree {decree} -> {checkpoint_dir}")
        finally:
            store.close()
        reopened = PartitionStore.open(str(checkpoint_dir))
        try:
            count = reopened.read(m.SortKeyCountRequest(b"user1"))
            print(f"reopened checkpoint: last applied decree {reopened.last_applied_decree}, {count}")
        finally:
            reopened.close()
    return 0
