"""YCSB's key choosers, re-derived from the YCSB core workload's documented behaviour.

Zipfian follows Gray et al., "Quickly Generating Billion-Record Synthetic Databases" (SIGMOD 1994),
as YCSB's ZipfianGenerator does: item 0 is the most popular, with P(i) = (1/(i+1)^theta) / zeta(n).
Scrambled zipfian spreads the popular items over the key space by FNV-hashing the drawn item (so
that the hot keys are not all neighbours); skewed-latest favours the most recently inserted keys.
Pure code: the randomness is an injected source.
"""

from __future__ import annotations

import functools
from typing import Protocol

from pegasus_kv.core.invariants import InvariantViolation, check_invariant

ZIPFIAN_THETA = 0.99
# YCSB's scrambled zipfian draws from a fixed, huge item space and folds it onto the key space
# with a hash, so it never has to compute zeta over the real key count.
SCRAMBLED_ITEM_COUNT = 10_000_000_000
SCRAMBLED_ZETAN = 26.46902820178302  # zeta(10^10, 0.99), the constant YCSB uses for that space
# Scrambled zipfian remembers the keys of the items below this (the popular ones): ~6 MB at most.
SCRAMBLED_MEMO_ITEMS = 1 << 16
MAX_ZETA_ITEMS = 50_000_000  # computing zeta is O(n): a bound keeps a chooser's start-up finite

FNV_OFFSET_BASIS_64 = 0xCBF29CE484222325
FNV_PRIME_64 = 1099511628211
_MASK_64 = (1 << 64) - 1


class RandomSource(Protocol):
    def random(self) -> float: ...

    def randint(self, a: int, b: int) -> int: ...


class GeneratorInvariantError(InvariantViolation):
    """Raised explicitly (not with `assert`) so the checks survive `python -O`."""


def _check(condition: bool, message: str) -> None:
    check_invariant(condition, message, GeneratorInvariantError)


# FNV-1a state after the first octet, for each octet value (the first step starts from the basis).
_AFTER_FIRST_OCTET = tuple(((FNV_OFFSET_BASIS_64 ^ octet) * FNV_PRIME_64) & _MASK_64 for octet in range(256))
# An octet 0 leaves the state unchanged before the multiply: three of them multiply by the cube.
_PRIME_CUBED = pow(FNV_PRIME_64, 3, 1 << 64)
# Record keys the process keeps made (a key is ~25 bytes): YCSB draws the same keys again and again.
RECORD_KEY_CACHE_SIZE = 1 << 16


def fnv_hash64(value: int) -> int:
    """YCSB's fnvhash64: FNV-1a over the 8 little-endian bytes of a long, as a non-negative long.

    Unrolled (every key the bench draws is hashed, twice): the first octet comes from a table, and
    a value below 2^40, as every key number and zipfian item is, has three zero octets on top.
    """
    hashed = _AFTER_FIRST_OCTET[value & 0xFF]
    hashed = ((hashed ^ ((value >> 8) & 0xFF)) * FNV_PRIME_64) & _MASK_64
    hashed = ((hashed ^ ((value >> 16) & 0xFF)) * FNV_PRIME_64) & _MASK_64
    hashed = ((hashed ^ ((value >> 24) & 0xFF)) * FNV_PRIME_64) & _MASK_64
    hashed = ((hashed ^ ((value >> 32) & 0xFF)) * FNV_PRIME_64) & _MASK_64
    if value >> 40 == 0:
        hashed = (hashed * _PRIME_CUBED) & _MASK_64
    else:  # a negative long (arithmetic shifts, as Java's >>) or one of 2^40 and above
        hashed = ((hashed ^ ((value >> 40) & 0xFF)) * FNV_PRIME_64) & _MASK_64
        hashed = ((hashed ^ ((value >> 48) & 0xFF)) * FNV_PRIME_64) & _MASK_64
        hashed = ((hashed ^ ((value >> 56) & 0xFF)) * FNV_PRIME_64) & _MASK_64
    signed = hashed - (1 << 64) if hashed >= 1 << 63 else hashed
    # Java's Math.abs(Long.MIN_VALUE) is Long.MIN_VALUE; fold that one case to a valid key anyway.
    return abs(signed) if signed != -(1 << 63) else 0


@functools.lru_cache(maxsize=RECORD_KEY_CACHE_SIZE)
def record_key(key_number: int) -> bytes:
    """The YCSB record key of a key number ("user" + the FNV hash, as with insertorder=hashed).

    Memoised, bounded: the hot keys of a zipfian workload are named over and over.
    """
    return b"user%d" % fnv_hash64(key_number)


def zeta(item_count: int, theta: float, *, start: int = 0, partial: float = 0.0) -> float:
    """sum_{i=start+1..item_count} 1/i^theta, added to `partial` (zeta of the first `start` items)."""
    _check(0 <= start <= item_count <= MAX_ZETA_ITEMS, f"zeta over {start}..{item_count} out of range")
    total = partial
    for i in range(start + 1, item_count + 1):
        total += 1.0 / i**theta
    return total


class UniformGenerator:
    """Every integer of [lower, upper] equally likely."""

    def __init__(self, lower: int, upper: int, rng: RandomSource) -> None:
        _check(lower <= upper, f"empty uniform range {lower}..{upper}")
        self.lower = lower
        self.upper = upper
        self._rng = rng

    def next_value(self) -> int:
        return self._rng.randint(self.lower, self.upper)


