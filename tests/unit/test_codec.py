"""The frame codec: every message type round-trips; garbage only ever raises CodecError."""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import struct

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pegasus_kv.core
import pegasus_kv.replication.pacifica
from pegasus_kv.core import codec
from pegasus_kv.core import messages as m
from pegasus_kv.core.errors import CodecError
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.registry import Message, registered_types


def _import_every_message_module() -> None:
    # Messages live beside the code that uses them; importing the pure packages registers them all.
    for package in (pegasus_kv.core, pegasus_kv.replication.pacifica):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(info.name)


_import_every_message_module()
ALL_TYPES = sorted(registered_types().items())

# msgpack carries 64-bit integers; anything larger is refused when encoding (tested below).
wire_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
st.register_type_strategy(int, wire_ints)


def _struct_strategy(cls: type[msgspec.Struct]) -> st.SearchStrategy[msgspec.Struct]:
    # Draw every field explicitly: hypothesis would otherwise pass msgspec's default factories as values.
    fields = msgspec.structs.fields(cls)
    return st.builds(cls, **{field.name: st.from_type(field.type) for field in fields})


st.register_type_strategy(msgspec.Struct, _struct_strategy)  # type: ignore[type-abstract]

gpids = st.builds(Gpid, st.integers(0, 2**31), st.integers(0, 2**16))
kinds = st.sampled_from(list(codec.FrameKind))
request_ids = st.integers(0, 2**63 - 1)


def test_the_registry_holds_the_client_data_api() -> None:
    names = {cls.__name__ for _, cls in ALL_TYPES}
    for expected in ("SetRequest", "MultiGetRequest", "CheckAndMutateRequest", "ScanResponse", "ErrorReply"):
        assert expected in names


@pytest.mark.parametrize("message_type", [cls for _, cls in ALL_TYPES], ids=lambda cls: cls.__name__)
@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), request_id=request_ids, kind=kinds, gpid=st.none() | gpids)
def test_every_message_type_round_trips_through_a_frame(
    message_type: type[Message],
    data: st.DataObject,
    request_id: int,
    kind: codec.FrameKind,
    gpid: Gpid | None,
) -> None:
    message = data.draw(_struct_strategy(message_type))
    frame = codec.encode_frame(message, request_id=request_id, kind=kind, gpid=gpid)
    (decoded,) = codec.FrameDecoder().feed(frame)
    assert decoded == codec.Decoded(request_id, kind, gpid, message)


@given(
    st.lists(
        st.builds(m.SetRequest, st.binary(max_size=20), st.binary(max_size=20), st.binary(max_size=50)),
        min_size=1,
        max_size=5,
    ),
    st.integers(1, 7),
)
def test_frames_split_at_any_point_reassemble(requests: list[m.SetRequest], chunk: int) -> None:
    stream = b"".join(
        codec.encode_frame(r, request_id=i, kind=codec.FrameKind.REQUEST) for i, r in enumerate(requests)
    )
    decoder = codec.FrameDecoder()
    out: list[codec.Decoded] = []
    for start in range(0, len(stream), chunk):
        out.extend(decoder.feed(stream[start : start + chunk]))
    assert [d.message for d in out] == requests
    assert [d.request_id for d in out] == list(range(len(requests)))
    assert decoder.buffered_bytes == 0


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_bytes_only_ever_raise_codec_error(garbage: bytes) -> None:
    decoder = codec.FrameDecoder(max_frame_bytes=1024)
    with contextlib.suppress(CodecError):
        decoder.feed(garbage)


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=120))
def test_random_payloads_behind_a_valid_length_only_raise_codec_error(payload: bytes) -> None:
    with contextlib.suppress(CodecError):
        codec.FrameDecoder().feed(struct.pack(">I", len(payload)) + payload)


@settings(max_examples=300)
@given(st.data())
def test_corrupted_valid_frames_only_raise_codec_error(data: st.DataObject) -> None:
    frame = bytearray(
        codec.encode_frame(
            m.MultiGetRequest(b"hk", sort_keys=[b"a", b"b"], max_kv_count=3),
            request_id=9,
            kind=codec.FrameKind.REQUEST,
            gpid=Gpid(1, 2),
        )
    )
    position = data.draw(st.integers(4, len(frame) - 1))
    frame[position] = data.draw(st.integers(0, 255))
    with contextlib.suppress(CodecError):
        codec.FrameDecoder().feed(bytes(frame))


