"""The client end of the wire transport (DESIGN.md section 6) and the pieces both ends share.

One `Connection` carries many concurrent calls to one address: each request gets an id, the reply
with that id completes it, and replies may arrive in any order. Nothing here creates a task per
call: a call is a future in a dict plus an entry in a shared deadline tick (deadlines.py), and the
protocol completes it from `data_received`.

Back-pressure, from the caller's side: a connection admits at most `max_in_flight` calls and
`max_buffered_bytes` of outgoing frames; a caller beyond either waits in a bounded FIFO queue for
up to its own timeout, and gets BusyError if it was never sent. Outgoing frames are coalesced and
handed to the socket once per event-loop iteration (one writev instead of one send per frame).

The server end lives in rpc_server.py, reconnection and backoff in connection_pool.py.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from pegasus_kv.core.codec import (
    DEFAULT_MAX_FRAME_BYTES,
    Decoded,
    FrameDecoder,
    FrameKind,
    append_frame,
    encode_frame,
)
from pegasus_kv.core.errors import (
    BusyError,
    CodecError,
    InvalidArgumentError,
    NetworkError,
    PegasusError,
    PegasusTimeoutError,
    ShuttingDownError,
    error_from_code,
)
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.invariants import InvariantViolation, check_invariant
from pegasus_kv.core.messages import ErrorReply
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.deadlines import Deadlines

logger = logging.getLogger(__name__)

# Request ids travel as msgpack integers and the codec refuses negative ones; a connection would
# need centuries at a million calls a second to run out.
MAX_REQUEST_ID = 2**63 - 1
MAX_ADDRESS_CHARS = 300  # a DNS name is at most 253 characters, plus brackets and a port
_INFINITY = math.inf
_REQUEST = FrameKind.REQUEST
_RESPONSE = FrameKind.RESPONSE


class TransportInvariantError(InvariantViolation):
    """A broken internal invariant of the transport: a bug, never a network condition."""


def invariant(condition: bool, message: str) -> None:
    """Check an invariant in a way that `python -O` does not strip."""
    check_invariant(condition, message, TransportInvariantError)


# --- addresses --------------------------------------------------------------------------------


def parse_address(address: str) -> tuple[str, int]:
    """Split `host:port` (or `[v6]:port`) into host and port; host may be a DNS name.

    Raises InvalidArgumentError for anything else, including port 0, which cannot be dialled.
    """
    if not address or len(address) > MAX_ADDRESS_CHARS:
        raise InvalidArgumentError(f"not an address (expected host:port): {address[:MAX_ADDRESS_CHARS]!r}")
    if address.startswith("["):
        host, sep, port_text = address[1:].partition("]:")
    else:
        host, sep, port_text = address.rpartition(":")
        if ":" in host:
            raise InvalidArgumentError(f"an IPv6 host needs brackets, as in [::1]:34601: {address!r}")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidArgumentError(f"not an address (expected host:port): {address!r}")
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def peer_address(transport: asyncio.BaseTransport) -> str:
    """The `host:port` of the other end, for logs and handlers."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return format_address(str(peer[0]), int(peer[1]))
    return str(peer)


def set_tcp_nodelay(transport: asyncio.BaseTransport) -> None:
    """Disable Nagle: a small reply must not wait for the ack of the previous one.

    asyncio and uvloop both do this already for TCP; doing it here keeps the property explicit.
    """
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # the socket may already be closed by the peer
        logger.debug("cannot set TCP_NODELAY on %s: %s", peer_address(transport), exc)


def check_timeout(timeout_s: float) -> None:
    if not (timeout_s > 0 and math.isfinite(timeout_s)):
        raise InvalidArgumentError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")


# --- outgoing frames --------------------------------------------------------------------------


