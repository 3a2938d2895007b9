"""The HTTP endpoint Prometheus scrapes: GET /metrics, served on the server's own event loop.

    endpoint = MetricsEndpoint(registry, "127.0.0.1", 34901, name="meta")
    await endpoint.start()
    endpoint.url                  # "http://127.0.0.1:34901/metrics"
    await endpoint.close()

Serving on the event loop (not prometheus_client's start_http_server thread) means the collectors
read the server's state on the thread that changes it: a scrape sees one consistent moment and no
structure is read while another thread resizes it. A scrape costs the loop the time to render the
text (well under a millisecond for a replica server's few hundred series).

The server speaks just enough HTTP/1.1 for a scraper, a browser or curl: one request per
connection, GET or HEAD, `/metrics` (or `/`), the response closes the connection. Everything is
bounded: the request head (MAX_REQUEST_HEAD_BYTES), the time to send it (REQUEST_TIMEOUT_S), and the
connections served at once (MAX_CONNECTIONS; more are closed at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pegasus_kv.core.errors import InvalidArgumentError, NetworkError
from pegasus_kv.core.invariants import check_invariant
from pegasus_kv.replication.transport import format_address

logger = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
MAX_REQUEST_HEAD_BYTES = 8192
REQUEST_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 64
CLOSE_GRACE_S = 1.0

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


class MetricsEndpoint:
    """Serves `registry` over HTTP on host:port (port 0 picks a free port, see `port`)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int, *, name: str = "metrics") -> None:
        if not 0 <= port < 65536:
            raise InvalidArgumentError(f"metrics port {port} is out of range")
        self.registry = registry
        self.host = host
        self.name = name
        self._requested_port = port
        self._bound_port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.scrapes = 0  # requests answered with the metrics (tests, logs)

    @property
    def started(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        check_invariant(self._bound_port != 0, "the metrics endpoint has not started")
        return self._bound_port

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    @property
    def url(self) -> str:
        return f"http://{self.address}{METRICS_PATH}"

    async def start(self) -> None:
        check_invariant(self._server is None, "the metrics endpoint starts once")
        try:
            server = await asyncio.start_server(
                self._accept,
                self.host,
                self._requested_port,
                limit=MAX_REQUEST_HEAD_BYTES,
                reuse_address=True,
            )
        except OSError as exc:
            where = format_address(self.host, self._requested_port)
            raise NetworkError(f"{self.name}: cannot serve metrics on {where}: {exc}") from exc
        self._server = server
        self._bound_port = int(server.sockets[0].getsockname()[1])
        logger.info("%s serves metrics on %s", self.name, self.url)

    async def close(self) -> None:
        """Stop listening and end the scrapes in progress. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        handlers = list(self._handlers)
        for handler in handlers:
            handler.cancel()
        if handlers:
            await asyncio.wait(handlers, timeout=CLOSE_GRACE_S)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_GRACE_S):
                await server.wait_closed()

    # --- serving ------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._handlers) >= MAX_CONNECTIONS or self._server is None:
            writer.close()
            return
        self._handlers.add(task)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                await self._serve(reader, writer)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client that went away or never finished its request gets nothing more
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            writer.write(_response(400, b"bad request line\n"))
            return
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            writer.write(_response(405, b"only GET and HEAD\n", extra=b"Allow: GET, HEAD\r\n"))
            return
        path = target.split("?", 1)[0]
        if path not in (METRICS_PATH, "/"):
            writer.write(_response(404, b"metrics are at /metrics\n"))
            return
        body = generate_latest(self.registry)
        self.scrapes += 1
        writer.write(_response(200, body, content_type=CONTENT_TYPE_LATEST, head_only=method == "HEAD"))
        await writer.drain()


def _response(
    status: int,
    body: bytes,
    *,
    content_type: str = "text/plain; charset=utf-8",
    extra: bytes = b"",
    head_only: bool = False,
) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
    ).encode("latin-1")
    return head + extra + b"\r\n" + (b"" if head_only else body)
