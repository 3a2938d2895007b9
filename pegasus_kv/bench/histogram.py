"""A log-bucketed latency histogram in the spirit of HdrHistogram: bounded memory, mergeable.

Values are integer microseconds. Below 2 * SUB_BUCKETS every value has its own bucket; above,
each power of two is cut into SUB_BUCKETS equal buckets, so a percentile is exact to within
1 / SUB_BUCKETS (under 1 %) of the value. Values above MAX_VALUE_US are clamped (and counted).
"""

from __future__ import annotations

from collections.abc import Mapping

from pegasus_kv.core.invariants import InvariantViolation

SUB_BUCKET_BITS = 7
SUB_BUCKETS = 1 << SUB_BUCKET_BITS  # 128 buckets per power of two: < 0.8 % relative error
_LINEAR_LIMIT = 2 * SUB_BUCKETS
MAX_VALUE_US = (1 << 36) - 1  # about 19 hours: anything slower is clamped
_TOP_EXPONENT = MAX_VALUE_US.bit_length() - (SUB_BUCKET_BITS + 1)
BUCKET_COUNT = _LINEAR_LIMIT + _TOP_EXPONENT * SUB_BUCKETS


class HistogramInvariantError(InvariantViolation):
    """Raised explicitly (not with `assert`) so the checks survive `python -O`."""


def bucket_index(value_us: int) -> int:
    if value_us < _LINEAR_LIMIT:
        return value_us
    exponent = value_us.bit_length() - (SUB_BUCKET_BITS + 1)  # >= 1 here
    mantissa = value_us >> exponent  # in [SUB_BUCKETS, 2 * SUB_BUCKETS)
    return _LINEAR_LIMIT + (exponent - 1) * SUB_BUCKETS + (mantissa - SUB_BUCKETS)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The smallest and largest value (µs) that fall into bucket `index`."""
    if index < _LINEAR_LIMIT:
        return index, index
    exponent = (index - _LINEAR_LIMIT) // SUB_BUCKETS + 1
    mantissa = (index - _LINEAR_LIMIT) % SUB_BUCKETS + SUB_BUCKETS
    low = mantissa << exponent
    return low, low + (1 << exponent) - 1


class LatencyHistogram:
    def __init__(self) -> None:
        self._counts = [0] * BUCKET_COUNT
        self.count = 0
        self.min_us = 0
        self.max_us = 0
        self.clamped = 0

    def record(self, value_us: int) -> None:
        # Once per benchmarked operation: bucket_index and min / max are inlined.
        if value_us < _LINEAR_LIMIT:
            if value_us < 0:
                raise HistogramInvariantError(f"negative latency {value_us} µs")
            index = value_us
        else:
            if value_us > MAX_VALUE_US:
                value_us = MAX_VALUE_US
                self.clamped += 1
            exponent = value_us.bit_length() - (SUB_BUCKET_BITS + 1)
            index = _LINEAR_LIMIT - 2 * SUB_BUCKETS + exponent * SUB_BUCKETS + (value_us >> exponent)
        self._counts[index] += 1
        if self.count == 0:
            self.min_us = self.max_us = value_us
        elif value_us < self.min_us:
            self.min_us = value_us
        elif value_us > self.max_us:
            self.max_us = value_us
        self.count += 1

    def merge(self, other: LatencyHistogram) -> None:
        if other.count == 0:
            return
        for index, bucket_count in enumerate(other._counts):
            if bucket_count:
                self._counts[index] += bucket_count
        self.min_us = other.min_us if self.count == 0 else min(self.min_us, other.min_us)
        self.max_us = max(self.max_us, other.max_us)
        self.count += other.count
        self.clamped += other.clamped

    def percentile_us(self, percentile: float) -> int:
        """The value at or below which `percentile` % of the recorded values lie (bucket's top,
        capped at the largest value seen); 0 for an empty histogram."""
        if not 0.0 <= percentile <= 100.0:
            raise HistogramInvariantError(f"percentile {percentile} outside 0..100")
        if self.count == 0:
            return 0
        rank = max(1, -(-int(percentile * self.count * 1000) // 100_000))  # ceil, in integers
        seen = 0
        for index, bucket_count in enumerate(self._counts):
            seen += bucket_count
            if seen >= rank:
                return max(self.min_us, min(bucket_bounds(index)[1], self.max_us))
        raise HistogramInvariantError(f"rank {rank} beyond the {self.count} recorded values")

    def to_sparse(self) -> dict[str, object]:
        """A compact, picklable / JSON-able form (only the non-empty buckets)."""
        buckets = {index: c for index, c in enumerate(self._counts) if c}
        return {"buckets": buckets, "min_us": self.min_us, "max_us": self.max_us, "clamped": self.clamped}

    @classmethod
    def from_sparse(cls, sparse: Mapping[str, object]) -> LatencyHistogram:
        histogram = cls()
        buckets = sparse["buckets"]
        if not isinstance(buckets, dict):
            raise HistogramInvariantError("a sparse histogram needs a buckets mapping")
        for index, bucket_count in buckets.items():
            if not (isinstance(index, int) and isinstance(bucket_count, int) and 0 <= index < BUCKET_COUNT):
                raise HistogramInvariantError(f"bad bucket {index!r}: {bucket_count!r}")
            histogram._counts[index] += bucket_count
            histogram.count += bucket_count
        for name in ("min_us", "max_us", "clamped"):
            value = sparse[name]
            if not isinstance(value, int):
                raise HistogramInvariantError(f"{name} must be an int, got {value!r}")
            setattr(histogram, name, value)
        return histogram
