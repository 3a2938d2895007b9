"""Where things live inside the RocksDB instance of one partition.

User records live in the default column family under `u16 BE len(hash_key) | hash_key | sort_key`
(core/schema.py). A hash key is shorter than 65535 bytes, so no user key starts with 0xFFFF: that
prefix is reserved for the replica's own records kept beside the data.

The apply state (last applied decree and the newest applied mutation timestamp) is one of them.
It is written in the same WriteBatch as the mutation's records and, crucially, in the same column
family: RocksDB's WAL is off (the mutation log is the WAL), so after a crash only flushed memtables
survive, and a flush persists a prefix of one column family's writes. Keeping the decree in the
data's column family makes every flush, manual or automatic, carry exactly the decree of the data
it holds. (A separate "meta" column family with atomic_flush would need a flush of both families
together; rocksdict 0.3.29 flushes only one family per call, even with atomic_flush set, which we
verified: the meta family's memtable was lost after a crash.)

The "meta" column family holds what need not move with the data: the data version.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from pegasus_kv.core.errors import StorageError

META_COLUMN_FAMILY = "meta"

RESERVED_PREFIX = b"\xff\xff"
# Exclusive upper bound of every user key: scans of a whole partition stop here.
USER_KEYS_END = RESERVED_PREFIX
APPLY_STATE_KEY = RESERVED_PREFIX + b"apply_state"

DATA_VERSION_KEY = b"data_version"

_APPLY_STATE = struct.Struct(">QQ")


class ApplyState(NamedTuple):
    decree: int
    # The largest mutation timestamp applied so far; the expiry sweep never deletes a record
    # that a mutation stamped at or after it could still see alive (sweep.py).
    timestamp_us: int


INITIAL_APPLY_STATE = ApplyState(decree=0, timestamp_us=0)


def encode_apply_state(decree: int, timestamp_us: int) -> bytes:
    return _APPLY_STATE.pack(decree, timestamp_us)


def decode_apply_state(raw: bytes) -> ApplyState:
    if len(raw) != _APPLY_STATE.size:
        raise StorageError(f"apply state record has {len(raw)} bytes, expected {_APPLY_STATE.size}")
    decree, timestamp_us = _APPLY_STATE.unpack(raw)
    return ApplyState(decree, timestamp_us)
