"""Messages between replicas of one partition (wire type ids 100-199).

Flows (PacificA section 3 as Pegasus runs it):
- Two-phase commit: the primary sends Prepare(config, mutation, commit point) to every secondary and
  to every learner past its prepare start decree; each answers PrepareAck once the mutation is
  durable in its log. Every Prepare carries the primary's configuration, so a member that missed a
  configuration change adopts the newer ballot from the primary that meta named (Pegasus does the
  same), and the mutation inside always carries that ballot (the primary re-brands what it resends).
- Group check: the primary periodically sends GroupCheck(config, commit point) to members and
  learners; it carries the commit point to idle secondaries, and it is how a learner is told to start.
- Learning: a learner sends LearnRequest (its committed and prepared decrees); the primary answers
  LearnResponse with mutations from its prepare list or its log, or with a checkpoint to install.
  The learner repeats until it holds everything before the primary's prepare start decree, then
  sends LearnCompletionNotice; the primary proposes UPGRADE_TO_SECONDARY to meta.

Sessions: a learner is identified by the primary's `signature` (one per ADD_SECONDARY) and its own
`attempt` counter (one per restart of learning); stale answers of older attempts are ignored. The
first request of every attempt says `restart`: the learner may have crashed and come back under the
same signature with its counter starting over, and the acknowledgements it gave before are void.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.core.registry import Message, message
from pegasus_kv.replication.pacifica.config import PartitionConfiguration

# Structural bound on one learn response (the primary sends at most max_learn_batch_mutations).
MAX_LEARN_MUTATIONS = 100_000
MAX_CHECKPOINT_REF_BYTES = 4096


class PrepareOutcome(enum.IntEnum):
    """Why a replica accepted or refused a prepare / group check / learn request."""

    OK = 0
    STALE_BALLOT = 1  # the receiver holds a newer ballot than the message: the sender is deposed
    GAP = 2  # the receiver misses decrees before this one: resend from confirmed_decree + 1
    NOT_MEMBER = 3  # the receiver is not a secondary (or learner) of the sender's configuration
    FULL = 4  # the receiver's prepare list has no room
    NOT_LEARNER = 5  # the primary has no learning session with this signature


class LearnKind(enum.IntEnum):
    PREPARE_LIST = 0  # mutations from the primary's prepare list (may include uncommitted ones)
    LOG = 1  # committed mutations read from the primary's log
    CHECKPOINT = 2  # install checkpoint `checkpoint_ref` standing at `checkpoint_decree`, then ask again


@message
class Prepare(Message, tag=100):
    gpid: Gpid
    config: PartitionConfiguration  # the primary's configuration; its ballot is the message's ballot
    mutation: Mutation  # mutation.ballot == config.ballot
    last_committed_decree: int  # the primary's commit point


@message
class PrepareAck(Message, tag=101):
    gpid: Gpid
    ballot: int  # the receiver's ballot (higher than the prepare's when outcome is STALE_BALLOT)
    decree: int
    outcome: PrepareOutcome
    # Every decree up to this one is known to match the primary's prepare list (GAP: resend after it).
    confirmed_decree: int
    last_committed_decree: int


@message
class GroupCheck(Message, tag=102):
    gpid: Gpid
    config: PartitionConfiguration
    last_committed_decree: int
    # Non-zero when the receiver is a learner: the primary's learning session it belongs to.
    learner_signature: int = 0


@message
class GroupCheckAck(Message, tag=103):
    gpid: Gpid
    ballot: int
    outcome: PrepareOutcome
    last_committed_decree: int
    confirmed_decree: int
    learner_signature: int = 0


@message
class LearnRequest(Message, tag=104):
    gpid: Gpid
    ballot: int
    signature: int
    attempt: int
    last_committed_decree: int
    last_prepared_decree: int  # contiguous: the learner wants decrees from here + 1
    # The first request of an attempt: the learner holds nothing uncommitted and acknowledged
    # nothing in it (it may have restarted and lost what it held), so the primary starts the
    # session's state over: a new prepare start decree, no acknowledgement of it counted.
    restart: bool = False


@message
class LearnResponse(Message, tag=105):
    gpid: Gpid
    ballot: int
    signature: int
    attempt: int
    outcome: PrepareOutcome
    kind: LearnKind
    # Contiguous, starting at the request's last_prepared_decree + 1 (empty for CHECKPOINT).
    mutations: Annotated[list[Mutation], msgspec.Meta(max_length=MAX_LEARN_MUTATIONS)]
    primary_committed_decree: int
    # From this decree on the learner receives prepares; learning must bring everything before it.
    prepare_start_decree: int
    checkpoint_decree: int = 0
    # Names a checkpoint on the primary's node; the runtimes know how to copy it (opaque to the core).
    checkpoint_ref: Annotated[str, msgspec.Meta(max_length=MAX_CHECKPOINT_REF_BYTES)] = ""


@message
class LearnCompletionNotice(Message, tag=106):
    gpid: Gpid
    ballot: int
    signature: int
    attempt: int
    last_prepared_decree: int  # durable, contiguous from the learner's committed decree


REPLICA_MESSAGE_TYPES: tuple[type[Message], ...] = (
    Prepare,
    PrepareAck,
    GroupCheck,
    GroupCheckAck,
    LearnRequest,
    LearnResponse,
    LearnCompletionNotice,
)
ReplicaMessage = (
    Prepare | PrepareAck | GroupCheck | GroupCheckAck | LearnRequest | LearnResponse | LearnCompletionNotice
)
