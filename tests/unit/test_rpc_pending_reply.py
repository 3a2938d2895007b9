"""A handler that answers later without a future: it returns a PendingReply and completes it when the
answer is known (the replica server's client writes, rpc_server.py).

Stories: the answer reaches the caller whenever it is given, out of order, with the typed error of a
refusal; an answer given after the caller's connection went away is dropped without harm; pending
replies count against the connection's in-flight bound like any other unfinished handler.
"""

from __future__ import annotations

import asyncio

import pytest

from pegasus_kv.core.codec import Decoded
from pegasus_kv.core.errors import NotPrimaryError, ShuttingDownError
from pegasus_kv.core.messages import GetRequest, GetResponse, SetRequest
from pegasus_kv.replication.rpc_server import HandlerResult, PendingReply, RpcServer, ServerLimits
from pegasus_kv.replication.transport import Connection
from tests.unit.test_transport_support import HOST, get, on_both_loops, run, wait_until


class LaterAnswers:
    """Holds every request's PendingReply by sort key until the story answers it."""

    def __init__(self) -> None:
        self.pending: dict[bytes, PendingReply] = {}
        self.seen: list[bytes] = []

    def handler(self, request: Decoded, peer: str) -> HandlerResult:
        assert isinstance(request.message, GetRequest)
        reply = PendingReply()
        self.pending[request.message.sort_key] = reply
        self.seen.append(request.message.sort_key)
        return reply


@on_both_loops
def test_answers_given_later_reach_their_callers_in_any_order_errors_typed(loop_name: str) -> None:
    async def story() -> None:
        later = LaterAnswers()
        async with RpcServer(later.handler, HOST, 0) as server:
            connection = await Connection.open(server.address, connect_timeout_s=2.0)
            calls = {
                key: asyncio.create_task(connection.call(get(key), timeout_s=5.0))
                for key in (b"a", b"b", b"c")
            }
            await wait_until(lambda: len(later.pending) == 3)
            later.pending[b"c"].set_result(GetResponse(b"third asked, first answered"))
            assert await calls[b"c"] == GetResponse(b"third asked, first answered")
            assert not calls[b"a"].done() and not calls[b"b"].done()

            later.pending[b"b"].set_exception(NotPrimaryError("the primary moved"))
            with pytest.raises(NotPrimaryError) as moved:
                await calls[b"b"]
            assert moved.value.retriable and moved.value.message == "the primary moved"

            later.pending[b"a"].set_result(GetResponse(b"last"))
            assert await calls[b"a"] == GetResponse(b"last")
            # Given once: a second answer is a bug of the caller, as with a future.
            with pytest.raises(asyncio.InvalidStateError):
                later.pending[b"a"].set_result(GetResponse(b"again"))
            await connection.close()

    run(loop_name, story())


@on_both_loops
def test_an_answer_after_the_caller_left_is_dropped_and_the_server_goes_on(loop_name: str) -> None:
    async def story() -> None:
        later = LaterAnswers()
        async with RpcServer(later.handler, HOST, 0) as server:
            gone = await Connection.open(server.address, connect_timeout_s=2.0)
            orphan = asyncio.create_task(gone.call(get(b"orphan"), timeout_s=5.0))
            await wait_until(lambda: b"orphan" in later.pending)
            await gone.close()
            await wait_until(lambda: server.connection_count == 0)
            later.pending[b"orphan"].set_result(GetResponse(b"nobody listens"))
            assert later.pending[b"orphan"].done()
            with pytest.raises(ShuttingDownError):  # the caller's own connection closed under it
                await orphan

            fresh = await Connection.open(server.address, connect_timeout_s=2.0)
            call = asyncio.create_task(fresh.call(get(b"fresh"), timeout_s=5.0))
            await wait_until(lambda: b"fresh" in later.pending)
            later.pending[b"fresh"].set_result(GetResponse(b"served"))
            assert await call == GetResponse(b"served")
            await fresh.close()

    run(loop_name, story())


@on_both_loops
def test_pending_replies_hold_the_connections_in_flight_bound_until_answered(loop_name: str) -> None:
    async def story() -> None:
        later = LaterAnswers()
        limits = ServerLimits(max_in_flight_per_connection=2)
        async with RpcServer(later.handler, HOST, 0, limits=limits) as server:
            connection = await Connection.open(server.address, connect_timeout_s=2.0)
            keys = [b"k%d" % i for i in range(5)]
            calls = [asyncio.create_task(connection.call(get(key), timeout_s=5.0)) for key in keys]
            await wait_until(lambda: len(later.seen) == 2)
            await asyncio.sleep(0.02)
            assert later.seen == keys[:2]  # the rest are sent but not read while two are unanswered

            for key in keys:
                await wait_until(lambda: key in later.pending)  # noqa: B023 - awaited within this turn
                later.pending[key].set_result(GetResponse(key))
            assert await asyncio.gather(*calls) == [GetResponse(key) for key in keys]
            await connection.close()

    run(loop_name, story())


@on_both_loops
def test_a_reply_completed_before_its_handler_returns_it_still_reaches_the_caller(loop_name: str) -> None:
    def answers_at_once(request: Decoded, peer: str) -> HandlerResult:
        assert isinstance(request.message, GetRequest)
        reply = PendingReply()
        reply.set_result(GetResponse(b"ready before it was returned"))
        return reply

    async def story() -> None:
        async with RpcServer(answers_at_once, HOST, 0) as server:
            connection = await Connection.open(server.address, connect_timeout_s=2.0)
            calls = [connection.call(get(b"k%d" % i), timeout_s=5.0) for i in range(3)]
            assert await asyncio.gather(*calls) == [GetResponse(b"ready before it was returned")] * 3
            await connection.close()

    run(loop_name, story())


@on_both_loops
def test_a_routed_message_type_goes_to_its_own_handler_and_the_rest_to_the_default(loop_name: str) -> None:
    def by_default(request: Decoded, peer: str) -> HandlerResult:
        return GetResponse(b"the default handler")

    def routed(request: Decoded, peer: str) -> HandlerResult:
        assert isinstance(request.message, SetRequest)
        reply = PendingReply()  # a routed handler answers like any other, later included
        reply.set_result(GetResponse(b"the set handler: " + request.message.value))
        return reply

    async def story() -> None:
        async with RpcServer(by_default, HOST, 0, routes={SetRequest: routed}) as server:
            connection = await Connection.open(server.address, connect_timeout_s=2.0)
            assert await connection.call(SetRequest(b"h", b"s", b"v"), timeout_s=5.0) == GetResponse(
                b"the set handler: v"
            )
            assert await connection.call(get(b"k"), timeout_s=5.0) == GetResponse(b"the default handler")
            await connection.close()

    run(loop_name, story())
