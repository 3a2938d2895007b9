"""Interpreter of the golden PacificA transcripts in tests/scripts/testdata (etcd/raft datadriven style).

A transcript is a list of blocks:

    # comments tell the story
    command arg arg key=value
    ----
    expected output (no blank lines)
    <blank line>

The harness plays the runtime around real ReplicaNode cores (pegasus_kv/replication/pacifica/node.py):
a FIFO network that scripts can deliver, drop or partition; one log per replica whose appends become
durable at once (or only on `sync` after `disk NODE manual`); a store per replica that records what
was applied; checkpoints. Meta is a SCRIPTED STAND-IN (test-only, see ScriptedMeta): it answers
beacons and config syncs, applies proposals by compare-and-set on the ballot (at once, or when the
script says), and sends the ConfigCommands the script asks for. It is not the meta core.

Commands:
    cluster r1 r2 r3 [primary=r1] [spare=r4,r5] [OPTION=N ...]  start nodes; meta config b1 (primary +
                                                 the other listed nodes); spares run but host nothing
    write NODE KEY=VALUE ...                     one client write (SetRequest) per pair, tokens w1, w2...
    read NODE                                    check_read at the node's current tick
    deliver [FROM->TO] [WORD ...]                deliver the messages in flight now (FIFO) whose rendering
                                                 has every WORD (e.g. `deliver r1->r2 prepare d2`)
    drop [FROM->TO] [WORD ...]                   lose the messages in flight that match
    duplicate [FROM->TO] [WORD ...]              put a second copy of the matching messages on the wire
    stabilize                                    deliver until no message is in flight
    tick [N]                                     advance every live node N ticks (default 1)
    crash NODE / restart NODE                    crash loses the unsynced log tail; restart replays
    cut NODE [PEER ...] / heal [NODE ...]        cut links (PEER may be `meta`; none = every link)
    disk NODE manual|auto / sync NODE            manual disks make appends durable only on sync
    fail-requests NODE on|off                    the node's runtime requests (log read, checkpoint) fail
    gc-log NODE UPTO                             the node's log is collected below decree UPTO
    checkpoint NODE                              the node makes a durable checkpoint (learners reuse the
                                                 newest one)
    meta auto|hold|accept|accept-drop-reply|refuse|restart|down|up
    meta config primary=NODE [secondaries=A,B]   persist a new configuration (ballot + 1) and tell the
                                                 new primary (UPGRADE_TO_PRIMARY / ASSIGN_PRIMARY)
    meta remove NODE                             persist the group without NODE, DOWNGRADE_TO_INACTIVE to
                                                 the primary
    meta add-learner NODE                        ADD_SECONDARY to the primary
    meta dead NODE                               meta answers the node's beacons alive=false
    status / stores / log NODE / check           inspect; `check` verifies cross-replica invariants
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec

from pegasus_kv.core.errors import ErrorCode
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import SetRequest
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.pacifica.config import (
    ConfigProposal,
    ConfigType,
    NodeAddress,
    PartitionConfiguration,
    PartitionStatus,
)
from pegasus_kv.replication.pacifica.messages import (
    GroupCheck,
    GroupCheckAck,
    LearnCompletionNotice,
    LearnKind,
    LearnRequest,
    LearnResponse,
    Prepare,
    PrepareAck,
    PrepareOutcome,
)
from pegasus_kv.replication.pacifica.meta_messages import (
    BeaconRequest,
    BeaconResponse,
    ConfigCommand,
    ConfigProposalRequest,
    ConfigProposalResponse,
    ConfigSyncRequest,
    ConfigSyncResponse,
)
from pegasus_kv.replication.pacifica.node import NodeReady, ReplicaNode
from pegasus_kv.replication.pacifica.options import NodeOptions, ReplicaOptions
from pegasus_kv.replication.pacifica.primary_state import SIGNATURE_BALLOT_SHIFT
from pegasus_kv.replication.pacifica.ready import (
    ClientToken,
    InstallCheckpoint,
    MakeCheckpoint,
    Outbound,
    ReadLog,
    Ready,
)

GPID = Gpid(1, 0)
META = "meta"

# Small periods so stories stay short (ticks).
SCRIPT_REPLICA_OPTIONS = {
    "capacity": ("prepare_list_capacity", 20),
    "inflight": ("max_inflight_mutations", 3),
    "queue": ("max_queued_writes", 4),
    "batch": ("max_batch_writes", 3),
    "min": ("min_replica_count", 2),
    "prepare_timeout": ("prepare_timeout_ticks", 5),
    "learner_timeout": ("learner_prepare_timeout_ticks", 8),
    "group_check": ("group_check_period_ticks", 20),
    "learn_timeout": ("learn_timeout_ticks", 10),
    "learn_attempts": ("max_learn_attempts", 5),
    "proposal_timeout": ("proposal_timeout_ticks", 10),
    "learn_batch": ("max_learn_batch_mutations", 100),
}
SCRIPT_NODE_OPTIONS = {
    "beacon": ("beacon_period_ticks", 3),
    "lease": ("lease_ticks", 20),
    "sync_period": ("config_sync_period_ticks", 1000),
    "sync_timeout": ("config_sync_timeout_ticks", 10),
}


class ScriptError(Exception):
    """A transcript uses a command wrongly."""


# --- rendering ------------------------------------------------------------------------------------


def sig(signature: int) -> str:
    return f"{signature >> SIGNATURE_BALLOT_SHIFT}.{signature & ((1 << SIGNATURE_BALLOT_SHIFT) - 1)}"


def render_config(config: PartitionConfiguration) -> str:
    secondaries = ",".join(config.secondaries) or "-"
    return f"b{config.ballot} primary={config.primary or '-'} secondaries={secondaries}"


def render_range(mutations: list[Mutation]) -> str:
    if not mutations:
        return "none"
    return (
        f"{mutations[0].decree}..{mutations[-1].decree}" if len(mutations) > 1 else str(mutations[0].decree)
    )


def render_message(message: Message) -> str:
    if isinstance(message, Prepare):
        m = message.mutation
        return f"prepare d{m.decree} b{m.ballot} c{message.last_committed_decree}"
    if isinstance(message, PrepareAck):
        outcome = message.outcome.name.lower()
        if message.outcome == PrepareOutcome.GAP:
            outcome = f"gap(confirmed {message.confirmed_decree})"
        return f"ack d{message.decree} b{message.ballot} {outcome}"
    if isinstance(message, GroupCheck):
        learner = f" learner={sig(message.learner_signature)}" if message.learner_signature else ""
        return f"group-check b{message.config.ballot} c{message.last_committed_decree}{learner}"
    if isinstance(message, GroupCheckAck):
        return f"group-check-ack b{message.ballot} {message.outcome.name.lower()}"
    if isinstance(message, LearnRequest):
        restart = " restart" if message.restart else ""
        return (
            f"learn-request {sig(message.signature)}#{message.attempt}{restart} "
            f"committed={message.last_committed_decree} prepared={message.last_prepared_decree}"
        )
    if isinstance(message, LearnResponse):
        head = f"learn-response {sig(message.signature)}#{message.attempt}"
        if message.outcome != PrepareOutcome.OK:
            return f"{head} {message.outcome.name.lower()}"
        if message.kind == LearnKind.CHECKPOINT:
            body = f"checkpoint@{message.checkpoint_decree}"
        else:
            kind = "prepare-list" if message.kind == LearnKind.PREPARE_LIST else "log"
            body = f"{kind} {render_range(message.mutations)}"
        return f"{head} {body} c{message.primary_committed_decree} start={message.prepare_start_decree}"
    if isinstance(message, LearnCompletionNotice):
        prepared = message.last_prepared_decree
        return f"learn-complete {sig(message.signature)}#{message.attempt} prepared={prepared}"
    if isinstance(message, ConfigProposalRequest):
        return render_proposal(message.proposal)
    return type(message).__name__


def render_proposal(proposal: ConfigProposal) -> str:
    return f"propose {proposal.config_type.name} {proposal.node} against b{proposal.config.ballot}"


def render_sends(prefix: str, sends: list[Outbound]) -> list[str]:
    """Consecutive sends of the same message text are grouped: `send X -> r2, r3`."""
    lines: list[str] = []
    for text, group in itertools.groupby(sends, key=lambda s: render_message(s.message)):
        targets = ", ".join(s.to for s in group)
        lines.append(f"{prefix} {text} -> {targets}")
    return lines


# --- the modelled runtime -------------------------------------------------------------------------


@dataclasses.dataclass
class Disk:
    """One replica's log and store, as the runtime of one node keeps them."""

    log: list[Mutation] = dataclasses.field(default_factory=list)
    durable_len: int = 0
    log_start_decree: int = 1
    # The highest ballot the log ever held durably: kept when the log is collected.
    max_ballot: int = 0
    # Messages held until the log is durable through this length.
    after_persist: list[tuple[int, Outbound]] = dataclasses.field(default_factory=list)
    # decree -> the mutation applied at that decree (the store's history), and the visible data.
    applied: dict[int, Mutation] = dataclasses.field(default_factory=dict)
    applied_decree: int = 0
    data: dict[bytes, bytes] = dataclasses.field(default_factory=dict)

    def apply(self, mutation: Mutation) -> None:
        if mutation.decree != self.applied_decree + 1:
            raise AssertionError(f"apply of decree {mutation.decree} after {self.applied_decree}")
        self.applied[mutation.decree] = mutation
        self.applied_decree = mutation.decree
        for write in mutation.writes:
            if isinstance(write, SetRequest):
                self.data[write.hash_key] = write.value


