"""Invariant checkers the simulator runs after every step (DESIGN.md section 9).

They watch what the cluster does, never how the cores do it:
- at most one primary per (gpid, ballot), and never two primaries of a partition serving at once
  (PacificA's primary invariant, held by leases: pacifica.md "Failure detection");
- a decree holds the same mutation on every replica that applies it (the commit invariant);
- the committed prefix of a replica never shrinks, restarts included: what it applied as a member
  (primary or secondary) is still recoverable from its durable checkpoint and log after a crash.
  A learner may apply what it learned before its log copy is durable (ready.py: apply does not
  wait for persist); it is no member, nobody counts on its copy, and its completion notice names
  only durable decrees. Such a learner losing applied decrees in a crash is counted
  (`learner_prefix_losses`), not failed; once it is a member, every apply is held to the rule;
- every write a client was told succeeded is in the committed mutation of its decree, and some
  server keeps a durable copy of it.
Client histories are checked for linearizability separately, once a run ends (the histories only
grow, and the search wants them whole).

A violation raises InvariantViolation at once, so the run stops at the step that broke it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import WriteRequest
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.replication.pacifica.config import PartitionStatus

NodeName = str
# What identifies a mutation's content across ballots: a new primary re-prepares its uncommitted
# tail under its own ballot (reconciliation), so the ballot may differ between replicas.
MutationContent = tuple[int, tuple[WriteRequest, ...]]


class InvariantViolation(AssertionError):
    """The cluster broke one of PacificA's guarantees (survives python -O)."""


def content_of(mutation: Mutation) -> MutationContent:
    return (mutation.timestamp_us, tuple(mutation.writes))


@dataclasses.dataclass(frozen=True, slots=True)
class ReplicaView:
    """One replica as the checkers see it after a step."""

    node: NodeName
    gpid: Gpid
    ballot: int
    status: PartitionStatus
    # Would answer client reads and writes as primary right now (valid lease, reconciled).
    serving: bool
    last_committed_decree: int


@dataclasses.dataclass(frozen=True, slots=True)
class AckedWrite:
    gpid: Gpid
    decree: int
    write: WriteRequest
    client: str
    time_ms: int


# Does server `node` hold `decree` of `gpid` with this content durably (log or checkpoint)?
DurableLookup = Callable[[NodeName, Gpid, int, MutationContent], bool]
# The highest decree of `gpid` that server `node` can recover contiguously from its durable state,
# checking each decree's content against the committed record.
RecoverableLookup = Callable[[NodeName, Gpid], int]


