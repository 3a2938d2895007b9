"""The data API of one table (DESIGN.md section 7; semantics in reference/pegasus-features.md).

Every operation takes `timeout=` (seconds; the client's default when None): the whole call,
retries included, ends by then. Requests are checked here before anything is sent, so an
oversized key or value fails at once with KeyTooLargeError / ValueTooLargeError /
InvalidArgumentError.

A write that raises PegasusTimeoutError (or NetworkError) may or may not have taken effect.
incr, check_and_set and check_and_mutate are not idempotent, so they are never re-sent once a
request may have reached the server: they raise instead of risking a double application.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from pegasus_kv.client.arguments import (
    as_check_type,
    check_batch_size,
    require_hash_key,
    require_int,
    sort_key_list,
)
from pegasus_kv.client.dispatch import Locate, Target, call_partition
from pegasus_kv.client.fanout import run_all
from pegasus_kv.client.options import check_timeout_s
from pegasus_kv.client.retry import Deadline
from pegasus_kv.client.routing import RouteCache, TableRoute
from pegasus_kv.client.scanner import Scanner
from pegasus_kv.client.session import ClientSession, invariant
from pegasus_kv.client.values import (
    NO_FILTER_FIELDS,
    CheckAndMutateResult,
    CheckAndSetResult,
    Filter,
    MultiGetResult,
    Mutations,
    filter_fields,
    require_bytes,
)
from pegasus_kv.core.errors import InvalidArgumentError, InvalidStateError, PegasusError
from pegasus_kv.core.messages import (
    BatchGetRequest,
    BatchGetResponse,
    CheckAndMutateRequest,
    CheckAndMutateResponse,
    CheckAndSetRequest,
    CheckType,
    DeleteRequest,
    GetRequest,
    GetResponse,
    GetScannerRequest,
    IncrRequest,
    IncrResponse,
    MultiDeleteRequest,
    MultiDeleteResponse,
    MultiGetRequest,
    MultiGetResponse,
    MultiSetRequest,
    SetRequest,
    SortKeyCountRequest,
    SortKeyCountResponse,
    TtlRequest,
    TtlResponse,
    WriteResponse,
)
from pegasus_kv.core.registry import Message
from pegasus_kv.core.schema import check_hash_key
from pegasus_kv.core.validation import (
    MAX_KEYS_PER_REQUEST,
    validate_key_read,
    validate_multi_get,
    validate_read,
    validate_set,
    validate_write,
)

R = TypeVar("R", bound=Message)

# batch_get sends at most MAX_KEYS_PER_REQUEST keys per request; one call takes this many in all.
MAX_BATCH_GET_KEYS = 10 * MAX_KEYS_PER_REQUEST
# delete_range reads this many sort keys per round (their bytes stay far below the 1 MB write limit
# thanks to DELETE_RANGE_MAX_BYTES).
DELETE_RANGE_BATCH = 1000
DELETE_RANGE_MAX_BYTES = 512 * 1024


def _fixed_partition(index: int, partition_count: int, what: str) -> Locate:
    """Locate a partition chosen before the call started (batch_get groups, unordered scanners)."""

    def locate(route: TableRoute) -> int:
        if route.partition_count != partition_count:
            raise InvalidStateError(
                f"{what}: the table's partition count changed from {partition_count} to "
                f"{route.partition_count} during the call; run it again"
            )
        return index

    return locate


def _multi_get_request(
    hash_key: bytes,
    sort_keys: Iterable[bytes] | None,
    *,
    start_sort_key: bytes,
    stop_sort_key: bytes,
    start_inclusive: bool,
    stop_inclusive: bool,
    sort_key_filter: Filter | None,
    max_kv_count: int,
    max_kv_size: int,
    no_value: bool,
    reverse: bool,
) -> MultiGetRequest:
    """The request of a multi_get, its arguments checked (sort_keys None: by range).

    Every read of YCSB's workloads is one: the exact types pass without a call per argument.
    """
    if not (
        type(hash_key) is bytes
        and hash_key
        and type(start_sort_key) is bytes
        and type(stop_sort_key) is bytes
        and type(max_kv_count) is int
        and type(max_kv_size) is int
    ):  # the checks that name the culprit
        require_hash_key(hash_key)
        require_bytes("start_sort_key", start_sort_key)
        require_bytes("stop_sort_key", stop_sort_key)
        require_int("max_kv_count", max_kv_count)
        require_int("max_kv_size", max_kv_size)
    # The size of the hash key is validate_read's to check, before the request is sent.
    filter_type, filter_pattern = (
        NO_FILTER_FIELDS if sort_key_filter is None else filter_fields(sort_key_filter)
    )
    return MultiGetRequest(
        hash_key,
        [] if sort_keys is None else sort_key_list(sort_keys),
        start_sort_key,
        stop_sort_key,
        bool(start_inclusive),
        bool(stop_inclusive),
        filter_type,
        filter_pattern,
        max_kv_count,
        max_kv_size,
        bool(no_value),
        bool(reverse),
    )


class Table:
    """A handle on one table; get it from Client.open_table. Cheap: no connection of its own."""

    def __init__(self, session: ClientSession, routes: RouteCache) -> None:
        self._session = session
        self._routes = routes

    # --- facts ------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._routes.current.name

    @property
    def app_id(self) -> int:
        return self._routes.current.app_id

    @property
    def partition_count(self) -> int:
        return self._routes.current.partition_count

    @property
    def route(self) -> TableRoute:
        """The configuration the client routes by now (for tools and tests)."""
        return self._routes.current

    @property
    def refresh_count(self) -> int:
        """How often this table's configuration was asked of meta since it was opened."""
        return self._routes.refresh_count

    def partition_of(self, hash_key: bytes, sort_key: bytes = b"") -> int:
        """The partition a record lives in (the shell's `hash` command)."""
        return self._routes.current.partition_of(hash_key, sort_key)

    # --- plumbing ---------------------------------------------------------------------------------

    # _write and _read check the request and return call_partition's coroutine for the caller to
    # await: a bad request raises at once, and a call awaits one coroutine less.

    def _write(
        self,
        request: Message,
        response_type: type[R],
        target: Target,
        deadline: Deadline,
        *,
        idempotent: bool,
        what: str,
    ) -> Coroutine[Any, Any, R]:
        validate_write(request)
        return call_partition(
            self._session,
            self._routes,
            target,
            request,
            response_type,
            deadline=deadline,
            idempotent=idempotent,
            write=True,
            what=what,
        )

    def _read(
        self, request: Message, response_type: type[R], target: Target, deadline: Deadline, *, what: str
    ) -> Coroutine[Any, Any, R]:
        validate_read(request)
        return call_partition(
            self._session,
            self._routes,
            target,
            request,
            response_type,
            deadline=deadline,
            idempotent=True,
            write=False,
            what=what,
        )

    # --- single records -------------------------------------------------------------------------

    async def set(
        self, hash_key: bytes, sort_key: bytes, value: bytes, ttl: int = 0, *, timeout: float | None = None
    ) -> None:
        """Put a record; ttl in seconds, 0 = no TTL."""
        if not (type(hash_key) is bytes and type(sort_key) is bytes and type(value) is bytes):
            require_bytes("hash_key", hash_key)  # the checks that name the culprit
            require_bytes("sort_key", sort_key)
            require_bytes("value", value)
        # require_int("ttl", ttl) only when ttl is not an int (once per set).
        request = SetRequest(hash_key, sort_key, value, ttl if type(ttl) is int else require_int("ttl", ttl))
        session = self._session
        deadline = session.deadline(timeout)
        # _write(), inlined with the validator validate_write would pick (set, get and multi_get are
        # YCSB's operations: two calls and a lookup less per call).
        validate_set(request)
        await call_partition(
            session,
            self._routes,
            (hash_key, sort_key),
            request,
            WriteResponse,
            deadline=deadline,
            idempotent=True,
            write=True,
            what="set",
        )

    async def get(self, hash_key: bytes, sort_key: bytes, *, timeout: float | None = None) -> bytes | None:
        """The value, or None when the record is missing or expired."""
        if not (type(hash_key) is bytes and type(sort_key) is bytes):
            require_bytes("hash_key", hash_key)  # the checks that name the culprit
            require_bytes("sort_key", sort_key)
        request = GetRequest(hash_key, sort_key)
        session = self._session
        deadline = session.deadline(timeout)
        validate_key_read(request)  # _read(), inlined as in set()
        reply = await call_partition(
            session,
            self._routes,
            (hash_key, sort_key),
            request,
            GetResponse,
            deadline=deadline,
            idempotent=True,
            write=False,
            what="get",
        )
        return reply.value

    async def delete(self, hash_key: bytes, sort_key: bytes, *, timeout: float | None = None) -> None:
        request = DeleteRequest(require_bytes("hash_key", hash_key), require_bytes("sort_key", sort_key))
        deadline = self._session.deadline(timeout)
        await self._write(
            request, WriteResponse, (hash_key, sort_key), deadline, idempotent=True, what="delete"
        )

    async def ttl(self, hash_key: bytes, sort_key: bytes, *, timeout: float | None = None) -> int | None:
        """Seconds left: None when missing or expired, -1 when the record has no TTL."""
        request = TtlRequest(require_bytes("hash_key", hash_key), require_bytes("sort_key", sort_key))
        deadline = self._session.deadline(timeout)
        reply = await self._read(request, TtlResponse, (hash_key, sort_key), deadline, what="ttl")
        return reply.ttl_s

    async def exist(self, hash_key: bytes, sort_key: bytes, *, timeout: float | None = None) -> bool:
        return await self.ttl(hash_key, sort_key, timeout=timeout) is not None

    async def incr(
        self,
        hash_key: bytes,
        sort_key: bytes,
        increment: int = 1,
        ttl: int = 0,
        *,
        timeout: float | None = None,
    ) -> int:
        """Add `increment` to an int64 value and return the new value.

        A missing, expired or empty value counts as 0; a value that is not an int64, or a sum that
        overflows, raises InvalidArgumentError. ttl: 0 keeps the old TTL, < 0 clears it, > 0 sets it.
        """
        request = IncrRequest(
            require_bytes("hash_key", hash_key),
            require_bytes("sort_key", sort_key),
            require_int("increment", increment),
            require_int("ttl", ttl),
        )
        deadline = self._session.deadline(timeout)
        reply = await self._write(
            request, IncrResponse, (hash_key, sort_key), deadline, idempotent=False, what="incr"
        )
        return reply.new_value

    # --- one hash key ---------------------------------------------------------------------------

    async def multi_set(
        self, hash_key: bytes, kvs: Mapping[bytes, bytes], ttl: int = 0, *, timeout: float | None = None
    ) -> None:
        """Put many sort keys of one hash key atomically, all with the same TTL (seconds, 0 = none)."""
        require_hash_key(hash_key)
        if not isinstance(kvs, Mapping):
            raise InvalidArgumentError(f"kvs must map sort keys to values, got {type(kvs).__name__}")
        pairs = [(require_bytes("sort_key", sk), require_bytes("value", v)) for sk, v in kvs.items()]
        request = MultiSetRequest(hash_key, pairs, require_int("ttl", ttl))
        deadline = self._session.deadline(timeout)
        await self._write(
            request, WriteResponse, (hash_key, b""), deadline, idempotent=True, what="multi_set"
        )

    async def multi_get(
        self,
        hash_key: bytes,
        sort_keys: Iterable[bytes] | None = None,
        *,
        start_sort_key: bytes = b"",
        stop_sort_key: bytes = b"",
        start_inclusive: bool = True,
        stop_inclusive: bool = False,
        sort_key_filter: Filter | None = None,
        max_kv_count: int = 100,
        max_kv_size: int = 1_000_000,
        no_value: bool = False,
        reverse: bool = False,
        timeout: float | None = None,
    ) -> MultiGetResult:
        """Records of one hash key: the named sort keys, or a range of them.

        With sort_keys, only those (the range options, filter and reverse do not apply; an empty
        list finds nothing). Otherwise the range from start_sort_key to stop_sort_key (empty stop
        = to the end), filtered, ascending or reversed. max_kv_count / max_kv_size <= 0 mean no
        limit of the caller's (the server's caps still apply); `complete` says whether a limit
        cut the result short.
        """
        deadline = self._session.deadline(timeout)
        request = _multi_get_request(
            hash_key,
            sort_keys,
            start_sort_key=start_sort_key,
            stop_sort_key=stop_sort_key,
            start_inclusive=start_inclusive,
            stop_inclusive=stop_inclusive,
            sort_key_filter=sort_key_filter,
            max_kv_count=max_kv_count,
            max_kv_size=max_kv_size,
            no_value=no_value,
            reverse=reverse,
        )
        if sort_keys is not None and not request.sort_keys:
            # On the wire an empty list means "by range"; the caller asked for no key at all.
            return MultiGetResult({}, True)
        validate_multi_get(request)  # _read(), inlined as in set()
        reply = await call_partition(
            self._session,
            self._routes,
            (hash_key, b""),
            request,
            MultiGetResponse,
            deadline=deadline,
            idempotent=True,
            write=False,
            what="multi_get",
        )
        return MultiGetResult(dict(reply.kvs), reply.complete)

    async def multi_delete(
        self, hash_key: bytes, sort_keys: Iterable[bytes], *, timeout: float | None = None
    ) -> int:
        """Delete sort keys of one hash key atomically; returns how many existed.

        (If the call had to be retried after a lost reply, records the first attempt deleted are
        not counted.)
        """
        deadline = self._session.deadline(timeout)
        return await self._multi_delete(hash_key, sort_keys, deadline)

    async def _multi_delete(self, hash_key: bytes, sort_keys: Iterable[bytes], deadline: Deadline) -> int:
        require_hash_key(hash_key)
        keys = sort_key_list(sort_keys)
        request = MultiDeleteRequest(hash_key, keys)
        reply = await self._write(
            request, MultiDeleteResponse, (hash_key, b""), deadline, idempotent=True, what="multi_delete"
        )
        return reply.count

    async def sort_key_count(self, hash_key: bytes, *, timeout: float | None = None) -> int:
        """Live sort keys of the hash key (-1 when the server gave up counting at its cap)."""
        request = SortKeyCountRequest(require_hash_key(hash_key))
        deadline = self._session.deadline(timeout)
        reply = await self._read(
            request, SortKeyCountResponse, (hash_key, b""), deadline, what="sort_key_count"
        )
        return reply.count

    async def check_and_set(
        self,
        hash_key: bytes,
        check_sort_key: bytes,
        check_type: CheckType,
        check_operand: bytes,
        set_sort_key: bytes,
        set_value: bytes,
        *,
        ttl: int = 0,
        return_check_value: bool = False,
        timeout: float | None = None,
    ) -> CheckAndSetResult:
        """If the record at check_sort_key passes the check, set set_sort_key to set_value.

        A failed check is not an error: the result says passed=False.
        """
        request = CheckAndSetRequest(
            require_hash_key(hash_key),
            require_bytes("check_sort_key", check_sort_key),
            as_check_type(check_type),
            require_bytes("check_operand", check_operand),
            require_bytes("set_sort_key", set_sort_key),
            require_bytes("set_value", set_value),
            require_int("ttl", ttl),
            bool(return_check_value),
        )
        passed, exist, value = await self._check_and_write(request, hash_key, timeout, "check_and_set")
        return CheckAndSetResult(passed, exist, value)

    async def _check_and_write(
        self, request: Message, hash_key: bytes, timeout: float | None, what: str
    ) -> tuple[bool, bool, bytes | None]:
        """Send a check_and_set / check_and_mutate (never re-sent once it may have been applied):
        whether the check passed, and the checked record's existence and value when asked for."""
        reply = await self._write(
            request,
            CheckAndMutateResponse,
            (hash_key, b""),
            self._session.deadline(timeout),
            idempotent=False,
            what=what,
        )
        exist, value = _checked_value(reply)
        return reply.passed, exist, value

    async def check_and_mutate(
        self,
        hash_key: bytes,
        check_sort_key: bytes,
        check_type: CheckType,
        check_operand: bytes,
        mutations: Mutations,
        *,
        return_check_value: bool = False,
        timeout: float | None = None,
    ) -> CheckAndMutateResult:
        """If the record at check_sort_key passes the check, apply every mutation atomically."""
        if not isinstance(mutations, Mutations):
            raise InvalidArgumentError(f"mutations must be a Mutations, got {type(mutations).__name__}")
        request = CheckAndMutateRequest(
            require_hash_key(hash_key),
            require_bytes("check_sort_key", check_sort_key),
            as_check_type(check_type),
            require_bytes("check_operand", check_operand),
            mutations.to_list(),
            bool(return_check_value),
        )
        passed, exist, value = await self._check_and_write(request, hash_key, timeout, "check_and_mutate")
        return CheckAndMutateResult(passed, exist, value)

    async def delete_range(
        self,
        hash_key: bytes,
        start_sort_key: bytes = b"",
        stop_sort_key: bytes = b"",
        *,
        start_inclusive: bool = True,
        stop_inclusive: bool = False,
        sort_key_filter: Filter | None = None,
        timeout: float | None = None,
    ) -> int:
        """Delete the sort keys of a range (empty stop = to the end); returns how many.

        A client-side loop of multi_get + multi_delete (as in Pegasus): not atomic as a whole, and
        a timeout may leave part of the range deleted. `timeout` bounds the whole loop.
        """
        deadline = self._session.deadline(timeout)
        deleted = 0
        start, inclusive = start_sort_key, start_inclusive
        while True:
            request = _multi_get_request(
                hash_key,
                None,
                start_sort_key=start,
                stop_sort_key=stop_sort_key,
                start_inclusive=inclusive,
                stop_inclusive=stop_inclusive,
                sort_key_filter=sort_key_filter,
                max_kv_count=DELETE_RANGE_BATCH,
                max_kv_size=DELETE_RANGE_MAX_BYTES,
                no_value=True,
                reverse=False,
            )
            found = await self._read(request, MultiGetResponse, (hash_key, b""), deadline, what="multi_get")
            sort_keys = [sort_key for sort_key, _value in found.kvs]
            if sort_keys:
                deleted += await self._multi_delete(hash_key, sort_keys, deadline)
                # Resume after the last key read, so keys written behind us are not chased forever.
                start, inclusive = sort_keys[-1], False
            if found.complete:
                return deleted

    # --- many hash keys -------------------------------------------------------------------------

    async def batch_get(
        self, keys: Sequence[tuple[bytes, bytes]], *, timeout: float | None = None
    ) -> list[bytes | None]:
        """Values of many records (any hash keys), in the order of `keys`; None where missing.

        Keys are grouped by partition and each partition gets one request, all concurrently.
        """
        pairs = [
            (require_bytes("hash_key", hash_key), require_bytes("sort_key", sort_key))
            for hash_key, sort_key in keys
        ]
        if len(pairs) > MAX_BATCH_GET_KEYS:
            raise InvalidArgumentError(f"batch_get takes at most {MAX_BATCH_GET_KEYS} keys, got {len(pairs)}")
        for hash_key, _sort_key in pairs:
            check_hash_key(hash_key)
        deadline = self._session.deadline(timeout)
        if not pairs:
            return []
        route = self._routes.current
        by_partition: dict[int, list[int]] = {}
        for position, (hash_key, sort_key) in enumerate(pairs):
            by_partition.setdefault(route.partition_of(hash_key, sort_key), []).append(position)
        chunks = [
            (index, positions[start : start + MAX_KEYS_PER_REQUEST])
            for index, positions in sorted(by_partition.items())
            for start in range(0, len(positions), MAX_KEYS_PER_REQUEST)
        ]
        values: list[bytes | None] = [None] * len(pairs)
        limit = self._session.options.max_partition_fanout
        for first in range(0, len(chunks), limit):
            parts = [
                self._batch_get_part(index, route.partition_count, pairs, chunk, values, deadline)
                for index, chunk in chunks[first : first + limit]
            ]
            await run_all(parts, name=f"batch_get on {self.name}")
        return values

    async def _batch_get_part(
        self,
        index: int,
        partition_count: int,
        pairs: list[tuple[bytes, bytes]],
        positions: list[int],
        values: list[bytes | None],
        deadline: Deadline,
    ) -> None:
        request = BatchGetRequest([pairs[position] for position in positions])
        locate = _fixed_partition(index, partition_count, "batch_get")
        reply = await self._read(request, BatchGetResponse, locate, deadline, what="batch_get")
        if len(reply.values) != len(positions):
            raise PegasusError(f"batch_get: {len(positions)} keys asked, {len(reply.values)} values answered")
        for position, value in zip(positions, reply.values, strict=True):
            values[position] = value

    # --- scans ----------------------------------------------------------------------------------

    def scan(
        self,
        hash_key: bytes,
        start_sort_key: bytes = b"",
        stop_sort_key: bytes = b"",
        *,
        start_inclusive: bool = True,
        stop_inclusive: bool = False,
        sort_key_filter: Filter | None = None,
        batch_size: int = 100,
        no_value: bool = False,
        timeout: float | None = None,
    ) -> Scanner:
        """Iterate the records of one hash key in sort-key order (empty stop = to the end).

        `async for hash_key, sort_key, value in table.scan(b"hk"): ...`; `timeout` bounds each
        batch. The scan survives a change of primary without repeating or skipping a record.
        """
        filter_type, filter_pattern = filter_fields(sort_key_filter)
        template = GetScannerRequest(
            full_scan=False,
            hash_key=require_hash_key(hash_key),
            start_sort_key=require_bytes("start_sort_key", start_sort_key),
            stop_sort_key=require_bytes("stop_sort_key", stop_sort_key),
            start_inclusive=bool(start_inclusive),
            stop_inclusive=bool(stop_inclusive),
            sort_key_filter_type=filter_type,
            sort_key_filter_pattern=filter_pattern,
            batch_size=check_batch_size(batch_size),
            no_value=bool(no_value),
        )
        validate_read(template)
        return Scanner(
            self._session,
            self._routes,
            template,
            [(hash_key, b"")],
            timeout_s=self._scan_timeout_s(timeout),
            what=f"scan of hash key {hash_key[:32]!r} on table {self.name!r}",
        )

    async def unordered_scanners(
        self,
        n: int,
        *,
        hash_key_filter: Filter | None = None,
        sort_key_filter: Filter | None = None,
        batch_size: int = 100,
        no_value: bool = False,
        timeout: float | None = None,
    ) -> list[Scanner]:
        """Split a scan of the whole table over min(n, partition_count) scanners.

        Partitions are spread evenly (their counts differ by at most one); each scanner returns
        its partitions one after another, each in stored-key order. Together they return every
        live record exactly once, and run well in parallel (one task per scanner).
        """
        require_int("n", n)
        if n <= 0:
            raise InvalidArgumentError(f"n must be positive, got {n}")
        hash_filter_type, hash_filter_pattern = filter_fields(hash_key_filter)
        sort_filter_type, sort_filter_pattern = filter_fields(sort_key_filter)
        template = GetScannerRequest(
            full_scan=True,
            hash_key_filter_type=hash_filter_type,
            hash_key_filter_pattern=hash_filter_pattern,
            sort_key_filter_type=sort_filter_type,
            sort_key_filter_pattern=sort_filter_pattern,
            batch_size=check_batch_size(batch_size),
            no_value=bool(no_value),
        )
        validate_read(template)
        timeout_s = self._scan_timeout_s(timeout)
        self._session.ensure_open()
        count = self._routes.current.partition_count
        scanner_count = min(n, count)
        scanners = []
        for i in range(scanner_count):
            partitions = tuple(range(i * count // scanner_count, (i + 1) * count // scanner_count))
            scanners.append(
                Scanner(
                    self._session,
                    self._routes,
                    template,
                    [_fixed_partition(index, count, "unordered scan") for index in partitions],
                    timeout_s=timeout_s,
                    what=f"unordered scan of partitions {partitions[0]}..{partitions[-1]} on {self.name!r}",
                    partitions=partitions,
                )
            )
        covered = [index for scanner in scanners for index in scanner.partitions]
        invariant(covered == list(range(count)), "unordered scanners cover every partition exactly once")
        return scanners

    def _scan_timeout_s(self, timeout: float | None) -> float:
        if timeout is None:
            return self._session.options.timeout_s
        check_timeout_s("timeout", timeout)
        return timeout


def _checked_value(reply: CheckAndMutateResponse) -> tuple[bool, bytes | None]:
    if not reply.check_value_returned:
        return False, None
    return reply.check_value_exist, reply.check_value if reply.check_value_exist else None
