"""Simulated clients: each runs one operation at a time against a small key space and records
what it saw, for the linearizability checker.

A client asks meta for the table's configuration (QueryConfigRequest), routes each request by hash
to the primary it believes in, and on a retriable refusal (NOT_PRIMARY, BUSY, NOT_ENOUGH_MEMBER ...:
the write was never prepared, ready.py) refreshes the configuration and retries the same operation.
When a write's outcome is unknown (no answer in time, or a TIMEOUT answer: prepared, and may still
commit under a later primary) the client records it with no completion and moves on: retrying it
could apply it twice.
"""

from __future__ import annotations

import dataclasses

from pegasus_kv.core.codec import Decoded, FrameKind
from pegasus_kv.core.errors import ErrorCode
from pegasus_kv.core.hashing import partition_index
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import (
    CheckAndMutateResponse,
    CheckAndSetRequest,
    CheckType,
    DeleteRequest,
    ErrorReply,
    GetRequest,
    GetResponse,
    SetRequest,
    WriteResponse,
)
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.pacifica.config import PartitionConfiguration
from pegasus_kv.replication.pacifica.meta_requests import QueryConfigRequest, QueryConfigResponse
from pegasus_kv.testing.linearizability import Operation, OpKind
from tests.sim.checkers import AckedWrite, InvariantChecker, InvariantViolation
from tests.sim.network import Network, NodeName
from tests.sim.scheduler import Scheduler, Timer, require
from tests.sim.storage import StoreKey

SimRequest = SetRequest | DeleteRequest | CheckAndSetRequest | GetRequest

# Operations one client records in one run; a run is short, this only guards a runaway loop.
MAX_HISTORY = 100_000


def error_code(code: int) -> ErrorCode:
    for member in ErrorCode:
        if member.value == code:
            return member
    raise InvariantViolation(f"an answer with an unknown error code {code}")


@dataclasses.dataclass
class ClientOptions:
    request_timeout_ms: int = 150
    # An operation refused again and again is given up after this long (it never took effect).
    operation_deadline_ms: int = 1_500
    backoff_ms: int = 20
    think_min_ms: int = 0
    think_max_ms: int = 30
    # Weights of the operation mix: read, write, delete, check_and_set.
    mix: tuple[int, int, int, int] = (40, 35, 5, 20)


@dataclasses.dataclass
class _Op:
    kind: OpKind
    key: StoreKey
    body: SimRequest
    invoke_ms: int
    value: bytes | None = None
    expected: bytes | None = None


@dataclasses.dataclass
class ClientStats:
    completed: int = 0
    unknown: int = 0
    given_up: int = 0
    retries: int = 0
    config_queries: int = 0


