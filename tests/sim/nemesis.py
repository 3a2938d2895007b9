"""The fault schedule of a run: partitions, crashes and restarts, drawn from the run's seed.

Jepsen calls the process that injects faults the nemesis. Ours acts at random times: it cuts the
network (one node away from the rest, a random split, a one-way link), heals it, crashes servers
(each crash loses the unsynced tail of that server's disk) and restarts them later. It keeps a
quorum of the cluster's replica servers up most of the time so that runs make progress, and stops
everything at `quiet_from_ms` so the cluster can recover before the run ends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from tests.sim.network import Network, NodeName
from tests.sim.scheduler import Scheduler


@dataclasses.dataclass
class NemesisOptions:
    mean_interval_ms: int = 400
    partition_weight: int = 3
    crash_weight: int = 3
    meta_crash_weight: int = 1
    heal_weight: int = 2
    # Cut a current primary off from everyone: forces a failover while the old primary lives on.
    isolate_primary_weight: int = 3
    min_down_ms: int = 50
    max_down_ms: int = 800
    # Servers down at once, at most.
    max_down: int = 2


@dataclasses.dataclass
class NemesisStats:
    partitions: int = 0
    heals: int = 0
    crashes: int = 0
    meta_crashes: int = 0
    restarts: int = 0


class Nemesis:
    def __init__(
        self,
        scheduler: Scheduler,
        network: Network,
        servers: list[NodeName],
        meta: NodeName,
        crash: Callable[[NodeName], None],
        restart: Callable[[NodeName], None],
        primaries: Callable[[], list[NodeName]],
        options: NemesisOptions | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.network = network
        self.servers = servers
        self.meta = meta
        self.crash = crash
        self.restart = restart
        self.primaries = primaries
        self.options = options or NemesisOptions()
        self.stats = NemesisStats()
        self.down: set[NodeName] = set()
        self.quiet = False

    def start(self, quiet_from_ms: int) -> None:
        self._schedule()
        self.scheduler.at(quiet_from_ms, "nemesis quiet", self._go_quiet)

    def _schedule(self) -> None:
        if self.quiet:
            return
        delay = int(self.scheduler.rng.expovariate(1 / self.options.mean_interval_ms)) + 1
        self.scheduler.after(delay, "nemesis", self._act)

    def _act(self) -> None:
        if self.quiet:
            return
        rng = self.scheduler.rng
        options = self.options
        action = rng.choices(
            ["partition", "crash", "meta_crash", "heal", "isolate_primary"],
            weights=[
                options.partition_weight,
                options.crash_weight,
                options.meta_crash_weight,
                options.heal_weight,
                options.isolate_primary_weight,
            ],
        )[0]
        if action == "partition":
            self._partition()
        elif action == "isolate_primary":
            primaries = self.primaries()
            if primaries:
                alone = primaries[rng.randrange(len(primaries))]
                self.stats.partitions += 1
                self.network.partition({alone}, {*self.servers, self.meta} - {alone})
        elif action == "crash":
            up = [server for server in self.servers if server not in self.down]
            if len(self.down) < options.max_down and up:
                self._crash_for_a_while(up[rng.randrange(len(up))])
        elif action == "meta_crash":
            if self.meta not in self.down:
                self.stats.meta_crashes += 1
                self._crash_for_a_while(self.meta)
        else:
            self.stats.heals += 1
            self.network.heal()
        self._schedule()

    def _partition(self) -> None:
        rng = self.scheduler.rng
        everyone = [*self.servers, self.meta]
        self.stats.partitions += 1
        shape = rng.randrange(3)
        if shape == 0:  # one node alone
            alone = everyone[rng.randrange(len(everyone))]
            self.network.partition({alone}, set(everyone) - {alone})
        elif shape == 1:  # a random split
            side = {node for node in everyone if rng.random() < 0.5}
            if side and side != set(everyone):
                self.network.partition(side, set(everyone) - side)
        else:  # one direction of one link
            src, dst = rng.sample(everyone, 2)
            self.network.cut_one_way(src, dst)

    def _crash_for_a_while(self, node: NodeName) -> None:
        if node != self.meta:
            self.stats.crashes += 1
        self.down.add(node)
        self.crash(node)
        down_ms = self.scheduler.rng.randint(self.options.min_down_ms, self.options.max_down_ms)
        self.scheduler.after(down_ms, f"restart {node}", lambda: self._restart(node))

    def _restart(self, node: NodeName) -> None:
        if node not in self.down:
            return
        self.down.discard(node)
        self.stats.restarts += 1
        self.restart(node)

    def _go_quiet(self) -> None:
        """Stop injecting faults; heal the network and bring every server back."""
        self.quiet = True
        self.network.heal()
        for node in sorted(self.down):
            self._restart(node)
