"""Scanners: async iterators over one hash key, or over whole partitions, that survive failover.

A scanner opens a scan context on the primary (GetScannerRequest) and fetches batch after batch
(ScanRequest) until the server says the scan is finished. It remembers the stored key each batch
covered up to (`last_key`); when anything goes wrong (the primary moved or died, the connection
dropped, the context expired) it refreshes the configuration and opens a new context on the
current primary with start_after=last_key. Since the key range is ordered and start_after excludes
everything up to the last key the client received, the rows that follow are neither repeated nor
skipped (Pegasus users asked for "scans that survive failover").

A scanner abandoned early (aclose(), `async with`, or leaving an `async for` over a temporary
scanner, which lets the interpreter close its generator) asks the server to drop its context.
That is best effort: the server drops idle contexts by itself too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from types import TracebackType

import msgspec

from pegasus_kv.client.dispatch import Target, partition_of, refreshed
from pegasus_kv.client.retry import AttemptFailed, Deadline, needs_refresh, timed_out
from pegasus_kv.client.routing import RouteCache
from pegasus_kv.client.session import ClientSession, expect_reply
from pegasus_kv.core.errors import NotPrimaryError, PegasusError, ScannerExpiredError
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import ClearScannerRequest, GetScannerRequest, ScanRequest, ScanResponse
from pegasus_kv.core.registry import Message

SCAN_FINISHED = -1  # the context id of a batch that ends the scan (core/messages.py ScanResponse)
CLEAR_TIMEOUT_S = 1.0  # how long dropping an abandoned context may hold up the caller

ScanRow = tuple[bytes, bytes, bytes]  # (hash_key, sort_key, value)


@dataclass(slots=True)
class _Cursor:
    """How far a scanner got in its current partition and where its server context lives."""

    last_key: bytes | None = None  # the stored key the rows received so far cover up to
    finished: bool = False
    context_id: int | None = None
    address: str | None = None
    gpid: Gpid | None = None

    def start_partition(self) -> None:
        self.last_key = None
        self.finished = False
        self.context_id = None

    def take(self, response: ScanResponse, address: str, gpid: Gpid) -> None:
        if response.rows and response.last_key is None:
            raise PegasusError("the server sent scan rows without the key they reach up to")
        if response.last_key is not None:
            if self.last_key is not None and response.last_key <= self.last_key:
                raise PegasusError("the server's scan went backwards")
            self.last_key = response.last_key
        if response.context_id == SCAN_FINISHED:
            self.finished = True
            self.context_id = None
        else:
            self.context_id = response.context_id
            self.address = address
            self.gpid = gpid


async def _next_batch(
    session: ClientSession,
    routes: RouteCache,
    template: GetScannerRequest,
    target: Target,
    cursor: _Cursor,
    timeout_s: float,
    what: str,
) -> ScanResponse:
    """The next batch of the cursor's partition, reopening the scan where it stopped if need be."""
    session.ensure_open()
    deadline = Deadline(timeout_s)
    failures = 0
    follow_ups = 0
    while True:
        route = routes.current
        index = partition_of(route, target)
        primary = route.primary(index)
        gpid = route.gpid(index)
        if cursor.context_id is not None and (cursor.address != primary or cursor.gpid != gpid):
            # The context lives on a server that no longer serves the partition: start over there.
            cursor.context_id = None
        request: ScanRequest | GetScannerRequest
        if cursor.context_id is not None:
            request = ScanRequest(cursor.context_id)
        else:
            request = msgspec.structs.replace(template, start_after=cursor.last_key)
        try:
            if primary is None:
                raise AttemptFailed(
                    NotPrimaryError(f"partition {gpid} has no primary now"), maybe_applied=False
                )
            reply = await _attempt_clearing_if_cancelled(session, primary, request, gpid, deadline)
        except AttemptFailed as failed:
            error = failed.error
            # Whatever happened, the context may have moved on without us (a lost reply) or be
            # gone: the next attempt reopens after the last key we did receive.
            cursor.context_id = None
            expired = isinstance(error, ScannerExpiredError)
            if not (error.retriable or expired):
                raise error from error.__cause__
        else:
            response = expect_reply(reply, ScanResponse, what)
            cursor.take(response, primary, gpid)
            return response
        failures += 1
        if deadline.expired:
            raise timed_out(what, deadline, error, write=False) from error
        if expired and follow_ups < session.options.max_follow_ups:
            follow_ups += 1  # reopening is all an expired context needs
            continue
        if needs_refresh(error):
            fresh = await refreshed(routes, route, deadline)
            index_now = partition_of(fresh, target)
            if (
                fresh.configs[index_now] != route.configs[index]
                and follow_ups < session.options.max_follow_ups
            ):
                follow_ups += 1
                continue
        await session.pacer.pause(failures, deadline)
        if deadline.expired:
            raise timed_out(what, deadline, error, write=False) from error


