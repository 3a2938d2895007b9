"""The prepare list: the mutations one replica holds around its commit point, in decree order.

PacificA calls it the prepared list: every mutation a replica prepared and may still need. It is a
contiguous run of decrees [start_decree, max_decree] with a commit point inside:

- entries up to `last_committed_decree` are committed; they stay as a cache that learners can copy
  ("learn from cache", Pegasus) until room is needed, then the oldest are evicted;
- entries after it are prepared, not (known to be) committed; they are never evicted, so at most
  `capacity` of them exist (Pegasus max_mutation_count_in_prepare_list, 110).

Invariants (checked on every change): decrees are contiguous; one (ballot, decree) names one
mutation; an entry is replaced only by a higher ballot (see prepare() for what that drops);
start_decree - 1 <= last_committed_decree <= max_decree.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable

from pegasus_kv.core.mutation import Mutation
from pegasus_kv.replication.pacifica.invariant import require, violated


def same_mutation(a: Mutation, b: Mutation) -> bool:
    """The same mutation, whatever ballot each copy carries (a re-prepare only re-brands it)."""
    return (
        a.decree == b.decree
        and a.timestamp_us == b.timestamp_us
        and a.cluster_id == b.cluster_id
        and a.writes == b.writes
    )


@dataclasses.dataclass(frozen=True, slots=True)
class LogRecovery:
    """What a log replay recovers: the prepare list, and the mutations after the store's decree
    that the replay proved committed (decree order, contiguous from the store's decree + 1): the
    runtime applies them before anything else (the Replica hands them out in its first Ready)."""

    plist: PrepareList
    committed: list[Mutation]


class PrepareList:
    def __init__(self, capacity: int, last_committed_decree: int = 0) -> None:
        require(capacity >= 1, f"prepare list capacity {capacity} must be positive")
        require(last_committed_decree >= 0, f"negative committed decree {last_committed_decree}")
        self.capacity = capacity
        self._entries: deque[Mutation] = deque()
        # Decree of _entries[0]; when empty, the decree the next entry must have.
        self._first = last_committed_decree + 1
        # Plain attributes, not properties: the replica reads them a dozen times per mutation (a
        # property is a call each). Only this class changes them.
        self.last_committed_decree = last_committed_decree
        # The largest decree prepared: always _first + len(_entries) - 1 (the commit point when
        # nothing is held), kept rather than computed (checked by _check).
        self.max_decree = last_committed_decree

    # --- reading ------------------------------------------------------------------------------

    @property
    def start_decree(self) -> int:
        """The smallest decree held (last_committed_decree + 1 when nothing is held)."""
        return self._first

    @property
    def uncommitted_count(self) -> int:
        return self.max_decree - self.last_committed_decree

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, decree: int) -> Mutation | None:
        index = decree - self._first
        if 0 <= index < len(self._entries):
            return self._entries[index]
        return None

    def has_room_for(self, decree: int) -> bool:
        """Whether a mutation at `decree` would keep the uncommitted part within capacity."""
        return decree - self.last_committed_decree <= self.capacity

    def entries(self, from_decree: int, to_decree: int) -> list[Mutation]:
        """Held mutations with from_decree <= decree <= to_decree (the caller checks they are held)."""
        first = self._first
        if from_decree < first:
            violated(f"decree {from_decree} is below the prepare list {first}")
        if to_decree > self.max_decree:
            violated(f"decree {to_decree} is beyond the prepare list")
        entries = self._entries
        if from_decree == to_decree:
            return [entries[from_decree - first]]
        return [entries[d - first] for d in range(from_decree, to_decree + 1)]

    def uncommitted(self) -> list[Mutation]:
        return (
            self.entries(self.last_committed_decree + 1, self.max_decree)
            if self.max_decree > self.last_committed_decree
            else []
        )

    # --- changing -----------------------------------------------------------------------------

    def prepare(self, mutation: Mutation) -> bool:
        """Hold `mutation` at its decree; returns False when the very same entry is already held.

        The decree must be uncommitted and at most max_decree + 1. An entry already held at that
        decree with a lower ballot is replaced:
        - by the same mutation re-branded under a newer ballot (a new primary re-prepares its tail):
          only the ballot changes, and every entry after it stays; some of them may be committed
          already, and the new primary will re-prepare them in turn;
        - by a different mutation: then the held one was never committed (a new primary holds every
          committed decree), nor was anything after it, so they are all dropped (PacificA
          reconciliation: secondaries drop what the new primary does not have).
        """
        decree = mutation.decree
        if decree <= self.last_committed_decree:
            violated(f"decree {decree} is already committed")
        if decree > self.max_decree + 1:
            violated(f"decree {decree} leaves a gap after {self.max_decree}")
        if decree - self.last_committed_decree > self.capacity:
            violated(f"decree {decree} exceeds the prepare list capacity")
        if decree == self.max_decree + 1:  # the common case: a new decree at the end
            entries = self._entries
            entries.append(mutation)
            self.max_decree = decree
            if len(entries) > self.capacity:  # _evict has nothing to do otherwise (entries is not empty)
                self._evict()
            self._check()
            return True
        existing = self._entries[decree - self._first]
        if mutation.ballot < existing.ballot:
            violated(
                f"decree {decree}: ballot {mutation.ballot} would replace newer ballot {existing.ballot}"
            )
        if mutation.ballot == existing.ballot:
            # One primary assigns each decree once per ballot: same (ballot, decree), same mutation.
            if existing != mutation:
                violated(f"two different mutations at ballot {mutation.ballot} decree {decree}")
            return False
        if same_mutation(existing, mutation):
            self._entries[decree - self._first] = mutation
        else:
            self._truncate_from(decree)
            self._entries.append(mutation)
            self.max_decree = decree
        self._check()
        return True

    def commit(self, decree: int) -> list[Mutation]:
        """Move the commit point up to `decree`; returns the newly committed mutations in order."""
        if decree > self.max_decree:
            violated(f"commit to {decree} beyond max decree {self.max_decree}")
        if decree <= self.last_committed_decree:
            return []
        newly = self.entries(self.last_committed_decree + 1, decree)
        self.last_committed_decree = decree
        if len(self._entries) > self.capacity:  # _evict has nothing to do otherwise (newly is held)
            self._evict()
        self._check()
        return newly

    def truncate_uncommitted(self) -> list[Mutation]:
        """Drop every uncommitted entry (a learner restarting, a replica reset); returns them."""
        dropped = self.uncommitted()
        self._truncate_from(self.last_committed_decree + 1)
        self._check()
        return dropped

    def truncate_after(self, decree: int) -> None:
        """Drop every entry after `decree` (which must not be before the commit point)."""
        require(decree >= self.last_committed_decree, f"truncating committed decrees after {decree}")
        self._truncate_from(decree + 1)
        self._check()

    def reset(self, last_committed_decree: int) -> None:
        """Forget everything: the store now stands at `last_committed_decree` (a checkpoint)."""
        require(last_committed_decree >= 0, f"negative committed decree {last_committed_decree}")
        self._entries.clear()
        self._first = last_committed_decree + 1
        self.last_committed_decree = last_committed_decree
        self.max_decree = last_committed_decree
        self._check()

    @classmethod
    def recover(cls, capacity: int, last_committed_decree: int, log: Iterable[Mutation]) -> LogRecovery:
        """Rebuild from a log replay: `log` in append order, the store at `last_committed_decree`.

        Replays every record through the same rule the live list follows: a record right after the
        last held decree is appended, one with a higher ballot replaces the held entry (dropping
        what follows when it is a different mutation, as the newer primary's prepare did before the
        crash), anything else is already held or out of order. A learner appends prepares it holds
        before the entries it learns below them, and appends them again once they continue its
        list, so a record that does not continue the list here is never one the replica
        acknowledged as a member.

        The store may lag the log by more than `capacity` decrees (RocksDB flushes when its
        memtable fills, not on a schedule). A record of ballot b for decree D shows that the
        primary of ballot b held D, and a primary never holds more than `capacity` decrees past
        its commit point (see has_room_for; its reconciliation tail was such a list too), so it
        had committed every decree up to D - capacity. The entries this replay holds below D are
        the ones the replica held when it logged D (a member accepts prepares in decree order,
        after confirming what precedes them; a learner logs a held prepare only where no prepare
        it dropped from memory can precede it, Replica._learner_may_hold), which match that
        primary's. So a record with no room commits the entries up to D - capacity instead of
        being dropped, and the runtime must apply them (LogRecovery.committed).
        """
        plist = cls(capacity, last_committed_decree)
        committed: list[Mutation] = []
        for mutation in log:
            decree = mutation.decree
            if decree <= plist.last_committed_decree or decree > plist.max_decree + 1:
                continue
            held = plist.get(decree)
            if held is not None and held.ballot >= mutation.ballot:
                continue
            if not plist.has_room_for(decree):
                committed.extend(plist.commit(decree - capacity))
            plist.prepare(mutation)
        return LogRecovery(plist, committed)

    # --- internals ----------------------------------------------------------------------------

    def _truncate_from(self, decree: int) -> None:
        entries = self._entries
        while entries and self.max_decree >= decree:
            entries.pop()
            self.max_decree -= 1
        if not entries:
            self._first = self.last_committed_decree + 1
            self.max_decree = self.last_committed_decree

    def _evict(self) -> None:
        entries = self._entries
        while len(entries) > self.capacity and self._first <= self.last_committed_decree:
            entries.popleft()
            self._first += 1
        if not entries:
            self._first = self.last_committed_decree + 1

    def _check(self) -> None:
        # O(1), after every change; messages are formatted only when a check fails.
        entries = self._entries
        count = len(entries)
        first = self._first
        last_committed = self.last_committed_decree
        if count > self.capacity:
            violated(f"prepare list holds {count} > capacity")
        if first - 1 > last_committed:
            violated("a gap between the commit point and the list")
        if self.max_decree != first + count - 1:
            violated(f"max decree {self.max_decree} does not match the entries held from {first}")
        if last_committed > self.max_decree:
            violated("commit point beyond the last prepared decree")
        if count:
            if entries[0].decree != first:
                violated("first entry has the wrong decree")
            if entries[-1].decree != self.max_decree:
                violated("decrees are not contiguous")
