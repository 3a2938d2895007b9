"""Seeded random runs of the meta core: nodes die and return, persistence lags, meta crashes.

After every tick: the core's durable state is exactly the fold of the log; nothing undurable was
announced and no primary was replaced while it held a lease (meta_harness checks both on every
delivery). After the faults stop, every partition heals to a full group with a live primary. A
failing seed is in the test id: rerun it alone to replay.
"""

from __future__ import annotations

import random

import pytest

from pegasus_kv.core.ids import Gpid
from pegasus_kv.replication.pacifica.config import ConfigType, NodeAddress, PartitionStatus
from pegasus_kv.replication.pacifica.meta_messages import ReplicaInfo
from pegasus_kv.replication.pacifica.meta_requests import SetMetaLevelRequest
from pegasus_kv.replication.pacifica.meta_state import MetaState
from pegasus_kv.replication.pacifica.meta_types import MetaLevel, NodeLiveness

from .meta_harness import N1, N2, N3, N4, N5, MetaHarness

NODES = (N1, N2, N3, N4, N5)


class _Servers:
    """Well-behaved replica servers: each reports, for every partition it knows of, the role the
    durable configuration gives it; after a restart its replicas are INACTIVE under the ballot they
    held until a configuration with a higher ballot arrives (the replica core's rule)."""

    def __init__(self, meta: MetaHarness) -> None:
        self.meta = meta
        self.restarted_at: dict[tuple[NodeAddress, Gpid], int] = {}

    def restart(self, node: NodeAddress) -> None:
        for gpid, config in self.meta.durable_by_gpid.items():
            if node in config.members:
                self.restarted_at[(node, gpid)] = config.ballot

    def held(self, node: NodeAddress) -> list[ReplicaInfo]:
        held = []
        for gpid, config in sorted(self.meta.durable_by_gpid.items()):
            if node not in config.members and node not in config.last_drops:
                continue
            status = config.status_of(node)
            if self.restarted_at.get((node, gpid)) == config.ballot:
                status = PartitionStatus.INACTIVE
            held.append(ReplicaInfo(gpid=gpid, ballot=config.ballot, status=status, last_committed_decree=0))
        return held


def _servers_act(
    meta: MetaHarness, servers: _Servers, rng: random.Random, handled: int, *, answer_rate: float = 0.8
) -> int:
    """Live servers resync now and then and answer learner requests (some get lost)."""
    for node in sorted(meta.up):
        if rng.random() < 0.2:
            meta.sync(node, *servers.held(node))
    commands = meta.commands()
    for command in commands[handled:]:
        if command.config_type == ConfigType.ADD_SECONDARY and rng.random() < answer_rate:
            meta.propose(command.config, ConfigType.UPGRADE_TO_SECONDARY, command.node)
    return len(commands)


def _stale_proposal(meta: MetaHarness, rng: random.Random) -> None:
    """A primary proposes against some configuration it once had (often an old ballot)."""
    configs = sorted(meta.durable_configs, key=lambda c: (c.gpid, c.ballot))
    if not configs:
        return
    config = rng.choice(configs)
    if config.secondaries:
        token, _ = meta.propose(config, ConfigType.DOWNGRADE_TO_INACTIVE, rng.choice(config.secondaries))
        meta.persist()
        answers = meta.replies_to(token)
        assert len(answers) <= 1


def _check_fold(meta: MetaHarness) -> None:
    assert MetaState.from_events(meta.store).snapshot() == meta.core.state.snapshot()
    for record in meta.core.projected_state.records():
        durable = meta.core.state.config(record.config.gpid)
        assert durable is not None and record.config.ballot >= durable.ballot


@pytest.mark.parametrize("seed", range(12))
def test_random_failures_keep_meta_safe_and_every_partition_heals(seed: int) -> None:
    rng = random.Random(seed)
    meta = MetaHarness(NODES, seed=seed)
    app_id = meta.create_table("temp", partition_count=8, replica_count=3)
    if seed % 2:
        meta.request(SetMetaLevelRequest(level=MetaLevel.LIVELY))
    servers = _Servers(meta)
    meta.held_replicas = servers.held
    meta.auto_persist = False
    handled = 0
    for _ in range(250):
        roll = rng.random()
        if roll < 0.04 and len(meta.up) > 2:
            meta.stop(rng.choice(sorted(meta.up)))
        elif roll < 0.08:
            down = sorted(set(NODES) - meta.up)
            if down:
                meta.up.add(rng.choice(down))
        elif roll < 0.09:
            meta.crash_and_restart()
        elif roll < 0.10:
            servers.restart(rng.choice(sorted(meta.up)))
        elif roll < 0.12:
            _stale_proposal(meta, rng)
        meta.advance(1)
        handled = _servers_act(meta, servers, rng, handled)
        meta.persist(rng.randint(0, len(meta.waiting)))
        if not meta.waiting:
            _check_fold(meta)

    # The faults stop: everyone is up and persistence keeps up.
    meta.up = set(NODES)
    meta.auto_persist = True
    meta.persist()
    for _ in range(120):
        meta.advance(1)
        handled = _servers_act(meta, servers, rng, handled, answer_rate=1.0)
        configs = meta.configs(app_id)
        if all(c.primary is not None and len(c.members) == 3 for c in configs) and not meta.waiting:
            break
    _check_fold(meta)
    for config in meta.configs(app_id):
        assert config.primary is not None and meta.core.liveness(config.primary) == NodeLiveness.ALIVE, config
        assert len(config.members) == 3, config
    # And a server's report of its own replicas agrees with what meta holds.
    for node in NODES:
        answer = meta.sync(node, *servers.held(node))
        assert {c.gpid for c in answer.configs} == {
            Gpid(app_id, i) for i in range(8) if node in meta.config(Gpid(app_id, i)).members
        }
        assert not any(node in meta.config(g).members for g in answer.gc_gpids)
