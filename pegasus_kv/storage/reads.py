"""Point and range reads of the data API: get, ttl (and exist), multi_get, sort_key_count,
batch_get. Expiry is judged by the store's clock: an expired record is invisible at once, long
before the sweep deletes it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from pegasus_kv.core.messages import (
    BatchGetRequest,
    BatchGetResponse,
    FilterType,
    GetRequest,
    GetResponse,
    MultiGetRequest,
    MultiGetResponse,
    SortKeyCountRequest,
    SortKeyCountResponse,
    TtlRequest,
    TtlResponse,
)
from pegasus_kv.core.schema import (
    PEGASUS_EPOCH_UNIX_S,
    VALUE_HEADER_BYTES,
    encode_key,
    epoch_now,
    ttl_left,
)
from pegasus_kv.storage.checks import matches_filter
from pegasus_kv.storage.engine import Engine
from pegasus_kv.storage.options import StoreOptions
from pegasus_kv.storage.ranges import IterationBudget, sort_key_range

_EXPIRE_TS = struct.Struct(">I")
_KEY_HEADER = struct.Struct(">H")  # the u16 BE hash key length of a stored key (core/schema.py)
_NO_BYTE_LIMIT = 1 << 62  # sort_key_count returns no bytes


def live_expire_ts(raw: bytes, now_epoch_s: int) -> int | None:
    """The expire_ts of a stored value that is alive at `now_epoch_s`, None if it expired."""
    (expire_ts,) = _EXPIRE_TS.unpack_from(raw)
    if expire_ts and expire_ts <= now_epoch_s:
        return None
    return int(expire_ts)


class Reader:
    """Serves the reads of one store. Every request it gets was validated first
    (core/validation.py validate_read: PartitionStore.read runs it, or its caller did), so the
    point reads build their keys without checking the hash key's length a second time."""

    def __init__(self, engine: Engine, options: StoreOptions, clock: Callable[[], float]) -> None:
        self._engine = engine
        # For the point reads: its RocksDB errors are translated by PartitionStore.read, the one
        # caller of this class.
        self._get = engine.get_untranslated
        self._options = options
        self._clock = clock

    def now_epoch_s(self) -> int:
        return epoch_now(self._clock())

    # --- point reads --------------------------------------------------------------------------

    def get(self, request: GetRequest) -> GetResponse:
        hash_key = request.hash_key
        # schema.encode_key without its check: the request was validated (see the class doc).
        raw: bytes | None = self._get(_KEY_HEADER.pack(len(hash_key)) + hash_key + request.sort_key)
        if raw is None:
            return GetResponse(value=None)
        (expire_ts,) = _EXPIRE_TS.unpack_from(raw)
        if expire_ts and expire_ts <= int(self._clock()) - PEGASUS_EPOCH_UNIX_S:
            return GetResponse(value=None)  # expired (live_expire_ts, epoch_now inlined)
        return GetResponse(value=raw[VALUE_HEADER_BYTES:])

    def ttl(self, request: TtlRequest) -> TtlResponse:
        raw = self._engine.get(encode_key(request.hash_key, request.sort_key))
        if raw is None:
            return TtlResponse(ttl_s=None)
        now = self.now_epoch_s()
        expire_ts = live_expire_ts(raw, now)
        if expire_ts is None:
            return TtlResponse(ttl_s=None)
        return TtlResponse(ttl_s=ttl_left(expire_ts, now))

    def batch_get(self, request: BatchGetRequest) -> BatchGetResponse:
        raws = self._engine.multi_get([encode_key(hash_key, sort_key) for hash_key, sort_key in request.keys])
        now = self.now_epoch_s()
        values: list[bytes | None] = []
        for raw in raws:
            if raw is None or live_expire_ts(raw, now) is None:
                values.append(None)
            else:
                values.append(raw[VALUE_HEADER_BYTES:])
        return BatchGetResponse(values=values)

    # --- multi_get ----------------------------------------------------------------------------

    def _limits(self, request: MultiGetRequest) -> tuple[int, int]:
        """(max records, max bytes): the request's limits (<= 0 = none) under the server caps."""
        max_count = self._options.multi_get_max_iterations
        if 0 < request.max_kv_count < max_count:
            max_count = request.max_kv_count
        max_bytes = self._options.multi_get_max_bytes
        if 0 < request.max_kv_size < max_bytes:
            max_bytes = request.max_kv_size
        return max_count, max_bytes

    def multi_get(self, request: MultiGetRequest) -> MultiGetResponse:
        """By the named sort keys when there are any, else by range (_multi_get_range).

        Named sort keys: only those, in sort-key order (Pegasus ignores filters and `reverse`
        here); complete=False when a limit left out a record that exists. This is the read of a
        YCSB record (a handful of fields) on the event loop, so it is one function: the limits
        (_limits), the key prefix and the expiry test (live_expire_ts) are inlined and the clock
        is read once."""
        sort_keys = request.sort_keys
        if not sort_keys:
            return self._multi_get_range(request)
        hash_key = request.hash_key
        # schema.hash_key_prefix without its check: the request was validated (see the class doc).
        prefix = _KEY_HEADER.pack(len(hash_key)) + hash_key
        if len(sort_keys) == 1:
            # One field (a YCSB read): a point get. No limit can leave out the first record (both
            # caps are positive, StoreOptions), so they are not computed.
            sort_key = sort_keys[0]
            raw: bytes | None = self._get(prefix + sort_key)
            if raw is None:
                return MultiGetResponse(kvs=[], complete=True)
            (expire_ts,) = _EXPIRE_TS.unpack_from(raw)
            if expire_ts and expire_ts <= int(self._clock()) - PEGASUS_EPOCH_UNIX_S:
                return MultiGetResponse(kvs=[], complete=True)  # expired (live_expire_ts)
            return MultiGetResponse(
                kvs=[(sort_key, b"" if request.no_value else raw[VALUE_HEADER_BYTES:])], complete=True
            )
        options = self._options
        max_count = options.multi_get_max_iterations
        if 0 < request.max_kv_count < max_count:
            max_count = request.max_kv_count
        max_bytes = options.multi_get_max_bytes
        if 0 < request.max_kv_size < max_bytes:
            max_bytes = request.max_kv_size
        sort_keys = sorted(set(sort_keys))
        raws = self._engine.multi_get([prefix + sort_key for sort_key in sort_keys])
        now = int(self._clock()) - PEGASUS_EPOCH_UNIX_S  # epoch_now, inlined
        unpack_expire_ts = _EXPIRE_TS.unpack_from
        no_value = request.no_value
        kvs: list[tuple[bytes, bytes]] = []
        size = 0
        for sort_key, raw in zip(sort_keys, raws, strict=True):
            if raw is None:
                continue
            (expire_ts,) = unpack_expire_ts(raw)
            if expire_ts and expire_ts <= now:
                continue  # expired (live_expire_ts)
            if len(kvs) >= max_count or size >= max_bytes:
                return MultiGetResponse(kvs=kvs, complete=False)
            value = b"" if no_value else raw[VALUE_HEADER_BYTES:]
            kvs.append((sort_key, value))
            size += len(sort_key) + len(value)
        return MultiGetResponse(kvs=kvs, complete=True)

    def _multi_get_range(self, request: MultiGetRequest) -> MultiGetResponse:
        """Records between two sort keys, ascending (descending when `reverse`).

        complete=False when a limit (the request's count or size, or the server's iteration,
        size and time caps) stopped the pass while records of the range were left unvisited.
        """
        key_range = sort_key_range(
            request.hash_key,
            request.start_sort_key,
            request.start_inclusive,
            request.stop_sort_key,
            request.stop_inclusive,
            request.sort_key_filter_type,
            request.sort_key_filter_pattern,
        )
        if key_range.is_empty():
            return MultiGetResponse(kvs=[], complete=True)
        max_count, max_bytes = self._limits(request)
        budget = IterationBudget(
            self._options.multi_get_max_iterations,
            max_bytes,
            self._options.iteration_time_limit_s,
            self._clock,
        )
        now = self.now_epoch_s()
        prefix_length = 2 + len(request.hash_key)
        filter_type = request.sort_key_filter_type
        pattern = request.sort_key_filter_pattern
        needs_filter = filter_type != FilterType.NO_FILTER and bool(pattern)
        no_value = request.no_value
        reverse = request.reverse
        kvs: list[tuple[bytes, bytes]] = []
        complete = True
        # RocksDB bounds the forward pass; rocksdict cannot set a lower bound, so the reverse
        # pass (and the start of the forward one) is checked key by key.
        with self._engine.iterate(None if reverse else key_range.upper_bound()) as iterator:
            if reverse:
                iterator.seek_for_prev(key_range.stop)
                step = iterator.prev
            else:
                iterator.seek(key_range.start)
                step = iterator.next
            while iterator.valid():
                key = iterator.key()
                if reverse:
                    if not key_range.after_start(key):
                        break
                    if not key_range.before_stop(key):  # the excluded stop key itself
                        step()
                        continue
                else:
                    if not key_range.before_stop(key):
                        break
                    if not key_range.after_start(key):  # the excluded start key itself
                        step()
                        continue
                # Another record of the range is waiting: stop here if a limit is reached.
                if len(kvs) >= max_count or budget.exhausted():
                    complete = False
                    break
                budget.visit()
                raw = iterator.value()
                if live_expire_ts(raw, now) is not None:
                    sort_key = key[prefix_length:]
                    if not needs_filter or matches_filter(filter_type, pattern, sort_key):
                        value = b"" if no_value else raw[VALUE_HEADER_BYTES:]
                        kvs.append((sort_key, value))
                        budget.add_bytes(len(sort_key) + len(value))
                step()
        return MultiGetResponse(kvs=kvs, complete=complete)

    # --- sort_key_count -----------------------------------------------------------------------

    def sort_key_count(self, request: SortKeyCountRequest) -> SortKeyCountResponse:
        """Live records of one hash key; -1 when the iteration or time cap stopped the count
        (Pegasus answers -1 when its time threshold is exceeded)."""
        key_range = sort_key_range(request.hash_key, b"", True, b"", False, FilterType.NO_FILTER, b"")
        budget = IterationBudget(
            self._options.sort_key_count_max_iterations,
            _NO_BYTE_LIMIT,
            self._options.iteration_time_limit_s,
            self._clock,
        )
        now = self.now_epoch_s()
        count = 0
        with self._engine.iterate(key_range.upper_bound()) as iterator:
            iterator.seek(key_range.start)
            while iterator.valid():
                if budget.exhausted():
                    return SortKeyCountResponse(count=-1)
                budget.visit()
                if live_expire_ts(iterator.value(), now) is not None:
                    count += 1
                iterator.next()
        return SortKeyCountResponse(count=count)
