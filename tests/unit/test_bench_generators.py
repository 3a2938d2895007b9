"""The YCSB key choosers: each must produce the distribution shape the workloads promise."""

from __future__ import annotations

import random
from collections import Counter

from pegasus_kv.bench.generators import (
    ScrambledZipfianGenerator,
    SkewedLatestGenerator,
    UniformGenerator,
    ZipfianGenerator,
    fnv_hash64,
    record_key,
    zeta,
)
from pegasus_kv.bench.workloads import WORKLOADS, KeyChooser, Operation, choose_operation

DRAWS = 50_000


def test_fnv_hash64_is_a_non_negative_long_and_names_records_like_ycsb() -> None:
    # FNV-1a of eight zero bytes, a fixed point anyone can recompute from the FNV spec.
    expected = 0xCBF29CE484222325
    for _ in range(8):
        expected = (expected * 1099511628211) & ((1 << 64) - 1)
    signed = expected - (1 << 64) if expected >= 1 << 63 else expected
    assert fnv_hash64(0) == abs(signed)
    assert all(0 <= fnv_hash64(n) < 1 << 63 for n in range(1000))
    assert record_key(0) == b"user%d" % abs(signed)
    assert len({record_key(n) for n in range(10_000)}) == 10_000


def fnv1a_octet_by_octet(value: int) -> int:
    """The FNV-1a loop as the spec states it, over the 8 little-endian octets of a Java long."""
    hashed = 0xCBF29CE484222325
    for _ in range(8):
        hashed ^= value & 0xFF
        value >>= 8
        hashed = (hashed * 1099511628211) & ((1 << 64) - 1)
    signed = hashed - (1 << 64) if hashed >= 1 << 63 else hashed
    return abs(signed) if signed != -(1 << 63) else 0


def test_the_unrolled_fnv_hash64_agrees_with_the_plain_loop_on_every_kind_of_long() -> None:
    rng = random.Random(7)
    values = [
        *range(-300, 3000),  # small keys, and negative longs (arithmetic shifts, as Java's >>)
        *(rng.randrange(10_000_000_000) for _ in range(3000)),  # scrambled zipfian's item space
        *(rng.randrange(-(1 << 63), 1 << 63) for _ in range(3000)),  # any long
        (1 << 40) - 1,  # the largest value with three zero octets on top
        1 << 40,
        (1 << 63) - 1,
        -(1 << 63),
    ]
    for value in values:
        assert fnv_hash64(value) == fnv1a_octet_by_octet(value), value


def test_uniform_covers_its_whole_range_and_nothing_outside() -> None:
    generator = UniformGenerator(10, 29, random.Random(1))
    seen = Counter(generator.next_value() for _ in range(DRAWS))
    assert set(seen) == set(range(10, 30))
    assert min(seen.values()) > DRAWS / 20 * 0.8


def test_zipfian_most_popular_item_matches_theory_for_a_small_range() -> None:
    n = 100
    generator = ZipfianGenerator(0, n - 1, random.Random(2))
    seen = Counter(generator.next_value() for _ in range(DRAWS))
    expected_share = 1.0 / zeta(n, 0.99)  # P(item 0) = 1 / zeta(n, theta)
    assert abs(seen[0] / DRAWS - expected_share) < 0.02
    assert seen[0] > seen[1] > seen[10] > seen[90]
    assert set(seen) <= set(range(n))


def test_scrambled_zipfian_is_skewed_but_its_hot_keys_are_scattered() -> None:
    generator = ScrambledZipfianGenerator(0, 999, random.Random(3))
    seen = Counter(generator.next_value() for _ in range(DRAWS))
    assert set(seen) <= set(range(1000))
    hottest = [key for key, _ in seen.most_common(10)]
    top_share = sum(seen[key] for key in hottest) / DRAWS
    # Theory: the 10 hottest of YCSB's 10^10 items carry sum(1/i^0.99, i<=10) / 26.47 = 11 % of
    # draws; a uniform choice would give 10 of 1000 keys 1 %.
    assert top_share > 0.08
    assert max(hottest) - min(hottest) > 100  # not bunched at the low end like plain zipfian


def test_scrambled_zipfian_draws_the_items_of_ycsbs_zipfian_over_its_item_space() -> None:
    # Its draw is the zipfian one inlined: the same seed must give the same keys, item for item.
    scrambled = ScrambledZipfianGenerator(5, 1004, random.Random(6))
    zipfian = ZipfianGenerator(0, 10_000_000_000 - 1, random.Random(6), zetan=26.46902820178302)
    draws = [scrambled.next_value() for _ in range(DRAWS)]
    assert draws == [5 + fnv_hash64(zipfian.next_value()) % 1000 for _ in range(DRAWS)]


def test_latest_favours_the_newest_keys_and_follows_inserts() -> None:
    generator = SkewedLatestGenerator(999, random.Random(4))
    draws = [generator.next_value() for _ in range(DRAWS)]
    assert all(0 <= d <= 999 for d in draws)
    assert sum(d >= 990 for d in draws) / DRAWS > 0.3
    generator.advance(1499)
    later = [generator.next_value() for _ in range(DRAWS)]
    assert max(later) == 1499
    assert sum(d >= 1490 for d in later) / DRAWS > 0.3


def test_workload_mixes_add_up_and_choose_operations_in_proportion() -> None:
    for workload in WORKLOADS.values():
        assert abs(sum(share for _, share in workload.mix) - 1.0) < 1e-9
    rng = random.Random(5)
    picks = Counter(choose_operation(WORKLOADS["b"], rng) for _ in range(DRAWS))
    assert abs(picks[Operation.UPDATE] / DRAWS - 0.05) < 0.01
    assert set(picks) == {Operation.READ, Operation.UPDATE}


def test_key_chooser_never_picks_a_key_that_was_not_loaded_or_inserted() -> None:
    chooser = KeyChooser(WORKLOADS["e"], 100, expected_inserts=100, rng=random.Random(6))
    assert all(0 <= chooser.next_key() < 100 for _ in range(5000))
    chooser.inserted(150)
    assert max(chooser.next_key() for _ in range(20_000)) <= 150


def test_a_key_choosers_drawer_draws_what_next_key_would() -> None:
    # The runner draws through `drawer` (for YCSB A-C the zipfian generator itself); the keys must
    # be next_key's, and a chooser with room for inserts keeps next_key and its redraws.
    for name, expected_inserts in (("a", 0), ("c", 0), ("e", 100), ("d", 0), ("write-only", 0)):
        by_drawer = KeyChooser(WORKLOADS[name], 1000, expected_inserts, random.Random(7))
        by_next_key = KeyChooser(WORKLOADS[name], 1000, expected_inserts, random.Random(7))
        drawer = by_drawer.drawer
        assert [drawer() for _ in range(5000)] == [by_next_key.next_key() for _ in range(5000)]
    with_room = KeyChooser(WORKLOADS["e"], 1000, 100, random.Random(8))
    assert with_room.drawer == with_room.next_key
