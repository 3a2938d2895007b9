"""The server end of the wire transport (DESIGN.md section 6).

Each accepted connection decodes frames straight from `data_received` and calls the handler for
each request. The handler may answer at once (return a Message, or None for a one-way message),
or return an awaitable: a future gets a done-callback and a coroutine gets a task, so the cheap
requests (reads served from memory, rejections) never pay for a task. A handler that answers
later without either returns a PendingReply and completes it when the answer is known (the
replica server's client writes): the reply is framed right then, with no future, no callback and
no pass of the event loop in between. Replies carry the request's id and leave in the order they
are ready, coalesced once per loop iteration.

Failures stay inside their scope:
- a handler raising a PegasusError answers with that error's code; any other exception answers
  INTERNAL and is logged with its traceback; neither touches the connection;
- a frame that does not decode (CodecError) closes that one connection with a logged reason;
- a connection at its in-flight bound, or whose peer does not read its replies, stops being read
  until it drains (back-pressure reaches the client through TCP).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import cast

from pegasus_kv.core.codec import DEFAULT_MAX_FRAME_BYTES, Decoded, FrameDecoder, FrameKind, encode_frame
from pegasus_kv.core.errors import CodecError, ErrorCode, InvalidArgumentError, NetworkError, PegasusError
from pegasus_kv.core.messages import ErrorReply
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.transport import (
    FrameWriter,
    format_address,
    invariant,
    peer_address,
    set_tcp_nodelay,
)

logger = logging.getLogger(__name__)


class PendingReply:
    """A reply a handler gives later, without a future or a task.

    The handler returns it at once; later, on the event loop, exactly one call of
    `set_result(reply)` or `set_exception(error)` completes it and the connection the request came
    on frames the answer right away (nothing if the connection is gone meanwhile). Future-like
    (`done`, `set_result`, `set_exception`), so a table of waiting requests can hold these and
    futures alike. Completing it twice raises InvalidStateError, as a future does.
    """

    __slots__ = ("_connection", "_done", "_error", "_reply", "_request")

    def __init__(self) -> None:
        self._connection: _ServerConnection | None = None
        self._request: Decoded | None = None
        self._done = False
        self._reply: Message | None = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def set_result(self, reply: Message, /) -> None:
        # _complete and the connection's _pending_done for a reply, inlined: every client write is
        # answered here (two calls less per write; keep the three in step).
        if self._done:
            raise asyncio.InvalidStateError("the reply was given already")
        self._done = True
        self._reply = reply
        connection = self._connection
        if connection is None:
            return
        connection._in_flight -= 1
        request = self._request
        if connection._in_flight < 0 or request is None:
            invariant(False, "more handlers finished than started")
        assert request is not None
        if connection._closed:
            return
        try:
            if reply is not None and request.kind is _REQUEST:
                try:
                    connection._writer.write_message(
                        reply, request.request_id, _RESPONSE, request.gpid, connection._max_frame_bytes
                    )
                except CodecError as exc:
                    connection._send_unencodable(request, exc)
            else:
                connection._finish(request, reply)
        except Exception:  # a bug here must not break the caller's loop over its waiting writes
            logger.exception(
                "%s: answering a request from %s failed", connection._server.name, connection.peer
            )
        if connection._reading_paused:
            # Resuming may dispatch buffered requests: not from inside the caller.
            connection._loop.call_soon(connection._maybe_resume_reading)

    def set_exception(self, error: BaseException, /) -> None:
        self._complete(None, error)

    def _complete(self, reply: Message | None, error: BaseException | None) -> None:
        if self._done:
            raise asyncio.InvalidStateError("the reply was given already")
        self._done = True
        self._reply = reply
        self._error = error
        if self._connection is not None:
            self._connection._pending_done(self)


HandlerResult = Message | None | PendingReply | Awaitable[Message | None]
# handler(request, peer "host:port") -> the reply, None for a one-way message, a PendingReply, or an
# awaitable of the reply.
RequestHandler = Callable[[Decoded, str], HandlerResult]
_REQUEST = FrameKind.REQUEST
_RESPONSE = FrameKind.RESPONSE
_ONEWAY = FrameKind.ONEWAY

MAX_ERROR_MESSAGE_CHARS = 1000  # an error reply's text; the code is what clients act on
_PORT_ZERO_BIND_ATTEMPTS = 5
CLOSE_GRACE_S = 5.0  # how long a closing connection may take to deliver the replies it already has


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Bounds of one server (DESIGN.md section 10: a limit on everything)."""

    max_connections: int = 4096
    max_in_flight_per_connection: int = 1024  # requests whose handler has not finished
    max_buffered_bytes_per_connection: int = 8 * 1024 * 1024  # replies the peer has not read yet
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES

    def __post_init__(self) -> None:
        for name in (
            "max_connections",
            "max_in_flight_per_connection",
            "max_buffered_bytes_per_connection",
            "max_frame_bytes",
        ):
            if getattr(self, name) <= 0:
                raise InvalidArgumentError(f"{name} must be positive")