@dataclasses.dataclass
class Checkpoint:
    decree: int
    applied: dict[int, Mutation]
    data: dict[bytes, bytes]


@dataclasses.dataclass
class SimNode:
    name: NodeAddress
    core: ReplicaNode
    up: bool = True
    manual_disk: bool = False
    fail_requests: bool = False
    disks: dict[Gpid, Disk] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Envelope:
    sender: NodeAddress
    to: NodeAddress
    message: Message


class ScriptedMeta:
    """A test-only stand-in for meta, driven by the script (the real meta core is meta_core.py).

    Durable: the configuration of each partition. Soft (lost on `meta restart`): proposals received
    but not decided yet. Proposals are decided by compare-and-set on the ballot.
    """

    def __init__(self) -> None:
        self.configs: dict[Gpid, PartitionConfiguration] = {}
        self.up = True
        self.auto = True
        self.inbox: list[tuple[NodeAddress, ConfigProposal]] = []
        self.dead: set[NodeAddress] = set()

    def decide(self, proposal: ConfigProposal) -> ConfigProposalResponse:
        current = self.configs[proposal.config.gpid]
        if proposal.config.ballot != current.ballot:
            return ConfigProposalResponse(accepted=False, config=current, reason="ballot moved")
        node = proposal.node
        if proposal.config_type == ConfigType.DOWNGRADE_TO_INACTIVE and node in current.secondaries:
            new = dataclasses_replace(
                current,
                ballot=current.ballot + 1,
                secondaries=tuple(n for n in current.secondaries if n != node),
                last_drops=(*tuple(n for n in current.last_drops if n != node), node),
            )
        elif proposal.config_type == ConfigType.UPGRADE_TO_SECONDARY and node not in current.members:
            new = dataclasses_replace(
                current,
                ballot=current.ballot + 1,
                secondaries=(*current.secondaries, node),
                last_drops=tuple(n for n in current.last_drops if n != node),
            )
        else:
            return ConfigProposalResponse(accepted=False, config=current, reason="not applicable")
        self.configs[new.gpid] = new
        return ConfigProposalResponse(accepted=True, config=new)


