"""Executes a NodeReady (node.py) and each replica's Ready (ready.py), in the order they prescribe.

NodeReady, in order:
1. `created`: a fresh runtime (empty log and store) for each gpid, before its Ready runs; its files
   open in the background and its workers start once they are open (replica_runtime.py queues).
2. `replicas`: each replica's Ready, field by field:
     persist -> the runtime's persist queue (log append, then on_log_durable);
     send -> the peer outbox at once;
     send_after_persist -> held by the runtime until everything persisted so far is durable;
     apply -> the runtime's store queue (in decree order; clients answered after the apply);
     replies -> the waiting clients at once;
     propose -> always empty here (the node moved proposals into to_meta; asserted);
     requests -> started in the background (their results come back as node events).
3. `to_meta`: BeaconRequest, ConfigSyncRequest, ConfigProposalRequest -> the meta link, at once.
4. `send`: the node's own answers -> the peer outbox.
5. `dropped`: after their Readies, close these replicas and delete their data.

Nothing here waits: every step only queues, so the tick loop and the RPC handlers that call this
never block on the disk or the network.
"""

from __future__ import annotations

from typing import Protocol

from pegasus_kv.core.errors import ErrorCode
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.pacifica.node import NodeReady
from pegasus_kv.replication.pacifica.ready import ClientToken, Outbound, Ready, RuntimeRequest
from pegasus_kv.replication.replica.invariants import violated
from pegasus_kv.replication.replica.replica_runtime import ReplicaRuntime


class ReadyTarget(Protocol):
    """The server side of execution."""

    def create_runtime(self, gpid: Gpid) -> ReplicaRuntime: ...

    def runtime(self, gpid: Gpid) -> ReplicaRuntime | None: ...

    def drop_runtime(self, gpid: Gpid) -> None: ...

    def send_to_peer(self, outbound: Outbound) -> None: ...

    def send_to_meta(self, message: Message) -> None: ...

    def refuse_write(self, token: ClientToken, code: ErrorCode, reason: str) -> None: ...

    def start_request(self, runtime: ReplicaRuntime, request: RuntimeRequest) -> None: ...


def execute_node_ready(out: NodeReady, target: ReadyTarget) -> None:
    # Runs for every core event: empty fields (most of them, most of the time) cost a truth test.
    if out.created:
        for gpid in out.created:
            target.create_runtime(gpid)
    for gpid, ready in out.replicas.items():
        execute_ready(gpid, ready, target)
    if out.to_meta:
        for message in out.to_meta:
            target.send_to_meta(message)
    if out.send:
        for outbound in out.send:
            target.send_to_peer(outbound)
    if out.dropped:
        for gpid in out.dropped:
            target.drop_runtime(gpid)


def execute_ready(gpid: Gpid, ready: Ready, target: ReadyTarget) -> None:
    if ready.propose:
        violated(f"{gpid}: a replica proposal the node did not take over")
    runtime = target.runtime(gpid)
    if runtime is None:
        # A partition this server does not host (node.on_client_write answers NOT_PRIMARY for it),
        # or one being closed: only answers and sends make sense; its data is gone or going.
        for outbound in ready.send:
            target.send_to_peer(outbound)
        for reply in ready.replies:
            target.refuse_write(reply.token, reply.code, "")
        for item in ready.apply:
            for token in item.tokens:
                target.refuse_write(token, ErrorCode.NOT_PRIMARY, f"replica {gpid} is gone")
        return
    if ready.persist:
        runtime.persist(ready.persist)
    if ready.send:
        for outbound in ready.send:
            target.send_to_peer(outbound)
    if ready.send_after_persist:
        runtime.send_after_persist(ready.send_after_persist)
    if ready.apply:
        runtime.apply(ready.apply)
    if ready.replies:
        for reply in ready.replies:
            target.refuse_write(reply.token, reply.code, "")
    if ready.requests:
        for request in ready.requests:
            target.start_request(runtime, request)
