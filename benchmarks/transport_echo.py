"""Micro-benchmark: echo RPCs per second through the transport (RpcServer + ConnectionPool).

N concurrent callers share one pooled connection and each sends GetRequest after GetRequest; the
server answers GetResponse(value=sort_key). By default the server runs in a child process, so
client and server each have a core as they would in a cluster; --same-process puts both on one
loop (one core). --handler picks how the server's handler answers: "sync" returns the reply
directly (no task), "coroutine" is an `async def` (one task per request), "future" returns an
already-resolved future (a done-callback, no task).

    .venv/bin/python benchmarks/transport_echo.py [--callers 64] [--seconds 3] [--loop uvloop]
        [--handler coroutine] [--value-bytes 100] [--same-process]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from collections.abc import Callable

from pegasus_kv.core.codec import Decoded
from pegasus_kv.core.messages import GetRequest, GetResponse
from pegasus_kv.core.registry import Message
from pegasus_kv.replication import loop as loops
from pegasus_kv.replication.connection_pool import ConnectionPool
from pegasus_kv.replication.rpc_server import HandlerResult, RpcServer

HOST = "127.0.0.1"


def make_handler(kind: str) -> Callable[[Decoded, str], HandlerResult]:
    def sync_echo(request: Decoded, peer: str) -> Message:
        assert isinstance(request.message, GetRequest)
        return GetResponse(request.message.sort_key)

    async def coroutine_echo(request: Decoded, peer: str) -> Message:
        return sync_echo(request, peer)

    def future_echo(request: Decoded, peer: str) -> asyncio.Future[Message | None]:
        future: asyncio.Future[Message | None] = asyncio.get_running_loop().create_future()
        future.set_result(sync_echo(request, peer))
        return future

    handlers: dict[str, Callable[[Decoded, str], HandlerResult]] = {
        "sync": sync_echo,
        "coroutine": coroutine_echo,
        "future": future_echo,
    }
    return handlers[kind]


def run_loop(loop_name: str, main: Callable[[], object]) -> None:
    factory = loops.loop_factory() if loop_name == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())  # type: ignore[arg-type]


def serve_in_child(loop_name: str, handler_kind: str, port_queue: multiprocessing.Queue[int]) -> None:
    async def main() -> None:
        server = RpcServer(make_handler(handler_kind), HOST, 0, name="echo")
        await server.start()
        port_queue.put(server.port)
        await asyncio.Event().wait()  # until the parent terminates us

    run_loop(loop_name, main)


async def drive(port: int, callers: int, seconds: float, value_bytes: int) -> tuple[int, float]:
    pool = ConnectionPool()
    address = f"{HOST}:{port}"
    payload = b"x" * value_bytes
    await pool.call(address, GetRequest(b"warm", b"up"), timeout_s=5.0)
    done = 0
    stop_at = 0.0

    async def caller() -> None:
        nonlocal done
        request = GetRequest(b"hash", payload)
        while time.perf_counter() < stop_at:
            reply = await pool.call(address, request, timeout_s=10.0)
            assert isinstance(reply, GetResponse) and reply.value == payload
            done += 1

    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - started
    await pool.close()
    return done, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--handler", choices=("sync", "coroutine", "future"), default="coroutine")
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--same-process", action="store_true")
    args = parser.parse_args()

    result: list[tuple[int, float]] = []
    if args.same_process:

        async def both() -> None:
            async with RpcServer(make_handler(args.handler), HOST, 0, name="echo") as server:
                result.append(await drive(server.port, args.callers, args.seconds, args.value_bytes))

        run_loop(args.loop, both)
    else:
        context = multiprocessing.get_context("spawn")
        port_queue: multiprocessing.Queue[int] = context.Queue()
        child = context.Process(
            target=serve_in_child, args=(args.loop, args.handler, port_queue), daemon=True
        )
        child.start()
        try:
            port = port_queue.get(timeout=30)

            async def client() -> None:
                result.append(await drive(port, args.callers, args.seconds, args.value_bytes))

            run_loop(args.loop, client)
        finally:
            child.terminate()
            child.join(5)
    done, elapsed = result[0]
    where = "one process" if args.same_process else "server in a child process"
    print(
        f"{done / elapsed:,.0f} echo calls/s  ({done} calls in {elapsed:.2f}s; {args.callers} callers, "
        f"{args.loop}, {args.handler} handler, {args.value_bytes}-byte values, {where})"
    )


if __name__ == "__main__":
    main()
