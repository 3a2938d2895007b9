"""The checkers can fail: a simulator-side bug injected on purpose (replica_server.BugHooks, never in
the cores) must be caught. Each story searches a bounded, fixed range of seeds, so it is
deterministic; the bound is generous compared with how soon the bug shows up."""

from __future__ import annotations

from tests.sim.cluster import SimOptions, SimulationFailure, run_seed
from tests.sim.replica_server import BugHooks


def first_failure(bugs: BugHooks, seeds: range) -> str:
    """The report of the first seed in `seeds` whose run fails."""
    for seed in seeds:
        try:
            # Recovery (a liveness check) is left out: the report must name the injected bug's symptom.
            run_seed(seed, SimOptions(bugs=bugs, check_recovery=False))
        except SimulationFailure as failure:
            return str(failure)
    raise AssertionError(f"{bugs} went unnoticed for seeds {seeds.start}..{seeds.stop - 1}")


def test_a_disk_that_acknowledges_fsyncs_it_did_not_do_loses_acknowledged_writes() -> None:
    report = first_failure(BugHooks(disk_lies=True), range(10))
    assert "has no durable copy" in report or "committed prefix shrank" in report


def test_a_primary_that_serves_after_its_lease_is_caught_serving_beside_its_successor() -> None:
    report = first_failure(BugHooks(serve_reads_without_lease=True), range(60))
    assert "serving" in report and "two primaries" in report


def test_stale_reads_are_caught_by_the_linearizability_checker() -> None:
    report = first_failure(BugHooks(stale_reads_from_checkpoint=True), range(10))
    assert "not linearizable" in report
    assert "admit no linearization" in report  # the explanation lists the operations involved
