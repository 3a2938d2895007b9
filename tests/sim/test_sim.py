"""End to end: the whole cluster (meta, five replica servers, three clients) through the real pure
cores, under message loss, duplication, reordering, delay, partitions, crashes and restarts.

What one seed covers (cluster.py): table "temp" with 2 partitions x 3 replicas is created and cured
onto 5 replica servers; 3 clients read, write, delete and check_and_set 4 keys for 2.1 simulated
seconds, the first 1.3 s of them under faults (each seed draws its own loss, duplication,
reordering and delay levels and its fault rate; the nemesis partitions the network, isolates
primaries, crashes replica servers, losing unsynced log tails, crashes meta, and restarts them);
then everything heals and restarts, and in-flight operations get 0.5 s to drain. That is about
3,500 events, 1,700 messages and 100 client operations per seed. The checkers run after every
step; at the end every acknowledged write must still have a durable copy, every partition must
have a serving primary again (liveness: the cluster repaired itself once the faults stopped), and
the client histories must be linearizable.

    .venv/bin/python -m pytest tests/sim                      # 2,000 seeds (SIM_SEEDS to change)
    SIM_SEED=1234 .venv/bin/python -m pytest tests/sim/test_sim.py -k test_replay -s   # replay one seed
    SIM_SOAK_SECONDS=3600 .venv/bin/python -m pytest tests/sim -m soak   # as many seeds as fit
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import pytest

from tests.sim.cluster import SimOptions, SimulationFailure, replay_command, run_seed
from tests.sim.replica_server import BugHooks

SEEDS = int(os.environ.get("SIM_SEEDS", "2000"))


@pytest.mark.parametrize("seed", range(SEEDS))
def test_every_invariant_holds_for_seed(seed: int) -> None:
    run_seed(seed)  # a failure raises SimulationFailure naming the seed and the replay command


def test_replay() -> None:
    """Replay one seed (SIM_SEED, default 0) twice: it passes, and both runs are the same run."""
    seed = int(os.environ.get("SIM_SEED", "0"))
    print(f"replaying seed {seed}: {replay_command(seed)}")
    first = run_seed(seed, SimOptions(fingerprint=True))
    second = run_seed(seed, SimOptions(fingerprint=True))
    print(first.summary())
    assert first.fingerprint == second.fingerprint
    assert (first.events, first.operations, first.acked_writes) == (
        second.events,
        second.operations,
        second.acked_writes,
    )


def test_a_seed_replays_identically_in_another_process() -> None:
    """Nothing in a run may depend on the process: not hash randomization, not the wall clock."""
    seed = 7
    here = run_seed(seed, SimOptions(fingerprint=True))
    code = (
        "from tests.sim.cluster import SimOptions, run_seed;"
        f"print(run_seed({seed}, SimOptions(fingerprint=True)).fingerprint)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, timeout=120
    )
    assert int(there.stdout.strip()) == here.fingerprint


def test_a_seed_makes_progress_despite_faults() -> None:
    """Not a safety property, but a run that does nothing checks nothing: seeds do real work."""
    reports = [run_seed(seed) for seed in range(10)]
    assert sum(report.acked_writes for report in reports) > 100
    assert sum(report.crashes for report in reports) > 5
    assert sum(report.partitions for report in reports) > 5
    assert any(report.unknown_outcomes for report in reports)


@pytest.mark.soak
def test_soak() -> None:
    """Run fresh seeds until SIM_SOAK_SECONDS (default 600) are spent; the first failure stops it."""
    budget_s = float(os.environ.get("SIM_SOAK_SECONDS", "600"))
    first = int(os.environ.get("SIM_SOAK_FIRST_SEED", str(random.SystemRandom().randrange(10**6, 10**9))))
    deadline = time.monotonic() + budget_s
    seed = first
    while time.monotonic() < deadline:
        run_seed(seed)
        seed += 1
    print(f"soak: seeds {first}..{seed - 1} passed ({seed - first} runs)")
    assert seed > first, "the soak budget allowed no run at all"


def test_a_failure_names_its_seed_and_how_to_replay_it() -> None:
    with pytest.raises(SimulationFailure) as failure:
        for seed in range(20):
            run_seed(seed, SimOptions(bugs=BugHooks(stale_reads_from_checkpoint=True)))
    message = str(failure.value)
    assert f"SIM_SEED={seed} " in message and "-k test_replay" in message
