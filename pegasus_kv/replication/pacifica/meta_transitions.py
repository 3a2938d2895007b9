"""The one place that says how a partition configuration changes (h11 `_state.py` style).

`next_configuration(current, config_type, node)` is the only function that builds a new
PartitionConfiguration from an old one. The meta core uses it to make ConfigurationChanged
events, and the fold (meta_state.py) uses it again to check every event it applies, so a corrupt
log or a buggy caller cannot slip an unexplained configuration in.

Every change moves the ballot forward by exactly one (PacificA: a configuration change is a
compare-and-set on the ballot; the new configuration has a higher version). Members that leave the
group are appended to `last_drops` (newest last, bounded): that is where cure looks for data when a
group lost every member, and the node it prefers when adding a learner back.
"""

from __future__ import annotations

from pegasus_kv.replication.pacifica.config import ConfigType, NodeAddress, PartitionConfiguration
from pegasus_kv.replication.pacifica.meta_invariants import check_configuration, invariant

# How many dropped members a configuration remembers (the most recent ones).
LAST_DROPS_LIMIT = 5

# Config types that change the configuration. ADD_SECONDARY(_FOR_LB) only asks the primary to start
# a learner (the group changes later, by UPGRADE_TO_SECONDARY); REMOVE deletes a replica that is
# not in the group. Neither is a configuration change.
CONFIGURATION_CHANGES = frozenset(
    {
        ConfigType.ASSIGN_PRIMARY,
        ConfigType.UPGRADE_TO_PRIMARY,
        ConfigType.UPGRADE_TO_SECONDARY,
        ConfigType.DOWNGRADE_TO_SECONDARY,
        ConfigType.DOWNGRADE_TO_INACTIVE,
    }
)

# The changes a primary may propose for its own group (ConfigProposalRequest).
REPLICA_PROPOSABLE = frozenset(
    {
        ConfigType.UPGRADE_TO_SECONDARY,  # a learner it taught has caught up
        ConfigType.DOWNGRADE_TO_SECONDARY,  # it steps down
        ConfigType.DOWNGRADE_TO_INACTIVE,  # a member failed to ack: drop it
    }
)

# Changes allowed at function level FREEZED: they only shrink or demote.
DOWNGRADES = frozenset({ConfigType.DOWNGRADE_TO_SECONDARY, ConfigType.DOWNGRADE_TO_INACTIVE})


class TransitionError(ValueError):
    """`config_type` cannot be applied to `node` in this configuration (the reason says why)."""


def _without(nodes: tuple[NodeAddress, ...], node: NodeAddress) -> tuple[NodeAddress, ...]:
    return tuple(n for n in nodes if n != node)


def _dropped(last_drops: tuple[NodeAddress, ...], node: NodeAddress) -> tuple[NodeAddress, ...]:
    return (*_without(last_drops, node), node)[-LAST_DROPS_LIMIT:]


def next_configuration(
    current: PartitionConfiguration,
    config_type: ConfigType,
    node: NodeAddress,
    *,
    last_committed_decree: int | None = None,
) -> PartitionConfiguration:
    """The configuration after `config_type` on `node`, with ballot + 1.

    Raises TransitionError when the change does not fit `current` (the caller validates first and
    refuses with a reason; the fold treats it as corruption). `last_committed_decree` is
    informational (what meta last heard); None keeps the current value.
    """
    members = current.members
    primary = current.primary
    secondaries = current.secondaries
    last_drops = current.last_drops
    if config_type == ConfigType.ASSIGN_PRIMARY:
        # PacificA has no such step; Pegasus uses it for a group with no member at all: a brand-new
        # partition, or one whose every member was dropped (cure chooses the node that holds the
        # data, see cure.py).
        if members:
            raise TransitionError(f"ASSIGN_PRIMARY needs an empty group, {current.gpid} has {members}")
        primary = node
        last_drops = _without(last_drops, node)
    elif config_type == ConfigType.UPGRADE_TO_PRIMARY:
        # Promote a secondary: it holds every committed mutation (commit invariant), and reconciles
        # its prepared tail under the new ballot before serving. A primary it replaces is dead.
        if node not in secondaries:
            raise TransitionError(f"UPGRADE_TO_PRIMARY needs a secondary, {node} is not one")
        secondaries = _without(secondaries, node)
        if primary is not None:
            last_drops = _dropped(last_drops, primary)
        primary = node
        last_drops = _without(last_drops, node)
    elif config_type == ConfigType.UPGRADE_TO_SECONDARY:
        if node in members:
            raise TransitionError(f"UPGRADE_TO_SECONDARY of {node}, already a member")
        if primary is None:
            raise TransitionError("UPGRADE_TO_SECONDARY needs a primary (the learner's teacher)")
        if len(members) >= current.max_replica_count:
            raise TransitionError(f"group full ({len(members)} of {current.max_replica_count})")
        secondaries = (*secondaries, node)
        last_drops = _without(last_drops, node)
    elif config_type == ConfigType.DOWNGRADE_TO_SECONDARY:
        if node != primary:
            raise TransitionError(f"DOWNGRADE_TO_SECONDARY of {node}, not the primary")
        primary = None
        secondaries = (*secondaries, node)
    elif config_type == ConfigType.DOWNGRADE_TO_INACTIVE:
        if node not in members:
            raise TransitionError(f"DOWNGRADE_TO_INACTIVE of {node}, not a member")
        if node == primary:
            primary = None
        else:
            secondaries = _without(secondaries, node)
        last_drops = _dropped(last_drops, node)
    else:
        raise TransitionError(f"{config_type.name} is not a configuration change")
    new = PartitionConfiguration(
        gpid=current.gpid,
        ballot=current.ballot + 1,
        primary=primary,
        secondaries=secondaries,
        max_replica_count=current.max_replica_count,
        last_committed_decree=(
            current.last_committed_decree if last_committed_decree is None else last_committed_decree
        ),
        last_drops=last_drops,
    )
    check_configuration(new)
    invariant(new.ballot > current.ballot, f"{current.gpid}: ballot did not move forward")
    return new


def same_group(a: PartitionConfiguration, b: PartitionConfiguration) -> bool:
    """Equal apart from the informational last_committed_decree."""
    return (
        a.gpid == b.gpid
        and a.ballot == b.ballot
        and a.primary == b.primary
        and a.secondaries == b.secondaries
        and a.max_replica_count == b.max_replica_count
        and a.last_drops == b.last_drops
    )