class RpcServer:
    """Listens on host:port (a DNS name or an IP; port 0 picks a free port, see `port`)."""

    def __init__(
        self,
        handler: RequestHandler,
        host: str,
        port: int,
        *,
        limits: ServerLimits | None = None,
        name: str = "rpc",
        routes: Mapping[type[Message], RequestHandler] | None = None,
    ) -> None:
        """`routes`: message type -> the handler of that type's requests, called instead of
        `handler` (a server's hot request kinds skip a dispatching handler: a call less each)."""
        if not 0 <= port < 65536:
            raise InvalidArgumentError(f"port {port} is out of range")
        self.handler = handler
        self.routes: dict[type[Message], RequestHandler] = dict(routes or {})
        self.host = host
        self.name = name
        self.limits = limits or ServerLimits()
        self._requested_port = port
        self._bound_port = 0
        self._server: asyncio.Server | None = None
        self._connections: set[_ServerConnection] = set()
        # Every handler task still running, across connections (a lost connection cancels its
        # own, and close() waits for all of them to unwind).
        self._handler_tasks: set[asyncio.Future[Message | None]] = set()
        self._closing = False

    @property
    def port(self) -> int:
        """The port actually bound (the chosen one when started with port 0); kept after close."""
        invariant(self._bound_port != 0, "the server has not started")
        return self._bound_port

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        invariant(self._server is None, "the server is started once")
        loop = asyncio.get_running_loop()
        port = self._requested_port
        for _ in range(_PORT_ZERO_BIND_ATTEMPTS):
            try:
                server = await loop.create_server(
                    lambda: _ServerConnection(self), self.host, port, reuse_address=True, start_serving=True
                )
            except OSError as exc:
                raise NetworkError(
                    f"{self.name}: cannot listen on {format_address(self.host, port)}: {exc}"
                ) from exc
            ports = {int(sock.getsockname()[1]) for sock in server.sockets}
            if len(ports) == 1:
                break
            # A name such as "localhost" can resolve to several addresses and port 0 then gives
            # each its own port; one address must mean one port, so rebind all on the first.
            port = int(server.sockets[0].getsockname()[1])
            server.close()
            await server.wait_closed()
        else:
            raise NetworkError(f"{self.name}: cannot bind every address of {self.host} to one port")
        self._server = server
        self._bound_port = int(server.sockets[0].getsockname()[1])
        logger.info("%s listening on %s", self.name, self.address)

    async def close(self, *, grace_s: float = 1.0) -> None:
        """Stop listening, cancel running handlers, close every connection and wait for all of it.

        Replies already computed get grace_s to leave before their sockets are aborted.
        """
        server = self._server
        if server is None or self._closing:
            return
        self._closing = True
        server.close()
        connections = list(self._connections)
        for connection in connections:
            connection.shut_down()
        # Includes handlers of connections that went earlier and are still unwinding.
        if self._handler_tasks:
            _, stuck = await asyncio.wait(list(self._handler_tasks), timeout=grace_s)
            for task in stuck:
                logger.warning("%s: a handler ignores cancellation: %r", self.name, task)
        lost = [connection.lost for connection in connections]
        if lost:
            _, still_open = await asyncio.wait(lost, timeout=grace_s)
            for connection in connections:
                if not connection.lost.done():
                    connection.abort()
            if still_open:
                await asyncio.wait(still_open, timeout=grace_s)
        try:
            async with asyncio.timeout(grace_s):
                await server.wait_closed()
        except TimeoutError:
            logger.warning(
                "%s on %s: listener did not report closed within %ss", self.name, self.address, grace_s
            )
        logger.info("%s on %s closed", self.name, self.address)

    async def __aenter__(self) -> RpcServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- called by connections ---

    def _accept(self, connection: _ServerConnection) -> bool:
        if self._closing or len(self._connections) >= self.limits.max_connections:
            return False
        self._connections.add(connection)
        return True

    def _forget(self, connection: _ServerConnection) -> None:
        self._connections.discard(connection)


