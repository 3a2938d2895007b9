"""How the ZooKeeper meta store reassembles records from log chunks, whatever a crash or retry left."""

from __future__ import annotations

import pytest

from pegasus_kv.core.errors import StorageError
from pegasus_kv.replication.meta.zk_store import assemble_records, encode_chunk


def record_chunks(epoch: int, counter: int, *pieces: bytes) -> list[bytes]:
    return [
        encode_chunk(epoch, counter, index, index == len(pieces) - 1, piece)
        for index, piece in enumerate(pieces)
    ]


def test_chunks_of_each_record_are_joined_in_log_order() -> None:
    chunks = [
        *record_chunks(3, 1, b"small"),
        *record_chunks(3, 2, b"big-", b"ger-", b"record"),
        *record_chunks(3, 3, b""),
    ]

    assert assemble_records(chunks, "log") == [b"small", b"big-ger-record", b""]


def test_a_record_cut_short_by_a_deposed_leader_is_ignored() -> None:
    cut_short = record_chunks(3, 7, b"never", b"finished")[:1]  # fenced out before its last chunk
    chunks = [*record_chunks(3, 6, b"done"), *cut_short, *record_chunks(4, 1, b"next leader")]

    assert assemble_records(chunks, "log") == [b"done", b"next leader"]


def test_a_transaction_retried_after_a_lost_connection_counts_once() -> None:
    first, second, third = record_chunks(5, 2, b"a", b"b", b"c")
    # Chunks 0-1 went in one transaction, chunk 2 in another; each was retried after it had applied.
    chunks = [first, second, first, second, third, third, *record_chunks(5, 2, b"a", b"b", b"c")]

    assert assemble_records(chunks, "log") == [b"abc"]


def test_a_chunk_out_of_place_is_damage() -> None:
    chunks = [*record_chunks(5, 1, b"whole"), record_chunks(5, 2, b"x", b"y")[1]]

    with pytest.raises(StorageError, match="out of place"):
        assemble_records(chunks, "log")
