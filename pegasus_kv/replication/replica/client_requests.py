"""Client data requests at a replica server: which kind each is, and whether its keys belong here.

A replica refuses a key that hashes outside its partition (PartitionMismatchError, retriable: the
client refreshes its configuration). It happens with a client holding a stale configuration and,
later, during partition split (DESIGN.md section 11). The routing rule is the client's
(core/hashing.py): single-key operations hash (hash_key, sort_key); operations over one hash key
hash the hash key alone; batch_get checks each key; a full scan covers the whole partition.

Reads split by cost (`reads_inline`). Point reads (get, ttl) run inline on the event loop: they are
served from the memtable or the block cache and measured about 1.5-2 microseconds each (10k keys,
rocksdict 0.3, this machine), far below the ~50 microseconds a hop to a worker thread costs. So
does a multi_get that names at most MAX_INLINE_MULTI_GET_KEYS sort keys: a batch of point reads
(YCSB's READ of a record; on onebox the thread hop was half of a replica server's CPU per such
read). Everything that iterates (a multi_get by range, sort_key_count, batch_get, scans) runs in a
worker thread: it may visit thousands of records (a 100-record multi_get took ~90 microseconds).
"""

from __future__ import annotations

from pegasus_kv.core.errors import PartitionMismatchError
from pegasus_kv.core.hashing import check_partition_count, crc64_nvme_from
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import (
    WRITE_REQUEST_TYPES,
    BatchGetRequest,
    CheckAndMutateRequest,
    CheckAndSetRequest,
    ClearScannerRequest,
    DeleteRequest,
    GetRequest,
    GetScannerRequest,
    IncrRequest,
    MultiDeleteRequest,
    MultiGetRequest,
    MultiSetRequest,
    ScanRequest,
    SetRequest,
    SortKeyCountRequest,
    TtlRequest,
)
from pegasus_kv.core.registry import Message
from pegasus_kv.core.validation import (
    validate_key_read,
    validate_multi_get,
    validate_read,
    validate_set,
    validate_write,
)

WRITE_TYPES: frozenset[type[Message]] = frozenset(WRITE_REQUEST_TYPES)
INLINE_READ_TYPES: frozenset[type[Message]] = frozenset({GetRequest, TtlRequest})
THREAD_READ_TYPES: frozenset[type[Message]] = frozenset(
    {
        MultiGetRequest,
        SortKeyCountRequest,
        BatchGetRequest,
        GetScannerRequest,
        ScanRequest,
        ClearScannerRequest,
    }
)
READ_TYPES = INLINE_READ_TYPES | THREAD_READ_TYPES
# A multi_get naming at most this many sort keys is served inline (a few microseconds per key).
MAX_INLINE_MULTI_GET_KEYS = 16


def reads_inline(request: Message) -> bool:
    """Whether a read is cheap enough for the event loop (see the module doc)."""
    if type(request) in INLINE_READ_TYPES:
        return True
    return isinstance(request, MultiGetRequest) and 0 < len(request.sort_keys) <= MAX_INLINE_MULTI_GET_KEYS


_SINGLE_KEY = (SetRequest, DeleteRequest, IncrRequest, GetRequest, TtlRequest)
_HASH_KEY = (
    MultiSetRequest,
    MultiDeleteRequest,
    CheckAndSetRequest,
    CheckAndMutateRequest,
    MultiGetRequest,
    SortKeyCountRequest,
)
_SINGLE_KEY_TYPES: frozenset[type] = frozenset(_SINGLE_KEY)
_HASH_KEY_TYPES: frozenset[type] = frozenset(_HASH_KEY)


def routing_keys(request: Message) -> list[tuple[bytes, bytes]]:
    """The (hash_key, sort_key) pairs the client routed `request` by (empty: nothing to check)."""
    if isinstance(request, _SINGLE_KEY):
        return [(request.hash_key, request.sort_key)]
    if isinstance(request, _HASH_KEY):
        return [(request.hash_key, b"")]
    if isinstance(request, BatchGetRequest):
        return list(request.keys)
    if isinstance(request, GetScannerRequest) and not request.full_scan:
        return [(request.hash_key, b"")]
    return []  # a full scan, or a scan context id


