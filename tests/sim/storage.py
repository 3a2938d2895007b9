"""The simulated partition store: what RocksDB is to a replica, as a dict.

Mutations are applied in decree order and nothing else; the store remembers the last applied
decree. Its contents are volatile (RocksDB runs without its own WAL, the mutation log is the WAL:
DESIGN.md section 3) except for checkpoints, which are durable and reflect one decree. A crash
reverts the store to its newest checkpoint, and the replica replays its log from there.

Only the writes the simulator's clients issue are modelled: set, delete and check_and_set with the
checks "value does not exist", "value exists" and "bytes equal" (Pegasus semantics from
reference/pegasus-features.md); anything else is a simulator error, not silently ignored.
"""

from __future__ import annotations

import dataclasses

from pegasus_kv.core.messages import (
    CheckAndMutateResponse,
    CheckAndSetRequest,
    CheckType,
    DeleteRequest,
    SetRequest,
    WriteRequest,
    WriteResponse,
)
from pegasus_kv.core.mutation import Mutation
from tests.sim.scheduler import require

StoreKey = tuple[bytes, bytes]
WriteResult = WriteResponse | CheckAndMutateResponse

# Records one simulated partition may hold (the clients use a handful of keys).
MAX_RECORDS = 10_000


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    decree: int
    data: dict[StoreKey, bytes]


def apply_write(data: dict[StoreKey, bytes], write: WriteRequest, decree: int) -> WriteResult:
    """Apply one client write to `data`, returning the reply the client gets."""
    if isinstance(write, SetRequest):
        require(write.ttl_s == 0, "the simulator does not model TTLs")
        data[(write.hash_key, write.sort_key)] = write.value
        require(len(data) <= MAX_RECORDS, "simulated store over its bound")
        return WriteResponse(decree=decree)
    if isinstance(write, DeleteRequest):
        data.pop((write.hash_key, write.sort_key), None)
        return WriteResponse(decree=decree)
    if isinstance(write, CheckAndSetRequest):
        require(write.set_ttl_s == 0, "the simulator does not model TTLs")
        current = data.get((write.hash_key, write.check_sort_key))
        if write.check_type is CheckType.NO_CHECK:
            passed = True
        elif write.check_type is CheckType.VALUE_NOT_EXIST:
            passed = current is None
        elif write.check_type is CheckType.VALUE_EXIST:
            passed = current is not None
        elif write.check_type is CheckType.VALUE_BYTES_EQUAL:
            passed = current is not None and current == write.check_operand
        else:
            raise NotImplementedError(f"the simulated store does not model check type {write.check_type!r}")
        if passed:
            data[(write.hash_key, write.set_sort_key)] = write.set_value
        return CheckAndMutateResponse(passed=passed)
    raise NotImplementedError(f"the simulated store does not model {type(write).__name__}")


class KvStore:
    """One replica's store: a dict, the last applied decree and the newest durable checkpoint."""

    def __init__(self, checkpoint: Checkpoint | None = None) -> None:
        self.checkpoint = checkpoint or Checkpoint(0, {})
        self.data: dict[StoreKey, bytes] = dict(self.checkpoint.data)
        self.last_applied_decree = self.checkpoint.decree

    def apply(self, mutation: Mutation) -> list[WriteResult]:
        """Apply a committed mutation; decrees arrive one by one, in order."""
        require(
            mutation.decree == self.last_applied_decree + 1,
            f"mutation {mutation.decree} applied after decree {self.last_applied_decree}",
        )
        results = [apply_write(self.data, write, mutation.decree) for write in mutation.writes]
        self.last_applied_decree = mutation.decree
        return results

    def get(self, hash_key: bytes, sort_key: bytes) -> bytes | None:
        return self.data.get((hash_key, sort_key))

    def make_checkpoint(self) -> Checkpoint:
        """A durable snapshot at the last applied decree (RocksDB flush + checkpoint)."""
        self.checkpoint = Checkpoint(self.last_applied_decree, dict(self.data))
        return self.checkpoint

    def install_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Replace everything with a checkpoint learned from the primary."""
        self.checkpoint = Checkpoint(checkpoint.decree, dict(checkpoint.data))
        self.data = dict(checkpoint.data)
        self.last_applied_decree = checkpoint.decree

    def crash(self) -> None:
        """Lose everything not in the checkpoint (the memtable)."""
        self.data = dict(self.checkpoint.data)
        self.last_applied_decree = self.checkpoint.decree
