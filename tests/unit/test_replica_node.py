"""The replica-server core: beacons and lease, config sync, routing, creating and dropping replicas."""

from __future__ import annotations

from pegasus_kv.core.errors import ErrorCode
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import SetRequest
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.replication.pacifica.config import (
    ConfigType,
    NodeAddress,
    PartitionConfiguration,
    PartitionStatus,
)
from pegasus_kv.replication.pacifica.messages import GroupCheck, Prepare, PrepareAck, PrepareOutcome
from pegasus_kv.replication.pacifica.meta_messages import (
    BeaconRequest,
    BeaconResponse,
    ConfigCommand,
    ConfigProposalRequest,
    ConfigSyncRequest,
    ConfigSyncResponse,
)
from pegasus_kv.replication.pacifica.node import ReplicaNode
from pegasus_kv.replication.pacifica.options import NodeOptions
from pegasus_kv.replication.pacifica.replica import Replica

GPID = Gpid(1, 0)


def status(replica: Replica | None) -> PartitionStatus | None:
    """Read the status afresh (a property: events change it behind mypy's narrowing)."""
    return replica.status if replica is not None else None


OPTIONS = NodeOptions(beacon_period_ticks=3, lease_ticks=20, config_sync_period_ticks=100)


def config(ballot: int, primary: NodeAddress | None, *secondaries: NodeAddress) -> PartitionConfiguration:
    return PartitionConfiguration(gpid=GPID, ballot=ballot, primary=primary, secondaries=secondaries)


def sent_to_meta(node: ReplicaNode, tick: int) -> list[type]:
    return [type(m) for m in node.on_tick(tick).to_meta]


def test_beacons_go_every_period_and_the_lease_runs_from_the_beacon_sent() -> None:
    node = ReplicaNode("r1", OPTIONS)
    assert sent_to_meta(node, 0) == [BeaconRequest, ConfigSyncRequest]
    assert sent_to_meta(node, 2) == []
    ready = node.on_tick(3)
    [beacon] = ready.to_meta
    assert isinstance(beacon, BeaconRequest) and beacon.sent_tick == 3
    node.on_tick(10)
    node.on_message("meta", BeaconResponse(sent_tick=3, alive=True))  # answered late
    assert node.lease_valid_until == 23
    node.on_message("meta", BeaconResponse(sent_tick=0, alive=True))  # older: does not shorten it
    assert node.lease_valid_until == 23
    ready = node.on_message("meta", BeaconResponse(sent_tick=6, alive=False))
    assert not node.lease_valid()
    assert [type(m) for m in ready.to_meta] == [ConfigSyncRequest]


def test_the_lease_reaches_the_replicas_and_gates_their_service() -> None:
    node = ReplicaNode("r1", OPTIONS)
    node.load_replica(GPID, last_committed_decree=0)
    node.on_tick(0)
    node.on_message("meta", BeaconResponse(sent_tick=0, alive=True))
    node.on_message("meta", ConfigSyncResponse(configs=[config(1, "r1", "r2")], gc_gpids=[]))
    ready = node.on_client_write(GPID, 1, SetRequest(hash_key=b"k", sort_key=b"", value=b"v"), 1)
    assert [m.decree for m in ready.replicas[GPID].persist] == [2]  # d1: the new primary's empty write
    node.on_tick(20)  # the lease ran out at tick 20
    assert node.check_read(GPID) == ErrorCode.NOT_PRIMARY
    ready = node.on_client_write(GPID, 2, SetRequest(hash_key=b"k", sort_key=b"", value=b"v"), 1)
    assert [r.code for r in ready.replicas[GPID].replies] == [ErrorCode.NOT_PRIMARY]


def test_a_read_asked_with_the_real_tick_also_needs_the_lease_to_hold_at_that_tick() -> None:
    node = ReplicaNode("r1", OPTIONS)
    node.load_replica(GPID, last_committed_decree=0)
    node.on_tick(0)
    node.on_message("meta", BeaconResponse(sent_tick=0, alive=True))  # the lease runs until tick 20
    ready = node.on_message("meta", ConfigSyncResponse(configs=[config(1, "r1")], gc_gpids=[]))
    [empty_write] = ready.replicas[GPID].persist  # the new primary's empty write, to reconcile
    assert node.check_read(GPID) == ErrorCode.BUSY
    node.on_log_durable(GPID, empty_write.ballot, empty_write.decree)  # alone: durable is committed
    node.on_tick(1)
    assert node.check_read(GPID) == ErrorCode.OK
    assert node.check_read(GPID, 1) == ErrorCode.OK
    assert node.check_read(GPID, 19) == ErrorCode.OK
    # The host's clock runs ahead of the last tick event: the lease has lapsed in real time.
    assert node.check_read(GPID, 20) == ErrorCode.NOT_PRIMARY
    assert node.check_read(GPID) == ErrorCode.OK  # at the node's own tick it still holds
    assert node.check_read(Gpid(9, 9), 1) == ErrorCode.NOT_PRIMARY  # not hosted here


def test_proposals_of_replicas_go_to_meta_as_proposal_requests() -> None:
    node = ReplicaNode("r1", NodeOptions(beacon_period_ticks=3, lease_ticks=100))
    node.load_replica(GPID, last_committed_decree=0)
    node.on_tick(0)
    node.on_message("meta", BeaconResponse(sent_tick=0, alive=True))
    node.on_message("meta", ConfigSyncResponse(configs=[config(1, "r1", "r2", "r3")], gc_gpids=[]))
    node.on_client_write(GPID, 1, SetRequest(hash_key=b"k", sort_key=b"", value=b"v"), 1)
    ready = node.on_message("r3", PrepareAck(GPID, 1, 1, PrepareOutcome.NOT_MEMBER, 0, 0))
    [request] = [m for m in ready.to_meta if isinstance(m, ConfigProposalRequest)]
    assert (request.proposal.config_type, request.proposal.node) == (ConfigType.DOWNGRADE_TO_INACTIVE, "r3")
    assert all(not r.propose for r in ready.replicas.values())