async def _attempt_clearing_if_cancelled(
    session: ClientSession,
    address: str,
    request: ScanRequest | GetScannerRequest,
    gpid: Gpid,
    deadline: Deadline,
) -> Message:
    """One scan attempt. If the caller is cancelled (Ctrl-C in the shell) while the request is on
    the wire, the server may still open or keep a context whose id only the reply names: the attempt
    runs on, and once answered the context is dropped, so the server does not hold it until its
    idle timeout."""
    attempt = asyncio.ensure_future(session.attempt(address, request, gpid=gpid, deadline=deadline))
    try:
        return await asyncio.shield(attempt)
    except asyncio.CancelledError:
        attempt.add_done_callback(lambda done: _clear_answered(session, done, address, gpid))
        raise


def _clear_answered(session: ClientSession, done: asyncio.Future[Message], address: str, gpid: Gpid) -> None:
    if done.cancelled() or done.exception() is not None:
        return  # nothing was opened, or we cannot know its id: the server's idle timeout drops it
    response = done.result()
    if not isinstance(response, ScanResponse) or response.context_id == SCAN_FINISHED or session.closed:
        return
    cursor = _Cursor(context_id=response.context_id, address=address, gpid=gpid)
    clearing = _clear(session, cursor)
    try:
        session.spawn(clearing, name=f"clear abandoned scan context {response.context_id}")
    except PegasusError:
        clearing.close()  # too many background tasks: the server's idle timeout drops the context


async def _clear(session: ClientSession, cursor: _Cursor) -> None:
    """Ask the server to drop the cursor's open context (best effort)."""
    context_id, address, gpid = cursor.context_id, cursor.address, cursor.gpid
    cursor.context_id = None
    if context_id is None or address is None or session.closed:
        return
    try:
        deadline = Deadline(CLEAR_TIMEOUT_S)
        await session.attempt(address, ClearScannerRequest(context_id), gpid=gpid, deadline=deadline)
    except (AttemptFailed, PegasusError):
        pass  # the server drops idle contexts by itself


async def _scan_rows(
    session: ClientSession,
    routes: RouteCache,
    template: GetScannerRequest,
    targets: Sequence[Target],
    cursor: _Cursor,
    timeout_s: float,
    what: str,
) -> AsyncGenerator[ScanRow, None]:
    # This generator must not hold a reference to its Scanner: a scanner dropped in the middle of
    # an `async for` is then freed at once, and the event loop closes this generator, which runs
    # the `finally` that drops the server context.
    try:
        for target in targets:
            cursor.start_partition()
            while not cursor.finished:
                response = await _next_batch(session, routes, template, target, cursor, timeout_s, what)
                for hash_key, sort_key, value, _expire_ts in response.rows:
                    yield hash_key, sort_key, value
    finally:
        await _clear(session, cursor)


class Scanner:
    """An async iterator over (hash_key, sort_key, value) rows, in stored-key order per partition.

    `timeout` bounds the fetch of each batch (with its retries), not the whole scan.
    """

    def __init__(
        self,
        session: ClientSession,
        routes: RouteCache,
        template: GetScannerRequest,
        targets: Sequence[Target],
        *,
        timeout_s: float,
        what: str,
        partitions: tuple[int, ...] = (),
    ) -> None:
        self._cursor = _Cursor()
        self._rows = _scan_rows(session, routes, template, tuple(targets), self._cursor, timeout_s, what)
        # The partitions an unordered scanner covers (empty for a hash-key scan).
        self.partitions = partitions

    def __aiter__(self) -> Scanner:
        return self

    async def __anext__(self) -> ScanRow:
        return await self._rows.__anext__()

    async def aclose(self) -> None:
        """Stop the scan and drop its server context; the iterator ends."""
        await self._rows.aclose()

    async def __aenter__(self) -> Scanner:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
