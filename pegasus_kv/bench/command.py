"""`pegasus-kv bench`: a load phase (unless skipped), a run phase, and their summaries."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from pegasus_kv.bench.report import format_table, phase_summary
from pegasus_kv.bench.runner import BenchConfig, BenchError, run_phase


def run_bench(config: BenchConfig, *, skip_load: bool, as_json: bool, out: TextIO = sys.stdout) -> int:
    """Exit status 0 when both phases ran (failed operations are reported, not fatal), 2 for a bad
    configuration, 1 when the benchmark itself broke. With as_json, prints
    {"load": summary | null, "run": summary} (see report.phase_summary)."""
    try:
        config.validate()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summaries: dict[str, dict[str, object] | None] = {"load": None, "run": None}
    try:
        for phase in ("load", "run"):
            if phase == "load" and skip_load:
                continue
            result = run_phase(config, phase)
            summary = phase_summary(
                workload=config.workload,
                phase=phase,
                duration_s=result.duration_s,
                histograms=result.histograms,
                errors=result.errors,
            )
            summaries[phase] = summary
            if not as_json:
                print(format_table(summary), file=out, flush=True)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(summaries), file=out)
    return 0
