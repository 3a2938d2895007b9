"""The /metrics endpoint as a scraper meets it: served from the server's event loop, on the host and
port it was given, answering only what it should, and gone once closed."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from pegasus_kv.core.errors import NetworkError
from pegasus_kv.metrics.endpoint import MAX_REQUEST_HEAD_BYTES, MetricsEndpoint
from pegasus_kv.testing.zookeeper import free_port
from tests.unit.metrics_support import parse, value


def fetch(url: str, method: str = "GET") -> tuple[int, str, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5.0) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as connection:
        connection.sendall(data)
        connection.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
        return received


def test_a_scraper_reads_the_registry_on_the_configured_port_until_the_endpoint_closes() -> None:
    registry = CollectorRegistry()
    writes = Counter("pegasus_test_writes", "writes", registry=registry)
    port = free_port()

    async def story() -> None:
        endpoint = MetricsEndpoint(registry, "127.0.0.1", port, name="test")
        await endpoint.start()
        assert endpoint.url == f"http://127.0.0.1:{port}/metrics"
        writes.inc(3)
        status, content_type, body = await asyncio.to_thread(fetch, endpoint.url)
        assert status == 200 and content_type.startswith("text/plain")
        assert value(parse(body), "pegasus_test_writes_total") == 3
        writes.inc()  # every scrape reads the values of that moment
        assert (
            value(parse((await asyncio.to_thread(fetch, endpoint.url))[2]), "pegasus_test_writes_total") == 4
        )
        assert endpoint.scrapes == 2

        await endpoint.close()
        await endpoint.close()  # idempotent
        with pytest.raises(urllib.error.URLError):
            await asyncio.to_thread(fetch, endpoint.url)

    asyncio.run(story())


def test_other_paths_methods_and_oversized_requests_get_no_metrics() -> None:
    registry = CollectorRegistry()
    Counter("pegasus_test_writes", "writes", registry=registry)

    async def story() -> None:
        endpoint = MetricsEndpoint(registry, "127.0.0.1", 0)
        await endpoint.start()
        base = f"http://{endpoint.address}"
        try:
            assert (await asyncio.to_thread(fetch, f"{base}/metrics?format=text"))[0] == 200
            assert (await asyncio.to_thread(fetch, f"{base}/"))[0] == 200
            assert (await asyncio.to_thread(fetch, f"{base}/admin"))[0] == 404
            assert (await asyncio.to_thread(fetch, f"{base}/metrics", "POST"))[0] == 405
            head = await asyncio.to_thread(fetch, f"{base}/metrics", "HEAD")
            assert head[0] == 200 and head[2] == ""
            garbage = await asyncio.to_thread(raw_exchange, endpoint.port, b"HELLO\r\n\r\n")
            assert garbage.startswith(b"HTTP/1.1 400 ")
            # A request head past the bound is dropped without an answer.
            huge = b"GET /metrics HTTP/1.1\r\nX-Padding: " + b"a" * MAX_REQUEST_HEAD_BYTES + b"\r\n\r\n"
            assert await asyncio.to_thread(raw_exchange, endpoint.port, huge) == b""
            assert endpoint.scrapes == 3  # the two GETs of the metrics and the HEAD
        finally:
            await endpoint.close()

    asyncio.run(story())


def test_a_port_in_use_is_reported_as_a_network_error() -> None:
    async def story() -> None:
        first = MetricsEndpoint(CollectorRegistry(), "127.0.0.1", 0)
        await first.start()
        try:
            second = MetricsEndpoint(CollectorRegistry(), "127.0.0.1", first.port)
            with pytest.raises(NetworkError, match="cannot serve metrics"):
                await second.start()
        finally:
            await first.close()

    asyncio.run(story())
