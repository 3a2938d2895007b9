"""The peer outbox: one-way messages to other replica servers leave in order, at once when they can.

Stories: the first message to a peer waits for the dial in the peer's queue, and the ones sent
meanwhile queue behind it; once connected, a message goes straight to the socket buffer within
`send` (no task, no pass of the event loop); either way the peer receives them in order.
"""

from __future__ import annotations

from pegasus_kv.core.codec import Decoded
from pegasus_kv.core.messages import GetRequest
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.connection_pool import ConnectionPool
from pegasus_kv.replication.replica.peer_outbox import PeerOutbox
from pegasus_kv.replication.rpc_server import RpcServer
from tests.unit.test_transport_support import HOST, get, on_both_loops, run, wait_until


@on_both_loops
def test_messages_reach_a_peer_in_order_whether_queued_or_sent_at_once(loop_name: str) -> None:
    received: list[bytes] = []

    def collect(request: Decoded, peer: str) -> Message | None:
        message = request.message
        assert isinstance(message, GetRequest)
        received.append(message.sort_key)
        return None

    async def story() -> None:
        server = RpcServer(collect, HOST, 0)
        await server.start()
        pool = ConnectionPool(connect_timeout_s=2.0)
        outbox = PeerOutbox(pool, max_queued_per_peer=100, timeout_s=2.0)

        # Not connected yet: the first messages wait in the peer's queue while it dials.
        for index in range(3):
            outbox.send(server.address, get(b"queued %d" % index))
        assert outbox.queued(server.address) == 3
        await wait_until(lambda: len(received) == 3)

        # Connected: each message is handed to the connection inside send().
        for index in range(3):
            outbox.send(server.address, get(b"direct %d" % index))
            assert outbox.queued(server.address) == 0
        assert outbox.sent == 6
        await wait_until(lambda: len(received) == 6)
        assert received == [b"queued 0", b"queued 1", b"queued 2", b"direct 0", b"direct 1", b"direct 2"]
        assert outbox.dropped == 0

        await outbox.close()
        await pool.close()
        await server.close()

    run(loop_name, story())