class SimClient:
    def __init__(
        self,
        name: NodeName,
        scheduler: Scheduler,
        network: Network,
        checker: InvariantChecker,
        meta_node: NodeName,
        table: str,
        keys: list[StoreKey],
        options: ClientOptions | None = None,
    ) -> None:
        require(bool(keys), "a client needs keys to work on")
        self.name = name
        self.scheduler = scheduler
        self.network = network
        self.checker = checker
        self.meta_node = meta_node
        self.table = table
        self._app_id = 0
        self.keys = keys
        self.options = options or ClientOptions()
        self.history: list[Operation] = []
        self.stats = ClientStats()
        self.running = False
        self._partition_count = 0
        self._configs: dict[int, PartitionConfiguration] = {}
        self._op: _Op | None = None
        self._request_id = 0
        self._waiting_for: int | None = None  # request id of the outstanding request
        self._timer: Timer | None = None
        self._sequence = 0
        self._last_seen: dict[StoreKey, bytes | None] = {}
        network.attach(name, self.on_message)

    # --- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.running = True
        self._schedule_next()

    def stop(self) -> None:
        """Issue no new operation; the one in flight finishes."""
        self.running = False

    @property
    def idle(self) -> bool:
        return self._op is None

    # --- operations ------------------------------------------------------------------------------

    def _schedule_next(self) -> None:
        if not self.running:
            return
        delay = self.scheduler.rng.randint(self.options.think_min_ms, self.options.think_max_ms)
        self.scheduler.after(delay, f"{self.name} next op", self._begin)

    def _begin(self) -> None:
        if not self.running or self._op is not None:
            return
        rng = self.scheduler.rng
        key = self.keys[rng.randrange(len(self.keys))]
        kind = rng.choices(list(OpKind), weights=self.options.mix)[0]
        hash_key, sort_key = key
        self._sequence += 1
        value = f"{self.name}:{self._sequence}".encode()
        now = self.scheduler.now_ms
        body: SimRequest
        if kind is OpKind.READ:
            op = _Op(kind, key, GetRequest(hash_key, sort_key), now)
        elif kind is OpKind.WRITE:
            op = _Op(kind, key, SetRequest(hash_key, sort_key, value), now, value=value)
        elif kind is OpKind.DELETE:
            op = _Op(kind, key, DeleteRequest(hash_key, sort_key), now)
        else:
            # Usually expect what this client saw last, so that many checks pass.
            expected = self._last_seen.get(key) if rng.random() < 0.8 else None
            body = CheckAndSetRequest(
                hash_key,
                check_sort_key=sort_key,
                check_type=CheckType.VALUE_NOT_EXIST if expected is None else CheckType.VALUE_BYTES_EQUAL,
                check_operand=expected or b"",
                set_sort_key=sort_key,
                set_value=value,
            )
            op = _Op(kind, key, body, now, value=value, expected=expected)
        self._op = op
        self._send()

    def _gpid_of(self, key: StoreKey) -> Gpid:
        return Gpid(self._app_id, partition_index(key[0], key[1], self._partition_count))

    def _send(self) -> None:
        op = self._op
        require(op is not None, "sending without an operation")
        assert op is not None
        if self.scheduler.now_ms - op.invoke_ms > self.options.operation_deadline_ms:
            self._give_up()
            return
        self._request_id += 1
        request_id = self._request_id
        self._waiting_for = request_id
        if not self._partition_count:
            self.stats.config_queries += 1
            self._request(self.meta_node, QueryConfigRequest(self.table), request_id, None)
        else:
            gpid = self._gpid_of(op.key)
            config = self._configs.get(gpid.partition_index)
            if config is None or config.primary is None:
                # Nobody to ask: refresh the configuration after a pause.
                self._partition_count = 0
                self._retry_later()
                return
            self._request(config.primary, op.body, request_id, gpid)
        self._timer = self.scheduler.after(
            self.options.request_timeout_ms,
            f"{self.name} timeout {request_id}",
            lambda: self._on_timeout(request_id),
        )

    def _request(self, to: NodeName, message: Message, request_id: int, gpid: Gpid | None) -> None:
        self.network.send(
            self.name,
            to,
            message,
            request_id=request_id,
            kind=FrameKind.REQUEST,
            gpid=gpid,
            may_duplicate=False,
        )

    def _retry_later(self) -> None:
        self.stats.retries += 1
        self._waiting_for = None
        self.scheduler.after(self.options.backoff_ms, f"{self.name} retry", self._send)

    def _on_timeout(self, request_id: int) -> None:
        if self._waiting_for != request_id:
            return
        self._waiting_for = None
        op = self._op
        assert op is not None
        if self._partition_count and op.kind is not OpKind.READ:
            # The request may have reached the primary: the write's outcome is unknown.
            self._finish_unknown()
            return
        self._partition_count = 0  # maybe the configuration is stale
        self._retry_later()

    def on_message(self, src: NodeName, frame: Decoded) -> None:
        if frame.kind is not FrameKind.RESPONSE or frame.request_id != self._waiting_for:
            return  # a late or foreign reply
        self._cancel_timer()
        op = self._op
        assert op is not None
        message = frame.message
        if isinstance(message, QueryConfigResponse):
            self._app_id = message.app_id
            self._partition_count = message.partition_count
            self._configs = {config.gpid.partition_index: config for config in message.configs}
            self._send()
            return
        if not isinstance(message, ErrorReply):
            self._finish_ok(op, message)
            return
        error = error_code(message.code)
        if not error.retriable:
            raise InvariantViolation(
                f"{self.name}: {src} answered {error.name} ({message.message}) to {op.body!r}"
            )
        if op.kind is not OpKind.READ and error is ErrorCode.TIMEOUT and self._partition_count:
            # Prepared, and may still commit under a later primary (ready.py, replies).
            self._finish_unknown()
            return
        self._partition_count = 0
        self._retry_later()

    def _cancel_timer(self) -> None:
        self._waiting_for = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- outcomes --------------------------------------------------------------------------------

    def _record(self, operation: Operation) -> None:
        require(len(self.history) < MAX_HISTORY, f"{self.name}: history over its bound")
        self.history.append(operation)

    def _finish_ok(self, op: _Op, body: Message) -> None:
        now = self.scheduler.now_ms
        if op.kind is OpKind.READ:
            if not isinstance(body, GetResponse):
                raise InvariantViolation(f"{self.name}: a get answered with {body!r}")
            self._last_seen[op.key] = body.value
            self._record(Operation.read(op.key, op.invoke_ms, now, body.value, client=self.name))
        elif op.kind is OpKind.CHECK_AND_SET:
            if not isinstance(body, CheckAndMutateResponse):
                raise InvariantViolation(f"{self.name}: a check_and_set answered with {body!r}")
            if body.passed:
                self._last_seen[op.key] = op.value
            self._record(
                Operation.check_and_set(
                    op.key, op.expected, op.value, op.invoke_ms, now, body.passed, client=self.name
                )
            )
        else:
            if not isinstance(body, WriteResponse):
                raise InvariantViolation(f"{self.name}: a write answered with {body!r}")
            assert isinstance(op.body, SetRequest | DeleteRequest)
            self.checker.on_ack(AckedWrite(self._gpid_of(op.key), body.decree, op.body, self.name, now))
            if op.kind is OpKind.WRITE:
                self._last_seen[op.key] = op.value
                self._record(Operation.write(op.key, op.value, op.invoke_ms, now, client=self.name))
            else:
                self._last_seen[op.key] = None
                self._record(Operation.delete(op.key, op.invoke_ms, now, client=self.name))
        self.stats.completed += 1
        self._done()

    def _finish_unknown(self) -> None:
        op = self._op
        assert op is not None
        if op.kind is OpKind.WRITE:
            self._record(Operation.write(op.key, op.value, op.invoke_ms, None, client=self.name))
        elif op.kind is OpKind.DELETE:
            self._record(Operation.delete(op.key, op.invoke_ms, None, client=self.name))
        elif op.kind is OpKind.CHECK_AND_SET:
            self._record(
                Operation.check_and_set(
                    op.key, op.expected, op.value, op.invoke_ms, None, None, client=self.name
                )
            )
        self._last_seen.pop(op.key, None)
        self.stats.unknown += 1
        self._done()

    def _give_up(self) -> None:
        """Every attempt was refused: the operation never took effect and leaves no trace."""
        self.stats.given_up += 1
        self._done()

    def _done(self) -> None:
        self._op = None
        self._waiting_for = None
        self._schedule_next()