class _ServerConnection(asyncio.Protocol):
    """One accepted connection: decode, dispatch, reply, and apply back-pressure by not reading."""

    def __init__(self, server: RpcServer) -> None:
        self._server = server
        self._handler = server.handler
        self._route = server.routes.get
        self._loop = asyncio.get_running_loop()
        limits = server.limits
        self._max_in_flight = limits.max_in_flight_per_connection
        self._max_frame_bytes = limits.max_frame_bytes
        self._decoder = FrameDecoder(limits.max_frame_bytes)
        self._in_flight = 0  # handlers returned an awaitable that is not done yet
        self._tasks: set[asyncio.Future[Message | None]] = set()  # the ones we created and may cancel
        self._reading_paused = False
        self._closed = False
        self.peer = "?"
        self.lost: asyncio.Future[None] = self._loop.create_future()
        self._abort_timer: asyncio.TimerHandle | None = None
        # Set by connection_made, before any other callback.
        self._transport: asyncio.Transport
        self._writer: FrameWriter

    # --- asyncio callbacks ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport implements asyncio.Transport without subclassing it.
        tcp = self._transport = cast(asyncio.Transport, transport)
        self.peer = peer_address(tcp)
        self._writer = FrameWriter(
            self._loop,
            tcp,
            max_buffered_bytes=self._server.limits.max_buffered_bytes_per_connection,
            on_room=self._maybe_resume_reading,
        )
        if not self._server._accept(self):
            logger.warning(
                "%s: refusing connection from %s (closing or at max_connections)",
                self._server.name,
                self.peer,
            )
            self._closed = True
            tcp.abort()
            return
        set_tcp_nodelay(tcp)
        logger.debug("%s: connection from %s", self._server.name, self.peer)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if self._feed(data) and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        return None  # the client is done sending: close once our replies are written

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            logger.info("%s: connection from %s lost: %s", self._server.name, self.peer, exc)
        self._closed = True
        self._writer.discard()
        for task in self._tasks:
            task.cancel()
        if self._abort_timer is not None:
            self._abort_timer.cancel()
        self._server._forget(self)
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        # The peer does not read its replies: stop taking requests from it until it does.
        self._writer.pause()
        if not self._reading_paused and not self._closed:
            self._reading_paused = True
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._writer.resume()

    # --- shutting down ---

    def shut_down(self) -> None:
        """Cancel running handlers and close once the replies already made have left.

        A peer that does not read them gets its socket aborted after CLOSE_GRACE_S.
        """
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        self._writer.flush()
        self._transport.close()
        self._abort_timer = self._loop.call_later(CLOSE_GRACE_S, self._transport.abort)

    def abort(self) -> None:
        self._closed = True
        self._transport.abort()

    # --- requests ---

    def _feed(self, data: bytes) -> bool:
        """Dispatch the whole frames now buffered; True if it stopped at a bound with frames left."""
        # iter_feed is a generator: closing it early keeps the frames not yet taken in the decoder.
        # (Annotated, not cast(): typing.cast is a Python call, here once per read of the socket.)
        frames: Generator[Decoded, None, None] = self._decoder.iter_feed(data)  # type: ignore[assignment]
        try:
            for decoded in frames:
                self._dispatch(decoded)
                if self._closed:
                    return False
                if self._in_flight >= self._max_in_flight or self._writer.full:
                    return True  # the frames not yet taken stay in the decoder
        except CodecError as exc:
            # The stream is out of sync: nothing after this point can be trusted. Replies to the
            # requests before it still leave.
            logger.warning("%s: closing connection from %s: %s", self._server.name, self.peer, exc.message)
            self.shut_down()
        finally:
            frames.close()
        return False

    def _maybe_resume_reading(self) -> None:
        if not self._reading_paused or self._closed:
            return
        if self._in_flight >= self._max_in_flight or self._writer.full:
            return
        # Frames that arrived before we paused go first; they may fill the bound again (or be bad).
        if self._decoder.buffered_bytes and (self._feed(b"") or self._transport.is_closing()):
            return
        self._reading_paused = False
        self._transport.resume_reading()

    def _dispatch(self, request: Decoded) -> None:
        kind = request.kind
        if kind is _RESPONSE:
            logger.warning(
                "%s: ignoring a reply (request %d) from %s: this end only takes requests",
                self._server.name,
                request.request_id,
                self.peer,
            )
            return
        try:
            result = (self._route(type(request.message)) or self._handler)(request, self.peer)
        except Exception as exc:
            self._fail(request, exc)
            return
        if isinstance(result, Message):
            # The common case, answered at once: what _finish and _send do, inlined.
            if kind is _REQUEST:
                try:
                    self._writer.write_message(
                        result, request.request_id, _RESPONSE, request.gpid, self._max_frame_bytes
                    )
                except CodecError as exc:
                    self._send_unencodable(request, exc)
            return  # a one-way message: nobody waits for it, the reply is dropped
        if result is None:
            if kind is not _ONEWAY:
                self._finish(request, None)
            return
        if type(result) is PendingReply:
            self._in_flight += 1
            if self._in_flight > self._max_in_flight:
                invariant(False, "dispatched past max_in_flight_per_connection")
            # Bind the reply to this connection and request (once per client write: inlined).
            if result._connection is not None:
                invariant(False, "a pending reply was returned by two handlers")
            result._connection = self
            result._request = request
            if result._done:  # completed before the handler returned it
                self._pending_done(result)
            return
        assert not isinstance(result, PendingReply)  # for mypy: the exact type test above
        future: asyncio.Future[Message | None]
        if isinstance(result, asyncio.Future):
            future = result  # someone else's future: we only listen to it
        else:
            # A coroutine (or another awaitable) runs as a task, ours to cancel with the connection.
            if asyncio.iscoroutine(result):
                future = self._loop.create_task(result)
            else:
                future = asyncio.ensure_future(result, loop=self._loop)
            self._tasks.add(future)
            self._server._handler_tasks.add(future)
        self._in_flight += 1
        # Reading stops at the bound, so one more request than it never reaches a handler.
        invariant(self._in_flight <= self._max_in_flight, "dispatched past max_in_flight_per_connection")
        future.add_done_callback(functools.partial(self._handler_done, request))

    def _handler_done(self, request: Decoded, future: asyncio.Future[Message | None]) -> None:
        self._in_flight -= 1
        invariant(self._in_flight >= 0, "more handlers finished than started")
        self._tasks.discard(future)
        self._server._handler_tasks.discard(future)
        if future.cancelled():
            if not self._closed:
                self._fail(request, asyncio.CancelledError())
        elif (exc := future.exception()) is not None:  # always retrieved, so asyncio never logs it twice
            if not self._closed:
                self._fail(request, exc)
        elif not self._closed:
            self._finish(request, future.result())
        self._maybe_resume_reading()

    def _pending_done(self, pending: PendingReply) -> None:
        """A PendingReply this connection dispatched was completed (called from inside whoever
        completed it: nothing here may raise into it, nor dispatch more requests)."""
        self._in_flight -= 1
        request = pending._request
        if self._in_flight < 0 or request is None:
            invariant(False, "more handlers finished than started")
        assert request is not None
        try:
            if self._closed:
                return
            reply = pending._reply
            if pending._error is not None:
                self._fail(request, pending._error)
            elif reply is not None and request.kind is _REQUEST:  # what _finish and _send do
                try:
                    self._writer.write_message(
                        reply, request.request_id, _RESPONSE, request.gpid, self._max_frame_bytes
                    )
                except CodecError as exc:
                    self._send_unencodable(request, exc)
            else:
                self._finish(request, reply)
        except Exception:  # a bug here must not break the caller's loop over its waiting writes
            logger.exception("%s: answering a request from %s failed", self._server.name, self.peer)
        if self._reading_paused:
            # Resuming may dispatch buffered requests: not from inside the caller.
            self._loop.call_soon(self._maybe_resume_reading)

    def _finish(self, request: Decoded, reply: Message | None) -> None:
        if request.kind is _ONEWAY:
            return  # nobody waits for it; a reply the handler made anyway is dropped
        if reply is None:
            logger.error(
                "%s: the handler returned no reply to %s from %s",
                self._server.name,
                type(request.message).__name__,
                self.peer,
            )
            reply = ErrorReply(int(ErrorCode.INTERNAL), "the server produced no reply")
        self._send(request, reply)

    def _fail(self, request: Decoded, exc: BaseException) -> None:
        if isinstance(exc, PegasusError):
            reply = ErrorReply(int(exc.code), exc.message[:MAX_ERROR_MESSAGE_CHARS])
        elif isinstance(exc, asyncio.CancelledError):
            # Someone else cancelled the awaitable the handler handed us (a replica closing, say).
            reply = ErrorReply(int(ErrorCode.SHUTTING_DOWN), "the request was cancelled on the server")
        else:
            logger.error(
                "%s: handler failed on %s from %s",
                self._server.name,
                type(request.message).__name__,
                self.peer,
                exc_info=exc,
            )
            reply = ErrorReply(int(ErrorCode.INTERNAL), f"internal error: {type(exc).__name__}")
        if request.kind is _ONEWAY:
            logger.debug("%s: one-way %s failed: %s", self._server.name, type(request.message).__name__, exc)
            return
        self._send(request, reply)

    def _send(self, request: Decoded, reply: Message) -> None:
        try:
            # Framed straight into the connection's outgoing bytes (codec.append_frame).
            self._writer.write_message(
                reply, request.request_id, _RESPONSE, request.gpid, self._max_frame_bytes
            )
        except CodecError as exc:
            self._send_unencodable(request, exc)

    def _send_unencodable(self, request: Decoded, exc: CodecError) -> None:
        """The reply to `request` could not be framed (exc): answer CODEC instead."""
        logger.error("%s: cannot encode the reply to %s: %s", self._server.name, self.peer, exc.message)
        frame = encode_frame(
            ErrorReply(
                int(ErrorCode.CODEC),
                f"the reply could not be encoded: {exc.message}"[:MAX_ERROR_MESSAGE_CHARS],
            ),
            request_id=request.request_id,
            kind=FrameKind.RESPONSE,
            gpid=request.gpid,
        )
        self._writer.write(frame)
