"""A tiny runtime around MetaCore for the meta unit tests.

It executes MetaReady the way the real meta server must (meta_ready.py): `send` and `replies` are
delivered at once; `persist` goes to an in-memory log (`store`) only when the test persists it
(immediately with auto_persist, or later with persist()); then on_persisted; then the after-persist
messages are delivered. `crash()` throws away everything not yet persisted and builds a new core
from the log, as a restarted meta would. Everything delivered is recorded, so a test can assert
what replicas and clients were told, and when.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.pacifica.config import (
    ConfigProposal,
    ConfigType,
    NodeAddress,
    PartitionConfiguration,
    PartitionStatus,
)
from pegasus_kv.replication.pacifica.meta_core import MetaCore
from pegasus_kv.replication.pacifica.meta_events import ConfigurationChanged, MetaEvent
from pegasus_kv.replication.pacifica.meta_messages import (
    BeaconRequest,
    BeaconResponse,
    ConfigCommand,
    ConfigProposalRequest,
    ConfigProposalResponse,
    ConfigSyncRequest,
    ConfigSyncResponse,
    ReplicaInfo,
)
from pegasus_kv.replication.pacifica.meta_options import MetaOptions
from pegasus_kv.replication.pacifica.meta_ready import MetaReady
from pegasus_kv.replication.pacifica.meta_requests import CreateTableRequest, CreateTableResponse
from pegasus_kv.replication.pacifica.meta_state import MetaState

N1, N2, N3, N4, N5 = "n1:34801", "n2:34801", "n3:34801", "n4:34801", "n5:34801"

# Small periods so stories stay short: beacon every tick, lease 4, grace 6.
TEST_OPTIONS = MetaOptions(
    beacon_interval_ticks=1,
    lease_ticks=4,
    grace_ticks=6,
    add_secondary_wait_ticks=10,
    add_secondary_timeout_ticks=30,
    role_switch_timeout_ticks=30,
    min_live_node_count=1,
    min_live_node_percent=0,
    drop_hold_ticks=100,
)


@dataclasses.dataclass
class Delivered:
    tick: int
    to: NodeAddress | int  # a node (commands) or a reply_to token (replies)
    message: Message


class MetaHarness:
    def __init__(
        self,
        nodes: tuple[NodeAddress, ...] = (N1, N2, N3),
        *,
        options: MetaOptions = TEST_OPTIONS,
        seed: int = 7,
        auto_persist: bool = True,
    ) -> None:
        self.options = options
        self.seed = seed
        self.nodes = list(nodes)
        self.up: set[NodeAddress] = set(nodes)  # nodes that beacon when ticks advance
        self.auto_persist = auto_persist
        self.tick = 0
        self.store: list[MetaEvent] = []  # the durable meta log
        self.waiting: list[MetaReady] = []  # readies whose batch is not durable yet
        self.delivered: list[Delivered] = []
        # What the log holds, for the checks that nothing undurable is announced.
        self.durable_configs: set[PartitionConfiguration] = set()
        self.durable_by_gpid: dict[Gpid, PartitionConfiguration] = {}
        # The send tick of the latest beacon each node got a lease for.
        self.lease_from: dict[NodeAddress, int] = {}
        # The latest replica report each server sent for each partition.
        self.reported: dict[tuple[NodeAddress, Gpid], ReplicaInfo] = {}
        self._next_reply_to = 1
        # What a server reports when it (re)syncs on its own; tests that need particular reports
        # send them with sync().
        self.held_replicas: Callable[[NodeAddress], list[ReplicaInfo]] = lambda node: []
        self.core = MetaCore(MetaState(), options, random.Random(seed), now_tick=0)
        for node in nodes:
            self.beacon(node)

    # ------------------------------------------------------------------ executing MetaReady

    def run(self, ready: MetaReady) -> MetaReady:
        for outgoing in ready.send:
            self._deliver(outgoing.to, outgoing.message)
        for reply in ready.replies:
            self._deliver(reply.reply_to, reply.message)
        if ready.persist or ready.send_after_persist or ready.replies_after_persist:
            self.waiting.append(ready)
        if self.auto_persist:
            self.persist()
        return ready

    def persist(self, count: int | None = None) -> None:
        """Make the first `count` waiting batches (all by default) durable, in order; then deliver
        every after-persist message whose batch is durable."""
        made_durable = 0
        for ready in self.waiting:
            if ready.persist and ready.persist_seq > self.core.durable_seq:
                if count is not None and made_durable >= count:
                    break
                for event in ready.persist:
                    self._log(event)
                self.core.on_persisted(ready.persist_seq)
                made_durable += 1
        still_waiting = []
        for ready in self.waiting:
            if ready.persist_seq > self.core.durable_seq:
                still_waiting.append(ready)
                continue
            for outgoing in ready.send_after_persist:
                self._deliver(outgoing.to, outgoing.message)
            for reply in ready.replies_after_persist:
                self._deliver(reply.reply_to, reply.message)
        self.waiting = still_waiting

    def _log(self, event: MetaEvent) -> None:
        """Append to the durable log, checking PacificA's primary invariant on promotions: the
        replaced primary's lease has lapsed by the time the change is durable (and so by the time
        anyone acts on it)."""
        if isinstance(event, ConfigurationChanged):
            gpid = event.config.gpid
            old = self.durable_by_gpid.get(gpid)
            if event.config_type == ConfigType.UPGRADE_TO_PRIMARY and old is not None and old.primary:
                granted = self.lease_from.get(old.primary)
                told = self.reported.get((old.primary, gpid))
                gave_up = (
                    told is not None and told.ballot >= old.ballot and told.status != PartitionStatus.PRIMARY
                )
                assert gave_up or granted is None or self.tick >= granted + self.options.lease_ticks, (
                    f"{gpid}: {event.node} promoted at tick {self.tick} while {old.primary} holds a "
                    f"lease from tick {granted}"
                )
            self.durable_configs.add(event.config)
            self.durable_by_gpid[gpid] = event.config
        self.store.append(event)

    def _deliver(self, to: NodeAddress | int, message: Message) -> None:
        """Record a delivery, checking that any configuration it carries is durable."""
        if isinstance(message, ConfigCommand | ConfigProposalResponse):
            config = message.config
            assert config.ballot == 0 or config in self.durable_configs, f"announced before durable: {config}"
        self.delivered.append(Delivered(self.tick, to, message))

    def crash_and_restart(self, *, via_snapshot: bool = False) -> None:
        """The meta process dies: unpersisted batches are lost; a new core folds the log."""
        self.waiting = []
        state = MetaState.from_events(self.store)
        if via_snapshot:
            state = MetaState.restore(state.snapshot())
        self.core = MetaCore(state, self.options, random.Random(self.seed + 1), now_tick=self.tick)

    # ------------------------------------------------------------------ replica servers

    def beacon(self, node: NodeAddress, *, resync: bool = True) -> BeaconResponse:
        """A beacon; like the node core, a server refused a lease resyncs at once (unless told not to)."""
        response = self.core.on_beacon(BeaconRequest(node=node, sent_tick=self.tick), self.tick)
        if response.alive:
            self.lease_from[node] = response.sent_tick
        elif resync:
            self.sync(node, *self.held_replicas(node))
        return response

    def sync(self, node: NodeAddress, *replicas: ReplicaInfo) -> ConfigSyncResponse:
        for info in replicas:
            self.reported[(node, info.gpid)] = info
        response = self.core.on_config_sync(ConfigSyncRequest(node=node, replicas=list(replicas)), self.tick)
        for config in response.configs:
            assert config.ballot == 0 or config in self.durable_configs, f"synced before durable: {config}"
        return response

    def propose(
        self, config: PartitionConfiguration, config_type: ConfigType, node: NodeAddress
    ) -> tuple[int, MetaReady]:
        reply_to = self.reply_token()
        request = ConfigProposalRequest(
            proposal=ConfigProposal(config=config, config_type=config_type, node=node)
        )
        return reply_to, self.run(self.core.on_config_proposal(request, reply_to))

    def advance(self, ticks: int) -> None:
        """Let time pass: every node in `up` beacons each beacon interval, meta ticks."""
        for _ in range(ticks):
            self.tick += 1
            if self.tick % self.options.beacon_interval_ticks == 0:
                for node in sorted(self.up):
                    self.beacon(node)
            self.run(self.core.on_tick(self.tick))

    def stop(self, node: NodeAddress) -> None:
        self.up.discard(node)

    # ------------------------------------------------------------------ clients

    def reply_token(self) -> int:
        token = self._next_reply_to
        self._next_reply_to += 1
        return token

    def request(self, message: Message) -> Message:
        """Send a client/admin request through on_request; return its reply (persisting if needed)."""
        token = self.reply_token()
        self.run(self.core.on_request(message, token, self.tick))
        return self.reply(token)

    def reply(self, token: int) -> Message:
        found = [d.message for d in self.delivered if d.to == token]
        assert len(found) == 1, f"expected one reply to {token}, got {found}"
        return found[0]

    def replies_to(self, token: int) -> list[Message]:
        return [d.message for d in self.delivered if d.to == token]

    def create_table(self, name: str = "temp", partition_count: int = 4, replica_count: int = 3) -> int:
        reply = self.request(
            CreateTableRequest(name=name, partition_count=partition_count, replica_count=replica_count)
        )
        assert isinstance(reply, CreateTableResponse), reply
        return reply.app_id

    # ------------------------------------------------------------------ what replicas were told

    def commands(self, to: NodeAddress | None = None, since_tick: int = 0) -> list[ConfigCommand]:
        return [
            d.message
            for d in self.delivered
            if isinstance(d.message, ConfigCommand) and (to is None or d.to == to) and d.tick >= since_tick
        ]

    def config(self, gpid: Gpid) -> PartitionConfiguration:
        config = self.core.state.config(gpid)
        assert config is not None
        return config

    def configs(self, app_id: int) -> list[PartitionConfiguration]:
        return self.core.state.configs(app_id)

    def fill_groups(self, app_id: int, *, max_ticks: int = 60) -> None:
        """Play the primaries' part: every ADD_SECONDARY is answered by the primary proposing
        UPGRADE_TO_SECONDARY of the learner, until every group is full."""
        handled = len(self.commands())
        for _ in range(max_ticks):
            if all(len(c.members) == c.max_replica_count for c in self.configs(app_id)):
                return
            self.advance(1)
            fresh = self.commands()[handled:]
            handled = len(self.commands())
            for command in fresh:
                if command.config_type == ConfigType.ADD_SECONDARY and command.config.gpid.app_id == app_id:
                    current = self.config(command.config.gpid)
                    self.propose(current, ConfigType.UPGRADE_TO_SECONDARY, command.node)
        raise AssertionError(
            f"groups of app {app_id} not full after {max_ticks} ticks: {self.configs(app_id)}"
        )


def proposal_response(harness: MetaHarness, token: int) -> ConfigProposalResponse:
    reply = harness.reply(token)
    assert isinstance(reply, ConfigProposalResponse), reply
    return reply


def replica(
    gpid: Gpid,
    ballot: int,
    status: PartitionStatus = PartitionStatus.SECONDARY,
    last_committed_decree: int = 0,
) -> ReplicaInfo:
    return ReplicaInfo(gpid=gpid, ballot=ballot, status=status, last_committed_decree=last_committed_decree)