class ZipfianGenerator:
    """Integers of [lower, upper]; lower is the most popular, popularity falls as 1/rank^theta.

    next_value(item_count) may draw from a grown range (skewed-latest needs that): zeta is then
    extended incrementally, as in YCSB, instead of recomputed.
    """

    def __init__(
        self,
        lower: int,
        upper: int,
        rng: RandomSource,
        *,
        theta: float = ZIPFIAN_THETA,
        zetan: float | None = None,
    ) -> None:
        _check(lower <= upper, f"empty zipfian range {lower}..{upper}")
        _check(0.0 < theta < 1.0, f"zipfian theta {theta} outside (0, 1)")
        self.base = lower
        self.theta = theta
        self._rng = rng
        self._alpha = 1.0 / (1.0 - theta)
        self._zeta2theta = zeta(2, theta)
        self._item_count = upper - lower + 1
        self._zetan = zetan if zetan is not None else zeta(self._item_count, theta)
        self._eta = self._compute_eta()
        # A draw u with u * zetan below this names the second item (computed once, not per draw).
        self._second_item_bound = 1.0 + 0.5**theta

    @property
    def item_count(self) -> int:
        return self._item_count

    def _compute_eta(self) -> float:
        n = self._item_count
        eta: float = (1.0 - (2.0 / n) ** (1.0 - self.theta)) / (1.0 - self._zeta2theta / self._zetan)
        return eta

    def _resize(self, item_count: int) -> None:
        if item_count > self._item_count:
            self._zetan = zeta(item_count, self.theta, start=self._item_count, partial=self._zetan)
        else:
            self._zetan = zeta(item_count, self.theta)
        self._item_count = item_count
        self._eta = self._compute_eta()

    def next_value(self, item_count: int | None = None) -> int:
        if item_count is not None and item_count != self._item_count:
            _check(item_count >= 1, f"zipfian over {item_count} items")
            self._resize(item_count)
        n = self._item_count
        u = self._rng.random()
        uz = u * self._zetan
        if uz < 1.0:
            return self.base
        if uz < self._second_item_bound:
            return self.base + 1 if n > 1 else self.base
        eta = self._eta
        offset = int(n * (eta * u - eta + 1.0) ** self._alpha)
        return self.base + min(offset, n - 1)


class ScrambledZipfianGenerator:
    """Zipfian popularity, but the popular items are FNV-scattered over [lower, upper]."""

    def __init__(self, lower: int, upper: int, rng: RandomSource) -> None:
        _check(lower <= upper, f"empty scrambled zipfian range {lower}..{upper}")
        self.lower = lower
        self.item_count = upper - lower + 1
        zipfian = self._zipfian = ZipfianGenerator(
            0, SCRAMBLED_ITEM_COUNT - 1, rng, theta=ZIPFIAN_THETA, zetan=SCRAMBLED_ZETAN
        )
        # The draw of zipfian.next_value() over its fixed range, inlined in next_value (once per
        # operation of YCSB A-C; two calls less per draw): its constants, read once.
        self._random = rng.random
        self._zetan = zipfian._zetan
        self._second_item_bound = zipfian._second_item_bound
        self._eta = zipfian._eta
        self._alpha = zipfian._alpha
        _check(zipfian.base == 0 and zipfian.item_count == SCRAMBLED_ITEM_COUNT > 1, "scrambled item space")
        # item -> its key, for the most popular items (FNV-hashing an item costs ~0.7 µs, half of
        # a draw; items below SCRAMBLED_MEMO_ITEMS are ~46 % of draws at theta 0.99).
        self._memo: dict[int, int] = {}

    def next_value(self) -> int:
        # ZipfianGenerator.next_value() over 0..SCRAMBLED_ITEM_COUNT-1, the same operations in the
        # same order (the same floats, so the same items); test_bench_generators compares them.
        u = self._random()
        uz = u * self._zetan
        if uz < 1.0:
            item = 0
        elif uz < self._second_item_bound:
            item = 1
        else:
            eta = self._eta
            item = int(SCRAMBLED_ITEM_COUNT * (eta * u - eta + 1.0) ** self._alpha)
            if item >= SCRAMBLED_ITEM_COUNT:  # min(item, SCRAMBLED_ITEM_COUNT - 1), without a call
                item = SCRAMBLED_ITEM_COUNT - 1
        if item >= SCRAMBLED_MEMO_ITEMS:
            return self.lower + fnv_hash64(item) % self.item_count
        key = self._memo.get(item)
        if key is None:
            key = self._memo[item] = self.lower + fnv_hash64(item) % self.item_count
        return key


class SkewedLatestGenerator:
    """Recent keys are popular: latest - zipfian(latest + 1), where latest is the newest key."""

    def __init__(self, latest: int, rng: RandomSource) -> None:
        _check(latest >= 0, f"latest key number {latest} is negative")
        self._latest = latest
        self._zipfian = ZipfianGenerator(0, latest, rng)

    @property
    def latest(self) -> int:
        return self._latest

    def advance(self, key_number: int) -> None:
        """A key was inserted: it becomes the latest when it is newer."""
        self._latest = max(self._latest, key_number)

    def next_value(self) -> int:
        return self._latest - self._zipfian.next_value(self._latest + 1)
