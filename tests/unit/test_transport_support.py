"""Shared pieces of the transport tests (this module holds no tests).

Every transport test runs on both event loops the project supports: the standard asyncio loop and
uvloop. Servers bind 127.0.0.1 (or localhost) on port 0, so tests never fight over ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from pegasus_kv.core.codec import Decoded
from pegasus_kv.core.messages import GetRequest, GetResponse
from pegasus_kv.core.registry import Message
from pegasus_kv.replication import loop as loops

T = TypeVar("T")

LOOPS = ["asyncio", "uvloop"]
on_both_loops = pytest.mark.parametrize("loop_name", LOOPS)
HOST = "127.0.0.1"
GUARD_S = 15.0  # a test that hangs fails instead of stalling the suite


def run(loop_name: str, main: Coroutine[Any, Any, T]) -> T:
    """Run a test's story on the named loop, in a single task (so leftover tasks are visible)."""
    factory = loops.loop_factory() if loop_name == "uvloop" else asyncio.new_event_loop

    async def guarded() -> T:
        async with asyncio.timeout(GUARD_S):
            return await main

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(guarded())


def other_tasks() -> set[asyncio.Task[Any]]:
    """Tasks still alive besides the test's own."""
    return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}


async def wait_until(predicate: Callable[[], bool], *, timeout_s: float = 3.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.001)


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def unanswering_listener() -> Iterator[int]:
    """A port whose accept queue is full, so a dial to it hangs until its timeout; yields the port.

    The listener never accepts and its queue (listen(0)) is filled first; the kernel then drops
    further SYNs, which is what an overloaded or black-holed peer looks like.
    """
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind((HOST, 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        for _ in range(4):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect((HOST, port))
        yield port


def get(sort_key: bytes, hash_key: bytes = b"h") -> GetRequest:
    return GetRequest(hash_key, sort_key)


def echo(request: Decoded, peer: str) -> Message:
    """Answers a GetRequest with its own sort key, at once."""
    assert isinstance(request.message, GetRequest)
    return GetResponse(request.message.sort_key)


class Gates:
    """A handler that holds each request until the test opens the gate named by its sort key."""

    def __init__(self) -> None:
        self._gates: dict[bytes, asyncio.Event] = {}
        self.held = 0  # requests waiting at a gate now
        self.most_held = 0
        self.seen: list[bytes] = []
        self.cancelled = 0

    def gate(self, key: bytes) -> asyncio.Event:
        return self._gates.setdefault(key, asyncio.Event())

    def open(self, key: bytes) -> None:
        self.gate(key).set()

    async def handler(self, request: Decoded, peer: str) -> Message:
        assert isinstance(request.message, GetRequest)
        key = request.message.sort_key
        self.seen.append(key)
        self.held += 1
        self.most_held = max(self.most_held, self.held)
        try:
            await self.gate(key).wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.held -= 1
        return GetResponse(key)
