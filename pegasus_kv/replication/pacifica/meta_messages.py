"""Messages between replica servers and the meta server (wire type ids 200-249).

Flows (Pegasus's, in brief):
- Failure detection: every replica server sends BeaconRequest every beacon period. Meta records the
  time it received it; the server holds a lease that runs from the time it SENT the beacon that meta
  acknowledged, for lease_ticks. Meta declares a server dead only grace_ticks (> lease_ticks) after
  the last beacon it received, so the server has stopped serving by then (PacificA's primary
  invariant, DESIGN.md section 4).
- Configuration sync: a server periodically reports the replicas it holds (ConfigSyncRequest); meta
  answers with the current configuration of every partition the server is a member of, and the
  replicas it should garbage-collect. This repairs any ConfigCommand that was lost.
- Meta-initiated changes (assign primary, upgrade a secondary to primary, add a learner, remove a
  stale replica): meta persists the new configuration first, then sends ConfigCommand to the node
  that must act.
- Replica-initiated changes (the primary drops a member that did not ack, upgrades a learner that
  caught up, steps down): the primary sends ConfigProposalRequest made against its current ballot;
  meta applies it only if the ballot still matches (compare-and-set), persists, then answers.
"""

from __future__ import annotations

import msgspec

from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.registry import Message, message
from pegasus_kv.replication.pacifica.config import (
    ConfigProposal,
    ConfigType,
    NodeAddress,
    PartitionConfiguration,
    PartitionStatus,
)


class ReplicaInfo(msgspec.Struct, array_like=True, frozen=True):
    """What a server reports about one replica it holds."""

    gpid: Gpid
    ballot: int
    status: PartitionStatus
    last_committed_decree: int
    last_prepared_decree: int = 0
    last_durable_decree: int = 0


@message
class BeaconRequest(Message, tag=200):
    node: NodeAddress
    # The sender's own tick when it sent this beacon; echoed back so the server knows from when
    # the lease granted by the reply runs.
    sent_tick: int


@message
class BeaconResponse(Message, tag=201):
    sent_tick: int
    # False when meta has already declared this server dead: it must stop serving and resync.
    alive: bool


@message
class ConfigSyncRequest(Message, tag=202):
    node: NodeAddress
    replicas: list[ReplicaInfo]


@message
class ConfigSyncResponse(Message, tag=203):
    # Current configuration of every partition in which `node` is primary or secondary.
    configs: list[PartitionConfiguration]
    # Replicas the server holds that meta does not want there (dropped table, removed member).
    gc_gpids: list[Gpid]


@message
class ConfigProposalRequest(Message, tag=204):
    """A primary asks meta to change its partition's configuration (compare-and-set on ballot)."""

    proposal: ConfigProposal


@message
class ConfigProposalResponse(Message, tag=205):
    accepted: bool
    # The configuration meta holds now (the new one when accepted).
    config: PartitionConfiguration
    reason: str = ""


@message
class ConfigCommand(Message, tag=206):
    """Meta tells `node` to act on a configuration meta has already persisted.

    ASSIGN_PRIMARY / UPGRADE_TO_PRIMARY: node becomes primary of `config`.
    ADD_SECONDARY / ADD_SECONDARY_FOR_LB: sent to the primary; start a learner on `node`.
    REMOVE: node drops its replica of config.gpid (it is not a member).
    DOWNGRADE_TO_SECONDARY / DOWNGRADE_TO_INACTIVE: the member's new role is in `config`.
    """

    config: PartitionConfiguration
    config_type: ConfigType
    node: NodeAddress
