"""The balancer (level LIVELY) evens out primaries by switching roles, never two primaries at once."""

from __future__ import annotations

import random
from collections import Counter

from pegasus_kv.core.ids import Gpid
from pegasus_kv.replication.pacifica.balancer import RoleSwitch, plan_role_switch
from pegasus_kv.replication.pacifica.config import ConfigType, PartitionConfiguration
from pegasus_kv.replication.pacifica.meta_requests import SetMetaLevelRequest
from pegasus_kv.replication.pacifica.meta_state import PartitionRecord
from pegasus_kv.replication.pacifica.meta_types import MetaLevel

from .meta_harness import N1, N2, N3, MetaHarness, replica


def _skewed_cluster() -> tuple[MetaHarness, int]:
    """Every primary on N1: the table was created while N1 was the only node up."""
    meta = MetaHarness((N1,))
    app_id = meta.create_table("temp", partition_count=4)
    meta.advance(1)
    for node in (N2, N3):
        meta.up.add(node)
        meta.beacon(node)
    meta.fill_groups(app_id)
    assert Counter(c.primary for c in meta.configs(app_id)) == {N1: 4}
    return meta, app_id


def _report_roles(meta: MetaHarness, node: str) -> None:
    """The server applied its commands and reports its replicas with their durable roles."""
    reports = [
        replica(gpid, config.ballot, config.status_of(node))
        for gpid in meta.core.state.gpids_of(node)
        if (config := meta.core.state.config(gpid)) is not None
    ]
    meta.sync(node, *reports)


def test_steady_does_not_balance() -> None:
    meta, app_id = _skewed_cluster()
    meta.advance(10)
    assert Counter(c.primary for c in meta.configs(app_id)) == {N1: 4}


def test_lively_switches_roles_until_primaries_are_even_and_waits_for_each_step_down() -> None:
    meta, app_id = _skewed_cluster()
    meta.request(SetMetaLevelRequest(level=MetaLevel.LIVELY))
    handled = len(meta.commands())
    switches = 0
    for _ in range(60):
        meta.advance(1)
        fresh = meta.commands()[handled:]
        handled = len(meta.commands())
        for command in fresh:
            if command.config_type != ConfigType.DOWNGRADE_TO_SECONDARY:
                continue
            switches += 1
            gpid = command.config.gpid
            # Until the old primary confirms, nobody is promoted, however long it takes.
            meta.advance(3)
            assert meta.config(gpid).primary is None
            _report_roles(meta, command.node)
            meta.advance(1)
            promoted = meta.config(gpid)
            assert promoted.primary is not None and promoted.primary != command.node
            assert promoted.ballot == command.config.ballot + 1
            handled = len(meta.commands())
    counts = Counter(c.primary for c in meta.configs(app_id))
    assert max(counts.values()) - min(counts[n] for n in (N1, N2, N3)) <= 1
    assert switches == 2  # 4/0/0 -> 3/1/0 -> 2/1/1
    # No data moved: every group still has the same three members.
    assert all(set(c.members) == {N1, N2, N3} for c in meta.configs(app_id))


def test_a_restarted_meta_still_waits_for_the_step_down_confirmation() -> None:
    meta, _ = _skewed_cluster()
    meta.request(SetMetaLevelRequest(level=MetaLevel.LIVELY))
    meta.advance(1)
    command = next(c for c in meta.commands() if c.config_type == ConfigType.DOWNGRADE_TO_SECONDARY)
    gpid = command.config.gpid
    meta.crash_and_restart()  # the preferred new primary is forgotten; the wait is not
    for node in (N1, N2, N3):
        meta.beacon(node)
    meta.advance(3)
    assert meta.config(gpid).primary is None
    _report_roles(meta, command.node)
    meta.advance(1)
    assert meta.config(gpid).primary is not None


def test_the_plan_needs_an_imbalance_over_one_and_healthy_partitions() -> None:
    def record(index: int, primary: str, *secondaries: str) -> PartitionRecord:
        return PartitionRecord(
            config=PartitionConfiguration(
                gpid=Gpid(1, index), ballot=3, primary=primary, secondaries=secondaries
            )
        )

    rng = random.Random(1)
    even = [record(0, N1, N2, N3), record(1, N2, N1, N3), record(2, N3, N1, N2)]
    assert plan_role_switch(even, lambda r: True, rng) is None  # 1/1/1
    nearly = [record(0, N1, N2, N3), record(1, N2, N1, N3), record(2, N3, N1, N2), record(3, N1, N2, N3)]
    assert plan_role_switch(nearly, lambda r: True, rng) is None  # 2/1/1: an imbalance of one is fine
    uneven = [record(0, N1, N2, N3), record(1, N2, N1, N3), record(2, N1, N2, N3)]
    switch = plan_role_switch(uneven, lambda r: True, rng)  # 2/1/0: N1 hands one to N3
    assert switch in (RoleSwitch(Gpid(1, 0), N1, N3), RoleSwitch(Gpid(1, 2), N1, N3))
    skewed = [record(0, N1, N2, N3), record(1, N1, N2, N3), record(2, N1, N2, N3)]
    switch = plan_role_switch(skewed, lambda r: True, rng)
    assert switch is not None and switch.from_node == N1 and switch.to_node in (N2, N3)
    assert plan_role_switch(skewed, lambda r: r.config.gpid.partition_index != 1, rng) is None
