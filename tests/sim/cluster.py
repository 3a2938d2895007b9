"""A whole simulated cluster: one meta server, five replica servers and a few clients, driven by one
seed through the pure cores, with a nemesis injecting faults and the invariant checkers run after
every step (DESIGN.md section 9).

    report = run_seed(1234)            # raises SimulationFailure (with the seed) on any violation

One run: meta creates table "temp" (a few partitions, three replicas each); cure assigns primaries
and adds learners until every partition has three replicas; clients read, write, delete and
check_and_set a handful of keys; the network loses, duplicates, delays and reorders messages; the
nemesis partitions the network and crashes servers (losing unsynced log tails) and meta, and
restarts them. Then the faults stop, the network heals, everyone restarts, and the clients carry on
while the cluster recovers. At the end every acknowledged write must still be durable somewhere and
the clients' histories must be linearizable.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

from pegasus_kv.core.hashing import partition_index
from pegasus_kv.replication.pacifica.config import PartitionStatus
from pegasus_kv.replication.pacifica.meta_options import MetaOptions
from pegasus_kv.replication.pacifica.options import NodeOptions, ReplicaOptions
from pegasus_kv.testing.linearizability import Verdict, check_history
from tests.sim.checkers import InvariantChecker, InvariantViolation, ReplicaView
from tests.sim.clients import ClientOptions, SimClient
from tests.sim.meta_server import SimMetaServer
from tests.sim.nemesis import Nemesis, NemesisOptions
from tests.sim.network import LinkFaults, Network, NodeName
from tests.sim.replica_server import BugHooks, ReplicaServerOptions, SimReplicaServer
from tests.sim.scheduler import Scheduler
from tests.sim.storage import StoreKey

TABLE = "temp"
META = "meta:34601"


def replay_command(seed: int) -> str:
    return f"SIM_SEED={seed} .venv/bin/python -m pytest tests/sim/test_sim.py -k test_replay -s"


@dataclasses.dataclass
class SimOptions:
    replica_servers: int = 5
    partitions: int = 2
    clients: int = 3
    hash_keys: int = 4
    # Simulated time with the nemesis active, then a quiet period for recovery.
    fault_ms: int = 1_300
    quiet_ms: int = 800
    # After the quiet period clients stop; in-flight operations get this long to finish.
    drain_ms: int = 500
    tick_ms: int = 10
    faults: bool = True
    fingerprint: bool = False
    # Liveness, not safety: once the faults stop, every partition must have a serving primary again
    # by the end of the run (quiet_ms + drain_ms later: several grace periods and cure rounds).
    check_recovery: bool = True
    bugs: BugHooks = dataclasses.field(default_factory=BugHooks)


@dataclasses.dataclass
class RunReport:
    seed: int
    events: int
    sim_ms: int
    wall_s: float
    operations: int
    unknown_outcomes: int
    acked_writes: int
    applied_mutations: int
    crashes: int
    meta_crashes: int
    partitions: int
    messages: int
    lost: int
    linearizability_steps: int
    # Partitions with a primary serving when the run ended (after the quiet period): recovery.
    serving_at_end: int
    # Checksum of the run's events (0 unless SimOptions.fingerprint): equal for equal seeds.
    fingerprint: int

    def summary(self) -> str:
        return (
            f"seed {self.seed}: {self.events} events over {self.sim_ms} ms in {self.wall_s:.2f} s; "
            f"{self.operations} client ops ({self.unknown_outcomes} unknown), "
            f"{self.acked_writes} acked writes, {self.applied_mutations} decrees committed; "
            f"{self.crashes} crashes, {self.meta_crashes} meta crashes, {self.partitions} partitions; "
            f"{self.messages} messages ({self.lost} lost)"
        )


class SimulationFailure(AssertionError):
    """A run broke an invariant. The message carries the seed and how to replay it."""


def node_options(tick_ms: int) -> NodeOptions:
    """The replica servers' periods (Pegasus's ratios, compressed from seconds to milliseconds)."""

    def ticks(ms: int) -> int:
        return max(1, ms // tick_ms)

    return NodeOptions(
        beacon_period_ticks=ticks(30),
        lease_ticks=ticks(300),
        config_sync_period_ticks=ticks(200),
        config_sync_timeout_ticks=ticks(100),
        replica=ReplicaOptions(
            prepare_timeout_ticks=ticks(80),
            learner_prepare_timeout_ticks=ticks(200),
            group_check_period_ticks=ticks(100),
            learn_timeout_ticks=ticks(200),
            proposal_timeout_ticks=ticks(150),
        ),
    )


def meta_options(tick_ms: int) -> MetaOptions:
    """Meta's periods: the grace (350 ms) exceeds the servers' lease (300 ms) by several ticks, since
    a server notices its lease ran out only on its next tick (node.py)."""

    def ticks(ms: int) -> int:
        return max(1, ms // tick_ms)

    return MetaOptions(
        beacon_interval_ticks=ticks(30),
        lease_ticks=ticks(300),
        grace_ticks=ticks(350),
        add_secondary_wait_ticks=ticks(400),
        add_secondary_timeout_ticks=ticks(1500),
        role_switch_timeout_ticks=ticks(1500),
        min_live_node_count=3,
        min_live_node_percent=50,
    )


def server_name(index: int) -> NodeName:
    return f"replica{index + 1}:34801"


def spread_keys(hash_keys: int, partitions: int) -> list[StoreKey]:
    """`hash_keys` keys that cover every partition (so every partition sees traffic)."""
    keys: list[StoreKey] = []
    by_partition: dict[int, int] = {}
    candidate = 0
    while len(keys) < hash_keys and candidate < 10_000:
        hash_key = f"user{candidate}".encode()
        candidate += 1
        index = partition_index(hash_key, b"", partitions)
        if by_partition.get(index, 0) * partitions >= hash_keys:
            continue
        by_partition[index] = by_partition.get(index, 0) + 1
        keys.append((hash_key, b"profile"))
    return keys


class Cluster:
    def __init__(self, seed: int, options: SimOptions | None = None) -> None:
        self.seed = seed
        self.options = options or SimOptions()
        opts = self.options
        self.scheduler = Scheduler(seed)
        self.scheduler.record_fingerprint = self.options.fingerprint
        rng = self.scheduler.rng
        if opts.faults:
            faults = LinkFaults(
                loss=rng.choice([0.0, 0.01, 0.05]),
                duplicate=rng.choice([0.0, 0.02, 0.05]),
                reorder=rng.choice([0.0, 0.05, 0.2]),
                min_delay_ms=1,
                max_delay_ms=rng.choice([2, 5, 10]),
            )
        else:
            faults = LinkFaults()
        self.network = Network(self.scheduler, faults)
        self.checker = InvariantChecker()
        self.meta = SimMetaServer(
            META, self.scheduler, self.network, meta_options(opts.tick_ms), opts.tick_ms
        )
        server_options = ReplicaServerOptions(
            tick_ms=opts.tick_ms, checkpoint_every_decrees=rng.choice([5, 20, 60])
        )
        self.servers: dict[NodeName, SimReplicaServer] = {}
        for index in range(opts.replica_servers):
            name = server_name(index)
            self.servers[name] = SimReplicaServer(
                name,
                self.scheduler,
                self.network,
                self.checker,
                META,
                node_options(opts.tick_ms),
                server_options,
                opts.bugs,
            )
        for server in self.servers.values():
            server.servers = self.servers
        keys = spread_keys(opts.hash_keys, opts.partitions)
        client_options = ClientOptions(request_timeout_ms=400, operation_deadline_ms=2_000)
        self.clients = [
            SimClient(
                f"client{i + 1}",
                self.scheduler,
                self.network,
                self.checker,
                META,
                TABLE,
                keys,
                client_options,
            )
            for i in range(opts.clients)
        ]
        self.nemesis = Nemesis(
            self.scheduler,
            self.network,
            list(self.servers),
            META,
            self.crash,
            self.restart,
            self.primaries,
            NemesisOptions(mean_interval_ms=rng.choice([250, 500, 900])),
        )

        self._observed_generations: list[int] = []
        self._started = time.perf_counter()

    # --- faults ----------------------------------------------------------------------------------

    def crash(self, node: NodeName) -> None:
        if node == META:
            self.meta.crash()
            return
        self.servers[node].crash()
        self.check_acked_durable()

    def primaries(self) -> list[NodeName]:
        """Servers that hold a primary right now (the nemesis likes to isolate them)."""
        return [
            name
            for name, server in self.servers.items()
            if any(view.status is PartitionStatus.PRIMARY for view in server.views())
        ]

    def restart(self, node: NodeName) -> None:
        if node == META:
            self.meta.start()
        else:
            self.servers[node].start()

    # --- checks ----------------------------------------------------------------------------------

    def check_step(self) -> None:
        generations = [server.generation for server in self.servers.values()]
        if generations == self._observed_generations:
            return  # no replica changed since the last check
        self._observed_generations = generations
        views: list[ReplicaView] = []
        for server in self.servers.values():
            views.extend(server.views())
        self.checker.observe(views, self.scheduler.now_ms)

    def check_acked_durable(self) -> None:
        self.checker.check_acked_durable(
            self.servers,
            lambda node, gpid, decree, content: self.servers[node].holds_durably(gpid, decree, content),
        )

    # --- a run -----------------------------------------------------------------------------------

    def run(self) -> RunReport:
        """The whole run: boot, faults, quiet period, drain, final checks."""
        self.boot()
        opts = self.options
        self.advance_until(opts.fault_ms + opts.quiet_ms)
        return self.finish()

    def boot(self) -> None:
        """Start meta and the servers, create the table, then start the clients and the nemesis."""
        self._started = time.perf_counter()
        self.meta.start()
        self.meta.create_table(TABLE, self.options.partitions, 3)
        for server in self.servers.values():
            server.start()
        # The operator waits for the table's creation to be durable before anything else happens.
        self.advance_until(50)
        if not self.meta.table_created(TABLE):
            raise InvariantViolation(f"table {TABLE!r} not created within 50 ms")
        for client in self.clients:
            client.start()
        if self.options.faults:
            self.nemesis.start(quiet_from_ms=self.options.fault_ms)

    def advance_until(self, time_ms: int) -> None:
        """Run every event up to `time_ms`, checking the invariants after each."""
        self.scheduler.run_until(time_ms, self.check_step)

    def advance_while(self, condition: Callable[[], bool], limit_ms: int) -> None:
        """Run events one by one (checking after each) while `condition` holds, until `limit_ms`."""
        while condition() and self.scheduler.now_ms < limit_ms:
            if not self.scheduler.step():
                break
            self.check_step()

    def finish(self) -> RunReport:
        """Stop the clients, let their operations drain, and run the end-of-run checks."""
        opts = self.options
        scheduler = self.scheduler
        for client in self.clients:
            client.stop()
        self.advance_until(scheduler.now_ms + opts.drain_ms)
        self.check_acked_durable()
        serving = {view.gpid for server in self.servers.values() for view in server.views() if view.serving}
        if opts.check_recovery and len(serving) < opts.partitions:
            core = self.meta.core
            configs = core.state.configs(1) if core is not None else []
            stuck = [config for config in configs if config.gpid not in serving]
            raise InvariantViolation(
                f"no serving primary {opts.quiet_ms + opts.drain_ms} ms after the faults stopped for: "
                + "; ".join(
                    f"{config.gpid} (meta: ballot {config.ballot}, primary {config.primary}, "
                    f"secondaries {list(config.secondaries)}, last drops {list(config.last_drops)})"
                    for config in stuck
                )
            )
        history = [op for client in self.clients for op in client.history]
        result = check_history(history)
        if result.verdict is Verdict.NOT_LINEARIZABLE:
            raise InvariantViolation("client histories are not linearizable\n" + result.explain())
        if result.verdict is Verdict.UNKNOWN:
            raise InvariantViolation("the linearizability search ran out of budget\n" + result.explain())
        stats = self.nemesis.stats
        return RunReport(
            seed=self.seed,
            events=scheduler.steps,
            sim_ms=scheduler.now_ms,
            wall_s=time.perf_counter() - self._started,
            operations=len(history),
            unknown_outcomes=sum(1 for op in history if op.pending),
            acked_writes=len(self.checker.acked),
            applied_mutations=len(self.checker.committed),
            crashes=stats.crashes,
            meta_crashes=stats.meta_crashes,
            partitions=stats.partitions,
            messages=self.network.stats.sent,
            lost=self.network.stats.lost + self.network.stats.cut,
            linearizability_steps=result.steps,
            fingerprint=scheduler.fingerprint,
            serving_at_end=len(serving),
        )

    def failure_report(self, error: BaseException) -> str:
        trace = "\n".join(f"    {time_ms} ms  {label}" for time_ms, label in self.scheduler.trace)
        where = f"{self.scheduler.now_ms} ms (step {self.scheduler.steps})"
        return (
            f"simulation seed {self.seed} failed at {where}:\n"
            f"  {type(error).__name__}: {error}\n"
            f"  replay: {replay_command(self.seed)}\n"
            f"  last events:\n{trace}"
        )


def run_seed(seed: int, options: SimOptions | None = None) -> RunReport:
    """Run one seed; any invariant violation or core assertion becomes a SimulationFailure that
    names the seed and the command replaying it."""
    cluster = Cluster(seed, options)
    try:
        return cluster.run()
    except Exception as error:  # every failure of a run is reported with its seed
        raise SimulationFailure(cluster.failure_report(error)) from error


def seed_from_env(default: int) -> int:
    return int(os.environ.get("SIM_SEED", default))
