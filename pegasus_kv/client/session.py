"""What every part of one client shares: the connection pool, the retry pacing, background tasks.

An attempt is one request to one address. Its failures come back as AttemptFailed, which says
whether the request may have been executed (see retry.py); once the client is closed every call
fails with ShuttingDownError instead, and nothing is retried.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Coroutine
from time import monotonic
from typing import Any, TypeVar

from pegasus_kv.client.options import ClientOptions, check_timeout_s
from pegasus_kv.client.retry import AttemptFailed, Deadline, Pacer
from pegasus_kv.core.errors import PegasusError, PegasusTimeoutError, ShuttingDownError
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.invariants import InvariantViolation, check_invariant
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.connection_pool import ConnectionPool, RandomSource

logger = logging.getLogger(__name__)

R = TypeVar("R", bound=Message)
T = TypeVar("T")

_new_object = object.__new__

# Background tasks of one client at a time (configuration refreshes, one per open table at most).
MAX_BACKGROUND_TASKS = 4096


class ClientInvariantError(InvariantViolation):
    """A broken internal invariant of the client: a bug, never a server or network condition."""


def invariant(condition: bool, message: str) -> None:
    """Check an invariant in a way that `python -O` does not strip."""
    check_invariant(condition, message, ClientInvariantError)


def expect_reply(reply: Message, response_type: type[R], what: str) -> R:
    """The reply a request must get; anything else is the server's bug, reported as such."""
    if not isinstance(reply, response_type):
        raise PegasusError(f"{what}: expected {response_type.__name__}, got {type(reply).__name__}")
    return reply


class ClientSession:
    def __init__(self, options: ClientOptions, rng: RandomSource) -> None:
        self.options = options
        self.pool = ConnectionPool(
            backoff=options.redial_backoff, rng=rng, connect_timeout_s=options.connect_timeout_s
        )
        self.pacer = Pacer(options.retry_backoff, rng)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def ensure_open(self) -> None:
        if self._closed:
            raise ShuttingDownError("the client is closed")

    def deadline(self, timeout: float | None) -> Deadline:
        """The deadline of a call that starts now (`timeout` seconds, or the client's default)."""
        if self._closed:
            raise ShuttingDownError("the client is closed")
        if timeout is None:
            return Deadline(self.options.timeout_s)
        if not (type(timeout) is float and 0.0 < timeout < math.inf):  # else the full check
            check_timeout_s("timeout", timeout)
            return Deadline(timeout)
        # Deadline(timeout), its __init__ inlined (once per call: a class's Python __init__ is a
        # call from C, which the interpreter cannot inline).
        deadline = _new_object(Deadline)
        deadline.timeout_s = timeout
        deadline.at = monotonic() + timeout
        return deadline

    async def attempt(
        self, address: str, request: Message, *, gpid: Gpid | None, deadline: Deadline
    ) -> Message:
        """Send `request` to `address` once and return the reply.

        Raises AttemptFailed for any failure of this attempt, and ShuttingDownError (not wrapped:
        it must not be retried) once the client is closed.
        """
        if self._closed:
            raise ShuttingDownError("the client is closed")
        try:
            timeout_s = deadline.attempt_timeout_s(self.options.attempt_timeout_s)
        except PegasusTimeoutError as exc:
            raise AttemptFailed(exc, maybe_applied=False) from exc
        # Nearly every attempt finds its connection open: look it up without a coroutine.
        connection = self.pool.live(address)
        if connection is None:
            try:
                connection = await self.pool.connection(address, timeout_s=timeout_s)
            except PegasusError as exc:
                self.ensure_open()
                # Never sent: a refused or timed-out connect proves the request was not executed.
                raise AttemptFailed(exc, maybe_applied=False) from exc
        try:
            return await connection.call(request, gpid=gpid, timeout_s=timeout_s)
        except PegasusError as exc:
            self.ensure_open()
            raise AttemptFailed(exc, maybe_applied=True) from exc

    def spawn(self, coroutine: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Run a background task that close() cancels and waits for."""
        if self._closed:
            coroutine.close()
            raise ShuttingDownError("the client is closed")
        if len(self._tasks) >= MAX_BACKGROUND_TASKS:
            coroutine.close()
            raise PegasusError(f"the client already runs {len(self._tasks)} background tasks")
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Whoever waited on it has seen the error; this only keeps asyncio from logging it.
            logger.debug("background task %s failed: %s", task.get_name(), task.exception())

    async def close(self) -> None:
        """Fail what is pending with ShuttingDownError, close every connection, leave no task."""
        if self._closed:
            return
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.pool.close()
        invariant(not self._tasks, "a background task outlived the client")
