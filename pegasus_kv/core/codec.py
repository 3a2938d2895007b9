"""The frame codec of the wire protocol (DESIGN.md section 6).

A frame is `u32 BE length | payload`; the payload is a msgpack array
`[request_id, kind, type_id, gpid | nil, body]` where body is the msgpack encoding of a registered
message (core/registry.py). Requests and replies share one connection and are matched by
request id, so replies may come back in any order.

Decoding is strict: an over-long or empty frame, bytes that are not msgpack, an unknown type id or
a body that does not match its type raise CodecError, and nothing else. A connection that produced
a CodecError is no longer in sync and must be closed (by the transport, not by this module).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from typing import Any

import msgspec

from pegasus_kv.core.errors import CodecError
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.registry import Message, message_type, type_id_of

# One frame may carry a 1 MB write plus its keys, a batch of scan rows or a chunk of a checkpoint
# file during learning; 16 MiB bounds all of them and keeps a hostile peer from making us buffer
# more than that per connection.
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
_LENGTH = struct.Struct(">I")
LENGTH_BYTES = _LENGTH.size
_EMPTY_LENGTH = bytes(LENGTH_BYTES)


class FrameKind(enum.IntEnum):
    REQUEST = 0
    RESPONSE = 1
    ONEWAY = 2  # no reply expected


class Frame(msgspec.Struct, array_like=True):
    request_id: int
    kind: FrameKind
    type_id: int
    gpid: Gpid | None
    body: msgspec.Raw


class Decoded(msgspec.Struct, frozen=True):
    """A decoded frame: who it answers or asks, and its message."""

    request_id: int
    kind: FrameKind
    gpid: Gpid | None
    message: Message


_encoder = msgspec.msgpack.Encoder()
_frame_decoder = msgspec.msgpack.Decoder(Frame)
_body_decoders: dict[int, msgspec.msgpack.Decoder[Any]] = {}
# Message class -> its type id, filled on first use (type_id_of checks the tag each time).
_type_ids: dict[type, int] = {}
# What msgspec raises for bytes that are not a well-formed frame (CodecError to the caller).
_MALFORMED = (msgspec.DecodeError, ValueError, TypeError, OverflowError, RecursionError)


def _body_decoder(type_id: int) -> msgspec.msgpack.Decoder[Any]:
    decoder = _body_decoders.get(type_id)
    if decoder is None:
        cls = message_type(type_id)
        if cls is None:
            raise CodecError(f"unknown message type id {type_id}")
        decoder = _body_decoders[type_id] = msgspec.msgpack.Decoder(cls)
    return decoder


def encode_payload(message: Message, *, request_id: int, kind: FrameKind, gpid: Gpid | None = None) -> bytes:
    return bytes(_encode_into(bytearray(), message, request_id, kind, gpid))


def _type_id(cls: type[Message]) -> int:
    type_id = _type_ids.get(cls)
    if type_id is None:
        type_id = _type_ids[cls] = type_id_of(cls)
    return type_id


def _encode_into(
    buffer: bytearray, message: Message, request_id: int, kind: FrameKind, gpid: Gpid | None
) -> bytearray:
    """Append one payload to `buffer` in a single pass (no intermediate body copy).

    The payload is the 5-tuple (request_id, kind, type_id, gpid, message) encoded in one call: a
    msgpack array whose last element is the message's encoding, the same bytes as encoding
    Frame(..., Raw(body)) without building the body separately.
    """
    start = len(buffer)
    try:
        _encoder.encode_into((request_id, kind, _type_id(type(message)), gpid, message), buffer, -1)
    except (msgspec.EncodeError, OverflowError, TypeError) as exc:
        # e.g. an integer outside the 64-bit range msgpack can carry
        del buffer[start:]
        raise CodecError(f"cannot encode {type(message).__name__}: {exc}") from exc
    return buffer


def encode_frame(
    message: Message,
    *,
    request_id: int,
    kind: FrameKind,
    gpid: Gpid | None = None,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> bytes:
    """The bytes to write for one message. Raises CodecError if it would exceed the frame limit."""
    buffer = _encode_into(bytearray(_EMPTY_LENGTH), message, request_id, kind, gpid)
    length = len(buffer) - LENGTH_BYTES
    if length > max_frame_bytes:
        raise CodecError(f"frame of {length} bytes exceeds the {max_frame_bytes}-byte limit")
    _LENGTH.pack_into(buffer, 0, length)
    return bytes(buffer)


def append_frame(
    buffer: bytearray,
    message: Message,
    request_id: int,
    kind: FrameKind,
    gpid: Gpid | None,
    max_frame_bytes: int,
) -> int:
    """Append the frame of one message (the bytes encode_frame returns) to `buffer`; returns its
    size. On CodecError (unencodable, or over max_frame_bytes) `buffer` is left as it was.

    The server frames every reply this way, straight into its connection's outgoing buffer: no
    frame of its own, no copy of it, and one call instead of three (encode_frame, _encode_into,
    _type_id)."""
    start = len(buffer)
    buffer += _EMPTY_LENGTH
    cls = type(message)
    type_id = _type_ids.get(cls) or _type_id(cls)
    try:
        _encoder.encode_into((request_id, kind, type_id, gpid, message), buffer, -1)
    except (msgspec.EncodeError, OverflowError, TypeError) as exc:
        del buffer[start:]
        raise CodecError(f"cannot encode {cls.__name__}: {exc}") from exc
    size = len(buffer) - start
    length = size - LENGTH_BYTES
    if length > max_frame_bytes:
        del buffer[start:]
        raise CodecError(f"frame of {length} bytes exceeds the {max_frame_bytes}-byte limit")
    _LENGTH.pack_into(buffer, start, length)
    return size


def decode_payload(payload: bytes | memoryview) -> Decoded:
    """Decode one frame's payload (without its length prefix)."""
    try:
        frame = _frame_decoder.decode(payload)
        decoder = _body_decoders.get(frame.type_id) or _body_decoder(frame.type_id)
        message = decoder.decode(frame.body)
    except CodecError:
        raise
    except _MALFORMED as exc:
        raise CodecError(f"malformed frame: {exc}") from exc
    if frame.request_id < 0:
        raise CodecError(f"negative request id {frame.request_id}")
    return Decoded(frame.request_id, frame.kind, frame.gpid, message)


