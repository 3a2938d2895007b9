"""The primary's bounded queue of client writes waiting to be batched into a mutation.

Pegasus batches the writes waiting in a partition's queue into one mutation whenever the number of
mutations in two-phase commit allows another (mutation_queue + staleness_for_commit). The queue is
bounded: a full queue refuses (BUSY) instead of growing (DESIGN.md section 10, "limit everything").
"""

from __future__ import annotations

import dataclasses
from collections import deque

from pegasus_kv.core.messages import WriteRequest
from pegasus_kv.replication.pacifica.invariant import require
from pegasus_kv.replication.pacifica.ready import ClientToken


@dataclasses.dataclass(frozen=True, slots=True)
class QueuedWrite:
    token: ClientToken
    write: WriteRequest
    timestamp_us: int
    size_bytes: int


class WriteQueue:
    def __init__(self, max_writes: int) -> None:
        require(max_writes >= 1, "a write queue needs room for one write")
        self.max_writes = max_writes
        self._items: deque[QueuedWrite] = deque()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def is_full(self) -> bool:
        return len(self._items) >= self.max_writes

    def push(self, item: QueuedWrite) -> None:
        require(not self.is_full, "push into a full write queue")
        require(item.size_bytes >= 0, f"negative write size {item.size_bytes}")
        self._items.append(item)

    def pop_batch(self, max_count: int, max_bytes: int) -> list[QueuedWrite]:
        """The oldest writes, as many as fit in max_count and max_bytes (always at least one)."""
        require(max_count >= 1, "a batch holds at least one write")
        batch: list[QueuedWrite] = []
        size = 0
        while self._items and len(batch) < max_count:
            head = self._items[0]
            if batch and size + head.size_bytes > max_bytes:
                break
            batch.append(self._items.popleft())
            size += head.size_bytes
        return batch

    def drain(self) -> list[QueuedWrite]:
        items = list(self._items)
        self._items.clear()
        return items
