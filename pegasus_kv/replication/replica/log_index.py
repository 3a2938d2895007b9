"""Which logged record is the live one for each decree: the supersede rule of the mutation log.

The log is append-only, yet PacificA rewrites decrees: after a primary fails, the new primary
re-prepares its uncommitted tail under its higher ballot (reconciliation, PacificA section 3.3), and
a secondary may receive, under the new ballot, a different mutation for a decree it had prepared
under the old one. The rule, applied to records in the order they were logged:

1. Ballots never go down in log order (a replica rejects messages of an older ballot, so it never
   logs one after a newer one). The log refuses such an append; a replay that meets one reports
   corruption.
2. The later record for a decree replaces the earlier one.
3. A record (decree d, ballot b) that carries a *different* mutation than the earlier record for d
   (different timestamp, writes or cluster id) discards every earlier record for a decree above d
   whose ballot is below b. Why that is safe: the primary of ballot b was a member of the older
   configuration and re-prepares, unchanged, every mutation it had prepared; it assigns d afresh
   only when it never had the old d. Commit needs every member's ack and goes in decree order, so
   the old d and everything prepared after it were never committed: no client was told "ok".
4. A record that only re-prepares the same mutation under a higher ballot discards nothing. The
   records after it may have been committed and are re-prepared in turn; dropping them here would
   lose committed mutations if every replica crashed in the middle of reconciliation.
5. A record for a decree with no earlier record discards nothing either (prepares may arrive out of
   order within a ballot; a gap says nothing about the records after it).

What remains may still hold old-ballot records beyond the newest ballot's tail (rule 4 and 5 keep
them); they are prepared, not committed, and the replica core treats them by their ballot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

from pegasus_kv.core.ids import INVALID_DECREE
from pegasus_kv.replication.replica.invariants import violated


class Location(NamedTuple):
    """Where the live record of one decree lies: its ballot, segment (by sequence number) and bytes."""

    ballot: int
    segment_seq: int
    offset: int
    size_bytes: int


class LiveIndex:
    """Decree -> location of its live record, kept under the supersede rule.

    One small tuple per live decree; the log is collected below every durable checkpoint, so this
    holds the mutations since the last checkpoint or two.
    """

    def __init__(self) -> None:
        self._by_decree: dict[int, Location] = {}
        self._first_decree: int = INVALID_DECREE
        self._last_decree: int = INVALID_DECREE
        self._max_ballot = 0

    @property
    def first_decree(self) -> int:
        """The lowest decree with a live record, 0 when there is none."""
        return self._first_decree

    @property
    def last_decree(self) -> int:
        """The highest decree with a live record, 0 when there is none."""
        return self._last_decree

    @property
    def max_ballot(self) -> int:
        """The highest ballot logged so far (0 for an empty log)."""
        return self._max_ballot

    def __len__(self) -> int:
        return len(self._by_decree)

    def get(self, decree: int) -> Location | None:
        return self._by_decree.get(decree)

    def record(self, decree: int, location: Location, same_mutation: Callable[[Location], bool]) -> list[int]:
        """Take a newly logged record into the index; returns the decrees it discarded (rule 3).

        `same_mutation(earlier)` tells whether the earlier record for this decree carries the same
        mutation as the new one (only asked when the new record's ballot is higher).
        """
        if decree <= INVALID_DECREE:  # per logged record: messages formatted only on failure
            violated(f"decree {decree} must be positive")
        if location.ballot < self._max_ballot:
            violated(f"ballot went down to {location.ballot}")
        self._max_ballot = location.ballot
        earlier = self._by_decree.get(decree)
        discarded: list[int] = []
        if earlier is not None and earlier.ballot < location.ballot and not same_mutation(earlier):
            for later in self._decrees_above(decree):
                if self._by_decree[later].ballot < location.ballot:
                    discarded.append(later)
            for later in discarded:
                del self._by_decree[later]
        self._by_decree[decree] = location
        if self._first_decree == INVALID_DECREE or decree < self._first_decree:
            self._first_decree = decree
        if discarded and max(discarded) == self._last_decree:
            self._last_decree = max(self._decrees_above(decree - 1))
        self._last_decree = max(self._last_decree, decree)
        return discarded

    def forget_segments(self, segment_seqs: set[int]) -> None:
        """Drop the entries whose live record lies in a deleted segment (garbage collection)."""
        gone = [decree for decree, where in self._by_decree.items() if where.segment_seq in segment_seqs]
        for decree in gone:
            del self._by_decree[decree]
        if not self._by_decree:
            self._first_decree = self._last_decree = INVALID_DECREE
        elif gone:
            self._first_decree = min(self._by_decree)
            self._last_decree = max(self._by_decree)

    def decrees_between(self, low: int, high: int) -> Iterator[int]:
        """Live decrees in [low, high], ascending."""
        low = max(low, self._first_decree)
        high = min(high, self._last_decree)
        if low > high:
            return
        if high - low + 1 <= 2 * len(self._by_decree):
            yield from (decree for decree in range(low, high + 1) if decree in self._by_decree)
        else:  # a sparse index (a big gap in decrees): sort the keys instead of walking the range
            yield from sorted(decree for decree in self._by_decree if low <= decree <= high)

    def _decrees_above(self, decree: int) -> list[int]:
        return list(self.decrees_between(decree + 1, self._last_decree))