def test_oversized_and_empty_frames_are_refused_before_buffering() -> None:
    decoder = codec.FrameDecoder(max_frame_bytes=100)
    with pytest.raises(CodecError, match="outside"):
        decoder.feed(struct.pack(">I", 101))
    with pytest.raises(CodecError, match="out of sync"):
        decoder.feed(b"anything")  # a stream that failed once is never trusted again
    with pytest.raises(CodecError):
        codec.FrameDecoder().feed(struct.pack(">I", 0))


def test_unknown_type_ids_and_wrong_field_types_are_codec_errors() -> None:
    good = codec.encode_payload(m.GetRequest(b"h", b"s"), request_id=1, kind=codec.FrameKind.REQUEST)
    unknown = good.replace(b"\x28", b"\x7f", 1)  # type id 40 (GetRequest) -> 127 (unregistered)
    with pytest.raises(CodecError, match="unknown message type"):
        codec.decode_payload(unknown)
    wrong_type = codec.encode_payload(
        m.SetRequest(b"h", b"s", b"v"), request_id=1, kind=codec.FrameKind.REQUEST
    )
    with pytest.raises(CodecError):
        codec.decode_payload(wrong_type.replace(b"\xc4\x01v", b"\xa1v"))  # value sent as str, not bytes


def test_encoding_refuses_integers_outside_the_wire_range_and_oversized_frames() -> None:
    with pytest.raises(CodecError):
        codec.encode_frame(
            m.SetRequest(b"h", b"s", b"v", ttl_s=2**70), request_id=1, kind=codec.FrameKind.REQUEST
        )
    with pytest.raises(CodecError, match="exceeds"):
        codec.encode_frame(
            m.SetRequest(b"h", b"s", b"v" * 200),
            request_id=1,
            kind=codec.FrameKind.REQUEST,
            max_frame_bytes=100,
        )


@given(st.builds(m.SetRequest, st.binary(max_size=30), st.binary(max_size=30), st.binary(max_size=300)))
def test_single_pass_encoding_matches_the_frame_struct_layout(request: m.SetRequest) -> None:
    body = msgspec.msgpack.encode(request)
    expected = msgspec.msgpack.encode(
        codec.Frame(5, codec.FrameKind.REQUEST, 1, Gpid(3, 4), msgspec.Raw(body))
    )
    assert (
        codec.encode_payload(request, request_id=5, kind=codec.FrameKind.REQUEST, gpid=Gpid(3, 4)) == expected
    )


@given(
    st.lists(
        st.builds(m.SetRequest, st.binary(max_size=20), st.binary(max_size=20), st.binary(max_size=50)),
        min_size=1,
        max_size=5,
    ),
    st.none() | gpids,
)
def test_frames_appended_to_one_buffer_are_the_frames_encode_frame_makes(
    requests: list[m.SetRequest], gpid: Gpid | None
) -> None:
    buffer = bytearray()
    for request_id, request in enumerate(requests, start=1):
        size = codec.append_frame(buffer, request, request_id, codec.FrameKind.RESPONSE, gpid, 1 << 20)
        assert size == len(
            codec.encode_frame(request, request_id=request_id, kind=codec.FrameKind.RESPONSE, gpid=gpid)
        )
    assert bytes(buffer) == b"".join(
        codec.encode_frame(request, request_id=request_id, kind=codec.FrameKind.RESPONSE, gpid=gpid)
        for request_id, request in enumerate(requests, start=1)
    )


def test_a_frame_that_cannot_be_appended_leaves_the_buffer_as_it_was() -> None:
    buffer = bytearray(b"earlier frames")
    with pytest.raises(CodecError):
        codec.append_frame(
            buffer, m.SetRequest(b"h", b"s", b"v", ttl_s=2**70), 1, codec.FrameKind.RESPONSE, None, 1 << 20
        )
    with pytest.raises(CodecError, match="exceeds"):
        codec.append_frame(
            buffer, m.SetRequest(b"h", b"s", b"v" * 200), 1, codec.FrameKind.RESPONSE, None, 100
        )
    assert buffer == b"earlier frames"
