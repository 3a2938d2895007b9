"""The latency histogram: percentiles within bucket precision, bounded memory, exact merges."""

from __future__ import annotations

import random

import pytest

from pegasus_kv.bench.histogram import (
    BUCKET_COUNT,
    MAX_VALUE_US,
    SUB_BUCKETS,
    HistogramInvariantError,
    LatencyHistogram,
    bucket_bounds,
    bucket_index,
)


def exact_percentile(values: list[int], percentile: float) -> int:
    ordered = sorted(values)
    rank = max(1, -(-int(percentile * len(ordered) * 1000) // 100_000))
    return ordered[rank - 1]


def test_every_value_lands_in_a_bucket_that_contains_it() -> None:
    rng = random.Random(1)
    for value in [
        0,
        1,
        255,
        256,
        257,
        1000,
        MAX_VALUE_US,
        *(rng.randrange(MAX_VALUE_US) for _ in range(5000)),
    ]:
        index = bucket_index(value)
        low, high = bucket_bounds(index)
        assert 0 <= index < BUCKET_COUNT
        assert low <= value <= high
        assert high - low <= max(0, value // SUB_BUCKETS)  # under 1 % wide


def test_recording_counts_each_value_in_its_bucket_and_keeps_the_extremes() -> None:
    rng = random.Random(3)
    values = [700, 5, 255, 256, 70_000, 0, *(rng.randrange(MAX_VALUE_US) for _ in range(2000)), 12]
    histogram = LatencyHistogram()
    expected = [0] * BUCKET_COUNT
    for value in values:
        histogram.record(value)
        expected[bucket_index(value)] += 1
    assert histogram.to_sparse()["buckets"] == {i: c for i, c in enumerate(expected) if c}
    assert (histogram.count, histogram.min_us, histogram.max_us) == (len(values), 0, max(values))


def test_percentiles_match_the_exact_ones_within_bucket_precision() -> None:
    rng = random.Random(2)
    values = [int(rng.lognormvariate(7, 1.5)) for _ in range(20_000)]
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(value)
    for percentile in (50.0, 95.0, 99.0, 99.9, 100.0):
        exact = exact_percentile(values, percentile)
        assert exact <= histogram.percentile_us(percentile) <= exact + exact // SUB_BUCKETS
    assert histogram.percentile_us(100.0) == max(values)
    assert histogram.count == len(values)


def test_merged_histograms_equal_one_histogram_of_all_values() -> None:
    rng = random.Random(3)
    values = [rng.randrange(1, 1_000_000) for _ in range(3000)]
    whole, left, right = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for i, value in enumerate(values):
        whole.record(value)
        (left if i % 2 else right).record(value)
    left.merge(LatencyHistogram.from_sparse(right.to_sparse()))  # as workers send theirs
    for percentile in (50.0, 99.0, 99.9):
        assert left.percentile_us(percentile) == whole.percentile_us(percentile)
    assert (left.count, left.min_us, left.max_us) == (whole.count, whole.min_us, whole.max_us)


def test_huge_values_are_clamped_and_negative_ones_refused() -> None:
    histogram = LatencyHistogram()
    histogram.record(MAX_VALUE_US * 10)
    assert histogram.clamped == 1
    assert histogram.max_us == MAX_VALUE_US
    with pytest.raises(HistogramInvariantError):
        histogram.record(-1)
    assert LatencyHistogram().percentile_us(99.0) == 0
