"""MetaReady: what one meta core event asks the runtime to do, and in which order.

The meta core does no I/O (DESIGN.md section 4, "The Ready contract"). Each event method returns a
MetaReady; the runtime executes it exactly in this order:

1. `send` and `replies` may go out at once: they reveal nothing that is not durable yet (learner
   requests carrying the durable configuration, refusals of proposals, answers read from durable
   state).
2. `persist`: append these events to the meta store, in order, after every batch of an earlier
   MetaReady, and wait until they are durable (fsync / ZooKeeper ack). The batch need not be
   atomic: each event is a complete step from the one before, so any prefix of the log is a state
   meta can restart from (nobody has been told about the events that did not make it).
3. Call `core.on_persisted(persist_seq)` (batches become durable in seq order; one call may cover
   several). This folds the batch into the core's durable state.
4. Only then send `send_after_persist` and `replies_after_persist`. When `persist` is empty but
   these lists are not, `persist_seq` names an EARLIER batch they depend on (e.g. a second create
   of a table whose creation is still being persisted): hold them until that seq is durable.

Snapshots (log compaction): `core.state.snapshot()` is the fold of every batch up to
`core.durable_seq`; write it only while `core.persist_in_flight` is False, so that it covers exactly
the records the store holds.

If a batch cannot be made durable, the runtime must stop this core (crash, or give up ZooKeeper
leadership) and build a new one from the store: the core has already folded the batch into its
projected state, and nothing about it was sent.

Meta has nothing to apply and nothing to propose to itself, so the replica Ready's `apply` and
`propose` fields have no counterpart here.
"""

from __future__ import annotations

import dataclasses

from pegasus_kv.core.registry import Message
from pegasus_kv.replication.pacifica.config import NodeAddress
from pegasus_kv.replication.pacifica.meta_events import MetaEvent

# Token the runtime passes with a request and gets back on its reply (a request id, an index into
# its table of waiting callers...). The core never interprets it.
ReplyTo = int


@dataclasses.dataclass(frozen=True, slots=True)
class Outgoing:
    """A message meta sends on its own initiative (a ConfigCommand) to a replica server."""

    to: NodeAddress
    message: Message


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """The answer to the request the runtime handed in with `reply_to`."""

    reply_to: ReplyTo
    message: Message


@dataclasses.dataclass(frozen=True, slots=True)
class MetaReady:
    # 1. May go at once.
    send: tuple[Outgoing, ...] = ()
    replies: tuple[Reply, ...] = ()
    # 2. Append durably as one batch, in order; then call on_persisted(persist_seq).
    persist: tuple[MetaEvent, ...] = ()
    # The batch number of `persist` (0 when nothing is persisted and nothing waits on a batch).
    persist_seq: int = 0
    # 3. Only after batch `persist_seq` is durable and on_persisted has been called.
    send_after_persist: tuple[Outgoing, ...] = ()
    replies_after_persist: tuple[Reply, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (
            self.send or self.replies or self.persist or self.send_after_persist or self.replies_after_persist
        )
