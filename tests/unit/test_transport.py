"""The transport end to end on loopback: one client connection, one RpcServer (DESIGN.md section 6).

Stories: many calls share a connection and are answered out of order; timeouts, typed errors and
broken handlers stay inside their own call; a peer sending garbage loses only its own connection;
both ends bound what they hold and make callers wait instead of growing.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from pegasus_kv.core.codec import Decoded, FrameDecoder, FrameKind, encode_frame
from pegasus_kv.core.errors import (
    BusyError,
    CodecError,
    ErrorCode,
    InvalidArgumentError,
    NetworkError,
    NotPrimaryError,
    PegasusError,
    PegasusTimeoutError,
    ShuttingDownError,
)
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import GetRequest, GetResponse, SetRequest, TtlResponse
from pegasus_kv.core.registry import Message
from pegasus_kv.replication import loop as loops
from pegasus_kv.replication.rpc_server import HandlerResult, RpcServer, ServerLimits
from pegasus_kv.replication.transport import (
    Connection,
    ConnectionLimits,
    FrameWriter,
    format_address,
    parse_address,
)
from tests.unit.test_transport_support import (
    HOST,
    Gates,
    echo,
    free_port,
    get,
    on_both_loops,
    other_tasks,
    run,
    wait_until,
)


async def connect(server: RpcServer, limits: ConnectionLimits | None = None) -> Connection:
    return await Connection.open(server.address, connect_timeout_s=2.0, limits=limits)


@on_both_loops
def test_many_concurrent_calls_on_one_connection_are_answered_out_of_order(loop_name: str) -> None:
    async def story() -> None:
        gates = Gates()
        async with RpcServer(gates.handler, HOST, 0) as server:
            connection = await connect(server)
            keys = [b"k%02d" % i for i in range(40)]
            finished: list[bytes] = []

            async def call(key: bytes) -> None:
                reply = await connection.call(get(key), timeout_s=5.0)
                assert reply == GetResponse(key)  # every caller gets its own answer
                finished.append(key)

            callers = [asyncio.create_task(call(key)) for key in keys]
            await wait_until(lambda: gates.held == len(keys))
            assert connection.in_flight == len(keys)
            for opened, key in enumerate(reversed(keys), start=1):  # the last request is answered first
                gates.open(key)
                await wait_until(lambda: len(finished) == opened)  # noqa: B023 - awaited within this turn
            await asyncio.gather(*callers)

            assert finished == list(reversed(keys))
            assert server.connection_count == 1
            assert connection.in_flight == 0
            await connection.close()

    run(loop_name, story())


@on_both_loops
def test_a_call_that_times_out_does_not_disturb_the_others(loop_name: str) -> None:
    async def story() -> None:
        gates = Gates()
        async with RpcServer(gates.handler, HOST, 0) as server:
            connection = await connect(server)
            slow = asyncio.create_task(connection.call(get(b"slow"), timeout_s=0.05))
            others = [asyncio.create_task(connection.call(get(b"k%d" % i), timeout_s=5.0)) for i in range(10)]
            for i in range(10):
                gates.open(b"k%d" % i)

            with pytest.raises(PegasusTimeoutError) as timed_out:
                await slow
            assert timed_out.value.retriable
            assert await asyncio.gather(*others) == [GetResponse(b"k%d" % i) for i in range(10)]

            # The slow reply arrives after its caller gave up: it is dropped, not handed to the
            # next call, and the connection carries on.
            gates.open(b"slow")
            await wait_until(lambda: gates.held == 0)
            gates.open(b"after")
            assert await connection.call(get(b"after"), timeout_s=5.0) == GetResponse(b"after")
            assert connection.in_flight == 0
            await connection.close()

    run(loop_name, story())


@on_both_loops
def test_an_error_reply_becomes_the_typed_exception_with_its_retriable_flag(loop_name: str) -> None:
    def handler(request: Decoded, peer: str) -> HandlerResult:
        assert isinstance(request.message, GetRequest)
        if request.message.sort_key == b"moved":
            raise NotPrimaryError(f"partition {request.gpid} has a new primary")
        if request.message.sort_key == b"bad":
            raise InvalidArgumentError("sort key is not allowed")
        return echo(request, peer)

    async def story() -> None:
        async with RpcServer(handler, HOST, 0) as server:
            connection = await connect(server)

            with pytest.raises(NotPrimaryError) as moved:
                await connection.call(get(b"moved"), gpid=Gpid(3, 7), timeout_s=5.0)
            assert moved.value.retriable
            assert moved.value.message == "partition 3.7 has a new primary"

            with pytest.raises(InvalidArgumentError) as bad:
                await connection.call(get(b"bad"), timeout_s=5.0)
            assert not bad.value.retriable

            assert await connection.call(get(b"fine"), timeout_s=5.0) == GetResponse(b"fine")
            await connection.close()

    run(loop_name, story())


@on_both_loops
def test_an_unexpected_handler_exception_answers_internal_and_the_server_keeps_serving(
    loop_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(request: Decoded, peer: str) -> Message | None:
        assert isinstance(request.message, GetRequest)
        if request.message.sort_key == b"divide":
            return GetResponse(b"%d" % (1 // 0))
        if request.message.sort_key == b"forget":
            return None  # a request always deserves an answer
        return echo(request, peer)

    async def story() -> None:
        async with RpcServer(handler, HOST, 0) as server:
            connection = await connect(server)

            with pytest.raises(PegasusError) as internal:
                await connection.call(get(b"divide"), timeout_s=5.0)
            assert internal.value.code is ErrorCode.INTERNAL
            assert "ZeroDivisionError" in internal.value.message

            with pytest.raises(PegasusError) as no_reply:
                await connection.call(get(b"forget"), timeout_s=5.0)
            assert no_reply.value.code is ErrorCode.INTERNAL

            assert await connection.call(get(b"still here"), timeout_s=5.0) == GetResponse(b"still here")
            assert server.connection_count == 1
            await connection.close()

    with caplog.at_level(logging.ERROR, logger="pegasus_kv.replication.rpc_server"):
        run(loop_name, story())
    failures = [record for record in caplog.records if record.exc_info]
    assert len(failures) == 1
    assert failures[0].exc_info is not None and failures[0].exc_info[0] is ZeroDivisionError


@on_both_loops
@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\x00\x00\x00\x05hello", id="not-msgpack"),
        pytest.param(b"\xff\xff\xff\xff" + b"x" * 64, id="over-long-length"),
        pytest.param(b"\x00\x00\x00\x00", id="empty-frame"),
    ],
)
def test_a_client_sending_garbage_loses_its_connection_while_another_keeps_working(
    loop_name: str, garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async def story() -> None:
        async with RpcServer(echo, HOST, 0) as server:
            good = await connect(server)
            reader, writer = await asyncio.open_connection(HOST, server.port)
            # A valid request first, so we know the bad one is what ends the connection.
            writer.write(encode_frame(get(b"ok"), request_id=1, kind=FrameKind.REQUEST))
            writer.write(garbage)
            await writer.drain()

            received = await reader.read()  # until the server closes on us
            assert received == encode_frame(GetResponse(b"ok"), request_id=1, kind=FrameKind.RESPONSE)
            writer.close()
            await wait_until(lambda: server.connection_count == 1)

            assert await good.call(get(b"unharmed"), timeout_s=5.0) == GetResponse(b"unharmed")
            await good.close()

    with caplog.at_level(logging.WARNING, logger="pegasus_kv.replication.rpc_server"):
        run(loop_name, story())
    assert any("closing connection from" in record.getMessage() for record in caplog.records)


@on_both_loops
def test_with_a_tiny_in_flight_bound_extra_calls_wait_and_then_complete(loop_name: str) -> None:
    async def story() -> None:
        gates = Gates()
        async with RpcServer(gates.handler, HOST, 0) as server:
            connection = await connect(server, ConnectionLimits(max_in_flight=2))
            keys = [b"k%d" % i for i in range(6)]
            calls = [asyncio.create_task(connection.call(get(key), timeout_s=5.0)) for key in keys]
            await wait_until(lambda: gates.held == 2)
            await asyncio.sleep(0.02)
            assert gates.seen == keys[:2]  # only two were sent; the rest wait in order
            assert connection.in_flight == 2
            assert connection.queued == 4

            for key in keys:
                gates.open(key)
            assert await asyncio.gather(*calls) == [GetResponse(key) for key in keys]
            assert gates.seen == keys
            assert gates.most_held <= 2
            await connection.close()

    run(loop_name, story())


@on_both_loops
def test_a_caller_that_waits_its_whole_timeout_for_a_slot_gets_busy_and_is_never_sent(loop_name: str) -> None:
    async def story() -> None:
        gates = Gates()
        async with RpcServer(gates.handler, HOST, 0) as server:
            connection = await connect(server, ConnectionLimits(max_in_flight=1))
            first = asyncio.create_task(connection.call(get(b"first"), timeout_s=5.0))
            await wait_until(lambda: gates.held == 1)

            with pytest.raises(BusyError) as busy:
                await connection.call(get(b"second"), timeout_s=0.05)
            assert busy.value.retriable

            gates.open(b"first")
            assert await first == GetResponse(b"first")
            assert gates.seen == [b"first"]  # the server never heard of the second call
            assert connection.queued == 0
            await connection.close()

    run(loop_name, story())


@on_both_loops
def test_a_server_at_its_in_flight_bound_stops_reading_until_handlers_finish(loop_name: str) -> None:
    async def story() -> None:
        gates = Gates()
        limits = ServerLimits(max_in_flight_per_connection=2)
        async with RpcServer(gates.handler, HOST, 0, limits=limits) as server:
            connection = await connect(server)
            keys = [b"k%d" % i for i in range(8)]
            calls = [asyncio.create_task(connection.call(get(key), timeout_s=5.0)) for key in keys]
            await wait_until(lambda: gates.held == 2)
            await asyncio.sleep(0.02)
            assert gates.seen == keys[:2]  # the other six are sent but wait, unread

            for key in keys:
                gates.open(key)
            assert await asyncio.gather(*calls) == [GetResponse(key) for key in keys]
            assert gates.most_held == 2
            await connection.close()

    run(loop_name, story())


@on_both_loops
def test_a_peer_that_does_not_read_its_replies_stops_being_read(loop_name: str) -> None:
    big = b"v" * 65536
    answered = 0

    def handler(request: Decoded, peer: str) -> HandlerResult:
        nonlocal answered
        answered += 1
        return GetResponse(big)

    async def story() -> None:
        limits = ServerLimits(max_buffered_bytes_per_connection=256 * 1024)
        async with RpcServer(handler, HOST, 0, limits=limits) as server:
            reader, writer = await asyncio.open_connection(HOST, server.port)
            requests = 1000  # 64 MB of replies
            writer.write(
                b"".join(
                    encode_frame(get(b"%d" % i), request_id=i + 1, kind=FrameKind.REQUEST)
                    for i in range(requests)
                )
            )
            await writer.drain()
            answered_before = -1
            while answered != answered_before:  # until the server stops taking requests from us
                answered_before = answered
                await asyncio.sleep(0.05)
            # It answered what fits in the kernel's socket buffers plus its own 256 KB, not 64 MB.
            assert answered < requests // 2

            decoder = FrameDecoder()
            replies = 0
            while replies < requests:
                replies += len(decoder.feed(await reader.read(1 << 20)))
            assert answered == requests
            writer.close()

    run(loop_name, story())


@on_both_loops
def test_one_way_sends_to_a_peer_that_does_not_read_wait_and_then_get_busy(loop_name: str) -> None:
    async def story() -> None:
        with socket.socket() as listener:  # accepts at the kernel level, never reads
            listener.bind((HOST, 0))
            listener.listen(8)
            limits = ConnectionLimits(max_buffered_bytes=256 * 1024)
            connection = await Connection.open(
                format_address(HOST, listener.getsockname()[1]), connect_timeout_s=2.0, limits=limits
            )
            big = GetResponse(b"v" * 65536)
            sent = 0
            with pytest.raises(BusyError):
                while sent < 1000:  # 64 MB, far beyond any socket buffer
                    await connection.send_oneway(big, timeout_s=0.1)
                    sent += 1
            assert sent < 500
            await connection.close(grace_s=0.05)

    run(loop_name, story())


@on_both_loops
def test_one_way_messages_reach_the_handler_and_get_no_reply(loop_name: str) -> None:
    async def story() -> None:
        received: list[tuple[Message, Gpid | None]] = []

        def handler(request: Decoded, peer: str) -> HandlerResult:
            if request.kind is FrameKind.ONEWAY:
                received.append((request.message, request.gpid))
                return None
            return echo(request, peer)

        async with RpcServer(handler, HOST, 0) as server:
            connection = await connect(server)
            beacon = SetRequest(b"node", b"alive", b"1")
            await connection.send_oneway(beacon, gpid=Gpid(1, 0), timeout_s=1.0)
            await wait_until(lambda: len(received) == 1)
            assert received == [(beacon, Gpid(1, 0))]
            assert connection.in_flight == 0
            assert await connection.call(get(b"after"), timeout_s=5.0) == GetResponse(b"after")
            await connection.close()

    run(loop_name, story())


@on_both_loops
def test_closing_the_server_fails_pending_calls_and_cancels_its_handlers(loop_name: str) -> None:
    async def story() -> None:
        gates = Gates()
        server = RpcServer(gates.handler, HOST, 0)
        await server.start()
        connection = await connect(server)
        pending = asyncio.create_task(connection.call(get(b"forever"), timeout_s=5.0))
        await wait_until(lambda: gates.held == 1)

        await server.close()
        with pytest.raises(NetworkError):
            await pending
        assert gates.cancelled == 1
        assert connection.closed
        with pytest.raises(NetworkError):
            await connection.call(get(b"again"), timeout_s=1.0)
        await connection.close()
        assert other_tasks() == set()

    run(loop_name, story())


@on_both_loops
def test_closing_a_connection_fails_its_pending_calls_with_shutting_down(loop_name: str) -> None:
    async def story() -> None:
        gates = Gates()
        async with RpcServer(gates.handler, HOST, 0) as server:
            connection = await connect(server, ConnectionLimits(max_in_flight=1))
            sent = asyncio.create_task(connection.call(get(b"sent"), timeout_s=5.0))
            queued = asyncio.create_task(connection.call(get(b"queued"), timeout_s=5.0))
            await wait_until(lambda: gates.held == 1 and connection.queued == 1)

            await connection.close()
            for call in (sent, queued):
                with pytest.raises(ShuttingDownError):
                    await call
            with pytest.raises(ShuttingDownError):
                await connection.call(get(b"later"), timeout_s=1.0)
            await wait_until(lambda: server.connection_count == 0)
        assert other_tasks() == set()

    run(loop_name, story())


@on_both_loops
def test_a_cancelled_caller_gives_back_its_slot(loop_name: str) -> None:
    async def story() -> None:
        gates = Gates()
        async with RpcServer(gates.handler, HOST, 0) as server:
            connection = await connect(server, ConnectionLimits(max_in_flight=1))
            abandoned = asyncio.create_task(connection.call(get(b"abandoned"), timeout_s=5.0))
            await wait_until(lambda: gates.held == 1)
            abandoned.cancel()
            with pytest.raises(asyncio.CancelledError):
                await abandoned
            assert connection.in_flight == 0

            gates.open(b"next")
            assert await connection.call(get(b"next"), timeout_s=5.0) == GetResponse(b"next")
            await connection.close()

    run(loop_name, story())


@on_both_loops
def test_a_call_whose_timeout_is_not_a_positive_number_of_seconds_is_refused(loop_name: str) -> None:
    async def story() -> None:
        gates = Gates()
        async with RpcServer(gates.handler, HOST, 0) as server:
            connection = await connect(server)
            for timeout_s in (0.0, -1.0, float("nan"), float("inf"), 0):
                with pytest.raises(InvalidArgumentError, match="timeout_s"):
                    await connection.call(get(b"never"), timeout_s=timeout_s)
            assert connection.in_flight == 0
            gates.open(b"after")
            assert await connection.call(get(b"after"), timeout_s=5) == GetResponse(b"after")
            assert gates.seen == [b"after"]  # none of the refused calls was sent
            await connection.close()

    run(loop_name, story())


@on_both_loops
def test_a_message_over_the_frame_limit_is_refused_before_it_is_sent(loop_name: str) -> None:
    async def story() -> None:
        async with RpcServer(echo, HOST, 0) as server:
            connection = await connect(server, ConnectionLimits(max_frame_bytes=1024))
            with pytest.raises(CodecError):
                await connection.call(get(b"x" * 2048), timeout_s=1.0)
            assert await connection.call(get(b"small"), timeout_s=1.0) == GetResponse(b"small")
            await connection.close()

    run(loop_name, story())


@on_both_loops
def test_a_server_answering_garbage_fails_the_pending_calls_with_a_network_error(
    loop_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def story() -> None:
        async def answer_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readexactly(4)
            writer.write(b"\x00\x00\x00\x03abc")  # a frame whose payload is not msgpack
            await writer.drain()
            await reader.read()  # until the client hangs up
            writer.close()

        garbage_server = await asyncio.start_server(answer_garbage, HOST, 0)
        port = garbage_server.sockets[0].getsockname()[1]
        connection = await Connection.open(format_address(HOST, port), connect_timeout_s=2.0)
        calls = [asyncio.create_task(connection.call(get(b"k%d" % i), timeout_s=5.0)) for i in range(3)]
        for call in calls:
            with pytest.raises(NetworkError, match="bad frame"):
                await call
        assert connection.closed
        await connection.close()
        garbage_server.close()
        await garbage_server.wait_closed()

    with caplog.at_level(logging.WARNING, logger="pegasus_kv.replication.transport"):
        run(loop_name, story())
    assert any("bad frame" in record.getMessage() for record in caplog.records)


@on_both_loops
def test_dialling_nobody_is_a_network_error(loop_name: str) -> None:
    async def story() -> None:
        with pytest.raises(NetworkError) as refused:
            await Connection.open(f"{HOST}:{free_port()}", connect_timeout_s=2.0)
        assert refused.value.retriable

    run(loop_name, story())


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("localhost:34601", ("localhost", 34601)),
        ("10.0.0.7:1", ("10.0.0.7", 1)),
        ("[::1]:34601", ("::1", 34601)),
        (
            "replica-0.replica.pegasus.svc.cluster.local:34801",
            ("replica-0.replica.pegasus.svc.cluster.local", 34801),
        ),
    ],
)
def test_addresses_are_host_and_port_and_the_host_may_be_a_name(
    address: str, expected: tuple[str, int]
) -> None:
    assert parse_address(address) == expected
    assert format_address(*expected) == address


@pytest.mark.parametrize(
    "address", ["", "localhost", "localhost:", ":80", "host:0", "host:65536", "::1:80", "h:x"]
)
def test_a_malformed_address_is_an_invalid_argument(address: str) -> None:
    with pytest.raises(InvalidArgumentError):
        parse_address(address)


def test_run_prefers_uvloop() -> None:
    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert loops.uvloop_available()
    assert loops.run(loop_module()).startswith("uvloop")


@on_both_loops
def test_a_reply_that_cannot_be_framed_answers_codec_and_the_next_reply_still_arrives(loop_name: str) -> None:
    def handler(request: Decoded, peer: str) -> HandlerResult:
        message = request.message
        assert isinstance(message, GetRequest)
        if message.sort_key == b"unframeable":
            return TtlResponse(ttl_s=2**70)  # outside msgpack's 64-bit integers
        return GetResponse(message.sort_key)

    async def story() -> None:
        async with RpcServer(handler, HOST, 0) as server:
            connection = await connect(server)
            calls = [
                connection.call(get(key), timeout_s=5.0) for key in (b"before", b"unframeable", b"after")
            ]
            before, unframeable, after = await asyncio.gather(*calls, return_exceptions=True)
            assert before == GetResponse(b"before")
            assert isinstance(unframeable, CodecError)
            assert after == GetResponse(b"after")
            await connection.close()

    run(loop_name, story())


class _RecordingTransport:
    """What a FrameWriter hands to its transport, kept in order."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes | bytearray) -> None:
        self.written.append(bytes(data))

    def writelines(self, chunks: list[bytes | bytearray]) -> None:
        self.written.append(b"".join(chunks))


