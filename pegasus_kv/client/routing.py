"""Where each partition of a table is served: a cached configuration, refreshed on routing errors.

A request goes to the primary of the partition its key hashes to (DESIGN.md section 3:
CRC-64/NVME of the hash key, or of the sort key when the hash key is empty, modulo the partition
count). The client caches the table's partition configurations and asks meta again only when a
request failed in a way that says the cache may be stale; concurrent failures share one meta query.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pegasus_kv.client.meta import MetaCaller
from pegasus_kv.client.retry import Deadline
from pegasus_kv.client.session import ClientSession
from pegasus_kv.core.errors import PegasusError, TableNotFoundError
from pegasus_kv.core.hashing import is_power_of_two, key_hash
from pegasus_kv.core.ids import Gpid
from pegasus_kv.replication.pacifica.config import NodeAddress, PartitionConfiguration
from pegasus_kv.replication.pacifica.meta_requests import QueryConfigRequest, QueryConfigResponse

# Pegasus tables have up to a few thousand partitions; a reply claiming more is not trusted.
MAX_PARTITION_COUNT = 1 << 16
# Routing keys whose partition one configuration snapshot remembers (then it starts over).
MAX_MEMOISED_PARTITIONS = 1 << 14
MAX_MEMOISED_KEY_BYTES = 64  # longer keys are hashed every time: the memo stays under ~2.5 MB


@dataclass(frozen=True, slots=True)
class TableRoute:
    """One snapshot of a table's partition configurations; configs[i] is partition i."""

    name: str
    app_id: int
    partition_count: int
    configs: tuple[PartitionConfiguration, ...]
    # routing key -> partition index, memoised (bounded): most workloads name the same keys
    # again and again, and a dict lookup is cheaper than the CRC-64 and the calls around it.
    _partitions: dict[bytes, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_response(cls, name: str, response: QueryConfigResponse) -> TableRoute:
        """Check what meta answered (a malformed answer is meta's bug, reported as an error)."""
        count = response.partition_count
        if not is_power_of_two(count) or count > MAX_PARTITION_COUNT:
            raise PegasusError(f"meta answered partition count {count} for table {name!r}")
        by_index: dict[int, PartitionConfiguration] = {}
        for config in response.configs:
            index = config.gpid.partition_index
            if config.gpid.app_id != response.app_id or not 0 <= index < count or index in by_index:
                raise PegasusError(f"meta answered a stray configuration {config.gpid} for table {name!r}")
            by_index[index] = config
        if len(by_index) != count:
            raise PegasusError(f"meta answered {len(by_index)} of {count} configurations for table {name!r}")
        return cls(name, response.app_id, count, tuple(by_index[i] for i in range(count)))

    def __post_init__(self) -> None:
        # Checked once here, so that partition_of (every request) can mask without checking.
        if not is_power_of_two(self.partition_count) or len(self.configs) != self.partition_count:
            raise PegasusError(
                f"table {self.name!r}: {len(self.configs)} configurations for partition count "
                f"{self.partition_count} (a power of two)"
            )

    def partition_of(self, hash_key: bytes, sort_key: bytes = b"") -> int:
        """core.hashing.partition_index (the count was checked once, in __post_init__)."""
        routing_key = hash_key if hash_key else sort_key  # what key_hash hashes
        index = self._partitions.get(routing_key)
        if index is None:
            index = key_hash(hash_key, sort_key) & (self.partition_count - 1)
            if len(routing_key) <= MAX_MEMOISED_KEY_BYTES:
                if len(self._partitions) >= MAX_MEMOISED_PARTITIONS:
                    self._partitions.clear()
                self._partitions[routing_key] = index
        return index

    def gpid(self, index: int) -> Gpid:
        return self.configs[index].gpid

    def primary(self, index: int) -> NodeAddress | None:
        return self.configs[index].primary

    def newest_with(self, older: TableRoute) -> TableRoute:
        """This snapshot, keeping a partition of `older` where that one has the higher ballot.

        A meta that lags behind (or a reply that overtook a later one) must not take the client
        back to a configuration it already saw superseded (ballots only grow, PacificA section 3).
        """
        if older.app_id != self.app_id or older.partition_count != self.partition_count:
            return self
        configs = tuple(
            mine if mine.ballot >= theirs.ballot else theirs
            for mine, theirs in zip(self.configs, older.configs, strict=True)
        )
        return TableRoute(self.name, self.app_id, self.partition_count, configs)


async def query_route(meta: MetaCaller, name: str, deadline: Deadline) -> TableRoute:
    response = await meta.call(
        QueryConfigRequest(name),
        QueryConfigResponse,
        deadline=deadline,
        idempotent=True,
        what=f"query the configuration of table {name!r}",
    )
    return TableRoute.from_response(name, response)


class RouteCache:
    """The configuration of one open table, refreshed on demand, one meta query at a time."""

    def __init__(self, session: ClientSession, meta: MetaCaller, route: TableRoute) -> None:
        self._session = session
        self._meta = meta
        self.current = route
        self._refreshing: asyncio.Task[None] | None = None
        self.refresh_count = 0  # meta queries made, for operators and tests

    async def refresh(self, seen: TableRoute, deadline: Deadline) -> TableRoute:
        """A configuration newer than `seen` if meta has one; raises what the meta query raised.

        Callers that saw the same stale snapshot share one query; a caller whose snapshot was
        already replaced gets the current one without asking meta at all.
        """
        if self.current is not seen:
            return self.current
        task = self._refreshing
        if task is None:
            self.refresh_count += 1
            task = self._session.spawn(self._query(deadline), name=f"refresh table {seen.name}")
            self._refreshing = task
            task.add_done_callback(self._refresh_done)
        remaining_s = deadline.remaining_s()
        if remaining_s > 0:
            # asyncio.wait neither cancels the shared task nor raises when the time runs out.
            await asyncio.wait({task}, timeout=remaining_s)
        if task.done() and not task.cancelled():
            error = task.exception()
            if error is not None:
                raise error
        return self.current

    async def _query(self, deadline: Deadline) -> None:
        fresh = await query_route(self._meta, self.current.name, deadline)
        current = self.current
        if fresh.app_id != current.app_id:
            # The table this handle opened was dropped (a new one may have its name): its data is
            # gone, and writing into the new table through an old handle would surprise everyone.
            raise TableNotFoundError(
                f"table {current.name!r} (app id {current.app_id}) no longer exists"
                f" (the name now belongs to app id {fresh.app_id}); open it again"
            )
        self.current = fresh.newest_with(current)

    def _refresh_done(self, task: asyncio.Task[None]) -> None:
        if self._refreshing is task:
            self._refreshing = None
