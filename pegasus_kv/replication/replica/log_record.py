"""The on-disk framing of one mutation-log record, and the scans that find where valid records end.

A record is a fixed header followed by the msgpack encoding of a `core.mutation.Mutation`:

    u32 magic | u32 crc32 | u32 payload_length | i64 ballot | i64 decree | i64 committed | payload

all little-endian. The CRC-32 (zlib's) covers everything after the crc field: payload_length,
ballot, decree, committed and the payload, so a flipped bit anywhere but in the magic fails the
checksum, and a flipped magic fails the magic test. The ballot and decree are repeated in the header
so a replay can apply the supersede rule (log_index.py) and build its index without decoding any
payload.

`committed` is the replica's commit point when it logged the record: every decree up to it was
committed here, and the log holds their committed versions (records are written in the order they
were handed over, and a decree is logged before it can commit). Recovery takes the highest
`committed` of the log to know how far it may re-apply records the store lost (replica_runtime.py;
Pegasus's log records carry the same last_committed_decree). 0 vouches for nothing.

Records written before `committed` existed have the magic b"PKML" and no such field; they are read
as records with committed 0 (RECORD_V1 below). New records are always written in the current layout.

The scans work on a whole segment held in memory (segments are bounded, 32 MiB by default).
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

import msgspec

from pegasus_kv.core.errors import StorageError
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.core.scanning import first_valid_offset

# Refuse to believe a length beyond this: it bounds what a corrupt header can make a scan read, and
# no mutation comes near it (a write is at most 1 MB and the primary bounds its batches).
MAX_PAYLOAD_BYTES = 256 * 1024 * 1024
_MAGIC_CRC = struct.Struct("<II")


class RecordFraming:
    """A record layout of the logs: u32 magic | u32 crc32 | u32 payload_length | fields | payload,
    little-endian, the CRC-32 (zlib's) over everything after the crc field. The mutation log's
    records (below) and the shared log's (shared_log.py) differ only in magic and fields."""

    def __init__(self, magic: int, fields_format: str) -> None:
        self.magic = magic
        self.magic_bytes = struct.pack("<I", magic)
        self.header = struct.Struct("<III" + fields_format)
        self.header_bytes = self.header.size
        # The header after magic and crc ("<" packs no padding): packed once, these bytes are both
        # the checksummed ones and the header's tail (once per record on every replica).
        self._tail = struct.Struct("<I" + fields_format)

    def encode(self, payload: bytes, *fields: int) -> bytes:
        tail = self._tail.pack(len(payload), *fields)
        return b"".join((_MAGIC_CRC.pack(self.magic, zlib.crc32(payload, zlib.crc32(tail))), tail, payload))

    def parse_at(self, data: bytes | memoryview, offset: int) -> tuple[tuple[int, ...], int] | None:
        """The header fields after the length, and the end, of the valid record at `offset`; None
        for fewer bytes left than a header, a wrong magic, a length over MAX_PAYLOAD_BYTES or past
        the end of `data` (a write cut short), or a checksum that does not match (torn, flipped)."""
        header_bytes = self.header_bytes
        if offset < 0 or len(data) - offset < header_bytes:
            return None
        header = self.header.unpack_from(data, offset)
        magic, crc, length = header[0], header[1], header[2]
        if magic != self.magic or length > MAX_PAYLOAD_BYTES:
            return None
        end = offset + header_bytes + length
        if end > len(data):
            return None
        view = memoryview(data)
        if (
            zlib.crc32(
                view[offset + header_bytes : end], zlib.crc32(view[offset + 8 : offset + header_bytes])
            )
            != crc
        ):
            return None
        return header[3:], end


MAGIC = 0x324D4B50  # b"PKM2" little-endian: "Pegasus-Kv Mutation log, layout 2"
FRAMING = RecordFraming(MAGIC, "qqq")  # ballot, decree, committed
# The first layout (no `committed`): still read, never written (module doc).
MAGIC_V1 = 0x4C4D4B50  # b"PKML" little-endian: "Pegasus-Kv Mutation Log"
RECORD_V1 = RecordFraming(MAGIC_V1, "qq")  # ballot, decree
_FRAMINGS = {MAGIC: FRAMING, MAGIC_V1: RECORD_V1}
_MAGIC = struct.Struct("<I")
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Mutation)


