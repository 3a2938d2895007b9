"""The Pegasus key and value encodings (DESIGN.md section 3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pegasus_kv.core import schema
from pegasus_kv.core.errors import InvalidArgumentError, KeyTooLargeError, ValueTooLargeError

keys = st.binary(max_size=64)


@given(keys, keys)
def test_key_encoding_round_trips(hash_key: bytes, sort_key: bytes) -> None:
    assert schema.decode_key(schema.encode_key(hash_key, sort_key)) == (hash_key, sort_key)


def test_key_layout_is_u16_big_endian_length_then_keys() -> None:
    assert schema.encode_key(b"hk", b"sk") == b"\x00\x02hksk"
    assert schema.encode_key(b"", b"x") == b"\x00\x00x"


@given(keys, keys, keys)
def test_sort_keys_of_one_hash_key_keep_their_bytewise_order(hash_key: bytes, a: bytes, b: bytes) -> None:
    ka, kb = schema.encode_key(hash_key, a), schema.encode_key(hash_key, b)
    assert (ka < kb) == (a < b)
    assert ka.startswith(schema.hash_key_prefix(hash_key))


@given(keys, keys, keys)
def test_every_key_of_a_hash_key_sorts_below_the_prefix_successor(hk: bytes, sk: bytes, other: bytes) -> None:
    end = schema.prefix_successor(schema.hash_key_prefix(hk))
    assert end is not None  # the u16 length header is never all 0xff
    assert schema.encode_key(hk, sk) < end


def test_prefix_successor_increments_the_last_byte_that_is_not_ff() -> None:
    assert schema.prefix_successor(b"ab") == b"ac"
    assert schema.prefix_successor(b"a\xff\xff") == b"b"
    assert schema.prefix_successor(b"\xff\xff") is None
    assert schema.prefix_successor(b"") is None


def test_hash_keys_of_65535_bytes_or_more_are_refused() -> None:
    schema.encode_key(b"h" * schema.MAX_HASH_KEY_BYTES, b"")
    with pytest.raises(KeyTooLargeError):
        schema.encode_key(b"h" * (schema.MAX_HASH_KEY_BYTES + 1), b"")


@given(
    st.binary(max_size=200),
    st.integers(0, schema.MAX_EXPIRE_TS),
    st.integers(0, (1 << 64) - 1),
)
def test_value_encoding_round_trips(user_value: bytes, expire_ts: int, timetag: int) -> None:
    raw = schema.encode_value(user_value, expire_ts, timetag)
    assert schema.decode_value(raw) == (expire_ts, timetag, user_value)
    assert schema.value_expire_ts(raw) == expire_ts
    assert len(raw) == schema.VALUE_HEADER_BYTES + len(user_value)


def test_value_v1_layout() -> None:
    raw = schema.encode_value(b"v", expire_ts=1, timetag=2)
    assert raw == b"\x00\x00\x00\x01" + b"\x00" * 7 + b"\x02" + b"v"


def test_short_stored_values_are_rejected_with_a_typed_error() -> None:
    with pytest.raises(InvalidArgumentError):
        schema.decode_value(b"\x00\x01")


@given(st.integers(0, schema.MAX_TIMESTAMP_US), st.integers(0, 127), st.booleans())
def test_timetag_round_trips(timestamp_us: int, cluster_id: int, deleted: bool) -> None:
    timetag = schema.make_timetag(timestamp_us, cluster_id, deleted)
    assert schema.timetag_parts(timetag) == (timestamp_us, cluster_id, deleted)


def test_later_timestamps_win_and_cluster_id_breaks_ties() -> None:
    assert schema.make_timetag(2, 0, False) > schema.make_timetag(1, 127, True)
    assert schema.make_timetag(5, 3, False) > schema.make_timetag(5, 2, True)


def test_cluster_ids_need_seven_bits() -> None:
    with pytest.raises(InvalidArgumentError):
        schema.make_timetag(1, 128, False)


def test_expire_ts_counts_seconds_since_2016() -> None:
    assert schema.epoch_now(1_451_606_400.0) == 0
    assert schema.epoch_now(1_451_606_400 + 86_400.7) == 86_400


def test_ttl_rules() -> None:
    now = 1000
    assert schema.expire_ts_for_ttl(0, now) == 0  # 0 = no TTL
    assert schema.expire_ts_for_ttl(10, now) == 1010
    with pytest.raises(InvalidArgumentError):
        schema.expire_ts_for_ttl(-1, now)
    # Expired exactly when now reaches expire_ts; 0 never expires.
    assert not schema.is_expired(1010, 1009)
    assert schema.is_expired(1010, 1010)
    assert not schema.is_expired(0, 10**9)
    assert schema.ttl_left(1010, 1000) == 10
    assert schema.ttl_left(0, 1000) == -1


def test_write_size_limit_is_one_megabyte() -> None:
    schema.check_write_size(schema.MAX_WRITE_BYTES)
    with pytest.raises(ValueTooLargeError):
        schema.check_write_size(schema.MAX_WRITE_BYTES + 1)
