"""What the meta server needs from durable storage: an event log with snapshots, and leadership.

Meta state is the fold of an event log (DESIGN.md section 5). A store keeps that log as opaque
records (bytes: the meta core encodes its own events) and a snapshot of the fold, and tells which
meta server is the leader, the only one allowed to write:

    await store.campaign("meta-1:34601")         # returns once this meta leads
    snapshot, records = await store.load()       # rebuild the state: fold records over snapshot
    await store.append([event_1, event_2])       # durable when it returns
    await store.write_snapshot(fold_bytes)       # covers every record appended so far
    store.leadership_lost                        # an asyncio.Event, set once leadership is gone

Contract of every store:
- `append` returns only once the records are durable; a record is atomic (whole or absent after a
  crash), a batch is not (after a failure a prefix of it may be durable, like any write whose answer
  was lost). Records are returned by `load` in append order.
- `write_snapshot(s)` covers every record appended before it: afterwards `load` returns `s` and only
  the records appended after it. The caller passes the fold of everything it appended or loaded.
- Only the leader writes. A deposed leader's `append` and `write_snapshot` raise NotLeaderError
  (fencing: checked by the store itself, not only by `is_leader`), and `leadership_lost` is set.
- Foreign exceptions are translated here: StorageError, NetworkError, NotLeaderError, TimeoutError_.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import NamedTuple

from pegasus_kv.core.errors import InvalidArgumentError

# A meta event is small (a table, a partition configuration); snapshots hold every table's
# configuration. Both are bounded so a bug cannot fill the disk or ZooKeeper in one call.
MAX_RECORD_BYTES = 64 * 1024 * 1024
MAX_SNAPSHOT_BYTES = 1024 * 1024 * 1024
MAX_APPEND_RECORDS = 10_000


class MetaLog(NamedTuple):
    """What `load` returns: the newest snapshot (None before the first) and the records after it."""

    snapshot: bytes | None
    records: list[bytes]


def check_append(records: Sequence[bytes]) -> None:
    if len(records) > MAX_APPEND_RECORDS:
        raise InvalidArgumentError(f"{len(records)} records in one append, over {MAX_APPEND_RECORDS}")
    for record in records:
        if not isinstance(record, bytes):
            raise InvalidArgumentError(f"a meta record must be bytes, not {type(record).__name__}")
        if len(record) > MAX_RECORD_BYTES:
            raise InvalidArgumentError(f"meta record of {len(record)} bytes, over {MAX_RECORD_BYTES}")


def check_snapshot(snapshot: bytes) -> None:
    if not isinstance(snapshot, bytes):
        raise InvalidArgumentError(f"a meta snapshot must be bytes, not {type(snapshot).__name__}")
    if len(snapshot) > MAX_SNAPSHOT_BYTES:
        raise InvalidArgumentError(f"meta snapshot of {len(snapshot)} bytes, over {MAX_SNAPSHOT_BYTES}")


class MetaStore(abc.ABC):
    """The durable home of the meta state. See the module docstring for the contract."""

    def __init__(self) -> None:
        self._leadership_lost = asyncio.Event()

    @property
    def leadership_lost(self) -> asyncio.Event:
        """Set once this store stops being the leader (session lost, fenced out, closed)."""
        return self._leadership_lost

    @property
    @abc.abstractmethod
    def is_leader(self) -> bool:
        """Whether this meta currently leads, as far as it knows (writes are fenced regardless)."""

    @property
    @abc.abstractmethod
    def records_since_snapshot(self) -> int:
        """Records in the log after the newest snapshot: the meta core snapshots when this grows."""

    @abc.abstractmethod
    async def campaign(self, my_address: str) -> None:
        """Wait until this meta is the leader; `my_address` is what others are redirected to."""

    @abc.abstractmethod
    async def leader_address(self) -> str | None:
        """The advertised address of the current leader, None while there is none."""

    @abc.abstractmethod
    async def load(self) -> MetaLog:
        """The newest snapshot and every record appended after it, in append order."""

    @abc.abstractmethod
    async def append(self, records: Sequence[bytes]) -> None:
        """Durably append records, in order (leader only)."""

    @abc.abstractmethod
    async def write_snapshot(self, snapshot: bytes) -> None:
        """Replace every record appended so far by this snapshot of their fold (leader only)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Give up leadership (if held) and release every resource. Idempotent."""

    async def __aenter__(self) -> MetaStore:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