class RecordHeader(NamedTuple):
    """A record found valid by a scan: where it starts and ends, and what it is about."""

    offset: int
    size_bytes: int  # header and payload
    ballot: int
    decree: int
    committed: int  # the commit point it vouches for (module doc); 0 for a first-layout record


def encode_record(mutation: Mutation, committed: int = 0) -> bytes:
    """Frame one mutation as a record (header + payload). `committed`: every decree up to it is
    committed here and logged before this record (module doc); 0 claims nothing."""
    payload = _ENCODER.encode(mutation)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise StorageError(
            f"mutation of decree {mutation.decree} encodes to {len(payload)} bytes, over the log's limit"
        )
    return FRAMING.encode(payload, mutation.ballot, mutation.decree, committed)


def _framing_at(data: bytes | memoryview, offset: int) -> RecordFraming | None:
    if offset < 0 or len(data) - offset < _MAGIC.size:
        return None
    return _FRAMINGS.get(_MAGIC.unpack_from(data, offset)[0])


def decode_record(data: bytes | memoryview, where: str) -> Mutation:
    """Decode a whole record (header + payload) read back from a segment; it was checksummed before."""
    framing = _framing_at(data, 0)
    if framing is None or len(data) < framing.header_bytes:
        raise StorageError(f"{where}: the record is not where the index says it is")
    header = framing.header.unpack_from(data, 0)
    length, ballot, decree = header[2], header[3], header[4]
    header_bytes = framing.header_bytes
    if len(data) != header_bytes + length:
        raise StorageError(f"{where}: the record is not where the index says it is")
    try:
        mutation = _DECODER.decode(data[header_bytes:])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StorageError(f"{where}: record of decree {decree} does not decode as a mutation") from exc
    if mutation.ballot != ballot or mutation.decree != decree:
        raise StorageError(
            f"{where}: header says ballot {ballot} decree {decree}, "
            f"payload says ballot {mutation.ballot} decree {mutation.decree}"
        )
    return mutation


def parse_record_at(data: bytes | memoryview, offset: int) -> RecordHeader | None:
    """The valid record starting at `offset`, or None if the bytes there are not one.

    Not valid: fewer bytes left than a header, a wrong magic, a length over the limit or past the end
    of `data` (a write cut short), or a checksum that does not match (a torn or flipped write).
    """
    framing = _framing_at(data, offset)
    if framing is None:
        return None
    parsed = framing.parse_at(data, offset)
    if parsed is None:
        return None
    fields, end = parsed
    committed = fields[2] if framing is FRAMING else 0
    return RecordHeader(offset, end - offset, fields[0], fields[1], committed)


def scan_records(data: bytes | memoryview) -> tuple[list[RecordHeader], int]:
    """The valid records from the start of `data`, and the offset where the valid prefix ends.

    The offset equals len(data) for a clean segment; anything less marks a record that is torn or
    corrupt, and whether that is a harmless torn tail is for `find_valid_record` to tell.
    """
    records: list[RecordHeader] = []
    offset = 0
    while offset < len(data):
        record = parse_record_at(data, offset)
        if record is None:
            break
        records.append(record)
        offset += record.size_bytes
    return records, offset


def find_valid_record(data: bytes | memoryview, start: int) -> int | None:
    """The offset of the first valid record beginning at or after `start`, or None.

    Used after a scan stopped at a bad record: a crash mid-write leaves garbage only at the very
    tail, so a valid record anywhere after the bad one means acknowledged data is damaged.
    """
    raw = bytes(data) if isinstance(data, memoryview) else data
    found = [
        offset
        for framing in _FRAMINGS.values()
        if (offset := first_valid_offset(raw, start, framing.magic_bytes, parse_record_at)) is not None
    ]
    return min(found, default=None)
