"""Micro-benchmark: applying batched mutations through PartitionStore vs raw rocksdict puts.

Both sides write the same encoded keys and values (100-byte values by default) into a fresh
RocksDB with the same options and the WAL off, one WriteBatch per mutation. The raw side gets its
keys and values already encoded; the store does all of its real work per mutation: the decree
check, size checks, key and value encoding, one reply per write and the last-applied-decree
record in the same batch. Prints both rates and their ratio (median of --runs).

    .venv/bin/python benchmarks/storage_apply.py [--mutations 20000] [--batch 10] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import rocksdict

from pegasus_kv.core.messages import SetRequest
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.core.schema import encode_key, encode_value, make_timetag
from pegasus_kv.storage import PartitionStore, StoreOptions

TIMESTAMP_US = 1_700_000_000_000_000


def build_mutations(mutations: int, batch: int, value_bytes: int) -> list[Mutation]:
    value = b"v" * value_bytes
    return [
        Mutation(
            ballot=1,
            decree=decree,
            timestamp_us=TIMESTAMP_US,
            writes=[SetRequest(b"user%08d" % (decree * batch + i), b"field0", value) for i in range(batch)],
        )
        for decree in range(1, mutations + 1)
    ]


def encoded_batches(mutations: list[Mutation]) -> list[list[tuple[bytes, bytes]]]:
    timetag = make_timetag(TIMESTAMP_US, 0, deleted=False)
    return [
        [
            (encode_key(write.hash_key, write.sort_key), encode_value(write.value, 0, timetag))
            for write in mutation.writes
            if isinstance(write, SetRequest)
        ]
        for mutation in mutations
    ]


def raw_rate(path: str, batches: list[list[tuple[bytes, bytes]]], options: StoreOptions) -> float:
    db_options = rocksdict.Options(raw_mode=True)
    db_options.create_if_missing(True)
    db_options.set_write_buffer_size(options.write_buffer_bytes)
    db = rocksdict.Rdict(path, db_options)
    write_options = rocksdict.WriteOptions()
    write_options.disable_wal = True  # type: ignore[method-assign,assignment]
    db.set_write_options(write_options)
    writes = sum(len(batch) for batch in batches)
    started = time.perf_counter()
    for records in batches:
        write_batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in records:
            write_batch.put(key, value)
        db.write(write_batch)
    elapsed = time.perf_counter() - started
    db.close()
    return writes / elapsed


def store_rate(path: str, mutations: list[Mutation], options: StoreOptions) -> float:
    store = PartitionStore.open(path, options=options)
    writes = sum(len(mutation.writes) for mutation in mutations)
    started = time.perf_counter()
    for mutation in mutations:
        store.apply(mutation)
    elapsed = time.perf_counter() - started
    store.close()
    return writes / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mutations", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=10, help="set-writes per mutation")
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    options = StoreOptions()
    mutations = build_mutations(args.mutations, args.batch, args.value_bytes)
    batches = encoded_batches(mutations)
    raw_rates: list[float] = []
    store_rates: list[float] = []
    ratios: list[float] = []
    with tempfile.TemporaryDirectory(prefix="storage-bench-") as root:
        for run in range(args.runs):
            # Alternate which side goes first, so neither always runs on a warmer machine.
            if run % 2 == 0:
                raw = raw_rate(str(Path(root) / f"raw-{run}"), batches, options)
                store = store_rate(str(Path(root) / f"store-{run}"), mutations, options)
            else:
                store = store_rate(str(Path(root) / f"store-{run}"), mutations, options)
                raw = raw_rate(str(Path(root) / f"raw-{run}"), batches, options)
            raw_rates.append(raw)
            store_rates.append(store)
            ratios.append(store / raw)
            print(
                f"run {run + 1}: raw {raw:,.0f} writes/s  "
                f"store {store:,.0f} writes/s  ratio {store / raw:.2f}"
            )
    print(
        f"median of {args.runs} runs ({args.mutations} mutations x {args.batch} sets, "
        f"{args.value_bytes}-byte values):\n"
        f"  raw rocksdict WriteBatch puts : {statistics.median(raw_rates):,.0f} writes/s\n"
        f"  PartitionStore.apply          : {statistics.median(store_rates):,.0f} writes/s\n"
        f"  ratio store / raw             : {statistics.median(ratios):.2f}"
    )


if __name__ == "__main__":
    main()
