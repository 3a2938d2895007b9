"""One error-code enum shared by servers and clients, and the exception tree under PegasusError.

Each code carries a `retriable` flag: the client retries retriable errors (after refreshing its
partition configuration where that helps) within the call's timeout, and raises the others at once.
Codes are part of the wire protocol: never renumber one, only add new ones.
"""

from __future__ import annotations

import enum
from typing import ClassVar


class ErrorCode(enum.IntEnum):
    retriable: bool

    def __new__(cls, value: int, retriable: bool) -> ErrorCode:
        member = int.__new__(cls, value)
        member._value_ = value
        member.retriable = retriable
        return member

    OK = 0, False
    INTERNAL = 1, False  # a bug or an unexpected exception on the server
    INVALID_ARGUMENT = 2, False  # bad input: wrong type, out of range, not an int64 for incr ...
    KEY_TOO_LARGE = 3, False  # hash_key of 65535 bytes or more
    VALUE_TOO_LARGE = 4, False  # one write request over max_allowed_write_size (1 MB)
    TABLE_NOT_FOUND = 5, False
    TABLE_EXISTS = 6, False
    CODEC = 7, False  # a frame or message that does not decode
    NOT_PRIMARY = 8, True  # the replica is not the serving primary: refresh the configuration
    NOT_ENOUGH_MEMBER = 9, True  # the replica group is below mutation_2pc_min_replica_count
    TIMEOUT = 10, True
    BUSY = 11, True  # a bounded queue is full: back off and retry
    NETWORK = 12, True  # connection refused, reset or closed before the answer arrived
    PARTITION_MISMATCH = 13, True  # the key hashes to another partition (stale config, split)
    NOT_LEADER = 14, True  # this meta server is not the leader: ask the one it names
    SCANNER_EXPIRED = 15, False  # a scan context was dropped (idle too long, server restart)
    STORAGE = 16, False  # RocksDB reported an error
    SHUTTING_DOWN = 17, True
    FORBIDDEN = 18, False  # the caller's role may not run this
    INVALID_STATE = 19, False  # the request does not fit the object's state (drop a dropped table)
    STALE_BALLOT = 20, True  # a message from an older configuration
    UNSUPPORTED = 21, False


class PegasusError(Exception):
    """Base of every error pegasus-kv raises on purpose."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code.name.lower())
        self.message = message or self.code.name.lower()

    @property
    def retriable(self) -> bool:
        return self.code.retriable

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


_BY_CODE: dict[int, type[PegasusError]] = {ErrorCode.INTERNAL: PegasusError}


def _register(cls: type[PegasusError]) -> type[PegasusError]:
    assert cls.code not in _BY_CODE, f"error code {cls.code!r} registered twice"
    _BY_CODE[cls.code] = cls
    return cls


@_register
class InvalidArgumentError(PegasusError):
    code = ErrorCode.INVALID_ARGUMENT


@_register
class KeyTooLargeError(InvalidArgumentError):
    code = ErrorCode.KEY_TOO_LARGE


@_register
class ValueTooLargeError(InvalidArgumentError):
    code = ErrorCode.VALUE_TOO_LARGE


@_register
class TableNotFoundError(PegasusError):
    code = ErrorCode.TABLE_NOT_FOUND


@_register
class TableExistsError(PegasusError):
    code = ErrorCode.TABLE_EXISTS


@_register
class CodecError(PegasusError):
    """A frame or message that does not decode. The codec raises this and nothing else."""

    code = ErrorCode.CODEC


@_register
class NotPrimaryError(PegasusError):
    code = ErrorCode.NOT_PRIMARY


@_register
class NotEnoughMemberError(PegasusError):
    code = ErrorCode.NOT_ENOUGH_MEMBER


@_register
class TimeoutError_(PegasusError):  # the builtin name TimeoutError is taken
    code = ErrorCode.TIMEOUT


@_register
class BusyError(PegasusError):
    code = ErrorCode.BUSY


@_register
class NetworkError(PegasusError):
    code = ErrorCode.NETWORK


@_register
class PartitionMismatchError(PegasusError):
    code = ErrorCode.PARTITION_MISMATCH


@_register
class NotLeaderError(PegasusError):
    code = ErrorCode.NOT_LEADER


@_register
class ScannerExpiredError(PegasusError):
    code = ErrorCode.SCANNER_EXPIRED


@_register
class StorageError(PegasusError):
    code = ErrorCode.STORAGE


@_register
class ShuttingDownError(PegasusError):
    code = ErrorCode.SHUTTING_DOWN


@_register
class ForbiddenError(PegasusError):
    code = ErrorCode.FORBIDDEN


@_register
class InvalidStateError(PegasusError):
    code = ErrorCode.INVALID_STATE


@_register
class StaleBallotError(PegasusError):
    code = ErrorCode.STALE_BALLOT


@_register
class UnsupportedError(PegasusError):
    code = ErrorCode.UNSUPPORTED


# Users catch the timeout under this name; the class name has a trailing underscore only
# to stay clear of the builtin inside this module.
PegasusTimeoutError = TimeoutError_


def error_class(code: ErrorCode | int) -> type[PegasusError]:
    """The exception class for a wire error code (unknown codes map to PegasusError)."""
    # IntEnum members hash like their integer values, so a plain int finds its class too.
    return _BY_CODE.get(int(code), PegasusError)


def error_from_code(code: ErrorCode | int, message: str = "") -> PegasusError:
    """Build the typed exception for an error code received from the wire."""
    cls = error_class(code)
    if cls is PegasusError and code != ErrorCode.INTERNAL:
        return PegasusError(f"unknown error code {int(code)}: {message}")
    return cls(message)


def all_error_classes() -> dict[ErrorCode, type[PegasusError]]:
    return {code: _BY_CODE[code] for code in ErrorCode if code in _BY_CODE}
