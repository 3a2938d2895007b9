"""CRC-64/NVME known answers and partition routing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pegasus_kv.core.errors import InvalidArgumentError
from pegasus_kv.core.hashing import (
    NATIVE_CRC64,
    check_partition_count,
    crc64_nvme,
    crc64_nvme_python,
    is_power_of_two,
    key_hash,
    partition_index,
)


def bitwise_crc64_nvme(data: bytes) -> int:
    """An independent, slow, bit-at-a-time CRC-64/NVME used as an oracle for the table version."""
    crc = 0xFFFF_FFFF_FFFF_FFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x9A6C9329AC4BC9B5 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF_FFFF_FFFF_FFFF


def test_catalogue_check_value() -> None:
    # The CRC catalogue's check value for CRC-64/NVME over the ASCII digits 1..9.
    assert crc64_nvme(b"123456789") == 0xAE8B14860A799888


def test_empty_input_hashes_to_zero() -> None:
    # init and xorout are both all ones, so nothing in gives zero out.
    assert crc64_nvme(b"") == 0


@given(st.binary(max_size=300))
def test_table_driven_crc_matches_bitwise_oracle(data: bytes) -> None:
    assert crc64_nvme(data) == bitwise_crc64_nvme(data)


@given(st.binary(max_size=300))
def test_python_fallback_matches_bitwise_oracle(data: bytes) -> None:
    assert crc64_nvme_python(data) == bitwise_crc64_nvme(data)


@given(st.binary(max_size=100), st.binary(max_size=100))
def test_crc_can_be_continued_over_chunks(first: bytes, second: bytes) -> None:
    assert crc64_nvme(second, crc64_nvme(first)) == crc64_nvme(first + second)
    assert crc64_nvme_python(second, crc64_nvme_python(first)) == crc64_nvme_python(first + second)


def test_the_native_crc_is_in_use_where_it_is_installed() -> None:
    # awscrt is a dependency (pyproject.toml): on this platform routing must not fall back to the
    # ~20x slower Python loop without anyone noticing.
    assert NATIVE_CRC64


def test_routing_uses_hash_key_when_present() -> None:
    assert key_hash(b"user42", b"profile") == crc64_nvme(b"user42")
    assert partition_index(b"user42", b"a", 8) == partition_index(b"user42", b"zzz", 8)


def test_routing_uses_sort_key_when_hash_key_is_empty() -> None:
    assert key_hash(b"", b"only-sort-key") == crc64_nvme(b"only-sort-key")
    assert partition_index(b"", b"only-sort-key", 16) == crc64_nvme(b"only-sort-key") % 16


@pytest.mark.parametrize("count", [1, 2, 4, 8, 64, 1024])
def test_partition_index_is_hash_modulo_power_of_two(count: int) -> None:
    for key in (b"a", b"b", b"hello", b"\x00\xff"):
        assert partition_index(key, b"", count) == crc64_nvme(key) % count


@pytest.mark.parametrize("count", [0, -8, 3, 6, 12, 1000])
def test_partition_counts_that_are_not_powers_of_two_are_refused(count: int) -> None:
    assert not is_power_of_two(count)
    with pytest.raises(InvalidArgumentError, match="power of two"):
        check_partition_count(count)
    with pytest.raises(InvalidArgumentError):
        partition_index(b"k", b"", count)
