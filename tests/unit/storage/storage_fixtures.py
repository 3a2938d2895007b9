"""Helpers for the storage tests: an injected clock, a mutation feeder and typed reads."""

from __future__ import annotations

from typing import TypeVar

from pegasus_kv.core.messages import (
    DeleteRequest,
    ErrorReply,
    GetRequest,
    GetResponse,
    IncrRequest,
    MultiGetRequest,
    MultiGetResponse,
    SetRequest,
    TtlRequest,
    TtlResponse,
    WriteRequest,
)
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.core.registry import Message
from pegasus_kv.storage import PartitionStore

# 2023-11-14 22:13:20 UTC: any time after the Pegasus epoch (2016) will do.
START_UNIX_S = 1_700_000_000.0

R = TypeVar("R", bound=Message)


class FakeClock:
    """Unix seconds that move only when a test says so."""

    def __init__(self, now_s: float = START_UNIX_S) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


class Writer:
    """Feeds a store mutations in decree order, stamped like a primary would: with the clock's
    current time (or an explicit one, to play a replica applying an old mutation late)."""

    def __init__(self, store: PartitionStore, clock: FakeClock, cluster_id: int = 0) -> None:
        self.store = store
        self.clock = clock
        self.cluster_id = cluster_id

    def mutation(self, *writes: WriteRequest, at_s: float | None = None) -> Mutation:
        stamp_s = self.clock.now_s if at_s is None else at_s
        return Mutation(
            ballot=1,
            decree=self.store.last_applied_decree + 1,
            timestamp_us=int(stamp_s * 1_000_000),
            writes=list(writes),
            cluster_id=self.cluster_id,
        )

    def apply(self, *writes: WriteRequest, at_s: float | None = None) -> list[Message]:
        return self.store.apply(self.mutation(*writes, at_s=at_s))

    def one(self, write: WriteRequest, at_s: float | None = None) -> Message:
        (reply,) = self.apply(write, at_s=at_s)
        return reply


def expect(reply: Message, response_type: type[R]) -> R:
    assert isinstance(reply, response_type), f"expected {response_type.__name__}, got {reply!r}"
    return reply


def read(store: PartitionStore, request: Message, response_type: type[R]) -> R:
    return expect(store.read(request), response_type)


def get(store: PartitionStore, hash_key: bytes, sort_key: bytes) -> bytes | None:
    return read(store, GetRequest(hash_key, sort_key), GetResponse).value


def ttl(store: PartitionStore, hash_key: bytes, sort_key: bytes) -> int | None:
    return read(store, TtlRequest(hash_key, sort_key), TtlResponse).ttl_s


def multi_get(store: PartitionStore, request: MultiGetRequest) -> MultiGetResponse:
    return read(store, request, MultiGetResponse)


def error_code(reply: Message) -> int:
    return expect(reply, ErrorReply).code


def apply_story(writer: Writer, mutations: int) -> None:
    """Mutation d sets k<d>, bumps a counter and deletes k<d-2>: the state after any decree is
    easy to tell, so a test can check that data and decree agree."""
    for _ in range(mutations):
        decree = writer.store.last_applied_decree + 1
        writer.apply(
            SetRequest(b"story", b"k%d" % decree, b"v%d" % decree, ttl_s=3600),
            IncrRequest(b"story", b"counter", 1),
            DeleteRequest(b"story", b"k%d" % (decree - 2)),
        )