def _recording_writer(*, max_buffered_bytes: int) -> tuple[_RecordingTransport, FrameWriter]:
    """A FrameWriter over a transport that records what it is given (call on a running loop)."""
    transport = _RecordingTransport()
    writer = FrameWriter(
        asyncio.get_running_loop(),
        transport,  # type: ignore[arg-type]
        max_buffered_bytes=max_buffered_bytes,
        on_room=lambda: None,
    )
    return transport, writer


def test_a_frame_writer_sends_written_and_framed_messages_in_order_and_reports_when_full() -> None:
    async def story() -> None:
        transport, writer = _recording_writer(max_buffered_bytes=100)
        first = encode_frame(GetResponse(b"1"), request_id=1, kind=FrameKind.RESPONSE)
        writer.write_message(GetResponse(b"1"), 1, FrameKind.RESPONSE, None, 1000)
        request = encode_frame(get(b"2"), request_id=2, kind=FrameKind.REQUEST)
        writer.write(request)
        with pytest.raises(CodecError):
            writer.write_message(TtlResponse(ttl_s=2**70), 3, FrameKind.RESPONSE, None, 1000)
        last = encode_frame(GetResponse(b"4" * 80), request_id=4, kind=FrameKind.RESPONSE)
        assert not writer.full
        writer.write_message(GetResponse(b"4" * 80), 4, FrameKind.RESPONSE, None, 1000)
        assert writer.full and writer.buffered_bytes == len(first) + len(request) + len(last)
        await asyncio.sleep(0)  # the writer flushes once per pass of the loop
        assert transport.written == [first + request + last]
        assert not writer.full and writer.buffered_bytes == 0
        writer.pause()
        assert writer.full
        writer.resume()
        assert not writer.full

    asyncio.run(story())


