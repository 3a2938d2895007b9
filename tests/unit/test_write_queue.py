"""The primary's write queue: bounded, and batches by count and by bytes."""

from __future__ import annotations

import pytest

from pegasus_kv.core.messages import SetRequest
from pegasus_kv.replication.pacifica.invariant import ReplicaInvariantError
from pegasus_kv.replication.pacifica.write_queue import QueuedWrite, WriteQueue


def item(token: int, size: int = 10) -> QueuedWrite:
    return QueuedWrite(token, SetRequest(hash_key=b"k", sort_key=b"", value=b"v"), token, size)


def test_batches_are_bounded_by_count_and_bytes_and_keep_arrival_order() -> None:
    queue = WriteQueue(max_writes=10)
    for token in range(1, 8):
        queue.push(item(token, size=40))
    assert [w.token for w in queue.pop_batch(max_count=3, max_bytes=1000)] == [1, 2, 3]
    assert [w.token for w in queue.pop_batch(max_count=10, max_bytes=100)] == [4, 5]
    assert len(queue) == 2


def test_one_write_larger_than_the_byte_bound_still_goes_alone() -> None:
    queue = WriteQueue(max_writes=10)
    queue.push(item(1, size=500))
    queue.push(item(2, size=1))
    assert [w.token for w in queue.pop_batch(max_count=10, max_bytes=100)] == [1]


def test_a_full_queue_refuses_more() -> None:
    queue = WriteQueue(max_writes=2)
    queue.push(item(1))
    queue.push(item(2))
    assert queue.is_full
    with pytest.raises(ReplicaInvariantError):
        queue.push(item(3))
    assert [w.token for w in queue.drain()] == [1, 2]
    assert not queue.is_full
