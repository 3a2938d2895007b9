"""Ready: what one replica-core event asks the runtime to do, and the order it must do it in.

The replica core does no I/O (DESIGN.md section 4, "The Ready contract", after etcd/raft). Every
event method returns a Ready; the runtime (or the simulator) executes it as follows, per replica:

1. `persist`: append these mutations to this replica's log, in order, after everything handed to
   `persist` by earlier Readies. Appends may be batched and fsynced together. When the log is
   durable through the last mutation of a non-empty `persist`, call
   `on_log_durable(mutation.ballot, mutation.decree)` for that mutation. Calls must come in append
   order; reporting a later mutation implies every earlier one is durable (so calls may coalesce).
   Never report a mutation before its fsync finished: the commit rule depends on it.
   Keep, durably and across log collection, the highest ballot of any mutation made durable, and
   pass it back as `ballot` when the replica is reloaded (ReplicaNode.load_replica). A replica's
   ballot lives in its log; once collected it must live in the log's metadata, or a restarted
   primary could be named primary again under a ballot it already used and assign a decree twice.
2. `send`: may go out at once, in parallel with the persist (the primary's own prepares).
3. `send_after_persist`: hold until the log is durable through EVERY mutation handed to `persist`
   so far (this Ready's and all earlier ones), then send. A PrepareAck promises durability, so it
   must never overtake the fsync. If nothing is pending, send at once.
4. `apply`: committed mutations, strictly in decree order and after every earlier Ready's `apply`.
   Apply each to the store atomically with its decree, then answer `tokens[i]` with the result of
   `mutation.writes[i]` (tokens are non-empty only on the primary that queued those writes). The
   apply does not wait for the persist to be durable: a store that runs ahead of the log after a
   crash only means recovery replays less.
5. `replies`: answers to client writes that will not be applied by this replica (refused, or outcome
   unknown); may go at once. A refusal (BUSY, NOT_PRIMARY, NOT_ENOUGH_MEMBER) means the write was
   never prepared and never takes effect. TIMEOUT means it was prepared and may still commit under
   a later primary: the client must treat its outcome as unknown.
6. `propose`: configuration proposals for meta (send as ConfigProposalRequest; the node core does).
7. `requests`: I/O the core needs (read the log, make or install a checkpoint). Each carries a
   request_id; the runtime reports the result with the matching event (see replica.py).
8. `request_config_sync`: the replica suspects its configuration is stale; the node core answers
   it by sending a ConfigSyncRequest to meta.

A Ready is built by the core during one event and handed over; the runtime must not change it.
"""

from __future__ import annotations

import dataclasses

from pegasus_kv.core.errors import ErrorCode
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.pacifica.config import ConfigProposal, NodeAddress

# The runtime's handle on a waiting client write (an index into its table of futures). Opaque.
ClientToken = int


@dataclasses.dataclass(frozen=True, slots=True)
class Outbound:
    """A message to another replica server."""

    to: NodeAddress
    message: Message


@dataclasses.dataclass(frozen=True, slots=True)
class Apply:
    """A committed mutation to apply; tokens[i] is the client waiting for mutation.writes[i]."""

    mutation: Mutation
    tokens: tuple[ClientToken, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class ClientReply:
    token: ClientToken
    code: ErrorCode


@dataclasses.dataclass(frozen=True, slots=True)
class ReadLog:
    """Read committed mutations [from_decree, to_decree] from the log (primary, for a learner).

    Answer with on_log_read(request_id, mutations): the committed version of each decree (the one
    a recovery replay of the log would keep), contiguous from from_decree; it may stop early (the
    log was collected), or report on_request_failed(request_id, reason).
    """

    request_id: int
    from_decree: int
    to_decree: int


@dataclasses.dataclass(frozen=True, slots=True)
class MakeCheckpoint:
    """Make (or reuse) a durable checkpoint of the store at its applied decree (primary, for a learner).

    Answer with on_checkpoint_made(request_id, checkpoint_decree, checkpoint_ref); the log must keep
    every mutation after checkpoint_decree while the learner may still need it.
    """

    request_id: int


@dataclasses.dataclass(frozen=True, slots=True)
class InstallCheckpoint:
    """Copy checkpoint `checkpoint_ref` from `source` and make it this replica's store (learner).

    The store then stands at checkpoint_decree. Answer with on_checkpoint_installed(request_id) or
    on_request_failed(request_id, reason).
    """

    request_id: int
    source: NodeAddress
    checkpoint_ref: str
    checkpoint_decree: int


RuntimeRequest = ReadLog | MakeCheckpoint | InstallCheckpoint


@dataclasses.dataclass(slots=True, init=False)
class Ready:
    # 1. Append to the log in order; report on_log_durable(ballot, decree) of the last one.
    persist: list[Mutation]
    # 2. May go at once.
    send: list[Outbound]
    # 3. Only once every mutation handed to persist so far is durable.
    send_after_persist: list[Outbound]
    # 4. In decree order; then answer the tokens.
    apply: list[Apply]
    # 5. Client answers that do not wait for an apply.
    replies: list[ClientReply]
    # 6. Proposals to meta.
    propose: list[ConfigProposal]
    # 7. I/O for the runtime; results come back as events.
    requests: list[RuntimeRequest]
    # 8. Ask the node to resync configurations with meta now.
    request_config_sync: bool

    def __init__(
        self,
        *,
        persist: list[Mutation] | None = None,
        send: list[Outbound] | None = None,
        send_after_persist: list[Outbound] | None = None,
        apply: list[Apply] | None = None,
        replies: list[ClientReply] | None = None,
        propose: list[ConfigProposal] | None = None,
        requests: list[RuntimeRequest] | None = None,
        request_config_sync: bool = False,
    ) -> None:
        # Written out (not default factories): every core event builds one, ~40 % faster this way.
        self.persist = [] if persist is None else persist
        self.send = [] if send is None else send
        self.send_after_persist = [] if send_after_persist is None else send_after_persist
        self.apply = [] if apply is None else apply
        self.replies = [] if replies is None else replies
        self.propose = [] if propose is None else propose
        self.requests = [] if requests is None else requests
        self.request_config_sync = request_config_sync

    @property
    def is_empty(self) -> bool:
        return not (
            self.persist
            or self.send
            or self.send_after_persist
            or self.apply
            or self.replies
            or self.propose
            or self.requests
            or self.request_config_sync
        )

    def extend(self, later: Ready) -> None:
        """Append the output of a later event of the same replica (order is kept field by field)."""
        self.persist.extend(later.persist)
        self.send.extend(later.send)
        self.send_after_persist.extend(later.send_after_persist)
        self.apply.extend(later.apply)
        self.replies.extend(later.replies)
        self.propose.extend(later.propose)
        self.requests.extend(later.requests)
        self.request_config_sync = self.request_config_sync or later.request_config_sync
