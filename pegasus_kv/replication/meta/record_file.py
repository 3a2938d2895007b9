"""Length- and checksum-framed records in an append-only file (the local meta store's format).

A frame is `u32 magic | u32 crc32 | u32 length | payload`, little-endian; the CRC-32 (zlib's)
covers the length and the payload. A crash mid-append leaves a torn frame at the very tail, which
is dropped because it was never acknowledged; a bad frame with valid frames after it is corruption.
"""

from __future__ import annotations

import struct
import zlib

from pegasus_kv.core.errors import StorageError
from pegasus_kv.core.scanning import first_valid_offset

MAGIC = 0x524D4B50  # b"PKMR" little-endian: "Pegasus-Kv Meta Record"
HEADER = struct.Struct("<III")
MAX_PAYLOAD_BYTES = 2 * 1024 * 1024 * 1024 - 1  # what a u32 length can say, and then some margin

_MAGIC_BYTES = struct.pack("<I", MAGIC)


def encode_frame(payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise StorageError(f"a frame of {len(payload)} bytes is over the limit")
    length = struct.pack("<I", len(payload))
    return HEADER.pack(MAGIC, zlib.crc32(payload, zlib.crc32(length)), len(payload)) + payload


def frame_at(data: bytes, offset: int) -> tuple[int, int] | None:
    """(payload offset, payload end) of the valid frame starting at `offset`, else None."""
    if offset < 0 or len(data) - offset < HEADER.size:
        return None
    magic, crc, length = HEADER.unpack_from(data, offset)
    start = offset + HEADER.size
    end = start + length
    if magic != MAGIC or end > len(data):
        return None
    view = memoryview(data)
    if zlib.crc32(view[start:end], zlib.crc32(view[offset + 8 : start])) != crc:
        return None
    return start, end


def scan_frames(data: bytes) -> tuple[list[bytes], int]:
    """The payloads of the valid frames from the start of `data`, and where the valid prefix ends."""
    payloads: list[bytes] = []
    offset = 0
    while offset < len(data):
        found = frame_at(data, offset)
        if found is None:
            break
        payloads.append(data[found[0] : found[1]])
        offset = found[1]
    return payloads, offset


def find_valid_frame(data: bytes, start: int) -> int | None:
    """The offset of the first valid frame at or after `start`, or None."""
    return first_valid_offset(data, start, _MAGIC_BYTES, frame_at)


def read_frames_truncating_torn_tail(data: bytes, where: str) -> tuple[list[bytes], int]:
    """Payloads of a whole file, and the length to truncate it to (== len(data) when clean).

    Raises StorageError when a damaged frame is followed by a valid one.
    """
    payloads, valid_end = scan_frames(data)
    if valid_end < len(data) and find_valid_frame(data, valid_end) is not None:
        raise StorageError(
            f"{where}: damaged record at offset {valid_end} is followed by valid records; "
            "refusing to drop acknowledged meta events"
        )
    return payloads, valid_end