def check_partition(gpid: Gpid, request: Message, partition_count: int) -> None:
    """Raise PartitionMismatchError if a key of `request` does not hash to gpid's partition.

    Every client request passes here: the common shapes (one key, one hash key) are tested by
    exact type and hashed without building the routing_keys list; the hash is the client's
    (core/hashing.py partition_index: of the hash key, or of the sort key when it is empty)."""
    mask = partition_count - 1
    if partition_count <= 0 or partition_count & mask:
        check_partition_count(partition_count)  # raises: not a power of two
    kind = type(request)
    if kind in _SINGLE_KEY_TYPES:
        hash_key: bytes = request.hash_key  # type: ignore[attr-defined]
        _check_index(gpid, crc64_nvme_from(hash_key or request.sort_key, 0) & mask, partition_count)  # type: ignore[attr-defined]
    elif kind in _HASH_KEY_TYPES:
        _check_index(gpid, crc64_nvme_from(request.hash_key, 0) & mask, partition_count)  # type: ignore[attr-defined]
    else:
        for hash_key, sort_key in routing_keys(request):
            _check_index(gpid, crc64_nvme_from(hash_key or sort_key, 0) & mask, partition_count)


def admit_read(gpid: Gpid, request: Message, partition_count: int) -> bool:
    """validate_read(request), then check_partition(gpid, request, partition_count), then
    reads_inline(request): the same errors in the same order and the same answer, with one type
    dispatch for the three instead of one each. Every client read passes here: in cProfile of YCSB C
    a record's multi_get ran 11 Python functions for the three (plus the server's _check_partition)
    and 18 calls with builtins; here 4 and 8."""
    kind = type(request)
    mask = partition_count - 1
    if partition_count <= 0 or partition_count & mask:
        validate_read(request)
        check_partition_count(partition_count)  # raises: not a power of two
    if kind is MultiGetRequest:
        validate_multi_get(request)  # type: ignore[arg-type]
        if crc64_nvme_from(request.hash_key, 0) & mask != gpid.partition_index:  # type: ignore[attr-defined]
            check_partition(gpid, request, partition_count)  # raises, naming the partition
        count = len(request.sort_keys)  # type: ignore[attr-defined]
        return 0 < count <= MAX_INLINE_MULTI_GET_KEYS
    if kind in INLINE_READ_TYPES:
        validate_key_read(request)  # type: ignore[arg-type]
        hash_key: bytes = request.hash_key  # type: ignore[attr-defined]
        if crc64_nvme_from(hash_key or request.sort_key, 0) & mask != gpid.partition_index:  # type: ignore[attr-defined]
            check_partition(gpid, request, partition_count)
        return True
    validate_read(request)
    check_partition(gpid, request, partition_count)
    return reads_inline(request)


def admit_write(gpid: Gpid, request: Message, partition_count: int) -> None:
    """validate_write(request), then check_partition(gpid, request, partition_count): the same
    errors in the same order. Every client write passes here on its primary; a set (YCSB's
    UPDATE) runs 2 Python calls (this, validate_set; the CRC is C) instead of 6 through validate_write
    and the server's partition check (cProfile, YCSB A)."""
    mask = partition_count - 1
    if type(request) is SetRequest and partition_count > 0 and not partition_count & mask:
        validate_set(request)
        hash_key = request.hash_key
        if crc64_nvme_from(hash_key or request.sort_key, 0) & mask != gpid.partition_index:
            check_partition(gpid, request, partition_count)  # raises, naming the partition
        return
    validate_write(request)
    check_partition(gpid, request, partition_count)


def _check_index(gpid: Gpid, index: int, partition_count: int) -> None:
    if index != gpid.partition_index:
        raise PartitionMismatchError(
            f"the key hashes to partition {gpid.app_id}.{index} of {partition_count}, "
            f"not {gpid}: refresh the configuration"
        )