def test_a_frame_writer_frames_a_request_only_when_it_has_room_for_it() -> None:
    # The client's path (Connection.call): a request is framed into the outgoing bytes if
    # has_room would take it, and otherwise leaves no trace (the caller then queues it).
    async def story() -> None:
        transport, writer = _recording_writer(max_buffered_bytes=100)
        big = get(b"b" * 150)
        big_frame = encode_frame(big, request_id=1, kind=FrameKind.REQUEST)
        assert len(big_frame) > 100
        assert writer.write_message(
            big, 1, FrameKind.REQUEST, None, 1000, only_if_room=True
        )  # an empty buffer takes one
        assert writer.full
        assert not writer.write_message(get(b"2"), 2, FrameKind.REQUEST, None, 1000, only_if_room=True)
        assert writer.buffered_bytes == len(big_frame)
        await asyncio.sleep(0)
        assert transport.written == [big_frame]

        small = encode_frame(get(b"3"), request_id=3, kind=FrameKind.REQUEST)
        assert writer.write_message(get(b"3"), 3, FrameKind.REQUEST, None, 1000, only_if_room=True)
        with pytest.raises(CodecError):  # over max_frame_bytes: nothing written
            writer.write_message(big, 4, FrameKind.REQUEST, None, 100, only_if_room=True)
        assert not writer.write_message(
            get(b"5" * 90), 5, FrameKind.REQUEST, None, 1000, only_if_room=True
        )  # no room
        assert writer.buffered_bytes == len(small)
        writer.pause()
        assert not writer.write_message(get(b"6"), 6, FrameKind.REQUEST, None, 1000, only_if_room=True)
        writer.resume()
        await asyncio.sleep(0)
        assert transport.written == [big_frame, small]

    asyncio.run(story())