class FrameWriter:
    """Collects encoded frames and hands them to the transport once per event-loop iteration.

    Calls made in one iteration (by many tasks, or replies computed in one `data_received`) leave
    in one writev. The transport's own buffer pauses us at `max_buffered_bytes`
    (pause_writing/resume_writing); `has_room` tells callers whether to wait.

    Two ways in: `write(frame)` takes a frame encoded already (a queued request, a one-way message),
    `write_message(...)` frames a message straight into the open tail chunk (the server's replies,
    and with only_if_room the client's requests: no frame object and no copy of it each). A chunk
    handed to the transport is never touched again.
    """

    __slots__ = (
        "_buffered_bytes",
        "_frames",
        "_loop",
        "_max_buffered_bytes",
        "_on_room",
        "_paused",
        "_scheduled",
        "_tail",
        "_transport",
        "full",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.WriteTransport,
        *,
        max_buffered_bytes: int,
        on_room: Callable[[], None],
    ) -> None:
        invariant(max_buffered_bytes > 0, "max_buffered_bytes must be positive")
        self._loop = loop
        self._transport = transport
        self._max_buffered_bytes = max_buffered_bytes
        self._on_room = on_room
        self._frames: list[bytes | bytearray] = []
        # The last chunk of _frames while write_message may still append to it, else None.
        self._tail: bytearray | None = None
        self._buffered_bytes = 0
        self._scheduled = False
        self._paused = False
        # True when nothing more should be produced until a flush or a resume: the socket buffer
        # is above its high-water mark, or this iteration's frames reached max_buffered_bytes.
        # Kept as a field, not computed: the server tests it after every request it dispatches.
        self.full = False
        transport.set_write_buffer_limits(high=max_buffered_bytes, low=max_buffered_bytes // 4)

    @property
    def paused(self) -> bool:
        """True while the socket buffer is above its high-water mark."""
        return self._paused

    @property
    def buffered_bytes(self) -> int:
        """Bytes collected in this iteration and not yet handed to the transport."""
        return self._buffered_bytes

    def has_room(self, frame_bytes: int) -> bool:
        if self._paused:
            return False
        # An empty buffer always takes one frame, so a frame larger than the limit still moves.
        return self._buffered_bytes == 0 or self._buffered_bytes + frame_bytes <= self._max_buffered_bytes

    def write(self, frame: bytes) -> None:
        self._frames.append(frame)
        self._tail = None
        buffered = self._buffered_bytes = self._buffered_bytes + len(frame)
        if buffered >= self._max_buffered_bytes:
            self.full = True
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush_soon)

    def write_message(
        self,
        message: Message,
        request_id: int,
        kind: FrameKind,
        gpid: Gpid | None,
        max_frame_bytes: int,
        *,
        only_if_room: bool = False,
    ) -> bool:
        """Frame `message` (codec.append_frame) into the outgoing bytes; True once written.

        With only_if_room (the client's requests) the frame is kept only if has_room would take it,
        judged by its encoded size, and False means nothing was written: framed once, straight into
        the outgoing bytes, instead of an encode_frame copy per request that has_room then sizes
        (measured: 3 calls and a copy less per request). Without it (the server's replies) the
        frame always goes. Raises CodecError, having written nothing, for a message that cannot be
        framed."""
        if only_if_room and self._paused:
            return False
        tail = self._tail
        if tail is None:
            tail = self._tail = bytearray()
            self._frames.append(tail)
        start = len(tail)
        size = append_frame(tail, message, request_id, kind, gpid, max_frame_bytes)
        buffered = self._buffered_bytes
        # has_room: an empty buffer always takes one frame, so a frame larger than the limit moves.
        if only_if_room and buffered and buffered + size > self._max_buffered_bytes:
            del tail[start:]
            return False
        buffered = self._buffered_bytes = buffered + size
        if buffered >= self._max_buffered_bytes:
            self.full = True
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush_soon)
        return True

    def _flush_soon(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        frames = self._frames
        if not frames:
            return
        self._frames = []
        self._tail = None
        self._buffered_bytes = 0
        self.full = self._paused
        if self._transport.is_closing():
            return
        if len(frames) == 1:
            if frames[0]:  # a tail chunk whose only frame failed to encode is empty
                self._transport.write(frames[0])
        else:
            self._transport.writelines(frames)
        if not self._paused:
            self._on_room()

    def pause(self) -> None:
        self._paused = True
        self.full = True

    def resume(self) -> None:
        self._paused = False
        self.full = self._buffered_bytes >= self._max_buffered_bytes
        self._on_room()

    def discard(self) -> None:
        """Drop what was not written yet (the connection is gone)."""
        self._frames = []
        self._tail = None
        self._buffered_bytes = 0
        self.full = self._paused


# --- the client connection -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Bounds of one client connection (DESIGN.md section 10: a limit on everything)."""

    max_in_flight: int = 4096  # calls sent and not yet answered
    max_queued: int = 65536  # callers waiting for a slot or for buffer room
    max_buffered_bytes: int = 4 * 1024 * 1024  # outgoing bytes held in process
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES

    def __post_init__(self) -> None:
        for name in ("max_in_flight", "max_queued", "max_buffered_bytes", "max_frame_bytes"):
            if getattr(self, name) <= 0:
                raise InvalidArgumentError(f"{name} must be positive")


class _Outgoing:
    """A frame waiting for admission, and the future of the caller who waits for it."""

    __slots__ = ("frame", "future", "oneway")

    def __init__(self, frame: bytes, future: asyncio.Future[Any], oneway: bool) -> None:
        self.frame = frame
        self.future = future
        self.oneway = oneway


class Connection:
    """A framed TCP connection to one address, carrying many concurrent calls matched by request id.

    Open with `await Connection.open(...)`. Every failure reaches callers as a PegasusError:
    NetworkError when the connection is lost (for every pending call at once), PegasusTimeoutError
    when a sent call gets no reply in time, BusyError when a call waited its whole timeout without
    being sent, ShuttingDownError after `close()`, and the typed error of an ErrorReply.
    """

    def __init__(
        self,
        address: str,
        *,
        limits: ConnectionLimits,
        on_lost: Callable[[Connection], None] | None = None,
    ) -> None:
        self.address = address
        self._limits = limits
        self._max_in_flight = limits.max_in_flight
        self._max_frame_bytes = limits.max_frame_bytes
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        # Both are set by connection_made, which open() awaits before handing the connection out.
        self._transport: asyncio.Transport
        self._writer: FrameWriter
        self._decoder = FrameDecoder(limits.max_frame_bytes)
        self._next_request_id = 1
        self._pending: dict[int, asyncio.Future[Message]] = {}  # sent, awaiting a reply
        self._queue: collections.OrderedDict[int, _Outgoing] = collections.OrderedDict()  # not sent yet
        self._closed_as: tuple[type[PegasusError], str] | None = None
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._deadlines = Deadlines(self._loop, self._expire)

    @classmethod
    async def open(
        cls,
        address: str,
        *,
        connect_timeout_s: float,
        limits: ConnectionLimits | None = None,
        on_lost: Callable[[Connection], None] | None = None,
    ) -> Connection:
        """Connect to `host:port` (host may be a DNS name). Raises NetworkError if that fails."""
        check_timeout(connect_timeout_s)
        host, port = parse_address(address)
        connection = cls(address, limits=limits or ConnectionLimits(), on_lost=on_lost)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout_s):
                await loop.create_connection(lambda: _ClientProtocol(connection), host, port)
        except TimeoutError:
            raise NetworkError(f"connecting to {address} timed out after {connect_timeout_s}s") from None
        except OSError as exc:  # refused, unreachable, DNS failure (socket.gaierror)
            raise NetworkError(f"cannot connect to {address}: {exc}") from exc
        invariant(hasattr(connection, "_writer"), "connected without connection_made")
        logger.debug("connected to %s", address)
        return connection

    # --- state ---

    @property
    def closed(self) -> bool:
        return self._closed_as is not None

    @property
    def in_flight(self) -> int:
        """Calls sent and not yet answered."""
        return len(self._pending)

    @property
    def queued(self) -> int:
        """Callers waiting to be sent (back-pressure)."""
        return len(self._queue)

    # --- calls ---

    async def call(self, message: Message, *, gpid: Gpid | None = None, timeout_s: float) -> Message:
        """Send a request and return its reply; raises the typed error of an ErrorReply."""
        future, request_id, entries = self.start_call(message, gpid, timeout_s)
        try:
            reply = await future
        except BaseException:
            self.abandon_call(request_id, entries)
            raise
        # A reply: _data_received took the call out of _pending before completing its future.
        entries.pop(request_id, None)  # Deadlines.discard, inlined
        return reply

    def start_call(
        self, message: Message, gpid: Gpid | None, timeout_s: float
    ) -> tuple[asyncio.Future[Message], int, dict[int, float]]:
        """`call` without its coroutine: send (or queue) the request and return the future of its
        reply, its request id and its deadline's entries. The caller awaits the future, and then
        forgets the deadline (`entries.pop(request_id, None)`) once a reply came, or calls
        `abandon_call` if the await raised. The client's call loop (client/dispatch.py) awaits the
        future itself: one coroutine less per call (measured: ~0.7 us of the bench's ~18 per op).
        Raises what `call` raises before anything is sent (closed, BusyError, CodecError)."""
        # The hot path of every client call and peer request: checks are inlined and fall back to
        # the helpers that format the error only when they fail.
        if not 0.0 < timeout_s < _INFINITY:
            check_timeout(timeout_s)
        if self._closed_as is not None:
            self._raise_if_closed()
        request_id = self._next_request_id
        if request_id > MAX_REQUEST_ID:
            invariant(False, "request ids exhausted")
        self._next_request_id = request_id + 1
        future: asyncio.Future[Message] = self._loop.create_future()
        pending = self._pending
        if (
            not self._queue
            and len(pending) < self._max_in_flight
            and self._writer.write_message(
                message, request_id, _REQUEST, gpid, self._max_frame_bytes, only_if_room=True
            )
        ):
            pending[request_id] = future
        else:
            # Waits for a slot or for room (rare): its frame is kept until then. A message that
            # cannot be framed raised CodecError above, or raises it here, before anything waits.
            frame = encode_frame(
                message,
                request_id=request_id,
                kind=_REQUEST,
                gpid=gpid,
                max_frame_bytes=self._max_frame_bytes,
            )
            self._enqueue(request_id, _Outgoing(frame, future, oneway=False))
        return future, request_id, self._deadlines.add(request_id, timeout_s)

    def abandon_call(self, request_id: int, entries: dict[int, float]) -> None:
        """The await of a started call raised: forget its deadline and, if the caller was cancelled
        (a reply, a timeout or a lost connection took the call out already), give back its slot or
        its queue place."""
        entries.pop(request_id, None)
        if self._pending.pop(request_id, None) is not None or (
            self._queue and self._queue.pop(request_id, None) is not None
        ):
            self._admit_queued()

    async def send_oneway(self, message: Message, *, gpid: Gpid | None = None, timeout_s: float) -> None:
        """Send a message that gets no reply; returns once it is handed to the connection.

        Waits (up to timeout_s, then BusyError) only while the outgoing buffer is full.
        """
        check_timeout(timeout_s)
        self._raise_if_closed()
        request_id = self._take_request_id()
        frame = encode_frame(
            message,
            request_id=request_id,
            kind=FrameKind.ONEWAY,
            gpid=gpid,
            max_frame_bytes=self._limits.max_frame_bytes,
        )
        if not self._queue and self._can_admit(len(frame), oneway=True):
            self._writer.write(frame)
            return
        future: asyncio.Future[None] = self._loop.create_future()
        self._enqueue(request_id, _Outgoing(frame, future, oneway=True))
        entries = self._deadlines.add(request_id, timeout_s)
        try:
            await future
        finally:
            entries.pop(request_id, None)  # Deadlines.discard
            if self._queue.pop(request_id, None) is not None:
                self._admit_queued()

    def try_send_oneway(self, message: Message, *, gpid: Gpid | None = None) -> bool:
        """Hand a one-way message to the connection now if that needs no waiting (open, nobody
        queued ahead, room in the outgoing buffer); False, having sent nothing, otherwise. Raises
        CodecError for a message that cannot be framed. The synchronous path of send_oneway: no
        coroutine, no task, no pass of the event loop."""
        if self._closed_as is not None or self._queue:
            return False
        frame = encode_frame(
            message,
            request_id=self._take_request_id(),
            kind=FrameKind.ONEWAY,
            gpid=gpid,
            max_frame_bytes=self._limits.max_frame_bytes,
        )
        if not self._can_admit(len(frame), oneway=True):
            return False  # a request id is skipped: ids only need to be unique
        self._writer.write(frame)
        return True

    # --- closing ---

    def close_nowait(self) -> None:
        """Fail every pending call with ShuttingDownError and start closing the socket."""
        if self._closed_as is not None:
            return
        self._mark_closed(ShuttingDownError, f"connection to {self.address} was closed by this process")
        self._writer.flush()  # one-way messages already accepted still leave
        self._transport.close()

    async def close(self, *, grace_s: float = 1.0) -> None:
        """Close and wait until the socket is released (aborting it after grace_s)."""
        self.close_nowait()
        if self._lost.done():
            return
        try:
            async with asyncio.timeout(grace_s):
                await asyncio.shield(self._lost)
        except TimeoutError:
            # The peer does not read what is left in our buffer: drop it.
            self._transport.abort()
            await asyncio.shield(self._lost)

    # --- internals: admission ---

    def _take_request_id(self) -> int:
        request_id = self._next_request_id
        invariant(request_id <= MAX_REQUEST_ID, "request ids exhausted")
        self._next_request_id = request_id + 1
        return request_id

    def _raise_if_closed(self) -> None:
        if self._closed_as is not None:
            error_type, reason = self._closed_as
            raise error_type(reason)

    def _can_admit(self, frame_bytes: int, *, oneway: bool) -> bool:
        return (oneway or len(self._pending) < self._limits.max_in_flight) and self._writer.has_room(
            frame_bytes
        )

    def _enqueue(self, request_id: int, outgoing: _Outgoing) -> None:
        if len(self._queue) >= self._limits.max_queued:
            raise BusyError(f"{len(self._queue)} callers already wait to send to {self.address}")
        self._queue[request_id] = outgoing

    def _admit_queued(self) -> None:
        """Send waiting callers in FIFO order while there is a slot and buffer room."""
        queue = self._queue
        while queue and self._closed_as is None:
            request_id = next(iter(queue))
            outgoing = queue[request_id]
            if outgoing.future.done():  # timed out or cancelled, its finally has not run yet
                del queue[request_id]
                continue
            if not self._can_admit(len(outgoing.frame), oneway=outgoing.oneway):
                return
            del queue[request_id]
            if outgoing.oneway:
                outgoing.future.set_result(None)
            else:
                self._pending[request_id] = outgoing.future
                invariant(len(self._pending) <= self._limits.max_in_flight, "admitted past max_in_flight")
            self._writer.write(outgoing.frame)

    def _expire(self, request_id: int, timeout_s: float) -> None:
        outgoing = self._queue.pop(request_id, None)
        if outgoing is not None:
            if not outgoing.future.done():
                outgoing.future.set_exception(
                    BusyError(
                        f"not sent to {self.address} within {timeout_s}s: "
                        f"{len(self._pending)} calls in flight, {len(self._queue)} more waiting"
                    )
                )
            self._admit_queued()  # it may have been the head blocking a one-way message
            return
        future = self._pending.pop(request_id, None)
        if future is not None:
            if not future.done():
                future.set_exception(
                    PegasusTimeoutError(
                        f"no reply from {self.address} within {timeout_s}s (request {request_id})"
                    )
                )
            self._admit_queued()

    def _mark_closed(self, error_type: type[PegasusError], reason: str) -> None:
        """From now on every call fails with error_type(reason), starting with those pending now."""
        invariant(self._closed_as is None, "a connection is closed once")
        self._closed_as = (error_type, reason)
        self._deadlines.close()
        pending, self._pending = self._pending, {}
        queue, self._queue = self._queue, collections.OrderedDict()
        for future in pending.values():
            if not future.done():
                future.set_exception(error_type(reason))
        for outgoing in queue.values():
            if not outgoing.future.done():
                outgoing.future.set_exception(error_type(reason))

    # --- internals: protocol callbacks ---

    def _connection_made(self, transport: asyncio.Transport) -> None:
        set_tcp_nodelay(transport)
        self._transport = transport
        self._writer = FrameWriter(
            self._loop,
            transport,
            max_buffered_bytes=self._limits.max_buffered_bytes,
            on_room=self._admit_queued,
        )

    def _data_received(self, data: bytes) -> None:
        if self._closed_as is not None:
            return
        pending = self._pending
        try:
            for decoded in self._decoder.iter_feed(data):
                future = pending.pop(decoded.request_id, None) if decoded.kind is _RESPONSE else None
                if future is None:
                    self._ignore_frame(decoded)
                elif not future.done():
                    reply = decoded.message
                    if type(reply) is ErrorReply:
                        future.set_exception(error_from_code(reply.code, reply.message))
                    else:
                        future.set_result(reply)
        except CodecError as exc:
            logger.warning("closing connection to %s: bad frame: %s", self.address, exc.message)
            self._mark_closed(NetworkError, f"connection to {self.address} closed: bad frame from the server")
            self._transport.abort()
            return
        if self._queue:
            self._admit_queued()

    def _ignore_frame(self, decoded: Decoded) -> None:
        if decoded.kind is FrameKind.RESPONSE:
            # The call timed out or was cancelled before its reply came.
            logger.debug("late reply %d from %s ignored", decoded.request_id, self.address)
        else:
            logger.warning(
                "ignoring a %s frame (%s) from %s: this end only takes replies",
                decoded.kind.name,
                type(decoded.message).__name__,
                self.address,
            )

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._closed_as is None:
            reason = (
                f"connection to {self.address} lost: {exc}"
                if exc
                else f"connection to {self.address} closed by the peer"
            )
            logger.info("%s", reason)
            self._mark_closed(NetworkError, reason)
        self._writer.discard()
        if not self._lost.done():
            self._lost.set_result(None)
        if self._on_lost is not None:
            self._on_lost(self)

    def _pause_writing(self) -> None:
        self._writer.pause()

    def _resume_writing(self) -> None:
        self._writer.resume()


class _ClientProtocol(asyncio.Protocol):
    """Forwards asyncio's callbacks to the Connection (keeps the protocol methods off its API)."""

    __slots__ = ("_connection",)

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport implements asyncio.Transport without subclassing it.
        self._connection._connection_made(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self._connection._data_received(data)

    def eof_received(self) -> bool | None:
        return None  # close our end too

    def connection_lost(self, exc: Exception | None) -> None:
        self._connection._connection_lost(exc)

    def pause_writing(self) -> None:
        self._connection._pause_writing()

    def resume_writing(self) -> None:
        self._connection._resume_writing()