class InvariantChecker:
    def __init__(self) -> None:
        self.committed: dict[tuple[Gpid, int], MutationContent] = {}
        self.primary_of_ballot: dict[tuple[Gpid, int], NodeName] = {}
        # Per (node, gpid): the highest decree it applied (its committed prefix, for sure).
        self.applied_high: dict[tuple[NodeName, Gpid], int] = {}
        # The same for applies made as a learner (see the module docstring).
        self.learner_applied_high: dict[tuple[NodeName, Gpid], int] = {}
        self.learner_prefix_losses = 0
        # Per (node, gpid): last reported committed decree since the node last (re)started.
        self.reported_committed: dict[tuple[NodeName, Gpid], int] = {}
        self.acked: list[AckedWrite] = []
        self.checks = 0

    # --- every step ----------------------------------------------------------------------------

    def observe(self, views: Iterable[ReplicaView], now_ms: int) -> None:
        self.checks += 1
        serving: dict[Gpid, NodeName] = {}
        for view in views:
            if view.status is PartitionStatus.PRIMARY:
                holder = self.primary_of_ballot.setdefault((view.gpid, view.ballot), view.node)
                if holder != view.node:
                    raise InvariantViolation(
                        f"two primaries in ballot {view.ballot} of {view.gpid}: {holder} and {view.node}"
                    )
            if view.serving:
                if view.status is not PartitionStatus.PRIMARY:
                    raise InvariantViolation(f"{view.node} serves {view.gpid} as {view.status.name}")
                other = serving.setdefault(view.gpid, view.node)
                if other != view.node:
                    raise InvariantViolation(
                        f"two primaries of {view.gpid} serving at {now_ms} ms: {other} and {view.node}"
                    )
            key = (view.node, view.gpid)
            before = self.reported_committed.get(key, 0)
            if view.last_committed_decree < before:
                raise InvariantViolation(
                    f"{view.node} {view.gpid}: last committed decree went back from {before} "
                    f"to {view.last_committed_decree} without a restart"
                )
            self.reported_committed[key] = view.last_committed_decree

    # --- events --------------------------------------------------------------------------------

    def on_apply(self, node: NodeName, gpid: Gpid, mutation: Mutation, as_member: bool = True) -> None:
        """`node` applied a committed mutation to its store (as primary or secondary, or not)."""
        content = content_of(mutation)
        recorded = self.committed.setdefault((gpid, mutation.decree), content)
        if recorded != content:
            raise InvariantViolation(
                f"decree {mutation.decree} of {gpid} holds different mutations: {node} applied "
                f"{content!r}, another replica applied {recorded!r}"
            )
        key = (node, gpid)
        high = self.applied_high if as_member else self.learner_applied_high
        high[key] = max(high.get(key, 0), mutation.decree)

    def on_learned_checkpoint(self, node: NodeName, gpid: Gpid, decree: int) -> None:
        """`node` installed a checkpoint reflecting `decree` (learning)."""
        key = (node, gpid)
        self.applied_high[key] = max(self.applied_high.get(key, 0), decree)

    def on_replica_dropped(self, node: NodeName, gpid: Gpid) -> None:
        """`node` removed its replica of `gpid` (garbage collection): it owes nothing any more."""
        self.applied_high.pop((node, gpid), None)
        self.learner_applied_high.pop((node, gpid), None)
        self.reported_committed.pop((node, gpid), None)

    def on_restart(self, node: NodeName, recoverable: RecoverableLookup) -> None:
        """`node` restarted from its disk: what it had applied must still be recoverable."""
        for (holder, gpid), high in self.applied_high.items():
            if holder != node:
                continue
            upto = recoverable(node, gpid)
            if upto < high:
                raise InvariantViolation(
                    f"{node} {gpid}: committed prefix shrank across a restart: it had applied decree "
                    f"{high}, its disk recovers only up to {upto}"
                )
        for (holder, gpid), high in list(self.learner_applied_high.items()):
            if holder == node and recoverable(node, gpid) < high:
                self.learner_prefix_losses += 1
                del self.learner_applied_high[(holder, gpid)]
        for key in [key for key in self.reported_committed if key[0] == node]:
            del self.reported_committed[key]

    def on_ack(self, ack: AckedWrite) -> None:
        """A client was told its write succeeded at `decree`."""
        recorded = self.committed.get((ack.gpid, ack.decree))
        if recorded is None:
            raise InvariantViolation(
                f"{ack.client} got an ack for decree {ack.decree} of {ack.gpid}, never applied"
            )
        if ack.write not in recorded[1]:
            raise InvariantViolation(
                f"{ack.client} got an ack for decree {ack.decree} of {ack.gpid}, "
                "whose committed mutation lacks its write"
            )
        self.acked.append(ack)

    def check_acked_durable(self, nodes: Iterable[NodeName], durable: DurableLookup) -> None:
        """Every acknowledged write has a durable copy on some server (run after crashes and at the end)."""
        node_list = list(nodes)
        for ack in self.acked:
            content = self.committed[(ack.gpid, ack.decree)]
            if not any(durable(node, ack.gpid, ack.decree, content) for node in node_list):
                raise InvariantViolation(
                    f"the write {ack.client} had acknowledged at {ack.time_ms} ms (decree {ack.decree} of "
                    f"{ack.gpid}) has no durable copy on any server"
                )
