"""The bench summary: one phase's numbers as a dict (the --json form) and as a text table."""

from __future__ import annotations

from collections.abc import Mapping

from pegasus_kv.bench.histogram import LatencyHistogram

PERCENTILES = (("p50_ms", 50.0), ("p95_ms", 95.0), ("p99_ms", 99.0), ("p999_ms", 99.9))


def phase_summary(
    *,
    workload: str,
    phase: str,
    duration_s: float,
    histograms: Mapping[str, LatencyHistogram],
    errors: Mapping[str, int],
) -> dict[str, object]:
    """{"workload", "phase", "ops", "ops_per_s", "duration_s", "operations": {op: {"count",
    "p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms"}}, "errors": {exception class: count}}.
    ops counts successful operations only; failed ones are in errors."""
    operations: dict[str, dict[str, float | int]] = {}
    ops = 0
    for name in sorted(histograms):
        histogram = histograms[name]
        if histogram.count == 0:
            continue
        ops += histogram.count
        entry: dict[str, float | int] = {"count": histogram.count}
        for key, percentile in PERCENTILES:
            entry[key] = histogram.percentile_us(percentile) / 1000.0
        entry["max_ms"] = histogram.max_us / 1000.0
        operations[name] = entry
    return {
        "workload": workload,
        "phase": phase,
        "ops": ops,
        "ops_per_s": round(ops / duration_s, 1) if duration_s > 0 else 0.0,
        "duration_s": round(duration_s, 3),
        "operations": operations,
        "errors": dict(sorted(errors.items())),
    }


def format_table(summary: Mapping[str, object]) -> str:
    lines = [
        f"[{summary['phase']}] workload {summary['workload']}: {summary['ops']} ops in "
        f"{summary['duration_s']} s = {summary['ops_per_s']} ops/s",
        f"{'operation':<18} {'count':>9} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'p99.9 ms':>9} "
        f"{'max ms':>9}",
    ]
    operations = summary["operations"]
    if isinstance(operations, Mapping):
        for name, entry in operations.items():
            lines.append(
                f"{name:<18} {entry['count']:>9} {entry['p50_ms']:>9.3f} {entry['p95_ms']:>9.3f} "
                f"{entry['p99_ms']:>9.3f} {entry['p999_ms']:>9.3f} {entry['max_ms']:>9.3f}"
            )
    errors = summary["errors"]
    if isinstance(errors, Mapping) and errors:
        lines.append("errors: " + ", ".join(f"{name} {count}" for name, count in errors.items()))
    else:
        lines.append("errors: none")
    return "\n".join(lines)
