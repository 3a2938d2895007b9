"""The replica state machine of one partition copy (PacificA, as Pegasus runs it). No I/O.

This module owns every transition of a replica's role (h11 `_state.py` style):

    INACTIVE --config names it primary------------------> PRIMARY
    INACTIVE --config names it secondary----------------> SECONDARY
    any but ERROR --group check with a learner signature-> POTENTIAL_SECONDARY (learner)
    POTENTIAL_SECONDARY (complete) --config upgrade-----> SECONDARY
    SECONDARY --config names it primary (ballot + 1)----> PRIMARY (reconciliation first)
    PRIMARY --config names it secondary / drops it------> SECONDARY / INACTIVE
    any --on_local_failure------------------------------> ERROR

Only a configuration with a higher ballot moves a replica between member roles, whether it comes
from meta (on_config, on_config_command, on_config_proposal_response) or from the primary that meta
named in it (a Prepare or GroupCheck carrying the newer configuration; Pegasus does the same).

Events (each returns a Ready; see ready.py for the order the runtime must execute it in):
    on_tick(tick)                           time passes (prepare/learn/proposal timeouts, group checks)
    on_lease(valid_until_tick)              the server's lease from meta changed (node core calls it)
    on_client_write(token, write, timestamp_us, size_bytes=None)
    on_client_writes(writes)                several client writes at once, batched into as few
                                            mutations as the bounds allow (QueuedWrite items)
    on_message(sender, message)             a replica<->replica message (messages.py)
    on_log_durable(ballot, decree)          the log is durable through that appended mutation
    on_config(config)                       a configuration from meta (sync, response, command)
    on_config_command(command)              a ConfigCommand addressed to this replica's node
    on_config_proposal_response(response)   meta's answer to a proposal this replica made
    on_log_read(request_id, mutations)      result of a ReadLog request
    on_checkpoint_made(request_id, checkpoint_decree, checkpoint_ref)
    on_checkpoint_installed(request_id)
    on_request_failed(request_id, reason)   a ReadLog / MakeCheckpoint / InstallCheckpoint failed
    on_log_truncated(start_decree)          the runtime collected the log below start_decree
    on_removed()                            meta's config sync does not name it a member any more
    on_local_failure(reason)                the runtime lost the log or store: become ERROR
Queries (no Ready): check_read(tick), info(), and the read-only properties below.

Safety rules kept here (PacificA section 3; asserted with require()):
- A replica accepts a prepare only under its current ballot, and only the decree right after what
  it has confirmed to match the primary (decree order; a gap is answered GAP so the primary resends).
- The primary commits decree d only when d is durable locally and every secondary of the current
  configuration (and every learner past its prepare start decree) acknowledged d under this ballot.
  Hence committed on any secondary <= committed on the primary <= prepared on every member.
- A replica that becomes primary re-prepares its whole uncommitted tail under the new ballot
  (reconciliation; an empty mutation when there is no tail) and serves reads only once it has
  committed all of it. Every ballot change of a primary does the same, so acknowledgements from
  older ballots never count, and nothing prepared under a ballot leaves before that first record of
  the ballot is durable here: a primary that crashed and came back with an older ballot in its log
  could otherwise be named primary under the same ballot again and assign a decree twice.
- A replica never changes role under the ballot it holds (a restarted replica never resumes as
  primary under the ballot its log shows).
- Everything a primary sends carries its current ballot (it re-brands entries it resends).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Concatenate, ParamSpec

import msgspec

from pegasus_kv.core.errors import ErrorCode
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import WriteRequest
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.pacifica.config import (
    ConfigProposal,
    ConfigType,
    NodeAddress,
    PartitionConfiguration,
    PartitionStatus,
)
from pegasus_kv.replication.pacifica.invariant import require, violated
from pegasus_kv.replication.pacifica.learner_state import LearnerPhase, LearnerState
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
    ConfigCommand,
    ConfigProposalResponse,
    ReplicaInfo,
)
from pegasus_kv.replication.pacifica.options import ReplicaOptions
from pegasus_kv.replication.pacifica.prepare_list import PrepareList
from pegasus_kv.replication.pacifica.primary_state import LearnerSession, PrimaryState, make_signature
from pegasus_kv.replication.pacifica.ready import (
    Apply,
    ClientReply,
    ClientToken,
    InstallCheckpoint,
    MakeCheckpoint,
    Outbound,
    ReadLog,
    Ready,
)
from pegasus_kv.replication.pacifica.write_queue import QueuedWrite, WriteQueue

_P = ParamSpec("_P")

# Ticks before the first tick event: the lease is invalid until the node grants one.
NO_LEASE = -1
# The acknowledgements of a decree nobody has acknowledged (never modified).
_NO_ACKS: frozenset[NodeAddress] = frozenset()
# Enum members read on every event: reading one through its class costs ~70 ns (the enum
# metaclass), a module global ~7 ns.
_PRIMARY = PartitionStatus.PRIMARY
_SECONDARY = PartitionStatus.SECONDARY
_LEARNER = PartitionStatus.POTENTIAL_SECONDARY
_OK = PrepareOutcome.OK


def _event(method: Callable[Concatenate[Replica, _P], None]) -> Callable[Concatenate[Replica, _P], Ready]:
    """Run one event: collect what it asks for into a fresh Ready and check the invariants."""

    def run(self: Replica, /, *args: _P.args, **kwargs: _P.kwargs) -> Ready:
        if self._out is not None:
            violated(f"{self}: event entered while another event runs")
        out = self._out = Ready()
        if self._recovered_apply:
            out.apply.extend(Apply(mutation, ()) for mutation in self._recovered_apply)
            self._recovered_apply = []
        try:
            method(self, *args, **kwargs)
            self._check_invariants()
        finally:
            self._out = None
        return out

    run.__name__ = method.__name__
    run.__qualname__ = method.__qualname__
    run.__doc__ = method.__doc__
    return run


class Replica:
    """One partition copy on one replica server. Construct fresh, or from a log replay after restart.

    `last_committed_decree` is the decree the store stands at; `log` the mutations of the replica's
    log in append order (all durable); `log_start_decree` the first decree the log still holds (for
    learning from the log); `ballot` the highest ballot the log ever held, collected records
    included (the replica never acts as primary under a ballot up to it again, since it may have
    handed out decrees under it). A constructed replica is INACTIVE until a configuration names it.
    When the log proves decrees after the store's committed (the store lags the log by more than
    the prepare list capacity; PrepareList.recover), the replica's commit point starts past the
    store's, and the Ready of its first event asks the runtime to apply those decrees first.
    """

    def __init__(
        self,
        gpid: Gpid,
        me: NodeAddress,
        options: ReplicaOptions | None = None,
        *,
        last_committed_decree: int = 0,
        log: Iterable[Mutation] = (),
        log_start_decree: int = 1,
        ballot: int = 0,
    ) -> None:
        self.gpid = gpid
        self.me = me
        self.options = options or ReplicaOptions()
        replay = list(log)
        recovery = PrepareList.recover(self.options.prepare_list_capacity, last_committed_decree, replay)
        self.plist = recovery.plist
        # Decrees the log proves committed beyond the store's (PrepareList.recover): the first
        # event's Ready hands them to the runtime to apply, before anything else it asks for.
        self._recovered_apply: list[Mutation] = recovery.committed
        self._ballot = max([ballot, *(m.ballot for m in replay)])
        self._status = PartitionStatus.INACTIVE
        self._config: PartitionConfiguration | None = None
        # Every decree up to here is known to match the current primary's prepare list.
        self._confirmed = self.plist.last_committed_decree
        # (ballot, decree) of mutations handed to `persist` that are not durable yet, append order.
        self._unsynced: deque[tuple[int, int]] = deque()
        # How many of those appends each (ballot, decree) has (a plain dict: no Counter.__missing__
        # call per lookup on the write path); a key leaves when its count drops to zero.
        self._unsynced_count: dict[tuple[int, int], int] = {}
        self._log_start_decree = max(1, min(log_start_decree, self.plist.start_decree))
        self._now = 0
        self._lease_until = NO_LEASE
        self._primary: PrimaryState | None = None
        self._learner: LearnerState | None = None
        self._next_request_id = 1
        self._last_timestamp_us = max([0, *(m.timestamp_us for m in replay)])
        # The largest decree of any record in the log: records up to it may be prepares this replica
        # dropped from memory only (a learner's uncommitted tail), which a recovery replay would
        # still chain (see _learner_may_hold).
        self._log_max_decree = max([0, *(m.decree for m in replay)])
        self._out: Ready | None = None
        self._check_invariants()

    def __repr__(self) -> str:
        return f"Replica({self.gpid}@{self.me} {self._status.name} b{self._ballot})"

    # --- queries ------------------------------------------------------------------------------

    @property
    def status(self) -> PartitionStatus:
        return self._status

    @property
    def ballot(self) -> int:
        return self._ballot

    @property
    def config(self) -> PartitionConfiguration | None:
        return self._config

    @property
    def last_committed_decree(self) -> int:
        return self.plist.last_committed_decree

    @property
    def max_prepared_decree(self) -> int:
        return self.plist.max_decree

    @property
    def confirmed_decree(self) -> int:
        return self._confirmed

    @property
    def last_durable_decree(self) -> int:
        """The largest decree d such that the log is durable for every held entry up to d."""
        decree = self.plist.last_committed_decree
        while decree < self.plist.max_decree:
            entry = self.plist.get(decree + 1)
            if entry is None or not self._is_durable(entry):
                break
            decree += 1
        return decree

    @property
    def log_start_decree(self) -> int:
        return self._log_start_decree

    @property
    def learner_phase(self) -> LearnerPhase | None:
        return self._learner.phase if self._learner else None

    @property
    def learners(self) -> tuple[NodeAddress, ...]:
        return tuple(self._primary.learners) if self._primary else ()

    @property
    def pending_proposal(self) -> ConfigProposal | None:
        return self._primary.pending_proposal if self._primary else None

    @property
    def queued_writes(self) -> int:
        return len(self._primary.write_queue) if self._primary else 0

    def lease_valid(self, tick: int) -> bool:
        return tick < self._lease_until

    def check_read(self, tick: int) -> ErrorCode:
        """Whether a read may be served now: OK only on a primary with a valid lease that has
        committed everything it had prepared when it became primary (reconciliation finished).

        NOT_PRIMARY: not primary, or the lease lapsed (a deposed primary must not serve stale
        reads). BUSY: primary still reconciling; retry shortly. The runtime must apply every
        `apply` of earlier Readies before executing a read this admits.
        """
        if self._status != _PRIMARY or tick >= self._lease_until:  # lease_valid, inlined (per read)
            return ErrorCode.NOT_PRIMARY
        ps = self._primary
        if ps is None:  # on every read: the message is formatted only on failure
            violated(f"{self}: primary without primary state")
        if self.plist.last_committed_decree < ps.reconcile_target:
            return ErrorCode.BUSY
        return ErrorCode.OK

    def info(self) -> ReplicaInfo:
        """What the node reports to meta about this replica (ConfigSyncRequest)."""
        return ReplicaInfo(
            gpid=self.gpid,
            ballot=self._ballot,
            status=self._status,
            last_committed_decree=self.plist.last_committed_decree,
            last_prepared_decree=self.plist.max_decree,
            last_durable_decree=self.last_durable_decree,
        )

    # --- events -------------------------------------------------------------------------------

    @_event
    def on_tick(self, tick: int) -> None:
        if tick < self._now:
            violated(f"{self}: time went back from {self._now} to {tick}")
        self._now = tick
        if self._status == _PRIMARY:
            self._primary_tick()
        elif self._status == _LEARNER:
            self._learner_tick()

    @_event
    def on_lease(self, valid_until_tick: int) -> None:
        """The node's lease now runs until valid_until_tick (exclusive); NO_LEASE when lost."""
        self._lease_until = valid_until_tick
        if self._status == _PRIMARY:
            if self.lease_valid(self._now):
                self._try_commit()
            else:
                self._refuse_queued(ErrorCode.NOT_PRIMARY)

    @_event
    def on_client_write(
        self, token: ClientToken, write: WriteRequest, timestamp_us: int, size_bytes: int | None = None
    ) -> None:
        """A client write arrived at this replica. `timestamp_us` is the wall clock at arrival: the
        mutation's timestamp (TTLs, timetags) is the newest of its writes', kept increasing."""
        size = size_bytes if size_bytes is not None else len(msgspec.msgpack.encode(write))
        if self._admit_write(QueuedWrite(token, write, timestamp_us, size)):
            self._pump_writes()

    @_event
    def on_client_writes(self, writes: Sequence[QueuedWrite]) -> None:
        """Several client writes that arrived together (one pass of the runtime's event loop): each
        is admitted as by on_client_write, then the queue is batched once. A runtime that gathers
        the writes of a loop pass makes mutations of many writes under load instead of one each,
        without waiting for anything: the same ordering as one on_client_write after the other,
        only the mutation boundaries differ."""
        # What _admit_write checks per write, checked once: admitting only queues or refuses, so
        # the role, lease and membership stay as they are for the whole batch, and once the queue
        # is full every later write finds it full (same replies, in the same order).
        ps = self._primary
        if self._status != _PRIMARY or ps is None or not self.lease_valid(self._now):
            self._refuse_writes(writes, ErrorCode.NOT_PRIMARY)
            return
        if not self._enough_members():
            self._refuse_writes(writes, ErrorCode.NOT_ENOUGH_MEMBER)
            return
        admitted = ps.write_queue.push_many(writes)
        if admitted < len(writes):
            self._refuse_writes(writes[admitted:], ErrorCode.BUSY)
        if admitted:
            self._pump_writes()

    def queue_writes(self, writes: Sequence[QueuedWrite]) -> bool:
        """Queue `writes` when that is ALL on_client_writes(writes) would do, and say so; otherwise
        change nothing and return False (then run on_client_writes).

        Under load most client-write events find a round in flight: on_client_writes would admit
        every write and its _pump_writes would prepare nothing, so its Ready is empty. This does the
        same without building and checking an event's output (cProfile, YCSB A at 192 tasks: ~4.5 of
        the ~12 core events per mutation). The replica's invariants (_check_invariants) do not read
        the write queue, so they hold after this as they held before; push_many checks its own.
        """
        if self._out is not None:
            violated(f"{self}: event entered while another event runs")
        ps = self._primary
        if (
            ps is None
            or self._recovered_apply  # the first event's Ready must hand these out
            or self._status != _PRIMARY
            or self._now >= self._lease_until  # lease_valid(self._now), inlined
            or not self._enough_members()
        ):
            return False
        queue = ps.write_queue
        if len(writes) > queue.max_writes - len(queue):
            return False  # some would be refused BUSY: a reply to make
        plist = self.plist
        uncommitted = plist.max_decree - plist.last_committed_decree
        # _pump_writes prepares nothing while the window is full or the prepare list has no room
        # (has_room_for(max_decree + 1), inlined: uncommitted + 1 <= capacity).
        if uncommitted < self.options.max_inflight_mutations and uncommitted < plist.capacity:
            return False
        queue.push_many(writes)
        return True

    def _refuse_writes(self, writes: Sequence[QueuedWrite], code: ErrorCode) -> None:
        replies = self._o.replies
        for write in writes:
            replies.append(ClientReply(write.token, code))

    def _admit_write(self, write: QueuedWrite) -> bool:
        """Queue a client write, or refuse it (NOT_PRIMARY, NOT_ENOUGH_MEMBER, BUSY)."""
        ps = self._primary
        if self._status != _PRIMARY or ps is None or not self.lease_valid(self._now):
            self._reply(write.token, ErrorCode.NOT_PRIMARY)
            return False
        if not self._enough_members():
            self._reply(write.token, ErrorCode.NOT_ENOUGH_MEMBER)
            return False
        if ps.write_queue.is_full:
            self._reply(write.token, ErrorCode.BUSY)
            return False
        ps.write_queue.push(write)
        return True

    @_event
    def on_message(self, sender: NodeAddress, message: Message) -> None:
        gpid = getattr(message, "gpid", None)
        if gpid != self.gpid:
            violated(f"{self}: message for {gpid} routed here")
        if isinstance(message, Prepare):
            self._on_prepare(sender, message)
        elif isinstance(message, PrepareAck):
            self._on_prepare_ack(sender, message)
        elif isinstance(message, GroupCheck):
            self._on_group_check(sender, message)
        elif isinstance(message, GroupCheckAck):
            self._on_group_check_ack(sender, message)
        elif isinstance(message, LearnRequest):
            self._on_learn_request(sender, message)
        elif isinstance(message, LearnResponse):
            self._on_learn_response(sender, message)
        elif isinstance(message, LearnCompletionNotice):
            self._on_learn_completion(sender, message)
        else:
            require(False, f"{self}: not a replica message: {type(message).__name__}")

    @_event
    def on_log_durable(self, ballot: int, decree: int) -> None:
        """The log is durable through the appended mutation (ballot, decree) and all before it."""
        if self._mark_durable(ballot, decree) and self._status == _PRIMARY:
            self._try_commit()

    def log_durable_quietly(self, ballot: int, decree: int) -> bool:
        """on_log_durable(ballot, decree) when it has no output to give, i.e. on any replica but a
        primary (only a primary commits on durability): marks the log durable and returns True.
        Otherwise changes nothing and returns False (then run on_log_durable).

        A secondary gets one such event per mutation: this skips building and checking an event's
        output for it. The replica's invariants (_check_invariants) do not read what is unsynced, so
        they hold after this as they held before.
        """
        if self._out is not None:
            violated(f"{self}: event entered while another event runs")
        if self._status == _PRIMARY or self._recovered_apply:
            return False
        self._mark_durable(ballot, decree)
        return True

    def _mark_durable(self, ballot: int, decree: int) -> bool:
        """Forget the appends up to (ballot, decree); False if none was waiting for it."""
        key = (ballot, decree)
        counts = self._unsynced_count
        if key not in counts:
            return False  # reported twice, or for an append this incarnation did not make
        unsynced = self._unsynced
        while unsynced:
            head = unsynced.popleft()
            left = counts[head] - 1
            if left:
                counts[head] = left
            else:
                del counts[head]
            if head == key:
                break
        return True

    @_event
    def on_config(self, config: PartitionConfiguration) -> None:
        self._on_config(config)

    @_event
    def on_config_command(self, command: ConfigCommand) -> None:
        config = command.config
        require(config.gpid == self.gpid, f"{self}: command for {config.gpid} routed here")
        if command.config_type in (ConfigType.ADD_SECONDARY, ConfigType.ADD_SECONDARY_FOR_LB):
            self._on_config(config)
            if self._status == _PRIMARY and config.ballot == self._ballot:
                self._add_learner(command.node)
        elif command.config_type == ConfigType.REMOVE:
            # The node drops the replica; here it only stops acting as a member.
            if config.ballot >= self._ballot and self.me not in config.members:
                self._ballot = config.ballot
                self._become_inactive()
        else:
            self._on_config(config)

    @_event
    def on_config_proposal_response(self, response: ConfigProposalResponse) -> None:
        ps = self._primary
        if ps is not None and ps.pending_proposal is not None:
            pending = ps.pending_proposal
            if response.config.ballot > pending.config.ballot or not response.accepted:
                ps.pending_proposal = None
                if not response.accepted:
                    ps.proposal_retry_tick = self._now + self.options.proposal_timeout_ticks
        self._on_config(response.config)

    @_event
    def on_log_read(self, request_id: int, mutations: Sequence[Mutation]) -> None:
        session = self._session_waiting_for(request_id)
        if session is None:
            return
        session.pending_request_id = 0
        first = session.pending_from_decree
        usable: list[Mutation] = []
        for expected, mutation in enumerate(mutations, start=first):
            require(mutation.decree == expected, f"{self}: log read returned decree {mutation.decree}")
            if expected > self.plist.last_committed_decree or expected >= session.prepare_start_decree:
                break
            usable.append(mutation)
        if not usable:
            # The log no longer has it (collected meanwhile): fall back to a checkpoint.
            self._request_checkpoint_for(session)
            return
        self._send_learn_response(session, LearnKind.LOG, usable)

    @_event
    def on_checkpoint_made(self, request_id: int, checkpoint_decree: int, checkpoint_ref: str) -> None:
        session = self._session_waiting_for(request_id)
        if session is None:
            return
        session.pending_request_id = 0
        require(
            checkpoint_decree <= self.plist.last_committed_decree,
            f"{self}: checkpoint at {checkpoint_decree} beyond the commit point",
        )
        self._send_learn_response(
            session,
            LearnKind.CHECKPOINT,
            [],
            checkpoint_decree=checkpoint_decree,
            checkpoint_ref=checkpoint_ref,
        )

    @_event
    def on_checkpoint_installed(self, request_id: int) -> None:
        learner = self._learner
        if (
            learner is None
            or learner.phase != LearnerPhase.INSTALLING
            or learner.install_request_id != request_id
        ):
            return
        decree = learner.install_decree
        self.plist.reset(decree)
        self._confirmed = decree
        self._log_start_decree = decree + 1
        learner.install_request_id = 0
        learner.installed_checkpoint_decree = decree
        self._send_learn_request()

    @_event
    def on_request_failed(self, request_id: int, reason: str) -> None:
        learner = self._learner
        if learner is not None and learner.install_request_id == request_id:
            # Wait for the learn timeout, then start a new attempt (which may pick another way).
            learner.install_request_id = 0
            learner.phase = LearnerPhase.REQUESTING
            return
        session = self._session_waiting_for(request_id)
        if session is None:
            return
        session.pending_request_id = 0
        if session.pending_from_decree > 0:
            self._request_checkpoint_for(session)  # the log could not be read: copy a checkpoint
        else:
            self._drop_learner(session.node)  # no checkpoint either: meta will add a learner again

    @_event
    def on_log_truncated(self, start_decree: int) -> None:
        require(start_decree >= 1, f"{self}: log start {start_decree}")
        self._log_start_decree = max(self._log_start_decree, start_decree)

    @_event
    def on_removed(self) -> None:
        """Meta's configuration sync no longer names this replica a member: stop acting as one."""
        if self._status in (_PRIMARY, _SECONDARY):
            self._become_inactive()

    @_event
    def on_local_failure(self, reason: str) -> None:
        self._drop_roles()
        self._status = PartitionStatus.ERROR

    # --- configuration ------------------------------------------------------------------------

    def _on_config(self, config: PartitionConfiguration) -> None:
        require(config.gpid == self.gpid, f"{self}: configuration of {config.gpid} routed here")
        if self._status == PartitionStatus.ERROR or config.ballot < self._ballot:
            return
        learner = self._learner
        if learner is not None and config.primary == learner.primary and self.me not in config.members:
            # The primary we learn from moved to a newer ballot (another member changed): keep learning.
            self._ballot = config.ballot
            self._config = config
            return
        if config.ballot == self._ballot:
            # No role changes under the same ballot: meta never gives one ballot two configurations.
            # In particular a restarted replica never resumes as primary under its old ballot, since
            # it could assign a decree it had prepared before the crash a second time.
            if self._status == config.status_of(self.me) and self._status in (
                _PRIMARY,
                _SECONDARY,
            ):
                self._config = config
            return
        self._adopt(config)

    def _adopt(self, config: PartitionConfiguration) -> None:
        """Move to the role `config` (a newer ballot) gives this replica."""
        require(config.ballot > self._ballot, f"{self}: adopting ballot {config.ballot}")
        role = config.status_of(self.me)
        learner = self._learner
        self._ballot = config.ballot
        self._config = config
        if role == _PRIMARY:
            self._become_primary()
        elif role == _SECONDARY:
            if learner is not None and learner.phase != LearnerPhase.COMPLETE:
                # Named secondary before learning finished (a stale upgrade): refusing keeps the
                # commit invariant; the primary will see NOT_MEMBER and propose removal.
                self._become_inactive()
            else:
                self._become_secondary()
        else:
            self._become_inactive()

    def _become_primary(self) -> None:
        """Reconciliation: re-prepare the whole uncommitted tail under the new ballot."""
        config = self._config
        require(config is not None and config.primary == self.me, f"{self}: primary without config")
        assert config is not None
        ps = self._primary if self._status == _PRIMARY else None
        newly_primary = ps is None
        if ps is None:
            self._drop_roles()
            ps = PrimaryState(
                write_queue=WriteQueue(self.options.max_queued_writes),
                reconcile_target=self.plist.max_decree,
            )
            self._primary = ps
        self._status = _PRIMARY
        ps.acks.clear()
        ps.sent_tick.clear()
        ps.last_resend.clear()
        ps.pending_proposal = None
        ps.proposal_retry_tick = 0
        for node in [n for n in ps.learners if n in config.members]:
            del ps.learners[node]
        tail = self.plist.uncommitted()
        if not tail:
            # Nothing to re-prepare: an empty mutation writes the new ballot to the log instead
            # (Pegasus's empty write of a new primary; Raft's leader no-op).
            tail = [
                Mutation(
                    ballot=self._ballot,
                    decree=self.plist.max_decree + 1,
                    timestamp_us=self._last_timestamp_us + 1,
                    writes=[],
                )
            ]
        ps.ballot_record = (self._ballot, tail[0].decree)
        for mutation in tail:
            rebranded = self._rebrand(mutation)
            self.plist.prepare(rebranded)
            self._persist(rebranded, force=True)
            self._last_timestamp_us = max(self._last_timestamp_us, rebranded.timestamp_us)
            self._send_prepare_to_all(rebranded)
        if newly_primary:
            # Reads wait until everything prepared before (and the empty mutation) is committed.
            ps.reconcile_target = self.plist.max_decree
        self._confirmed = self.plist.max_decree
        self._send_group_checks()
        self._try_commit()

    def _become_secondary(self) -> None:
        learner = self._learner
        if learner is not None:
            self._merge_held(learner)
        self._drop_roles()
        self._status = _SECONDARY
        self._confirmed = self.plist.last_committed_decree

    def _become_inactive(self) -> None:
        self._drop_roles()
        self._status = PartitionStatus.INACTIVE
        self._confirmed = self.plist.last_committed_decree

    def _drop_roles(self) -> None:
        """Leave primary or learner duties: answer every waiting client, forget the sub-state."""
        ps = self._primary
        if ps is not None:
            for item in ps.write_queue.drain():
                self._reply(item.token, ErrorCode.NOT_PRIMARY)
            for decree in sorted(ps.tokens):
                for token in ps.tokens[decree]:
                    # Prepared, not committed here: a later primary may still commit it.
                    self._reply(token, ErrorCode.TIMEOUT)
            ps.tokens.clear()
        self._primary = None
        self._learner = None

    # --- primary: writes and commits ----------------------------------------------------------

    def _enough_members(self) -> bool:
        config = self._config
        # len(config.members), counted without building that tuple (a property): ~7 calls per mutation.
        return (
            config is not None
            and (1 if config.primary else 0) + len(config.secondaries) >= self.options.min_replica_count
        )

    def _refuse_queued(self, code: ErrorCode) -> None:
        ps = self._primary
        if ps is not None:
            for item in ps.write_queue.drain():
                self._reply(item.token, code)

    def _pump_writes(self) -> None:
        """Batch queued writes into mutations while the two-phase-commit window has room."""
        ps = self._primary
        if ps is None:
            return
        queue = ps.write_queue
        if not queue or self._now >= self._lease_until:
            return
        if not self._enough_members():
            self._refuse_queued(ErrorCode.NOT_ENOUGH_MEMBER)
            return
        options = self.options
        plist = self.plist
        while queue and plist.uncommitted_count < options.max_inflight_mutations:
            decree = plist.max_decree + 1
            if not plist.has_room_for(decree):
                break
            batch = queue.pop_batch(options.max_batch_writes, options.max_batch_bytes)
            timestamp_us = max(self._last_timestamp_us + 1, max([item.timestamp_us for item in batch]))
            self._last_timestamp_us = timestamp_us
            mutation = Mutation(
                ballot=self._ballot,
                decree=decree,
                timestamp_us=timestamp_us,
                writes=[item.write for item in batch],
            )
            plist.prepare(mutation)
            self._confirmed = decree
            self._persist(mutation)
            ps.tokens[decree] = tuple([item.token for item in batch])
            self._send_prepare_to_all(mutation)

    def _send_prepare_to_all(self, mutation: Mutation) -> None:
        ps = self._primary
        config = self._config
        if ps is None or config is None:
            violated(f"{self}: preparing without being primary")
        if mutation.ballot != self._ballot:
            violated(f"{self}: preparing {mutation.decree} under an old ballot")
        decree = mutation.decree
        ps.acks[decree] = set()
        ps.sent_tick[decree] = self._now
        # One message for every receiver: they all get the same prepare.
        message = self._prepare_message(mutation)
        for node in config.secondaries:
            self._send_prepare(node, message)
        if ps.learners:
            for session in ps.learners.values():
                if session.needs_ack(decree):
                    self._send_prepare(session.node, message)

    def _send_prepare(self, to: NodeAddress, message: Prepare) -> None:
        """Prepares leave at once only once the ballot is durable in this replica's log."""
        ps = self._primary
        assert ps is not None
        out = self._out
        if out is None:
            violated(f"{self}: output outside an event")
        if ps.ballot_record in self._unsynced_count:
            out.send_after_persist.append(Outbound(to, message))
        else:
            out.send.append(Outbound(to, message))

    def _prepare_message(self, mutation: Mutation) -> Prepare:
        config = self._config
        assert config is not None
        return Prepare(
            gpid=self.gpid,
            config=config,
            mutation=mutation,
            last_committed_decree=self.plist.last_committed_decree,
        )

    def _try_commit(self) -> None:
        """Commit every decree that is durable here and acknowledged by all (PacificA 2PC)."""
        ps = self._primary
        if ps is None or self._now >= self._lease_until:
            return
        plist = self.plist
        committed = target = plist.last_committed_decree
        max_decree = plist.max_decree
        if target < max_decree:
            config = self._config
            assert config is not None
            secondaries = config.secondaries
            learners = ps.learners
            unsynced = self._unsynced_count
            ballot = self._ballot
            while target < max_decree:
                decree = target + 1
                entry = plist.get(decree)
                if entry is None:
                    violated(f"{self}: hole at decree {decree}")
                if entry.ballot != ballot:
                    violated(f"{self}: uncommitted {decree} from an older ballot")
                if (entry.ballot, entry.decree) in unsynced:
                    break  # not durable here yet (_is_durable)
                acked = ps.acks.get(decree, _NO_ACKS)
                if not acked.issuperset(secondaries):
                    break
                if learners and any(s.node not in acked for s in learners.values() if s.needs_ack(decree)):
                    break
                target = decree
        if target > committed:
            self._commit_to(target)
        self._pump_writes()

    def _commit_to(self, decree: int) -> None:
        """Move the commit point and hand the newly committed mutations to the runtime to apply."""
        ps = self._primary
        out = self._out
        if out is None:
            violated(f"{self}: output outside an event")
        apply = out.apply
        for mutation in self.plist.commit(decree):
            tokens: tuple[ClientToken, ...] = ()
            if ps is not None:
                committed = mutation.decree
                tokens = ps.tokens.pop(committed, ())
                ps.acks.pop(committed, None)
                ps.sent_tick.pop(committed, None)
                if tokens and len(tokens) != len(mutation.writes):
                    violated(f"{self}: {len(tokens)} tokens for {len(mutation.writes)} writes at {committed}")
            apply.append(Apply(mutation, tokens))
        committed_decree = self.plist.last_committed_decree
        if self._confirmed < committed_decree:
            self._confirmed = committed_decree

    def _primary_tick(self) -> None:
        ps = self._primary
        config = self._config
        assert ps is not None and config is not None
        if not self.lease_valid(self._now):
            # The lease lapsed: stop serving (PacificA primary invariant). Prepared mutations wait.
            self._refuse_queued(ErrorCode.NOT_PRIMARY)
            return
        silent_members: list[NodeAddress] = []
        silent_learners: list[NodeAddress] = []
        for decree in range(self.plist.last_committed_decree + 1, self.plist.max_decree + 1):
            waited = self._now - ps.sent_tick.get(decree, self._now)
            acked = ps.acks.get(decree, set())
            for node in config.secondaries:
                if (
                    node not in acked
                    and waited >= self.options.prepare_timeout_ticks
                    and node not in silent_members
                ):
                    silent_members.append(node)
            for session in ps.learners.values():
                if (
                    session.needs_ack(decree)
                    and session.node not in acked
                    and waited >= self.options.learner_prepare_timeout_ticks
                    and not self._upgrade_pending_for(session.node)
                    and session.node not in silent_learners
                ):
                    silent_learners.append(session.node)
        # A learner that gave up or died stops talking: forget it after it could have made all its
        # attempts (meta will ask for a learner again if the group still needs one).
        patience = self.options.learn_timeout_ticks * self.options.max_learn_attempts
        for session in ps.learners.values():
            if (
                self._now - session.last_heard_tick >= patience
                and not self._upgrade_pending_for(session.node)
                and session.node not in silent_learners
            ):
                silent_learners.append(session.node)
        for node in silent_learners:
            self._drop_learner(node)
        if ps.pending_proposal is not None:
            if self._now - ps.proposal_sent_tick >= self.options.proposal_timeout_ticks:
                # Meta may have lost it (restarted before persisting): send it again.
                ps.proposal_sent_tick = self._now
                self._o.propose.append(ps.pending_proposal)
        elif silent_members:
            self._propose(ConfigType.DOWNGRADE_TO_INACTIVE, silent_members[0])
        else:
            self._maybe_propose_upgrade()
        if self._now - ps.last_group_check_tick >= self.options.group_check_period_ticks:
            self._send_group_checks()
        self._try_commit()

    def _propose(self, config_type: ConfigType, node: NodeAddress) -> None:
        ps = self._primary
        config = self._config
        assert ps is not None and config is not None
        if ps.pending_proposal is not None or self._now < ps.proposal_retry_tick:
            return
        proposal = ConfigProposal(config=config, config_type=config_type, node=node)
        ps.pending_proposal = proposal
        ps.proposal_sent_tick = self._now
        self._o.propose.append(proposal)

    def _propose_removal(self, node: NodeAddress) -> None:
        config = self._config
        if config is not None and node in config.secondaries:
            self._propose(ConfigType.DOWNGRADE_TO_INACTIVE, node)

    def _maybe_propose_upgrade(self) -> None:
        ps = self._primary
        config = self._config
        assert ps is not None and config is not None
        for session in ps.learners.values():
            if session.completed:
                self._propose(ConfigType.UPGRADE_TO_SECONDARY, session.node)
                return

    def _upgrade_pending_for(self, node: NodeAddress) -> bool:
        ps = self._primary
        pending = ps.pending_proposal if ps else None
        return (
            pending is not None
            and pending.config_type == ConfigType.UPGRADE_TO_SECONDARY
            and pending.node == node
        )

    def _send_group_checks(self) -> None:
        ps = self._primary
        config = self._config
        assert ps is not None and config is not None
        ps.last_group_check_tick = self._now
        committed = self.plist.last_committed_decree
        for node in config.secondaries:
            self._send(node, GroupCheck(self.gpid, config, committed))
        for session in ps.learners.values():
            self._send(session.node, GroupCheck(self.gpid, config, committed, session.signature))

    def _on_prepare_ack(self, sender: NodeAddress, ack: PrepareAck) -> None:
        ps = self._primary
        config = self._config
        if self._status != _PRIMARY or ps is None or config is None:
            return
        if ack.ballot > self._ballot:
            self._o.request_config_sync = True  # someone knows a newer configuration: we may be deposed
            return
        if ack.ballot < self._ballot:
            return
        is_member = sender in config.secondaries
        session = ps.learners.get(sender)
        if not is_member and session is None:
            return
        if session is not None:
            session.last_heard_tick = self._now
        if ack.outcome == _OK:
            acked = ps.acks.get(ack.decree)
            if acked is not None:
                acked.add(sender)
                self._try_commit()
        elif ack.outcome == PrepareOutcome.GAP:
            self._resend(sender, ack.confirmed_decree + 1)
        elif is_member:
            self._propose_removal(sender)
        else:
            self._drop_learner(sender)

    def _resend(self, node: NodeAddress, from_decree: int) -> None:
        """A member missed prepares: send again what it misses from the prepare list, if held."""
        ps = self._primary
        assert ps is not None
        if from_decree < self.plist.start_decree:
            self._propose_removal(node)  # it must learn again; the prepare list cannot bridge it
            return
        if ps.last_resend.get(node) == (from_decree, self._now):
            return
        ps.last_resend[node] = (from_decree, self._now)
        for decree in range(from_decree, self.plist.max_decree + 1):
            entry = self.plist.get(decree)
            assert entry is not None
            self._send_prepare(node, self._prepare_message(self._rebrand(entry)))

    def _on_group_check_ack(self, sender: NodeAddress, ack: GroupCheckAck) -> None:
        ps = self._primary
        config = self._config
        if self._status != _PRIMARY or ps is None or config is None:
            return
        if ack.ballot > self._ballot:
            self._o.request_config_sync = True
            return
        session = ps.learners.get(sender)
        if session is not None and ack.learner_signature == session.signature:
            session.last_heard_tick = self._now
        if ack.outcome == _OK:
            return
        if sender in config.secondaries and ack.ballot == self._ballot:
            self._propose_removal(sender)
        elif sender in ps.learners and ack.learner_signature == ps.learners[sender].signature:
            self._drop_learner(sender)

    # --- primary: learners --------------------------------------------------------------------

    def _add_learner(self, node: NodeAddress) -> None:
        ps = self._primary
        config = self._config
        assert ps is not None and config is not None
        if node in config.members:
            return
        session = ps.learners.get(node)
        if session is None:
            if len(ps.learners) >= self.options.max_learners:
                return
            session = LearnerSession(
                node, make_signature(self._ballot, ps.next_signature_counter), last_heard_tick=self._now
            )
            ps.next_signature_counter += 1
            ps.learners[node] = session
        self._send(node, GroupCheck(self.gpid, config, self.plist.last_committed_decree, session.signature))

    def _drop_learner(self, node: NodeAddress) -> None:
        ps = self._primary
        if ps is not None and ps.learners.pop(node, None) is not None:
            for acked in ps.acks.values():
                acked.discard(node)
            self._try_commit()

    def _session_waiting_for(self, request_id: int) -> LearnerSession | None:
        ps = self._primary
        if self._status != _PRIMARY or ps is None or request_id == 0:
            return None
        for session in ps.learners.values():
            if session.pending_request_id == request_id:
                return session
        return None

    def _on_learn_request(self, sender: NodeAddress, request: LearnRequest) -> None:
        ps = self._primary
        if self._status != _PRIMARY or ps is None:
            self._refuse_learner(sender, request.signature, request.attempt)
            return
        if request.ballot > self._ballot:
            self._o.request_config_sync = True
            return
        session = ps.learners.get(sender)
        if session is None or session.signature != request.signature:
            self._refuse_learner(sender, request.signature, request.attempt)
            return
        session.last_heard_tick = self._now
        if request.restart and (request.attempt > session.attempt or request.attempt == 1):
            # A new attempt (attempt 1 again: the learner restarted and lost what it held). It holds
            # nothing uncommitted and its earlier acknowledgements are void: start over from here.
            # A duplicated restart request only restarts the session once more, which is safe: the
            # learner then learns everything before the new prepare start decree.
            session.attempt = request.attempt
            session.prepare_start_decree = self.plist.max_decree + 1
            session.pending_request_id = 0
            session.completed = False
            for acked in ps.acks.values():
                acked.discard(sender)
            self._try_commit()  # decrees before the new start no longer wait for this learner
        elif request.attempt != session.attempt:
            return  # a stale request of another attempt
        if session.pending_request_id:
            return  # already fetching its next batch
        self._serve_learner(session, request.last_prepared_decree + 1)

    def _serve_learner(self, session: LearnerSession, from_decree: int) -> None:
        """Choose how the learner catches up: prepare list, log, or checkpoint plus log tail."""
        start = session.prepare_start_decree
        batch = self.options.max_learn_batch_mutations
        if from_decree > self.plist.max_decree + 1:
            # It holds decrees this primary never prepared: its data diverged; replace it wholesale.
            self._request_checkpoint_for(session)
        elif from_decree >= start:
            self._send_learn_response(session, LearnKind.PREPARE_LIST, [])
        elif from_decree >= self.plist.start_decree:
            to_decree = min(start - 1, from_decree + batch - 1)
            self._send_learn_response(
                session, LearnKind.PREPARE_LIST, self.plist.entries(from_decree, to_decree)
            )
        elif from_decree >= self._log_start_decree:
            to_decree = min(self.plist.start_decree - 1, from_decree + batch - 1)
            request_id = self._new_request_id()
            session.pending_request_id = request_id
            session.pending_from_decree = from_decree
            self._o.requests.append(ReadLog(request_id, from_decree, to_decree))
        else:
            self._request_checkpoint_for(session)

    def _request_checkpoint_for(self, session: LearnerSession) -> None:
        request_id = self._new_request_id()
        session.pending_request_id = request_id
        session.pending_from_decree = 0
        self._o.requests.append(MakeCheckpoint(request_id))

    def _send_learn_response(
        self,
        session: LearnerSession,
        kind: LearnKind,
        mutations: list[Mutation],
        *,
        checkpoint_decree: int = 0,
        checkpoint_ref: str = "",
    ) -> None:
        self._send(
            session.node,
            LearnResponse(
                gpid=self.gpid,
                ballot=self._ballot,
                signature=session.signature,
                attempt=session.attempt,
                outcome=_OK,
                kind=kind,
                mutations=[self._rebrand(m) for m in mutations],
                primary_committed_decree=self.plist.last_committed_decree,
                prepare_start_decree=session.prepare_start_decree,
                checkpoint_decree=checkpoint_decree,
                checkpoint_ref=checkpoint_ref,
            ),
        )

    def _refuse_learner(self, node: NodeAddress, signature: int, attempt: int) -> None:
        self._send(
            node,
            LearnResponse(
                gpid=self.gpid,
                ballot=self._ballot,
                signature=signature,
                attempt=attempt,
                outcome=PrepareOutcome.NOT_LEARNER,
                kind=LearnKind.PREPARE_LIST,
                mutations=[],
                primary_committed_decree=self.plist.last_committed_decree,
                prepare_start_decree=0,
            ),
        )

    def _on_learn_completion(self, sender: NodeAddress, notice: LearnCompletionNotice) -> None:
        ps = self._primary
        session = ps.learners.get(sender) if ps is not None else None
        if ps is not None and self._config is not None and sender in self._config.members:
            return  # a late duplicate from a learner that has been upgraded meanwhile
        if self._status != _PRIMARY or session is None or session.signature != notice.signature:
            self._refuse_learner(sender, notice.signature, notice.attempt)
            return
        session.last_heard_tick = self._now
        if notice.attempt != session.attempt or session.prepare_start_decree == 0:
            return
        if notice.last_prepared_decree >= session.prepare_start_decree - 1:
            session.completed = True
            if ps is not None and ps.pending_proposal is None:
                self._maybe_propose_upgrade()
        elif not session.completed:
            # The session restarted under the learner's feet (a duplicated restart request): it
            # lacks decrees it will not ask for any more. Give up; meta adds a learner again.
            self._drop_learner(sender)
            self._refuse_learner(sender, notice.signature, notice.attempt)

    # --- secondary ----------------------------------------------------------------------------

    def _ack_prepare(self, to: NodeAddress, decree: int, outcome: PrepareOutcome) -> None:
        ack = PrepareAck(
            gpid=self.gpid,
            ballot=self._ballot,
            decree=decree,
            outcome=outcome,
            confirmed_decree=self._confirmed,
            last_committed_decree=self.plist.last_committed_decree,
        )
        if outcome == _OK:
            # An OK promises the mutation is durable here: it must not overtake the fsync.
            out = self._out
            if out is None:
                violated(f"{self}: output outside an event")
            out.send_after_persist.append(Outbound(to, ack))
        else:
            self._send(to, ack)

    def _on_prepare(self, sender: NodeAddress, message: Prepare) -> None:
        config = message.config
        mutation = message.mutation
        if mutation.ballot != config.ballot:
            violated(f"{self}: prepare of ballot {mutation.ballot} under {config.ballot}")
        if self._status == PartitionStatus.ERROR:
            self._ack_prepare(sender, mutation.decree, PrepareOutcome.NOT_MEMBER)
            return
        if config.ballot < self._ballot:
            self._ack_prepare(sender, mutation.decree, PrepareOutcome.STALE_BALLOT)
            return
        learner = self._learner
        if learner is not None and sender == learner.primary and self.me not in config.members:
            self._ballot = config.ballot
            self._config = config
            self._learner_on_prepare(sender, message, learner)
            return
        if config.ballot > self._ballot:
            if config.primary != sender:
                self._o.request_config_sync = True
                return
            self._adopt(config)
        if self._status != _SECONDARY or self._config is None or self._config.primary != sender:
            self._ack_prepare(sender, mutation.decree, PrepareOutcome.NOT_MEMBER)
            return
        self._observe_commit_point(message.last_committed_decree)
        decree = mutation.decree
        if decree <= self._confirmed:
            self._ack_prepare(sender, decree, _OK)
        elif decree == self._confirmed + 1:
            if not self.plist.has_room_for(decree):
                self._ack_prepare(sender, decree, PrepareOutcome.FULL)
                return
            if self.plist.prepare(mutation):
                self._persist(mutation)
            self._confirmed = decree
            self._ack_prepare(sender, decree, _OK)
        else:
            self._ack_prepare(sender, decree, PrepareOutcome.GAP)

    def _observe_commit_point(self, primary_committed: int) -> None:
        """Commit what the primary has committed, as far as this replica holds it.

        Every entry up to the primary's commit point is known to match it (the commit invariant: a
        decree commits only once every member prepared it), so it also counts as confirmed.
        """
        self._confirmed = max(self._confirmed, min(primary_committed, self.plist.max_decree))
        target = min(primary_committed, self._confirmed)
        if target > self.plist.last_committed_decree:
            self._commit_to(target)

    def _on_group_check(self, sender: NodeAddress, message: GroupCheck) -> None:
        config = message.config
        if self._status == PartitionStatus.ERROR:
            self._ack_group_check(sender, PrepareOutcome.NOT_MEMBER, message.learner_signature)
            return
        if config.ballot < self._ballot:
            self._ack_group_check(sender, PrepareOutcome.STALE_BALLOT, message.learner_signature)
            return
        if message.learner_signature:
            self._on_learner_group_check(sender, message)
            return
        if config.ballot > self._ballot:
            if config.primary != sender:
                self._o.request_config_sync = True
                return
            self._adopt(config)
        if self._status == _SECONDARY and self._config is not None and self._config.primary == sender:
            self._observe_commit_point(message.last_committed_decree)
            self._ack_group_check(sender, _OK, 0)
        else:
            self._ack_group_check(sender, PrepareOutcome.NOT_MEMBER, 0)

    def _ack_group_check(self, to: NodeAddress, outcome: PrepareOutcome, signature: int) -> None:
        self._send(
            to,
            GroupCheckAck(
                gpid=self.gpid,
                ballot=self._ballot,
                outcome=outcome,
                last_committed_decree=self.plist.last_committed_decree,
                confirmed_decree=self._confirmed,
                learner_signature=signature,
            ),
        )

    # --- learner ------------------------------------------------------------------------------

    def _on_learner_group_check(self, sender: NodeAddress, message: GroupCheck) -> None:
        config = message.config
        signature = message.learner_signature
        if self.me in config.members or (
            self._status in (_PRIMARY, _SECONDARY) and config.ballot == self._ballot
        ):
            self._ack_group_check(sender, PrepareOutcome.NOT_MEMBER, signature)
            return
        learner = self._learner
        if learner is not None and learner.primary == sender and learner.signature == signature:
            self._ballot = config.ballot
            self._config = config
            self._observe_learned_commit_point(message.last_committed_decree)
            self._ack_group_check(sender, _OK, signature)
            return
        # Start learning (PacificA "adding a replica"): keep what is committed, drop the rest.
        self._drop_roles()
        self._status = _LEARNER
        self._ballot = config.ballot
        self._config = config
        self.plist.truncate_uncommitted()
        self._confirmed = self.plist.last_committed_decree
        self._learner = LearnerState(primary=sender, signature=signature, attempt=1)
        self._ack_group_check(sender, _OK, signature)
        self._send_learn_request(restart=True)

    def _send_learn_request(self, *, restart: bool = False) -> None:
        learner = self._learner
        assert learner is not None
        learner.phase = LearnerPhase.REQUESTING
        learner.last_request_tick = self._now
        self._send(
            learner.primary,
            LearnRequest(
                gpid=self.gpid,
                ballot=self._ballot,
                signature=learner.signature,
                attempt=learner.attempt,
                last_committed_decree=self.plist.last_committed_decree,
                last_prepared_decree=self.plist.max_decree,
                restart=restart,
            ),
        )

    def _learner_tick(self) -> None:
        learner = self._learner
        assert learner is not None
        if self._now - learner.last_request_tick < self.options.learn_timeout_ticks:
            return
        if learner.phase == LearnerPhase.REQUESTING:
            if learner.attempt >= self.options.max_learn_attempts:
                self._become_inactive()  # give up; meta will add a learner again when it cures
            else:
                self._new_learn_attempt(learner)
        elif learner.phase == LearnerPhase.COMPLETE:
            # Still not upgraded: the notice may have been lost (a primary without our session
            # answers NOT_LEARNER, which ends this wait).
            learner.last_request_tick = self._now
            self._send_completion(learner)

    def _new_learn_attempt(self, learner: LearnerState) -> None:
        """Start learning again from the committed state (timeout, failed install, lost answer)."""
        learner.attempt += 1
        learner.prepare_start_decree = 0
        learner.held.clear()
        learner.install_request_id = 0
        learner.installed_checkpoint_decree = -1
        self.plist.truncate_uncommitted()
        self._confirmed = self.plist.last_committed_decree
        self._send_learn_request(restart=True)

    def _on_learn_response(self, sender: NodeAddress, response: LearnResponse) -> None:
        learner = self._learner
        if (
            learner is None
            or sender != learner.primary
            or response.signature != learner.signature
            or response.attempt != learner.attempt
        ):
            return
        if response.outcome != _OK:
            self._become_inactive()  # the primary dropped this session; meta will add a learner again
            return
        if learner.phase != LearnerPhase.REQUESTING:
            return
        # The session (signature, attempt) identifies the answer; the primary's ballot may have moved
        # on since it was sent without changing what it says.
        self._ballot = max(self._ballot, response.ballot)
        learner.prepare_start_decree = response.prepare_start_decree
        if response.kind == LearnKind.CHECKPOINT:
            if response.checkpoint_decree == learner.installed_checkpoint_decree:
                return  # a duplicate of the answer whose checkpoint this attempt installed already
            learner.phase = LearnerPhase.INSTALLING
            learner.install_request_id = self._new_request_id()
            learner.install_decree = response.checkpoint_decree
            self._o.requests.append(
                InstallCheckpoint(
                    learner.install_request_id, sender, response.checkpoint_ref, response.checkpoint_decree
                )
            )
            return
        if response.mutations and response.mutations[0].decree != self.plist.max_decree + 1:
            return  # an answer to an earlier request of this attempt (duplicated on the way)
        for mutation in response.mutations:
            if not self.plist.has_room_for(mutation.decree):
                # Commit what the primary has committed to make room; stop if that is not enough.
                self._observe_learned_commit_point(response.primary_committed_decree)
                if not self.plist.has_room_for(mutation.decree):
                    break
            self.plist.prepare(mutation)
            self._persist(mutation)
        self._observe_learned_commit_point(response.primary_committed_decree)
        self._learner_progress(learner)

    def _observe_learned_commit_point(self, primary_committed: int) -> None:
        """Everything a learner holds came from its primary in this attempt, so it all matches.

        Nothing is applied while a checkpoint is being installed: the store is being replaced.
        """
        learner = self._learner
        if learner is not None and learner.phase == LearnerPhase.INSTALLING:
            return
        self._confirmed = self.plist.max_decree
        target = min(primary_committed, self.plist.max_decree)
        if target > self.plist.last_committed_decree:
            self._commit_to(target)

    def _learner_progress(self, learner: LearnerState) -> None:
        if learner.prepare_start_decree and self.plist.max_decree >= learner.prepare_start_decree - 1:
            self._merge_held(learner)
            learner.phase = LearnerPhase.COMPLETE
            learner.last_request_tick = self._now
            self._send_completion(learner)
        else:
            self._send_learn_request()

    def _merge_held(self, learner: LearnerState) -> None:
        """Move held prepares that now continue the prepare list into it.

        They were persisted on receipt, before the learned entries below them; appending them
        again keeps the log in decree order for a recovery replay.
        """
        if not learner.prepare_start_decree or self.plist.max_decree < learner.prepare_start_decree - 1:
            return
        while True:
            decree = self.plist.max_decree + 1
            mutation = learner.held.get(decree)
            if mutation is None or not self.plist.has_room_for(decree):
                break
            del learner.held[decree]
            self.plist.prepare(mutation)
            self._persist(mutation, force=True)
        for decree in [d for d in learner.held if d <= self.plist.max_decree]:
            del learner.held[decree]
        self._confirmed = self.plist.max_decree

    def _send_completion(self, learner: LearnerState) -> None:
        self._o.send_after_persist.append(
            Outbound(
                learner.primary,
                LearnCompletionNotice(
                    gpid=self.gpid,
                    ballot=self._ballot,
                    signature=learner.signature,
                    attempt=learner.attempt,
                    last_prepared_decree=self.plist.max_decree,
                ),
            )
        )

    def _learner_on_prepare(self, sender: NodeAddress, message: Prepare, learner: LearnerState) -> None:
        """Prepares reach a learner from its prepare start decree on: hold, persist, acknowledge."""
        mutation = message.mutation
        decree = mutation.decree
        if decree > self.plist.last_committed_decree:
            held = learner.held.get(decree)
            entry = self.plist.get(decree)
            if entry is not None and learner.phase == LearnerPhase.COMPLETE:
                pass  # already in the prepare list (a re-prepare under a newer ballot: same mutation)
            elif held is None or held.ballot < mutation.ballot:
                if held is None and (
                    len(learner.held) >= self.options.prepare_list_capacity
                    or not self._learner_may_hold(decree)
                ):
                    self._ack_prepare(sender, decree, PrepareOutcome.FULL)
                    return
                learner.held[decree] = mutation
                self._persist(mutation)
        self._ack_prepare(sender, decree, _OK)
        if learner.phase == LearnerPhase.COMPLETE:
            self._merge_held(learner)
        self._observe_learned_commit_point(message.last_committed_decree)

    # --- plumbing -----------------------------------------------------------------------------

    @property
    def _o(self) -> Ready:
        out = self._out
        if out is None:
            violated(f"{self}: output outside an event")
        return out

    def _send(self, to: NodeAddress, message: Message) -> None:
        out = self._out  # _o, inlined on the per-mutation paths
        if out is None:
            violated(f"{self}: output outside an event")
        out.send.append(Outbound(to, message))

    def _reply(self, token: ClientToken, code: ErrorCode) -> None:
        self._o.replies.append(ClientReply(token, code))

    def _learner_may_hold(self, decree: int) -> bool:
        """Whether a learner may log a held prepare at `decree` now.

        A held prepare is logged before the entries learned below it. If the log still holds
        prepares this replica dropped from memory when it began to learn (its uncommitted tail,
        perhaps never committed), a recovery replay would chain the held prepare onto them and,
        since a record of decree D proves D - capacity committed (PrepareList.recover), could
        apply one of them. So the learner holds only prepares that continue what it has learned,
        or that no stale record can reach; the primary resends the others (FULL).
        """
        return decree <= self.plist.max_decree + 1 or decree > self._log_max_decree + 1

    def _persist(self, mutation: Mutation, *, force: bool = False) -> None:
        key = (mutation.ballot, mutation.decree)
        counts = self._unsynced_count
        count = counts.get(key, 0)
        if count and not force:
            return  # the earlier append of the very same mutation is still on its way to disk
        out = self._out
        if out is None:
            violated(f"{self}: output outside an event")
        if mutation.decree > self._log_max_decree:
            self._log_max_decree = mutation.decree
        out.persist.append(mutation)
        self._unsynced.append(key)
        counts[key] = count + 1

    def _is_durable(self, mutation: Mutation) -> bool:
        return (mutation.ballot, mutation.decree) not in self._unsynced_count

    def _rebrand(self, mutation: Mutation) -> Mutation:
        if mutation.ballot == self._ballot:
            return mutation
        return msgspec.structs.replace(mutation, ballot=self._ballot)

    def _new_request_id(self) -> int:
        request_id = self._next_request_id
        self._next_request_id += 1
        return request_id

    def _check_invariants(self) -> None:
        # Runs after every event, O(1) but for the tokens of the mutations in two-phase commit (at
        # most max_inflight_mutations): each message is formatted only when its check fails.
        plist = self.plist
        committed = plist.last_committed_decree
        max_decree = plist.max_decree
        confirmed = self._confirmed
        status = self._status
        ps = self._primary
        if not committed <= confirmed <= max_decree:
            violated(f"{self}: confirmed {confirmed} beyond [{committed}, {max_decree}]")
        if (ps is not None) != (status == _PRIMARY):
            violated(f"{self}: primary state")
        if (self._learner is not None) != (status == _LEARNER):
            violated(f"{self}: learner state")
        if ps is not None:
            config = self._config
            if config is None or config.primary != self.me:
                violated(f"{self}: primary not named by its config")
            if config.ballot != self._ballot:
                violated(f"{self}: config ballot differs")
            if confirmed != max_decree:
                violated(f"{self}: primary confirmed below its max decree")
            if max_decree - committed > plist.capacity:
                violated(f"{self}: {max_decree - committed} uncommitted mutations")
            tokens = ps.tokens
            if tokens and min(tokens) <= committed:
                violated(f"{self}: tokens kept for committed decree {min(tokens)}")
        elif status == _SECONDARY and (self._config is None or self._config.ballot != self._ballot):
            violated(f"{self}: secondary config")
