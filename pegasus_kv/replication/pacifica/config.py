"""Partition configurations and configuration proposals, shared by the replica and meta cores.

A configuration names the primary and secondaries of one partition under a ballot. Only meta
changes it, and every change is a compare-and-set on the ballot (PacificA section 3): a proposal
names the configuration it was made against and meta refuses it if the ballot has moved on.
"""

from __future__ import annotations

import enum

import msgspec

from pegasus_kv.core.ids import Gpid

# A node is identified by the address it advertises, "host:port"; host may be a DNS name.
NodeAddress = str


class PartitionStatus(enum.IntEnum):
    """The role of one replica (Pegasus partition_status)."""

    INACTIVE = 0
    ERROR = 1
    PRIMARY = 2
    SECONDARY = 3
    POTENTIAL_SECONDARY = 4  # a learner


class ConfigType(enum.IntEnum):
    """The configuration changes meta can make (Pegasus config_type)."""

    ASSIGN_PRIMARY = 0  # no primary and no secondaries: make a node primary of an empty group
    UPGRADE_TO_PRIMARY = 1  # promote a secondary (primary dead); ballot + 1
    ADD_SECONDARY = 2  # ask the primary to add a learner on a node
    UPGRADE_TO_SECONDARY = 3  # a learner caught up: make it a secondary
    DOWNGRADE_TO_SECONDARY = 4  # primary steps down to secondary (balancing)
    DOWNGRADE_TO_INACTIVE = 5  # a member is dropped from the group
    REMOVE = 6  # a replica outside the configuration is removed from its node
    ADD_SECONDARY_FOR_LB = 7  # ADD_SECONDARY on behalf of the balancer


class PartitionConfiguration(msgspec.Struct, array_like=True, frozen=True):
    gpid: Gpid
    ballot: int
    primary: NodeAddress | None = None
    secondaries: tuple[NodeAddress, ...] = ()
    max_replica_count: int = 3
    last_committed_decree: int = 0
    # Members dropped most recently, newest last: where to look for data when all are gone.
    last_drops: tuple[NodeAddress, ...] = ()

    @property
    def members(self) -> tuple[NodeAddress, ...]:
        return ((self.primary,) if self.primary else ()) + self.secondaries

    def status_of(self, node: NodeAddress) -> PartitionStatus:
        if node == self.primary:
            return PartitionStatus.PRIMARY
        if node in self.secondaries:
            return PartitionStatus.SECONDARY
        return PartitionStatus.INACTIVE


class ConfigProposal(msgspec.Struct, array_like=True, frozen=True):
    """A request to change a partition's configuration, made against `config.ballot`."""

    config: PartitionConfiguration
    config_type: ConfigType
    node: NodeAddress
