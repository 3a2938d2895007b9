"""`pegasus-kv bench` against a real cluster: a short smoke run of workloads A and E that checks
what the benchmark reports (operation counts, ordered percentiles, no errors), never its timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .onebox_support import onebox, running_onebox

pytestmark = pytest.mark.integration


def bench(meta: str, *options: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "pegasus_kv.cli", "bench", "--meta", meta, "--json", *options],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    summaries: dict[str, Any] = json.loads(completed.stdout)
    return summaries


def assert_well_formed(summary: dict[str, Any], workload: str, phase: str) -> None:
    assert (summary["workload"], summary["phase"]) == (workload, phase)
    assert summary["errors"] == {}
    assert summary["ops"] == sum(entry["count"] for entry in summary["operations"].values())
    for entry in summary["operations"].values():
        assert (
            0 <= entry["p50_ms"] <= entry["p95_ms"] <= entry["p99_ms"] <= entry["p999_ms"] <= entry["max_ms"]
        )


def test_bench_loads_the_records_then_runs_the_workload_mix(tmp_path: Path) -> None:
    with running_onebox(tmp_path / "onebox") as data_dir:
        meta = json.loads(onebox("status", "--data-dir", str(data_dir), "--json").stdout)["meta"][0]

        workload_a = bench(
            meta, "--workload", "a", "--record-count", "200", "--operation-count", "500",
            "--threads", "8", "--processes", "2",
        )  # fmt: skip
        load, run = workload_a["load"], workload_a["run"]
        assert_well_formed(load, "a", "load")
        assert load["operations"]["INSERT"]["count"] == 200
        assert_well_formed(run, "a", "run")
        assert set(run["operations"]) == {"READ", "UPDATE"}  # a 50/50 mix of 500 has both
        assert run["ops"] == 500

        # Workload E over the records already loaded: mostly scans, a few inserts of new records.
        workload_e = bench(
            meta, "--workload", "e", "--record-count", "200", "--operation-count", "300",
            "--threads", "4", "--skip-load", "--warmup-s", "0.2",
        )  # fmt: skip
        assert workload_e["load"] is None
        assert_well_formed(workload_e["run"], "e", "run")
        assert workload_e["run"]["operations"]["SCAN"]["count"] > 200
        assert workload_e["run"]["ops"] == 300

        # Workload C reading single fields, from one process.
        workload_c = bench(
            meta, "--workload", "c", "--record-count", "200", "--operation-count", "100",
            "--threads", "2", "--skip-load", "--read-one-field",
        )  # fmt: skip
        assert_well_formed(workload_c["run"], "c", "run")
        assert workload_c["run"]["operations"]["READ"]["count"] == 100


def test_bench_refuses_an_impossible_configuration() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "pegasus_kv.cli", "bench", "--threads", "1", "--processes", "2"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 2
    assert "--threads >= --processes" in completed.stderr
