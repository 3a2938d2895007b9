"""Applying the writes of one mutation: from client write requests to stored records and replies.

Every replica applies the same mutation to the same data and must produce the same bytes, so
nothing here reads a clock: TTLs, timetags and "is the old value expired" for incr /
check_and_set / check_and_mutate all come from the mutation's timestamp.

Writes of one mutation are applied in order against the stored data overlaid with the records the
earlier writes produced (`pending`), so two incr of one key in one mutation add up and a
check_and_set after a set sees the set. Records go into the store's WriteBatch as they are made
(a later record of the same key wins, as in the overlay); the store adds the new last applied
decree to the same batch and writes it atomically.

A write whose semantics fail (incr of a non-integer, an int check on a non-integer, a key too
large ...) gets an ErrorReply and changes nothing; the other writes of the mutation still apply.
Storage errors are not semantic: they propagate and the mutation is not applied at all.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from pegasus_kv.core.errors import ErrorCode, InvalidArgumentError
from pegasus_kv.core.messages import (
    CheckAndMutateRequest,
    CheckAndMutateResponse,
    CheckAndSetRequest,
    CheckType,
    DeleteRequest,
    ErrorReply,
    IncrRequest,
    IncrResponse,
    MultiDeleteRequest,
    MultiDeleteResponse,
    MultiSetRequest,
    MutateOperation,
    SetRequest,
    WriteResponse,
)
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.core.registry import Message
from pegasus_kv.core.schema import (
    MAX_CLUSTER_ID,
    MAX_TIMESTAMP_US,
    PEGASUS_EPOCH_UNIX_S,
    VALUE_HEADER_BYTES,
    expire_ts_for_ttl,
)
from pegasus_kv.core.validation import (
    INT64_MAX,
    INT64_MIN,
    validate_check_and_mutate,
    validate_check_and_set,
    validate_delete,
    validate_incr,
    validate_multi_delete,
    validate_multi_set,
    validate_set,
)
from pegasus_kv.storage.checks import evaluate_check, parse_int64
from pegasus_kv.storage.invariants import InvariantViolation

_KEY_LENGTH = struct.Struct(">H")
_VALUE_HEADER = struct.Struct(">IQ")
_EXPIRE_TS = struct.Struct(">I")
# The hot path of set: u16 length headers of short hash keys, precomputed, and bounds under which
# a set cannot exceed MAX_WRITE_BYTES (1023 + 256 KiB + 512 KiB < 1 MiB), so no sum is needed.
_SHORT_KEY_HEADERS = tuple(_KEY_LENGTH.pack(length) for length in range(1024))
_FAST_SORT_KEY_BYTES = 256 * 1024
_FAST_VALUE_BYTES = 512 * 1024

# Stored records produced by a mutation: stored key -> stored value, None for a delete.
Records = dict[bytes, bytes | None]
ReadStored = Callable[[bytes], bytes | None]


class BatchSink(Protocol):
    """Where the records of a mutation go, in order (a RocksDB WriteBatch)."""

    def put(self, key: bytes, value: bytes) -> None: ...
    def delete(self, key: bytes) -> None: ...


class _LiveRecord(NamedTuple):
    expire_ts: int
    user_value: bytes


def error_reply(exc: InvalidArgumentError) -> ErrorReply:
    return ErrorReply(code=int(exc.code), message=exc.message)


_MIN_TIMESTAMP_US = PEGASUS_EPOCH_UNIX_S * 1_000_000


def apply_writes(read_stored: ReadStored, mutation: Mutation, batch: BatchSink) -> list[Message]:
    """Put the records of `mutation` into `batch`; return one reply per write, in order.

    Writes that succeed as plain puts share one WriteResponse object (it only carries the
    decree): replies are values to encode, never to modify.
    """
    timestamp_us = mutation.timestamp_us
    cluster_id = mutation.cluster_id
    if not (_MIN_TIMESTAMP_US <= timestamp_us <= MAX_TIMESTAMP_US and 0 <= cluster_id <= MAX_CLUSTER_ID):
        # A mutation header no write can be applied under (a bug upstream). It still takes its
        # decree, so that every replica answers the same errors and replication goes on.
        reply = ErrorReply(
            int(ErrorCode.INVALID_ARGUMENT),
            f"mutation timestamp {timestamp_us} us (before 2016 or too large) or cluster id {cluster_id} "
            "is out of range",
        )
        return [reply for _ in mutation.writes]
    epoch_s = timestamp_us // 1_000_000 - PEGASUS_EPOCH_UNIX_S
    # make_timetag(timestamp_us, cluster_id, deleted=False), inlined: both are in range here.
    timetag = (timestamp_us << 8) | (cluster_id << 1)
    header_no_ttl = _VALUE_HEADER.pack(0, timetag)
    decree = mutation.decree
    write_ok = WriteResponse(decree=decree)
    writes = mutation.writes
    put = batch.put
    key_headers = _SHORT_KEY_HEADERS
    set_request = SetRequest
    max_value_bytes = _FAST_VALUE_BYTES
    max_sort_key_bytes = _FAST_SORT_KEY_BYTES
    # The hot path, inlined: leading sets without TTL, within every limit. They need no read, so
    # they go straight into the batch; _WriteApplier._set would store exactly the same records.
    fast_count = 0
    for write in writes:
        if type(write) is set_request and write.ttl_s == 0:
            hash_key = write.hash_key
            sort_key = write.sort_key
            value = write.value
            length = len(hash_key)
            if length < 1024 and len(value) <= max_value_bytes and len(sort_key) <= max_sort_key_bytes:
                put(key_headers[length] + hash_key + sort_key, header_no_ttl + value)
                fast_count += 1
                continue
        break
    replies: list[Message] = [write_ok] * fast_count
    if fast_count == len(writes):
        return replies
    # The general path, from the first other write on. Later writes must see the records of the
    # earlier ones, so the leading sets are remembered as pending first.
    pending: Records = {}
    for write in writes[:fast_count]:
        if type(write) is not SetRequest:
            raise InvariantViolation(f"{type(write).__name__} took the hot path of set")
        pending[_SHORT_KEY_HEADERS[len(write.hash_key)] + write.hash_key + write.sort_key] = (
            header_no_ttl + write.value
        )
    applier = _WriteApplier(read_stored, batch, decree, epoch_s, timetag, pending)
    replies.extend(applier.apply(write) for write in writes[fast_count:])
    return replies


class _WriteApplier:
    def __init__(
        self,
        read_stored: ReadStored,
        batch: BatchSink,
        decree: int,
        epoch_s: int,
        timetag: int,
        pending: Records,
    ) -> None:
        self._read_stored = read_stored
        self._batch = batch
        self._decree = decree
        self._epoch_s = epoch_s
        self._timetag = timetag
        self.header_no_ttl = _VALUE_HEADER.pack(0, timetag)
        self._headers: dict[int, bytes] = {}
        # What the writes so far in this mutation stored; later writes read through it.
        self.pending = pending

    def apply(self, write: object) -> Message:
        handler = _HANDLERS.get(type(write))
        if handler is None:
            return ErrorReply(int(ErrorCode.INVALID_ARGUMENT), f"{type(write).__name__} is not a write")
        try:
            return handler(self, write)
        except InvalidArgumentError as exc:  # KeyTooLarge and ValueTooLarge are subclasses
            return error_reply(exc)

    def _store(self, key: bytes, value: bytes | None) -> None:
        self.pending[key] = value
        if value is None:
            self._batch.delete(key)
        else:
            self._batch.put(key, value)

    # --- helpers ------------------------------------------------------------------------------

    def _header(self, ttl_s: int) -> bytes:
        """The v1 value header (expire_ts, timetag) of a put with this TTL (0 = none)."""
        if ttl_s == 0:
            return self.header_no_ttl
        header = self._headers.get(ttl_s)
        if header is None:
            header = _VALUE_HEADER.pack(expire_ts_for_ttl(ttl_s, self._epoch_s), self._timetag)
            self._headers[ttl_s] = header
        return header

    def _live(self, key: bytes) -> _LiveRecord | None:
        """The record under `key` as this mutation sees it, None if missing or expired."""
        pending = self.pending
        raw = pending[key] if key in pending else self._read_stored(key)
        if raw is None:
            return None
        if len(raw) < VALUE_HEADER_BYTES:
            raise InvalidArgumentError(f"stored value of {len(raw)} bytes has no v1 header")
        (expire_ts,) = _EXPIRE_TS.unpack_from(raw)
        # Pegasus: expired once now >= expire_ts; 0 never expires.
        if expire_ts and expire_ts <= self._epoch_s:
            return None
        return _LiveRecord(expire_ts, raw[VALUE_HEADER_BYTES:])

    def _write_ok(self) -> WriteResponse:
        return WriteResponse(decree=self._decree)

    # --- plain writes -------------------------------------------------------------------------

    def _set(self, write: SetRequest) -> Message:
        validate_set(write)
        key = _KEY_LENGTH.pack(len(write.hash_key)) + write.hash_key + write.sort_key
        self._store(key, self._header(write.ttl_s) + write.value)
        return self._write_ok()

    def _multi_set(self, write: MultiSetRequest) -> Message:
        validate_multi_set(write)
        header = self._header(write.ttl_s)
        prefix = _KEY_LENGTH.pack(len(write.hash_key)) + write.hash_key
        for sort_key, value in write.kvs:
            self._store(prefix + sort_key, header + value)
        return self._write_ok()

    def _delete(self, write: DeleteRequest) -> Message:
        validate_delete(write)
        self._store(_KEY_LENGTH.pack(len(write.hash_key)) + write.hash_key + write.sort_key, None)
        return self._write_ok()

    def _multi_delete(self, write: MultiDeleteRequest) -> Message:
        """Answers how many of the named records existed (alive) and are now deleted."""
        validate_multi_delete(write)
        prefix = _KEY_LENGTH.pack(len(write.hash_key)) + write.hash_key
        deleted = 0
        for sort_key in dict.fromkeys(write.sort_keys):
            key = prefix + sort_key
            if self._live(key) is not None:
                deleted += 1
            self._store(key, None)
        return MultiDeleteResponse(count=deleted)

    # --- read-modify-write --------------------------------------------------------------------

    def _incr(self, write: IncrRequest) -> Message:
        """Pegasus's incr: missing, expired or empty counts as 0; a value that is not a decimal
        int64, or a result that overflows, fails with INVALID_ARGUMENT and changes nothing.
        ttl_s 0 keeps the old TTL, < 0 clears it, > 0 sets it."""
        validate_incr(write)
        key = _KEY_LENGTH.pack(len(write.hash_key)) + write.hash_key + write.sort_key
        record = self._live(key)
        ttl_s = write.ttl_s
        if record is None:
            base = 0
            expire_ts = expire_ts_for_ttl(ttl_s, self._epoch_s) if ttl_s > 0 else 0
        else:
            if record.user_value:
                parsed = parse_int64(record.user_value)
                if parsed is None:
                    raise InvalidArgumentError(f"incr: value {record.user_value[:64]!r} is not an int64")
                base = parsed
            else:
                base = 0
            if ttl_s == 0:
                expire_ts = record.expire_ts
            elif ttl_s < 0:
                expire_ts = 0
            else:
                expire_ts = expire_ts_for_ttl(ttl_s, self._epoch_s)
        new_value = base + write.increment
        if not INT64_MIN <= new_value <= INT64_MAX:
            raise InvalidArgumentError(
                f"incr: {base} + {write.increment} overflows int64; the old value {base} is kept"
            )
        self._store(key, _VALUE_HEADER.pack(expire_ts, self._timetag) + str(new_value).encode())
        return IncrResponse(new_value=new_value)

    def _check(
        self, hash_key: bytes, check_sort_key: bytes, check_type: CheckType, operand: bytes
    ) -> tuple[bool, bool, bytes]:
        """(passed, exists, value) of a check; raises for an int check on a non-integer."""
        record = self._live(_KEY_LENGTH.pack(len(hash_key)) + hash_key + check_sort_key)
        exists = record is not None
        value = record.user_value if record is not None else b""
        outcome = evaluate_check(check_type, operand, exists, value)
        if outcome.invalid_reason is not None:
            raise InvalidArgumentError(outcome.invalid_reason)
        return outcome.passed, exists, value

    @staticmethod
    def _check_reply(passed: bool, return_check_value: bool, exists: bool, value: bytes) -> Message:
        if not return_check_value:
            return CheckAndMutateResponse(passed=passed)
        return CheckAndMutateResponse(
            passed=passed,
            check_value_returned=True,
            check_value_exist=exists,
            check_value=value if exists else b"",
        )

    def _check_and_set(self, write: CheckAndSetRequest) -> Message:
        validate_check_and_set(write)
        passed, exists, value = self._check(
            write.hash_key, write.check_sort_key, write.check_type, write.check_operand
        )
        if passed:
            key = _KEY_LENGTH.pack(len(write.hash_key)) + write.hash_key + write.set_sort_key
            self._store(key, self._header(write.set_ttl_s) + write.set_value)
        return self._check_reply(passed, write.return_check_value, exists, value)

    def _check_and_mutate(self, write: CheckAndMutateRequest) -> Message:
        validate_check_and_mutate(write)
        passed, exists, value = self._check(
            write.hash_key, write.check_sort_key, write.check_type, write.check_operand
        )
        if passed:
            prefix = _KEY_LENGTH.pack(len(write.hash_key)) + write.hash_key
            # Build every record first: the mutations apply all together or not at all.
            staged = [
                (
                    prefix + mutate.sort_key,
                    None
                    if mutate.operation == MutateOperation.DELETE
                    else self._header(mutate.ttl_s) + mutate.value,
                )
                for mutate in write.mutations
            ]
            for key, stored in staged:
                self._store(key, stored)
        return self._check_reply(passed, write.return_check_value, exists, value)


_HANDLERS: dict[type, Callable[[_WriteApplier, Any], Message]] = {
    SetRequest: _WriteApplier._set,
    MultiSetRequest: _WriteApplier._multi_set,
    DeleteRequest: _WriteApplier._delete,
    MultiDeleteRequest: _WriteApplier._multi_delete,
    IncrRequest: _WriteApplier._incr,
    CheckAndSetRequest: _WriteApplier._check_and_set,
    CheckAndMutateRequest: _WriteApplier._check_and_mutate,
}
