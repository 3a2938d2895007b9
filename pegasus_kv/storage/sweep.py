"""The background expiry sweep: finds expired records in bounded steps and deletes them.

Reads never return an expired record (they judge expiry by the clock); the sweep only reclaims
space. Which records it may delete is subtler than "expired by the local clock": incr,
check_and_set and check_and_mutate judge the old value by the *mutation's* timestamp, so that
every replica computes the same result. A replica applying an old mutation late (a secondary that
lags, a learner replaying the log) must still find a record that was alive at that mutation's
time. So the sweep deletes a record only if it expired at or before

    min(local clock, newest applied mutation timestamp) - safety margin

Mutations are applied in decree order with non-decreasing timestamps (the primary stamps them;
the margin absorbs a new primary whose clock is a little behind), so no later mutation can see
such a record alive. The deletes are plain RocksDB deletes outside any mutation: if they are lost
in a crash the records come back still expired, which is harmless.

A step first looks for candidates without any lock, then, holding the store's write lock, reads
each candidate again and deletes it only if it is still expired: a write that refreshed the key in
between wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from pegasus_kv.storage.engine import Engine
from pegasus_kv.storage.layout import USER_KEYS_END
from pegasus_kv.storage.reads import live_expire_ts


@dataclass(frozen=True, slots=True)
class SweepResult:
    examined: int  # records visited by this step
    deleted: int  # expired records deleted by this step
    cycle_complete: bool  # the step reached the end of the partition; the next starts over


class SweepScan(NamedTuple):
    candidates: list[bytes]
    examined: int
    next_cursor: bytes  # where the next step starts (inclusive); b"" = from the beginning
    cycle_complete: bool


def find_expired(engine: Engine, cursor: bytes, max_keys: int, threshold_epoch_s: int) -> SweepScan:
    """Visit up to `max_keys` records from `cursor`; collect those expired at the threshold."""
    candidates: list[bytes] = []
    examined = 0
    with engine.iterate(USER_KEYS_END) as iterator:
        iterator.seek(cursor)
        while iterator.valid():
            if examined >= max_keys:
                return SweepScan(candidates, examined, iterator.key(), False)
            examined += 1
            if live_expire_ts(iterator.value(), threshold_epoch_s) is None:
                candidates.append(iterator.key())
            iterator.next()
    return SweepScan(candidates, examined, b"", True)


def still_expired(engine: Engine, candidates: list[bytes], threshold_epoch_s: int) -> list[bytes]:
    """The candidates that are, right now, still stored and expired at the threshold.

    The caller holds the write lock, so nothing can refresh them before they are deleted."""
    if not candidates:
        return []
    raws = engine.multi_get(candidates)
    return [
        key
        for key, raw in zip(candidates, raws, strict=True)
        if raw is not None and live_expire_ts(raw, threshold_epoch_s) is None
    ]
