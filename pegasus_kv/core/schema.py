"""The Pegasus-compatible key and value encodings (DESIGN.md section 3).

RocksDB key:   u16 BE len(hash_key) | hash_key | sort_key
RocksDB value: u32 BE expire_ts | u64 BE timetag | user value     (Pegasus data version 1)

`expire_ts` counts seconds since 2016-01-01 00:00:00 UTC (0 = no TTL).
`timetag = (timestamp_us << 8) | (cluster_id << 1) | delete_flag` orders writes across clusters
(last write wins; the cluster id breaks ties) for duplication.
Time is always passed in: nothing here reads a clock.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from pegasus_kv.core.errors import InvalidArgumentError, KeyTooLargeError, ValueTooLargeError

DATA_VERSION = 1

# Unix time of 2016-01-01 00:00:00 UTC, the epoch of Pegasus's expire_ts.
PEGASUS_EPOCH_UNIX_S = 1_451_606_400

# hash_key must be shorter than 65535 bytes: its length is a u16 and 0xFFFF is reserved.
MAX_HASH_KEY_BYTES = 65_534
# `max_allowed_write_size` in Pegasus: one write request, keys and values together.
MAX_WRITE_BYTES = 1_048_576

MAX_CLUSTER_ID = 127  # 7 bits inside the timetag
MAX_EXPIRE_TS = 0xFFFF_FFFF
MAX_TIMESTAMP_US = (1 << 56) - 1

_KEY_HEADER = struct.Struct(">H")
_VALUE_HEADER = struct.Struct(">IQ")
VALUE_HEADER_BYTES = _VALUE_HEADER.size


class DecodedValue(NamedTuple):
    expire_ts: int
    timetag: int
    user_value: bytes


# --- keys -------------------------------------------------------------------------------------


def check_hash_key(hash_key: bytes) -> None:
    if len(hash_key) > MAX_HASH_KEY_BYTES:
        raise KeyTooLargeError(
            f"hash_key is {len(hash_key)} bytes; it must be shorter than {MAX_HASH_KEY_BYTES + 1}"
        )


def encode_key(hash_key: bytes, sort_key: bytes) -> bytes:
    check_hash_key(hash_key)
    return _KEY_HEADER.pack(len(hash_key)) + hash_key + sort_key


def decode_key(key: bytes) -> tuple[bytes, bytes]:
    """Split a stored key into (hash_key, sort_key)."""
    if len(key) < 2:
        raise InvalidArgumentError(f"stored key of {len(key)} bytes has no length header")
    (length,) = _KEY_HEADER.unpack_from(key)
    if 2 + length > len(key):
        raise InvalidArgumentError(f"stored key header says {length} bytes but only {len(key) - 2} follow")
    return key[2 : 2 + length], key[2 + length :]


def hash_key_prefix(hash_key: bytes) -> bytes:
    """The prefix shared by every stored key of one hash key."""
    check_hash_key(hash_key)
    return _KEY_HEADER.pack(len(hash_key)) + hash_key


def prefix_successor(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with `prefix`.

    Pegasus's rule: increment the last byte that is not 0xFF and drop what follows it.
    None means there is no such key (the prefix is empty or all 0xFF): scan to the end.
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


# --- values -----------------------------------------------------------------------------------


def make_timetag(timestamp_us: int, cluster_id: int, deleted: bool) -> int:
    if not 0 <= cluster_id <= MAX_CLUSTER_ID:
        raise InvalidArgumentError(f"cluster_id {cluster_id} is outside 0..{MAX_CLUSTER_ID}")
    if not 0 <= timestamp_us <= MAX_TIMESTAMP_US:
        raise InvalidArgumentError(f"timestamp_us {timestamp_us} does not fit in 56 bits")
    return (timestamp_us << 8) | (cluster_id << 1) | int(deleted)


def timetag_parts(timetag: int) -> tuple[int, int, bool]:
    """(timestamp_us, cluster_id, delete_flag) of a timetag."""
    return timetag >> 8, (timetag >> 1) & 0x7F, bool(timetag & 1)


def encode_value(user_value: bytes, expire_ts: int = 0, timetag: int = 0) -> bytes:
    return _VALUE_HEADER.pack(expire_ts, timetag) + user_value


def decode_value(raw: bytes) -> DecodedValue:
    if len(raw) < VALUE_HEADER_BYTES:
        raise InvalidArgumentError(f"stored value of {len(raw)} bytes is shorter than its v1 header")
    expire_ts, timetag = _VALUE_HEADER.unpack_from(raw)
    return DecodedValue(expire_ts, timetag, raw[VALUE_HEADER_BYTES:])


def value_expire_ts(raw: bytes) -> int:
    """Only the expire_ts of a stored value (cheap: no copy of the user value)."""
    return int(_VALUE_HEADER.unpack_from(raw)[0])


# --- time and TTL -----------------------------------------------------------------------------


def epoch_now(unix_s: float) -> int:
    """Seconds since the Pegasus epoch for a Unix time."""
    return int(unix_s) - PEGASUS_EPOCH_UNIX_S


def expire_ts_for_ttl(ttl_s: int, now_epoch_s: int) -> int:
    """The expire_ts of a record written at `now_epoch_s` with a TTL (0 = no TTL)."""
    if ttl_s < 0:
        raise InvalidArgumentError(f"ttl must be >= 0 seconds, got {ttl_s}")
    if ttl_s == 0:
        return 0
    expire_ts = now_epoch_s + ttl_s
    if expire_ts > MAX_EXPIRE_TS:
        raise InvalidArgumentError(f"ttl of {ttl_s} s reaches past the year 2152")
    return expire_ts


def is_expired(expire_ts: int, now_epoch_s: int) -> bool:
    """Pegasus: a record is expired once now >= expire_ts (0 never expires)."""
    return expire_ts > 0 and expire_ts <= now_epoch_s


def ttl_left(expire_ts: int, now_epoch_s: int) -> int:
    """Seconds left, -1 when there is no TTL. Call only on records that are not expired."""
    if expire_ts == 0:
        return -1
    return expire_ts - now_epoch_s


def check_write_size(size: int) -> None:
    if size > MAX_WRITE_BYTES:
        raise ValueTooLargeError(f"write of {size} bytes exceeds the {MAX_WRITE_BYTES}-byte limit")
