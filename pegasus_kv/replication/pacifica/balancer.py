"""The balancer (function level LIVELY): even out primaries per node by switching roles.

Pegasus's greedy balancer first evens out primaries inside each table by switching roles (no data
moves), then copies primaries, then copies secondaries. This one does the first step only: copying
replicas to even out replica counts (ADD_SECONDARY_FOR_LB plus removing the replica from the heavier
node) is left for later.

A role switch on partition P from primary H to secondary L takes two configuration changes:
DOWNGRADE_TO_SECONDARY of H (ballot + 1; H is told), then, once H has confirmed the step-down in
a config sync (cure.py rule 2c), UPGRADE_TO_PRIMARY of L (ballot + 1), which cure makes because the
balancer records L as P's preferred primary. P takes no writes in between: that is the price of
never letting H and L serve at once.

`plan_role_switch` only considers a table whose every partition is healthy (the caller's
predicate: live primary, all members alive, full group, nothing in flight), and proposes one switch
when some node has at least two primaries more than a secondary of one of its partitions.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence

from pegasus_kv.core.ids import Gpid
from pegasus_kv.replication.pacifica.config import NodeAddress
from pegasus_kv.replication.pacifica.meta_state import PartitionRecord
from pegasus_kv.replication.pacifica.meta_types import RandomSource


@dataclasses.dataclass(frozen=True, slots=True)
class RoleSwitch:
    gpid: Gpid
    from_node: NodeAddress  # the primary that steps down
    to_node: NodeAddress  # the secondary that becomes primary


def plan_role_switch(
    table: Sequence[PartitionRecord],
    is_healthy: Callable[[PartitionRecord], bool],
    rng: RandomSource,
) -> RoleSwitch | None:
    """One role switch that narrows the spread of primaries per node in `table`, or None."""
    if not table or not all(is_healthy(record) for record in table):
        return None
    primaries: Counter[NodeAddress] = Counter()
    for record in table:
        if record.config.primary is None:
            return None  # not healthy after all; the predicate should have said so
        for node in record.config.members:
            primaries[node] += 0  # every node holding a replica counts, even with no primary
        primaries[record.config.primary] += 1
    # Heaviest nodes first; for each, the lightest secondary among its partitions.
    for heavy in sorted(primaries, key=lambda node: (-primaries[node], node)):
        options: list[tuple[int, Gpid, NodeAddress]] = []
        for record in table:
            config = record.config
            if config.primary != heavy:
                continue
            for secondary in config.secondaries:
                if primaries[heavy] - primaries[secondary] > 1:
                    options.append((primaries[secondary], config.gpid, secondary))
        if options:
            lightest = min(load for load, _, _ in options)
            _, gpid, light = rng.choice(sorted(option for option in options if option[0] == lightest))
            return RoleSwitch(gpid, heavy, light)
    return None
