"""What a replica keeps only while it is primary: the write queue, acknowledgements, learners.

Pure bookkeeping; replica.py owns every transition and decides what to do with it.
"""

from __future__ import annotations

import dataclasses

from pegasus_kv.replication.pacifica.config import ConfigProposal, NodeAddress
from pegasus_kv.replication.pacifica.ready import ClientToken
from pegasus_kv.replication.pacifica.write_queue import WriteQueue

# Learner signatures embed the ballot the session was created under, so a learner can never mistake
# a session of a later incarnation of the same primary for its own (the counter restarts per ballot).
SIGNATURE_BALLOT_SHIFT = 20


def make_signature(ballot: int, counter: int) -> int:
    return (ballot << SIGNATURE_BALLOT_SHIFT) | (counter & ((1 << SIGNATURE_BALLOT_SHIFT) - 1))


@dataclasses.dataclass(slots=True)
class LearnerSession:
    """The primary's view of one learner (a potential secondary it was told to add)."""

    node: NodeAddress
    signature: int
    # The learner's attempt the session serves (0 before its first LearnRequest).
    attempt: int = 0
    # Decrees from here on are prepared to the learner and need its ack to commit; everything before
    # it comes through learning. 0 until the attempt's first LearnRequest.
    prepare_start_decree: int = 0
    # A ReadLog or MakeCheckpoint in flight for this learner (0: none) and the decree it starts at.
    pending_request_id: int = 0
    pending_from_decree: int = 0
    # The learner holds everything before prepare_start_decree, durably: ready to be upgraded.
    completed: bool = False
    # Last tick the learner was heard from; a session silent for too long is dropped.
    last_heard_tick: int = 0

    def needs_ack(self, decree: int) -> bool:
        return self.prepare_start_decree > 0 and decree >= self.prepare_start_decree


@dataclasses.dataclass(slots=True)
class PrimaryState:
    write_queue: WriteQueue
    # Reads wait until the commit point reaches this: everything prepared when this replica became
    # primary (PacificA reconciliation; Pegasus: a new primary serves after committing its tail).
    reconcile_target: int
    # decree -> clients waiting for the writes of that mutation, in mutation.writes order.
    tokens: dict[int, tuple[ClientToken, ...]] = dataclasses.field(default_factory=dict)
    # decree -> replicas that acknowledged it under the current ballot.
    acks: dict[int, set[NodeAddress]] = dataclasses.field(default_factory=dict)
    # decree -> tick it was prepared under the current ballot (prepare timeouts run from here).
    sent_tick: dict[int, int] = dataclasses.field(default_factory=dict)
    learners: dict[NodeAddress, LearnerSession] = dataclasses.field(default_factory=dict)
    next_signature_counter: int = 1
    # At most one proposal to meta at a time; resent after proposal_timeout_ticks without answer.
    pending_proposal: ConfigProposal | None = None
    proposal_sent_tick: int = 0
    # No new proposal before this tick (after meta refused one).
    proposal_retry_tick: int = 0
    last_group_check_tick: int = 0
    # member -> (from decree, tick) of the last resend, so a burst of GAP acks resends once.
    last_resend: dict[NodeAddress, tuple[int, int]] = dataclasses.field(default_factory=dict)
    # (ballot, decree) of the first log record written under the current ballot. Until it is
    # durable, nothing prepared under this ballot may leave: a primary that crashed before it could
    # come back with an older ballot in its log, be named primary under this ballot again, and hand
    # out the same decree twice.
    ballot_record: tuple[int, int] = (0, 0)
