"""Invariant checks of the meta side that survive `python -O`.

`assert` statements vanish under -O; the configuration manager's invariants must not (a broken one
means two primaries or a lost write), so they raise MetaInvariantError explicitly. One condition per
call, with a message naming what broke (TigerBeetle style, DESIGN.md section 10).
"""

from __future__ import annotations

from pegasus_kv.core.invariants import InvariantViolation, check_invariant
from pegasus_kv.replication.pacifica.config import PartitionConfiguration

# A configuration keeps at most this many replicas (Pegasus: replica count 1..5).
MAX_REPLICA_COUNT = 5


class MetaInvariantError(InvariantViolation):
    """A meta invariant does not hold: a bug or a corrupt meta log. Never caught by the core."""


def invariant(condition: bool, message: str) -> None:
    """Raise MetaInvariantError(message) unless condition holds (kept under python -O)."""
    check_invariant(condition, message, MetaInvariantError)


def check_configuration(config: PartitionConfiguration) -> None:
    """The structural invariants every partition configuration meta holds must satisfy."""
    gpid = config.gpid
    invariant(config.ballot >= 0, f"{gpid}: negative ballot {config.ballot}")
    invariant(
        1 <= config.max_replica_count <= MAX_REPLICA_COUNT,
        f"{gpid}: max_replica_count {config.max_replica_count} outside 1..{MAX_REPLICA_COUNT}",
    )
    invariant(config.primary != "", f"{gpid}: empty primary address (use None)")
    invariant(
        config.primary not in config.secondaries,
        f"{gpid}: primary {config.primary} also listed as a secondary",
    )
    invariant(
        len(set(config.secondaries)) == len(config.secondaries),
        f"{gpid}: a node listed twice among secondaries {config.secondaries}",
    )
    invariant(
        len(config.members) <= config.max_replica_count,
        f"{gpid}: {len(config.members)} members exceed max_replica_count {config.max_replica_count}",
    )
    invariant(
        not set(config.last_drops) & set(config.members),
        f"{gpid}: members {config.members} also in last_drops {config.last_drops}",
    )
    invariant(
        len(set(config.last_drops)) == len(config.last_drops),
        f"{gpid}: a node listed twice in last_drops {config.last_drops}",
    )
    invariant(config.ballot > 0 or not config.members, f"{gpid}: members under ballot 0")