def dataclasses_replace(config: PartitionConfiguration, **changes: object) -> PartitionConfiguration:
    return msgspec.structs.replace(config, **changes)


class Harness:
    def __init__(self) -> None:
        self.nodes: dict[NodeAddress, SimNode] = {}
        self.network: list[Envelope] = []
        self.meta = ScriptedMeta()
        self.now = 0
        self.cut_links: set[frozenset[str]] = set()
        self.tokens = itertools.count(1)
        self.checkpoints: dict[str, Checkpoint] = {}
        self.node_options = NodeOptions()
        self.out: list[str] = []
        self.write_results: dict[ClientToken, str] = {}

    # --- entry ----------------------------------------------------------------------------------

    def run(self, line: str) -> str:
        self.out = []
        words = line.split()
        if not words:
            raise ScriptError("empty command")
        handler: Callable[[list[str]], None] | None = getattr(self, "cmd_" + words[0].replace("-", "_"), None)
        if handler is None:
            raise ScriptError(f"unknown command {words[0]!r}")
        handler(words[1:])
        return "\n".join(self.out) if self.out else "ok"

    def say(self, text: str) -> None:
        self.out.append(text)

    # --- setup ----------------------------------------------------------------------------------

    def cmd_cluster(self, args: list[str]) -> None:
        names = [a for a in args if "=" not in a]
        opts = dict(a.split("=", 1) for a in args if "=" in a)
        primary = opts.pop("primary", names[0])
        spares = [s for s in opts.pop("spare", "").split(",") if s]
        replica_kwargs: dict[str, int] = {
            field: default for field, default in SCRIPT_REPLICA_OPTIONS.values()
        }
        node_kwargs: dict[str, int] = {field: default for field, default in SCRIPT_NODE_OPTIONS.values()}
        for key, value in opts.items():
            if key in SCRIPT_REPLICA_OPTIONS:
                replica_kwargs[SCRIPT_REPLICA_OPTIONS[key][0]] = int(value)
            elif key in SCRIPT_NODE_OPTIONS:
                node_kwargs[SCRIPT_NODE_OPTIONS[key][0]] = int(value)
            else:
                raise ScriptError(f"unknown option {key}")
        self.node_options = NodeOptions(replica=ReplicaOptions(**replica_kwargs), **node_kwargs)
        for name in [*names, *spares]:
            self.nodes[name] = SimNode(name, ReplicaNode(name, self.node_options))
        config = PartitionConfiguration(
            gpid=GPID, ballot=1, primary=primary, secondaries=tuple(n for n in names if n != primary)
        )
        self.meta.configs[GPID] = config
        for name in names:
            self.nodes[name].core.load_replica(GPID, last_committed_decree=0)
            self.nodes[name].disks[GPID] = Disk()
        # Tick 0, silently: every node beacons (gets its lease) and syncs (adopts configuration b1);
        # the primary's first mutation (d1, empty: it writes ballot 1 to its log) commits, and a
        # group check carries the commit point to the secondaries.
        saved, self.out = self.out, []
        for node in self.nodes.values():
            self.process(node, node.core.on_tick(0), self.out)
        self.cmd_stabilize([])
        primary_core = self.nodes[primary].core.replica(GPID)
        assert primary_core is not None
        for name in config.secondaries:
            check = GroupCheck(GPID, config, primary_core.last_committed_decree)
            self.process(self.nodes[name], self.nodes[name].core.on_message(primary, check), self.out)
        self.network.clear()
        self.out = saved
        self.say(f"meta: {render_config(config)}; d1 (empty) committed")

    # --- client ---------------------------------------------------------------------------------

    def cmd_write(self, args: list[str]) -> None:
        node = self.node(args[0])
        for pair in args[1:]:
            key, _, value = pair.partition("=")
            token = next(self.tokens)
            write = SetRequest(hash_key=key.encode(), sort_key=b"", value=value.encode())
            self.say(f"{node.name} <- client w{token}: set {key}={value}")
            if not node.up:
                self.say("  (node is down)")
                continue
            ready = node.core.on_client_write(GPID, token, write, timestamp_us=1_000_000 + self.now)
            self.process(node, ready, self.out, indent="  ")

    def cmd_read(self, args: list[str]) -> None:
        node = self.node(args[0])
        code = node.core.check_read(GPID) if node.up else ErrorCode.NOT_PRIMARY
        self.say(f"{node.name}: read {code.name}")

    # --- network --------------------------------------------------------------------------------

    def _matcher(self, args: list[str]) -> Callable[[Envelope], bool]:
        route = next((a for a in args if "->" in a), None)
        kinds = [a for a in args if "->" not in a]
        sender, _, to = route.partition("->") if route else ("", "", "")

        def matches(env: Envelope) -> bool:
            if sender and sender != "*" and env.sender != sender:
                return False
            if to and to != "*" and env.to != to:
                return False
            words = render_message(env.message).split()
            return all(kind in words for kind in kinds)

        return matches

    def cmd_deliver(self, args: list[str]) -> None:
        matches = self._matcher(args)
        batch = [env for env in self.network if matches(env)]
        if not batch:
            self.say("nothing in flight")
            return
        for env in batch:
            self.network.remove(env)
        for env in batch:
            self.deliver(env)

    def cmd_drop(self, args: list[str]) -> None:
        matches = self._matcher(args)
        batch = [env for env in self.network if matches(env)]
        for env in batch:
            self.network.remove(env)
            self.say(f"dropped {env.sender} -> {env.to}: {render_message(env.message)}")
        if not batch:
            self.say("nothing in flight")

    def cmd_duplicate(self, args: list[str]) -> None:
        matches = self._matcher(args)
        batch = [env for env in self.network if matches(env)]
        for env in batch:
            self.network.append(Envelope(env.sender, env.to, env.message))
            self.say(f"duplicated {env.sender} -> {env.to}: {render_message(env.message)}")
        if not batch:
            self.say("nothing in flight")

    def cmd_stabilize(self, args: list[str]) -> None:
        rounds = 0
        while self.network:
            rounds += 1
            if rounds > 100:
                raise ScriptError("stabilize: the network does not quiesce")
            batch = list(self.network)
            self.network.clear()
            for env in batch:
                self.deliver(env)

    def deliver(self, env: Envelope) -> None:
        head = f"{env.sender} -> {env.to}: {render_message(env.message)}"
        node = self.nodes[env.to]
        if not node.up:
            self.say(f"{head} (lost: {env.to} is down)")
            return
        if self.is_cut(env.sender, env.to):
            self.say(f"{head} (lost: link cut)")
            return
        self.say(head)
        self.process(node, node.core.on_message(env.sender, env.message), self.out, indent="  ")

    def is_cut(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.cut_links

    def cmd_cut(self, args: list[str]) -> None:
        name = args[0]
        peers = args[1:] or [n for n in [*self.nodes, META] if n != name]
        for peer in peers:
            self.cut_links.add(frozenset((name, peer)))
        self.say(f"cut {name} from {', '.join(peers)}")

    def cmd_heal(self, args: list[str]) -> None:
        if args:
            self.cut_links = {link for link in self.cut_links if not link & set(args)}
        else:
            self.cut_links.clear()

    # --- time -----------------------------------------------------------------------------------

    def cmd_tick(self, args: list[str]) -> None:
        count = int(args[0]) if args else 1
        for _ in range(count):
            self.now += 1
            for node in self.nodes.values():
                if node.up:
                    lines: list[str] = []
                    self.process(node, node.core.on_tick(self.now), lines, indent="  ")
                    if lines:
                        self.say(f"@{self.now} {node.name} tick")
                        self.out.extend(lines)
        if not self.out:
            self.say(f"@{self.now}: nothing happened")

    # --- nodes and disks ------------------------------------------------------------------------

    def node(self, name: str) -> SimNode:
        if name not in self.nodes:
            raise ScriptError(f"no node {name}")
        return self.nodes[name]

    def cmd_crash(self, args: list[str]) -> None:
        node = self.node(args[0])
        node.up = False
        for gpid, disk in node.disks.items():
            lost = disk.log[disk.durable_len :]
            del disk.log[disk.durable_len :]
            disk.after_persist.clear()
            text = f"lost unsynced log {render_range(lost)}" if lost else "log fully durable"
            self.say(f"{node.name} crashed ({gpid}: {text}, store at {disk.applied_decree})")

    def cmd_restart(self, args: list[str]) -> None:
        node = self.node(args[0])
        node.core = ReplicaNode(node.name, self.node_options)
        node.up = True
        for gpid, disk in node.disks.items():
            replica = node.core.load_replica(
                gpid,
                last_committed_decree=disk.applied_decree,
                log=list(disk.log),
                log_start_decree=disk.log_start_decree,
                ballot=disk.max_ballot,
            )
            committed, prepared = replica.last_committed_decree, replica.max_prepared_decree
            state = f"inactive b{replica.ballot} committed={committed} prepared={prepared}"
            self.say(f"{node.name} restarted: {gpid} {state}")
        self.process(node, node.core.on_tick(self.now), self.out, indent="  ")

    def cmd_disk(self, args: list[str]) -> None:
        node = self.node(args[0])
        node.manual_disk = args[1] == "manual"

    def cmd_sync(self, args: list[str]) -> None:
        node = self.node(args[0])
        for gpid, disk in list(node.disks.items()):
            self.make_durable(node, gpid, disk, self.out, "")

    def cmd_fail_requests(self, args: list[str]) -> None:
        self.node(args[0]).fail_requests = args[1] == "on"

    def cmd_gc_log(self, args: list[str]) -> None:
        node = self.node(args[0])
        upto = int(args[1])
        disk = node.disks[GPID]
        # Only durable records go (a runtime collects whole synced segments).
        disk.max_ballot = max([disk.max_ballot, *(m.ballot for m in disk.log[: disk.durable_len])])
        durable = [m for m in disk.log[: disk.durable_len] if m.decree >= upto]
        removed = disk.durable_len - len(durable)
        disk.log = durable + disk.log[disk.durable_len :]
        disk.durable_len = len(durable)
        disk.after_persist = [(needed - removed, envelope) for needed, envelope in disk.after_persist]
        disk.log_start_decree = upto
        self.process(node, node.core.on_log_truncated(GPID, upto), self.out, indent="  ")
        self.say(f"{node.name}: log starts at {upto}")

    # --- meta stand-in --------------------------------------------------------------------------

    def cmd_meta(self, args: list[str]) -> None:
        meta = self.meta
        what = args[0]
        if what == "auto":
            meta.auto = True
        elif what == "hold":
            meta.auto = False
        elif what in ("accept", "accept-drop-reply", "refuse"):
            inbox, meta.inbox = meta.inbox, []
            if not inbox:
                self.say("meta: no proposal waiting")
            for sender, proposal in inbox:
                if what == "refuse":
                    response = ConfigProposalResponse(
                        accepted=False, config=meta.configs[proposal.config.gpid], reason="meta is frozen"
                    )
                else:
                    response = meta.decide(proposal)
                self.report_decision(sender, proposal, response)
                if what != "accept-drop-reply":
                    self.meta_send(sender, response)
                else:
                    self.say("meta: reply lost")
        elif what == "restart":
            lost = len(meta.inbox)
            meta.inbox.clear()
            self.say(
                f"meta restarted: {lost} undecided proposal(s) lost, {render_config(meta.configs[GPID])}"
            )
        elif what == "down":
            meta.up = False
        elif what == "up":
            meta.up = True
        elif what == "dead":
            meta.dead.add(args[1])
        elif what == "config":
            opts = dict(a.split("=", 1) for a in args[1:])
            current = meta.configs[GPID]
            primary = opts.get("primary") or None
            secondaries = tuple(s for s in opts.get("secondaries", "").split(",") if s and s != "-")
            new = dataclasses_replace(
                current, ballot=current.ballot + 1, primary=primary, secondaries=secondaries
            )
            meta.configs[GPID] = new
            self.say(f"meta: {render_config(new)}")
            if primary is not None:
                kind = (
                    ConfigType.UPGRADE_TO_PRIMARY if primary in current.members else ConfigType.ASSIGN_PRIMARY
                )
                self.meta_send(primary, ConfigCommand(config=new, config_type=kind, node=primary))
        elif what == "remove":
            current = meta.configs[GPID]
            node_name = args[1]
            if current.primary is None or node_name not in current.secondaries:
                raise ScriptError(f"{node_name} is not a secondary")
            new = dataclasses_replace(
                current,
                ballot=current.ballot + 1,
                secondaries=tuple(n for n in current.secondaries if n != node_name),
                last_drops=(*current.last_drops, node_name),
            )
            meta.configs[GPID] = new
            self.say(f"meta: {render_config(new)}")
            command = ConfigCommand(config=new, config_type=ConfigType.DOWNGRADE_TO_INACTIVE, node=node_name)
            self.meta_send(current.primary, command)
        elif what == "add-learner":
            config = meta.configs[GPID]
            if config.primary is None:
                raise ScriptError("no primary to add a learner")
            command = ConfigCommand(config=config, config_type=ConfigType.ADD_SECONDARY, node=args[1])
            self.meta_send(config.primary, command)
        else:
            raise ScriptError(f"unknown meta command {what}")

    def report_decision(
        self, sender: str, proposal: ConfigProposal, response: ConfigProposalResponse
    ) -> None:
        verdict = "accepted" if response.accepted else f"refused ({response.reason})"
        self.say(
            f"meta: {render_proposal(proposal)} from {sender}: {verdict} -> {render_config(response.config)}"
        )

    def meta_send(self, to: str, message: Message) -> None:
        node = self.nodes[to]
        text = render_meta_message(message)
        if not self.meta.up or not node.up or self.is_cut(META, to):
            self.say(f"meta -> {to}: {text} (lost)")
            return
        self.say(f"meta -> {to}: {text}")
        self.process(node, node.core.on_message(META, message), self.out, indent="  ")

    def to_meta(self, node: SimNode, message: Message, out: list[str], indent: str) -> None:
        meta = self.meta
        reachable = meta.up and not self.is_cut(META, node.name)
        if isinstance(message, BeaconRequest):
            if reachable:
                response = BeaconResponse(sent_tick=message.sent_tick, alive=node.name not in meta.dead)
                self.process(node, node.core.on_message(META, response), out, indent)
            return
        if isinstance(message, ConfigSyncRequest):
            if reachable:
                configs = [c for c in meta.configs.values() if node.name in c.members]
                lines: list[str] = []
                self.process(
                    node, node.core.on_message(META, ConfigSyncResponse(configs, [])), lines, indent + "  "
                )
                if lines:
                    out.append(f"{indent}{node.name} <-> meta: config sync")
                    out.extend(lines)
            return
        if isinstance(message, ConfigProposalRequest):
            proposal = message.proposal
            if not reachable:
                out.append(f"{indent}{node.name} -> meta: {render_proposal(proposal)} (lost)")
                return
            out.append(f"{indent}{node.name} -> meta: {render_proposal(proposal)}")
            if meta.auto:
                decision = meta.decide(proposal)
                verdict = "accepted" if decision.accepted else f"refused ({decision.reason})"
                out.append(f"{indent}meta -> {node.name}: {verdict}, {render_config(decision.config)}")
                self.process(node, node.core.on_message(META, decision), out, indent + "  ")
            else:
                meta.inbox.append((node.name, proposal))
            return
        raise ScriptError(f"unexpected message to meta {message}")

    # --- executing a NodeReady (the runtime's job) ----------------------------------------------

    def process(self, node: SimNode, ready: NodeReady, out: list[str], indent: str = "") -> None:
        for gpid in ready.created:
            node.disks[gpid] = Disk()
            out.append(f"{indent}{node.name}: created replica {gpid}")
        for gpid, replica_ready in ready.replicas.items():
            self.process_replica(node, gpid, replica_ready, out, indent)
        for message in ready.to_meta:
            self.to_meta(node, message, out, indent)
        for line in render_sends(f"{indent}{node.name}: send", ready.send):
            out.append(line)
        for envelope in ready.send:
            self.network.append(Envelope(node.name, envelope.to, envelope.message))
        for gpid in ready.dropped:
            node.disks.pop(gpid, None)
            out.append(f"{indent}{node.name}: dropped replica {gpid}")

    def process_replica(self, node: SimNode, gpid: Gpid, ready: Ready, out: list[str], indent: str) -> None:
        disk = node.disks[gpid]
        name = node.name
        if ready.persist:
            out.append(
                f"{indent}{name}: persist {', '.join(f'd{m.decree}b{m.ballot}' for m in ready.persist)}"
            )
            disk.log.extend(ready.persist)
        for line in render_sends(f"{indent}{name}: send", ready.send):
            out.append(line)
        for envelope in ready.send:
            self.network.append(Envelope(name, envelope.to, envelope.message))
        for line in render_sends(f"{indent}{name}: after persist send", ready.send_after_persist):
            out.append(line)
        for envelope in ready.send_after_persist:
            disk.after_persist.append((len(disk.log), envelope))
        for item in ready.apply:
            disk.apply(item.mutation)
            tokens = f" -> reply {', '.join(f'w{t} OK' for t in item.tokens)}" if item.tokens else ""
            writes = " ".join(
                f"{w.hash_key.decode()}={w.value.decode()}"
                for w in item.mutation.writes
                if isinstance(w, SetRequest)
            )
            out.append(f"{indent}{name}: apply d{item.mutation.decree} [{writes or 'empty'}]{tokens}")
        for reply in ready.replies:
            out.append(f"{indent}{name}: reply w{reply.token} {reply.code.name}")
        for request in ready.requests:
            self.runtime_request(node, gpid, request, out, indent)
        self.release_after_persist(node, gpid, disk)
        if ready.persist and not node.manual_disk:
            self.make_durable(node, gpid, disk, out, indent, quiet=True)

    def make_durable(
        self, node: SimNode, gpid: Gpid, disk: Disk, out: list[str], indent: str, *, quiet: bool = False
    ) -> None:
        if disk.durable_len == len(disk.log):
            if not quiet:
                out.append(f"{indent}{node.name}: log already durable")
            return
        disk.durable_len = len(disk.log)
        last = disk.log[-1]
        if not quiet:
            out.append(f"{indent}{node.name}: log durable through d{last.decree}b{last.ballot}")
        self.release_after_persist(node, gpid, disk)
        self.process(node, node.core.on_log_durable(gpid, last.ballot, last.decree), out, indent)

    def release_after_persist(self, node: SimNode, gpid: Gpid, disk: Disk) -> None:
        still: list[tuple[int, Outbound]] = []
        for needed, envelope in disk.after_persist:
            if needed <= disk.durable_len:
                self.network.append(Envelope(node.name, envelope.to, envelope.message))
            else:
                still.append((needed, envelope))
        disk.after_persist = still

    def make_checkpoint(self, node: SimNode, disk: Disk) -> str:
        ref = f"{node.name}-ckpt-{disk.applied_decree}"
        self.checkpoints[ref] = Checkpoint(disk.applied_decree, dict(disk.applied), dict(disk.data))
        return ref

    def cmd_checkpoint(self, args: list[str]) -> None:
        node = self.node(args[0])
        ref = self.make_checkpoint(node, node.disks[GPID])
        self.say(f"{node.name}: checkpoint {ref}")

    def runtime_request(
        self, node: SimNode, gpid: Gpid, request: object, out: list[str], indent: str
    ) -> None:
        disk = node.disks[gpid]
        core = node.core
        if isinstance(request, ReadLog):
            out.append(f"{indent}{node.name}: read log {request.from_decree}..{request.to_decree}")
            if node.fail_requests:
                out.append(f"{indent}{node.name}: read log failed")
                self.process(node, core.on_request_failed(gpid, request.request_id, "injected"), out, indent)
                return
            start = max(request.from_decree, disk.log_start_decree)
            if start != request.from_decree:
                found: list[Mutation] = []
            else:
                found = [disk.applied[d] for d in range(start, request.to_decree + 1) if d in disk.applied]
            self.process(node, core.on_log_read(gpid, request.request_id, found), out, indent)
        elif isinstance(request, MakeCheckpoint):
            if node.fail_requests:
                out.append(f"{indent}{node.name}: checkpoint failed")
                self.process(node, core.on_request_failed(gpid, request.request_id, "injected"), out, indent)
                return
            # Reuse the newest checkpoint of this node if there is one (Pegasus keeps durable
            # checkpoints), else make one at the applied decree.
            mine = [ref for ref in self.checkpoints if ref.startswith(f"{node.name}-ckpt-")]
            ref = mine[-1] if mine else self.make_checkpoint(node, disk)
            decree = self.checkpoints[ref].decree
            out.append(f"{indent}{node.name}: checkpoint {ref} at d{decree}")
            self.process(node, core.on_checkpoint_made(gpid, request.request_id, decree, ref), out, indent)
        elif isinstance(request, InstallCheckpoint):
            out.append(f"{indent}{node.name}: install checkpoint {request.checkpoint_ref}")
            if node.fail_requests:
                out.append(f"{indent}{node.name}: install failed")
                self.process(node, core.on_request_failed(gpid, request.request_id, "injected"), out, indent)
                return
            checkpoint = self.checkpoints[request.checkpoint_ref]
            if checkpoint.decree != request.checkpoint_decree:
                raise AssertionError("checkpoint decree mismatch")
            disk.applied = dict(checkpoint.applied)
            disk.applied_decree = checkpoint.decree
            disk.data = dict(checkpoint.data)
            self.process(node, core.on_checkpoint_installed(gpid, request.request_id), out, indent)
        else:
            raise ScriptError(f"unknown runtime request {request}")

    # --- inspection -----------------------------------------------------------------------------

    def cmd_status(self, args: list[str]) -> None:
        for name, node in self.nodes.items():
            if not node.up:
                self.say(f"{name}: down")
                continue
            replica = node.core.replica(GPID)
            if replica is None:
                self.say(f"{name}: no replica")
                continue
            lease = "lease" if node.core.lease_valid() else "no lease"
            extra = ""
            if replica.status == PartitionStatus.POTENTIAL_SECONDARY and replica.learner_phase is not None:
                extra = f" learning={replica.learner_phase.name.lower()}"
            if replica.learners:
                extra += f" learners={','.join(replica.learners)}"
            if replica.pending_proposal is not None:
                extra += (
                    f" pending={replica.pending_proposal.config_type.name}({replica.pending_proposal.node})"
                )
            status = replica.status.name.lower()
            committed, prepared = replica.last_committed_decree, replica.max_prepared_decree
            store = node.disks[GPID].applied_decree
            self.say(
                f"{name}: {status} b{replica.ballot} committed={committed} prepared={prepared} store={store}"
                f" {lease}{extra}"
            )

    def cmd_stores(self, args: list[str]) -> None:
        for name, node in self.nodes.items():
            disk = node.disks.get(GPID)
            if disk is None:
                continue
            data = " ".join(f"{k.decode()}={v.decode()}" for k, v in sorted(disk.data.items()))
            self.say(f"{name}: d{disk.applied_decree} {{{data}}}")

    def cmd_log(self, args: list[str]) -> None:
        node = self.node(args[0])
        disk = node.disks[GPID]
        records = [
            f"d{m.decree}b{m.ballot}" + ("" if i < disk.durable_len else "*") for i, m in enumerate(disk.log)
        ]
        self.say(
            f"{node.name}: log from {disk.log_start_decree}: {' '.join(records) or 'empty'} (* = not durable)"
        )

    def cmd_check(self, args: list[str]) -> None:
        """Cross-replica invariants: stores agree decree by decree; the commit invariant holds:
        committed on a secondary <= prepared on the primary, committed on the primary <= prepared on
        every secondary of its ballot."""
        problems: list[str] = []
        history: dict[int, tuple[str, Mutation]] = {}
        for name, node in self.nodes.items():
            disk = node.disks.get(GPID)
            if disk is None:
                continue
            for decree, mutation in disk.applied.items():
                if decree in history:
                    other, seen = history[decree]
                    if seen.writes != mutation.writes or seen.timestamp_us != mutation.timestamp_us:
                        problems.append(f"d{decree} differs between {other} and {name}")
                else:
                    history[decree] = (name, mutation)
        config = self.meta.configs[GPID]
        primary = self.nodes.get(config.primary or "")
        if primary is not None and primary.up:
            p = primary.core.replica(GPID)
            if p is not None and p.status == PartitionStatus.PRIMARY and p.ballot == config.ballot:
                for name in config.secondaries:
                    s_node = self.nodes[name]
                    s = s_node.core.replica(GPID) if s_node.up else None
                    if s is None or s.status != PartitionStatus.SECONDARY:
                        continue
                    # Whatever anyone committed, the primary prepared (it may not have committed it
                    # yet while it reconciles).
                    if s.last_committed_decree > p.max_prepared_decree:
                        problems.append(f"{name} committed beyond what the primary prepared")
                    if p.last_committed_decree > s.max_prepared_decree:
                        problems.append(f"primary committed beyond what {name} prepared")
        self.out.extend(problems or ["ok"])


def render_meta_message(message: Message) -> str:
    if isinstance(message, ConfigCommand):
        return f"{message.config_type.name} {message.node} ({render_config(message.config)})"
    if isinstance(message, ConfigProposalResponse):
        verdict = "accepted" if message.accepted else f"refused ({message.reason})"
        return f"{verdict}, {render_config(message.config)}"
    return type(message).__name__


# --- the datadriven file format -------------------------------------------------------------------


@dataclasses.dataclass
class Block:
    comments: list[str]
    command: str
    expected: str
    line_number: int


def parse(text: str) -> Iterator[Block]:
    lines = text.splitlines()
    i = 0
    comments: list[str] = []
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            comments.append(line)
            i += 1
            continue
        if line.startswith("#"):
            comments.append(line)
            i += 1
            continue
        command = line
        start = i + 1
        i += 1
        if i >= len(lines) or lines[i] != "----":
            raise ScriptError(f"line {start}: command without a ---- line")
        i += 1
        expected: list[str] = []
        while i < len(lines) and lines[i].strip():
            expected.append(lines[i])
            i += 1
        yield Block(comments, command, "\n".join(expected), start)
        comments = []


def run_file(path: Path) -> tuple[str, list[str]]:
    """Run a transcript; returns (the rewritten text, a list of mismatches)."""
    harness = Harness()
    text = path.read_text()
    parts: list[str] = []
    mismatches: list[str] = []
    for block in parse(text):
        actual = harness.run(block.command)
        if actual != block.expected:
            where = f"{path.name}:{block.line_number}: {block.command}"
            mismatches.append(f"{where}\n--- expected\n{block.expected}\n--- actual\n{actual}")
        parts.append("\n".join([*block.comments, block.command, "----", actual]))
    rewritten = "\n".join(parts).strip("\n") + "\n"
    rewritten = re.sub(r"\n{3,}", "\n\n", rewritten)
    return rewritten, mismatches
