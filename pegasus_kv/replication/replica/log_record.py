"""The on-disk framing of one mutation-log record, and the scans that find where valid records end.

A record is a fixed header followed by the msgpack encoding of a `core.mutation.Mutation`:

    u32 magic | u32 crc32 | u32 payload_length | i64 ballot | i64 decree | payload

all little-endian. The CRC-32 (zlib's) covers everything after the crc field: payload_length,
ballot, decree and the payload, so a flipped bit anywhere but in the magic fails the checksum, and a
flipped magic fails the magic test. The ballot and decree are repeated in the header so a replay can
apply the supersede rule (log_index.py) and build its index without decoding any payload.

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


MAGIC = 0x4C4D4B50  # b"PKML" little-endian: "Pegasus-Kv Mutation Log"
FRAMING = RecordFraming(MAGIC, "qq")  # ballot, decree
HEADER = FRAMING.header
HEADER_BYTES = FRAMING.header_bytes
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Mutation)


class RecordHeader(NamedTuple):
    """A record found valid by a scan: where it starts and ends, and what it is about."""

    offset: int
    size_bytes: int  # header and payload
    ballot: int
    decree: int


def encode_record(mutation: Mutation) -> bytes:
    """Frame one mutation as a record (header + payload)."""
    payload = _ENCODER.encode(mutation)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise StorageError(
            f"mutation of decree {mutation.decree} encodes to {len(payload)} bytes, over the log's limit"
        )
    return FRAMING.encode(payload, mutation.ballot, mutation.decree)


def decode_record(data: bytes | memoryview, where: str) -> Mutation:
    """Decode a whole record (header + payload) read back from a segment; it was checksummed before."""
    magic, _crc, length, ballot, decree = HEADER.unpack_from(data, 0)
    if magic != MAGIC or len(data) != HEADER_BYTES + length:
        raise StorageError(f"{where}: the record is not where the index says it is")
    try:
        mutation = _DECODER.decode(data[HEADER_BYTES:])
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
    parsed = FRAMING.parse_at(data, offset)
    if parsed is None:
        return None
    (ballot, decree), end = parsed
    return RecordHeader(offset, end - offset, ballot, decree)


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
    return first_valid_offset(raw, start, FRAMING.magic_bytes, parse_record_at)
