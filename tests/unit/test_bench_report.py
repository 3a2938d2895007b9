"""The bench summary a user reads: counts, ordered percentiles in ms, errors, and the table."""

from __future__ import annotations

import pytest

from pegasus_kv.bench.histogram import LatencyHistogram
from pegasus_kv.bench.report import format_table, phase_summary
from pegasus_kv.bench.runner import BenchConfig, share


def histogram_of(*values_us: int) -> LatencyHistogram:
    histogram = LatencyHistogram()
    for value in values_us:
        histogram.record(value)
    return histogram


def test_summary_counts_successes_per_operation_and_reports_errors_apart() -> None:
    summary = phase_summary(
        workload="a",
        phase="run",
        duration_s=2.0,
        histograms={
            "READ": histogram_of(*range(1000, 2000)),
            "UPDATE": histogram_of(5000),
            "SCAN": histogram_of(),
        },
        errors={"TimeoutError": 3},
    )
    assert summary["ops"] == 1001
    assert summary["ops_per_s"] == 500.5
    operations = summary["operations"]
    assert isinstance(operations, dict)
    assert set(operations) == {"READ", "UPDATE"}  # an operation never issued is not listed
    read = operations["READ"]
    assert read["count"] == 1000
    assert read["p50_ms"] <= read["p95_ms"] <= read["p99_ms"] <= read["p999_ms"] <= read["max_ms"] == 1.999
    assert 1.49 <= read["p50_ms"] <= 1.51  # µs recorded, ms reported
    assert summary["errors"] == {"TimeoutError": 3}

    table = format_table(summary)
    assert "1001 ops" in table and "500.5 ops/s" in table
    assert "READ" in table and "UPDATE" in table
    assert "errors: TimeoutError 3" in table


def test_tasks_and_operations_are_shared_out_without_losing_any() -> None:
    assert [share(10, 3, i) for i in range(3)] == [4, 3, 3]
    assert sum(share(64, 2, i) for i in range(2)) == 64


@pytest.mark.parametrize(
    "config",
    [
        BenchConfig(workload="z"),
        BenchConfig(operation_count=None, duration_s=None),
        BenchConfig(operation_count=10, duration_s=1.0),
        BenchConfig(threads=1, processes=2),
        BenchConfig(field_count=0),
        BenchConfig(record_count=0),
    ],
)
def test_impossible_configurations_are_refused(config: BenchConfig) -> None:
    with pytest.raises(ValueError):
        config.validate()