class FrameDecoder:
    """Incremental decoder for a byte stream: feed what the socket gave, get whole frames back.

    Buffers at most one frame (bounded by max_frame_bytes) plus what arrived after it.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._max = max_frame_bytes
        self._buffer = bytearray()
        self._failed = False

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Decoded]:
        return list(self.iter_feed(data))

    def iter_feed(self, data: bytes) -> Iterator[Decoded]:
        if self._failed:
            raise CodecError("stream is out of sync after an earlier bad frame")
        buffer = self._buffer
        if not buffer:
            # Nothing buffered (the common case: a read returns whole frames): decode straight from
            # `data` and buffer only what is left of it (a partial frame, or the frames a closed
            # iteration did not take). decode_payload is inlined: this loop runs once per frame on
            # both ends of every call.
            offset = 0
            total = len(data)
            limit = self._max
            decode_frame = _frame_decoder.decode
            body_decoders = _body_decoders
            try:
                while total - offset >= LENGTH_BYTES:
                    (length,) = _LENGTH.unpack_from(data, offset)
                    if length == 0 or length > limit:
                        raise CodecError(f"frame length {length} is outside 1..{limit}")
                    start = offset + LENGTH_BYTES
                    end = start + length
                    if end > total:
                        break
                    offset = end
                    try:
                        frame = decode_frame(data[start:end])
                        type_id = frame.type_id
                        message = (body_decoders.get(type_id) or _body_decoder(type_id)).decode(frame.body)
                    except CodecError:
                        raise
                    except _MALFORMED as exc:
                        raise CodecError(f"malformed frame: {exc}") from exc
                    request_id = frame.request_id
                    if request_id < 0:
                        raise CodecError(f"negative request id {request_id}")
                    yield Decoded(request_id, frame.kind, frame.gpid, message)
            except CodecError:
                self._failed = True
                raise
            finally:
                if offset < total:
                    buffer += data[offset:]
            return
        buffer += data
        offset = 0
        try:
            while len(buffer) - offset >= LENGTH_BYTES:
                (length,) = _LENGTH.unpack_from(buffer, offset)
                if length == 0 or length > self._max:
                    raise CodecError(f"frame length {length} is outside 1..{self._max}")
                end = offset + LENGTH_BYTES + length
                if end > len(buffer):
                    break
                payload = bytes(buffer[offset + LENGTH_BYTES : end])
                offset = end
                yield decode_payload(payload)
        except CodecError:
            self._failed = True
            raise
        finally:
            if offset:
                del buffer[:offset]
