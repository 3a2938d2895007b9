"""The primary's bounded queue of client writes waiting to be batched into a mutation.

Pegasus batches the writes waiting in a partition's queue into one mutation whenever the number of
mutations in two-phase commit allows another (mutation_queue + staleness_for_commit). The queue is
bounded: a full queue refuses (BUSY) instead of growing (DESIGN.md section 10, "limit everything").

Every client write passes here once on its way in and once on its way into a mutation, so the
queue works on whole batches: `push_many` takes the writes of one loop pass at once, and
`pop_batch` keeps the bytes queued so that a batch within both bounds leaves in one step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from operator import attrgetter

import msgspec

from pegasus_kv.core.messages import WriteRequest
from pegasus_kv.replication.pacifica.invariant import require, violated
from pegasus_kv.replication.pacifica.ready import ClientToken


class QueuedWrite(msgspec.Struct, frozen=True):
    """One client write waiting for a mutation. A frozen msgspec Struct: one is built per client
    write, and this builds in C (~0.07 us, against ~0.5 for a frozen dataclass)."""

    token: ClientToken
    write: WriteRequest
    timestamp_us: int
    size_bytes: int


_SIZE_BYTES = attrgetter("size_bytes")


class WriteQueue:
    def __init__(self, max_writes: int) -> None:
        require(max_writes >= 1, "a write queue needs room for one write")
        self.max_writes = max_writes
        self._items: deque[QueuedWrite] = deque()
        # The sum of the queued writes' size_bytes (pop_batch's fast path).
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def is_full(self) -> bool:
        return len(self._items) >= self.max_writes

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def push(self, item: QueuedWrite) -> None:
        if len(self._items) >= self.max_writes:
            violated("push into a full write queue")
        if item.size_bytes < 0:
            violated(f"negative write size {item.size_bytes}")
        self._items.append(item)
        self._bytes += item.size_bytes

    def push_many(self, items: Sequence[QueuedWrite]) -> int:
        """Queue the leading writes of `items` while there is room; returns how many were queued
        (the rest find the queue full, as a push of each in turn would)."""
        queue = self._items
        room = self.max_writes - len(queue)
        taken = items if len(items) <= room else items[: max(room, 0)]
        size = 0
        for item in taken:
            item_size = item.size_bytes
            if item_size < 0:
                violated(f"negative write size {item_size}")
            size += item_size
        queue.extend(taken)
        self._bytes += size
        return len(taken)

    def pop_batch(self, max_count: int, max_bytes: int) -> list[QueuedWrite]:
        """The oldest writes, as many as fit in max_count and max_bytes (always at least one)."""
        require(max_count >= 1, "a batch holds at least one write")
        items = self._items
        batch: list[QueuedWrite]
        if self._bytes <= max_bytes:
            # Every prefix of the queue fits the byte bound (sizes are >= 0): only the count bounds.
            if len(items) <= max_count:
                batch = list(items)
                items.clear()
                self._bytes = 0
                return batch
            popleft = items.popleft
            batch = [popleft() for _ in range(max_count)]
            self._bytes -= sum(map(_SIZE_BYTES, batch))
            return batch
        batch = []
        size = 0
        while items and len(batch) < max_count:
            head = items[0]
            if batch and size + head.size_bytes > max_bytes:
                break
            batch.append(items.popleft())
            size += head.size_bytes
        self._bytes -= size
        return batch

    def drain(self) -> list[QueuedWrite]:
        items = list(self._items)
        self._items.clear()
        self._bytes = 0
        return items
