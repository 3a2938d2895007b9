"""Client writes waiting for their answer: ClientToken -> where the answer goes (a ReplySink).

The replica core names a waiting write by an opaque token (ready.py ClientToken). The server
allocates one per write it hands to the core, and the Ready says how it ends: the store's reply
for that write after the apply (answer), or an error code (refuse: BUSY, NOT_PRIMARY,
NOT_ENOUGH_MEMBER, TIMEOUT - prepared but outcome unknown - or STORAGE / SHUTTING_DOWN from the
runtime). The table is bounded: past max_waiting writes the server answers BUSY before the core
sees the write.

A write may come with an observer (the server's request metrics), told when the write is answered
or refused: cheaper than another done-callback on the future, which asyncio would schedule apart.
It may also bring the object its answer goes to (a ReplySink, e.g. the RPC server's PendingReply,
which frames the reply on the spot) instead of the future made here.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from pegasus_kv.core.errors import BusyError, ErrorCode, error_from_code
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.pacifica.ready import ClientToken
from pegasus_kv.replication.replica.invariants import invariant


class ReplySink(Protocol):
    """Where a write's answer goes: an asyncio future, or anything completed the same way."""

    def done(self) -> bool: ...

    def set_result(self, result: Message, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


class WriteObserver(Protocol):
    """Told how a write ended; `started_s` is what it was added with (metrics/replica.py).
    `observe(seconds)` takes the latency of an answered write measured by the caller (the
    writes of one mutation are answered together and share one clock reading)."""

    def done(self, started_s: float) -> None: ...

    def failed(self, started_s: float, error: BaseException) -> None: ...

    @property
    def observe(self) -> Callable[[float], None]: ...


class WriteWaiters:
    def __init__(self, max_waiting: int) -> None:
        invariant(max_waiting >= 1, "max_waiting must be positive")
        self.max_waiting = max_waiting
        self._tokens = itertools.count(1)
        self._waiting: dict[ClientToken, tuple[Gpid, ReplySink, WriteObserver | None, float]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def add(
        self, gpid: Gpid, observer: WriteObserver | None = None, started_s: float = 0.0
    ) -> tuple[ClientToken, asyncio.Future[Message]]:
        """A new token and its future; raises BusyError when the table is full."""
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        return self.add_sink(gpid, future, observer, started_s), future

    def add_sink(
        self, gpid: Gpid, sink: ReplySink, observer: WriteObserver | None = None, started_s: float = 0.0
    ) -> ClientToken:
        """A new token whose answer goes to `sink`; raises BusyError when the table is full."""
        waiting = self._waiting
        if len(waiting) >= self.max_waiting:
            raise BusyError(f"{len(waiting)} writes are waiting on this server")
        token = next(self._tokens)
        waiting[token] = (gpid, sink, observer, started_s)
        return token

    def answer(self, token: ClientToken, reply: Message) -> None:
        entry = self._waiting.pop(token, None)
        if entry is None:
            return
        _gpid, sink, observer, started_s = entry  # one unpacking: every client write ends here
        if not sink.done():
            sink.set_result(reply)
            if observer is not None:
                observer.done(started_s)

    def answer_all(self, tokens: Sequence[ClientToken], replies: Sequence[Message]) -> None:
        """answer(token, reply) for each pair, in order: the writes of one applied mutation.

        One call per mutation instead of one per write, and one clock reading for all of them: their
        answers became ready together, when the store applied the mutation (the framing of the
        replies before a write's own is a few microseconds). A sink done already (a future
        cancelled by its caller) gets nothing and its write is not observed, as in `answer`."""
        if len(tokens) != len(replies):
            invariant(False, f"{len(tokens)} tokens answered with {len(replies)} replies")
        pop = self._waiting.pop
        now_s = time.perf_counter()
        for token, reply in zip(tokens, replies, strict=False):
            entry = pop(token, None)
            if entry is None:
                continue
            _gpid, sink, observer, started_s = entry
            # set_result raises InvalidStateError on a sink done already (as a future does), which
            # asking done() first would avoid at the price of a call per write: a try costs
            # nothing until it raises.
            try:
                sink.set_result(reply)
            except asyncio.InvalidStateError:
                continue
            if observer is not None:
                observer.observe(now_s - started_s)

    def refuse(self, token: ClientToken, code: ErrorCode, reason: str = "") -> None:
        entry = self._waiting.pop(token, None)
        if entry is not None and not entry[1].done():
            error = error_from_code(code, reason or _REASONS.get(code, ""))
            entry[1].set_exception(error)
            if entry[2] is not None:
                entry[2].failed(entry[3], error)

    def refuse_all(self, code: ErrorCode, reason: str, gpid: Gpid | None = None) -> int:
        """Refuse every waiting write (of one replica when gpid is given); returns how many."""
        tokens = [token for token, entry in self._waiting.items() if gpid is None or entry[0] == gpid]
        for token in tokens:
            self.refuse(token, code, reason)
        return len(tokens)


_REASONS = {
    ErrorCode.NOT_PRIMARY: "this replica is not the serving primary: refresh the configuration",
    ErrorCode.NOT_ENOUGH_MEMBER: "the partition has too few members to commit writes",
    ErrorCode.BUSY: "the partition's write queue is full",
    ErrorCode.TIMEOUT: "the write was prepared but the primary changed: its outcome is unknown",
}