def test_only_the_answer_to_the_sync_in_flight_is_used() -> None:
    node = ReplicaNode("r2", OPTIONS)
    node.load_replica(GPID, last_committed_decree=0)
    stray = ConfigSyncResponse(configs=[], gc_gpids=[GPID])
    assert node.on_message("meta", stray).dropped == []  # no request in flight
    node.on_tick(0)
    assert node.on_message("meta", stray).dropped == [GPID]  # inactive since the request: deleted
    assert node.replica(GPID) is None


def test_sync_never_deletes_a_member_and_demotes_one_meta_no_longer_names() -> None:
    node = ReplicaNode("r2", OPTIONS)
    node.load_replica(GPID, last_committed_decree=0)
    node.on_tick(0)
    node.on_message("meta", ConfigSyncResponse(configs=[config(1, "r1", "r2")], gc_gpids=[]))
    replica = node.replica(GPID)
    assert status(replica) == PartitionStatus.SECONDARY
    node.on_tick(100)  # next periodic sync
    ready = node.on_message("meta", ConfigSyncResponse(configs=[], gc_gpids=[GPID]))
    assert ready.dropped == []
    assert status(replica) == PartitionStatus.INACTIVE
    node.on_tick(200)
    assert node.on_message("meta", ConfigSyncResponse(configs=[], gc_gpids=[GPID])).dropped == [GPID]


def test_a_replica_message_for_a_partition_not_hosted_here_is_answered_not_member() -> None:
    node = ReplicaNode("r3", OPTIONS)
    mutation = Mutation(ballot=1, decree=4, timestamp_us=1, writes=[])
    ready = node.on_message("r1", Prepare(GPID, config(1, "r1", "r3"), mutation, 3))
    [outbound] = ready.send
    assert outbound.to == "r1"
    assert isinstance(outbound.message, PrepareAck) and outbound.message.outcome == PrepareOutcome.NOT_MEMBER


def test_replicas_are_created_for_a_new_partition_or_a_learner_invitation_only() -> None:
    node = ReplicaNode("r1", OPTIONS)
    node.on_tick(0)
    recovering = PartitionConfiguration(gpid=GPID, ballot=5, primary="r1", last_committed_decree=9)
    assert node.on_message("meta", ConfigCommand(recovering, ConfigType.ASSIGN_PRIMARY, "r1")).created == []
    ready = node.on_message("meta", ConfigCommand(config(1, "r1"), ConfigType.ASSIGN_PRIMARY, "r1"))
    assert ready.created == [GPID]
    replica = node.replica(GPID)
    assert replica is not None and replica.status == PartitionStatus.PRIMARY

    other = ReplicaNode("r4", OPTIONS)
    ready = other.on_message("r1", GroupCheck(GPID, config(2, "r1", "r2"), 0, learner_signature=7))
    assert ready.created == [GPID]
    learner = other.replica(GPID)
    assert learner is not None and learner.status == PartitionStatus.POTENTIAL_SECONDARY


def test_remove_drops_a_replica_that_is_not_a_member() -> None:
    node = ReplicaNode("r3", OPTIONS)
    node.load_replica(GPID, last_committed_decree=0)
    stale = ConfigCommand(config(0, "r1", "r3"), ConfigType.REMOVE, "r3")
    assert node.on_message("meta", stale).dropped == []  # names it a member
    ready = node.on_message("meta", ConfigCommand(config(2, "r1", "r2"), ConfigType.REMOVE, "r3"))
    assert ready.dropped == [GPID]


class _FixedRandom:
    def randrange(self, stop: int, /) -> int:
        return stop - 1


def test_an_injected_random_source_spreads_the_first_sync() -> None:
    node = ReplicaNode("r1", OPTIONS, rng=_FixedRandom())
    assert sent_to_meta(node, 0) == [BeaconRequest]
    assert sent_to_meta(node, 99) == [BeaconRequest, ConfigSyncRequest]


def test_a_lost_assign_primary_of_a_new_partition_is_repaired_by_later_news() -> None:
    # The ADD_SECONDARY overtook the ASSIGN_PRIMARY, which was lost: the node still takes the new
    # (empty, memberless) partition on; so it does when a config sync names it primary of one.
    node = ReplicaNode("r1", OPTIONS)
    node.on_tick(0)
    ready = node.on_message("meta", ConfigCommand(config(1, "r1"), ConfigType.ADD_SECONDARY, "r2"))
    assert ready.created == [GPID]
    assert status(node.replica(GPID)) == PartitionStatus.PRIMARY
    assert [s.to for s in ready.replicas[GPID].send if isinstance(s.message, GroupCheck)] == ["r2"]

    other = ReplicaNode("r2", OPTIONS)
    other.on_tick(0)
    sync = ConfigSyncResponse(configs=[config(1, "r2")], gc_gpids=[])
    assert other.on_message("meta", sync).created == [GPID]
    # Never for a group that may hold data: it has secondaries.
    third = ReplicaNode("r3", OPTIONS)
    third.on_tick(0)
    sync = ConfigSyncResponse(configs=[config(2, "r3", "r1")], gc_gpids=[])
    assert third.on_message("meta", sync).created == []
