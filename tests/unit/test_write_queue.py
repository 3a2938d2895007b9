"""The primary's write queue: bounded, and batches by count and by bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def test_writes_arriving_together_are_queued_while_there_is_room() -> None:
    queue = WriteQueue(max_writes=3)
    queue.push(item(1))
    assert queue.push_many([item(2), item(3), item(4)]) == 2
    assert queue.is_full
    assert queue.push_many([item(5)]) == 0
    assert [w.token for w in queue.drain()] == [1, 2, 3]
    assert queue.queued_bytes == 0


def test_a_negative_write_size_is_a_bug() -> None:
    queue = WriteQueue(max_writes=10)
    with pytest.raises(ReplicaInvariantError):
        queue.push_many([item(1), item(2, size=-1)])
    with pytest.raises(ReplicaInvariantError):
        queue.push(item(3, size=-1))


def reference_batch(queued: list[QueuedWrite], max_count: int, max_bytes: int) -> list[QueuedWrite]:
    """The batching rule written out one write at a time."""
    batch: list[QueuedWrite] = []
    size = 0
    for write in queued:
        if len(batch) == max_count or (batch and size + write.size_bytes > max_bytes):
            break
        batch.append(write)
        size += write.size_bytes
    return batch


_steps = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.lists(st.integers(0, 300), max_size=6)),
        st.tuples(st.just("pop"), st.tuples(st.integers(1, 6), st.integers(1, 600))),
    ),
    max_size=30,
)


@given(_steps)
def test_batches_are_what_taking_the_oldest_writes_one_by_one_gives(steps: list[tuple[str, object]]) -> None:
    queue = WriteQueue(max_writes=8)
    model: list[QueuedWrite] = []
    token = 0
    for kind, argument in steps:
        if kind == "push":
            assert isinstance(argument, list)
            writes = []
            for size in argument:
                token += 1
                writes.append(item(token, size))
            taken = queue.push_many(writes)
            assert taken == min(len(writes), 8 - len(model))
            model.extend(writes[:taken])
        else:
            assert isinstance(argument, tuple)
            max_count, max_bytes = argument
            expected = reference_batch(model, max_count, max_bytes)
            assert queue.pop_batch(max_count, max_bytes) == expected
            del model[: len(expected)]
        assert len(queue) == len(model)
        assert queue.queued_bytes == sum(w.size_bytes for w in model)
