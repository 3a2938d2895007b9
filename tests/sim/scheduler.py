"""A deterministic discrete-event scheduler: the simulator's only clock and only source of order.

Everything that happens in a simulated cluster (a message arriving, a tick, an fsync finishing, a
crash) is an event at a simulated time in milliseconds. Events at the same time run in the order
they were scheduled, so one seed always produces one history (TigerBeetle's VOPR, FoundationDB's
simulator). Randomness comes from the one `random.Random` the scheduler owns; every component draws
from it in event order, which is what makes a seed replay exactly.
"""

from __future__ import annotations

import collections
import heapq
import random
import zlib
from collections.abc import Callable

# A simulation that schedules more than this many pending events has a runaway feedback loop.
MAX_PENDING_EVENTS = 200_000


class SimulationError(AssertionError):
    """A broken assumption of the simulator itself (survives python -O)."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise SimulationError(message)


class _Event:
    __slots__ = ("action", "cancelled", "label", "time_ms")

    def __init__(self, time_ms: int, label: str, action: Callable[[], None]) -> None:
        self.time_ms = time_ms
        self.label = label
        self.action = action
        self.cancelled = False


class Timer:
    """A handle to cancel a scheduled event (a timer that is no longer wanted)."""

    __slots__ = ("_event",)

    def __init__(self, event: _Event) -> None:
        self._event = event

    def cancel(self) -> None:
        self._event.cancelled = True

    @property
    def time_ms(self) -> int:
        return self._event.time_ms


class Scheduler:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now_ms = 0
        self.steps = 0
        # (time, sequence number, event): the sequence number breaks ties in scheduling order.
        self._queue: list[tuple[int, int, _Event]] = []
        self._seq = 0
        # The most recent events, for a failure report.
        self.trace: collections.deque[tuple[int, str]] = collections.deque(maxlen=80)
        # A checksum of every event run so far (time and label), when asked for: two runs of one
        # seed must produce the same one, whatever the process (PYTHONHASHSEED included).
        self.record_fingerprint = False
        self.fingerprint = 0

    def at(self, time_ms: int, label: str, action: Callable[[], None]) -> Timer:
        require(time_ms >= self.now_ms, f"event {label!r} scheduled in the past ({time_ms} < {self.now_ms})")
        require(len(self._queue) < MAX_PENDING_EVENTS, "too many pending events: a runaway feedback loop")
        self._seq += 1
        event = _Event(time_ms, label, action)
        heapq.heappush(self._queue, (time_ms, self._seq, event))
        return Timer(event)

    def after(self, delay_ms: int, label: str, action: Callable[[], None]) -> Timer:
        require(delay_ms >= 0, f"negative delay for {label!r}")
        return self.at(self.now_ms + delay_ms, label, action)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def next_time_ms(self) -> int | None:
        while self._queue and self._queue[0][2].cancelled:
            heapq.heappop(self._queue)
        return self._queue[0][0] if self._queue else None

    def step(self) -> bool:
        """Run the next event; False when nothing is left."""
        while self._queue:
            _, _, event = heapq.heappop(self._queue)
            if event.cancelled:
                continue
            require(event.time_ms >= self.now_ms, "time went backwards")
            self.now_ms = event.time_ms
            self.steps += 1
            self.trace.append((event.time_ms, event.label))
            if self.record_fingerprint:
                self.fingerprint = zlib.crc32(f"{event.time_ms} {event.label}\n".encode(), self.fingerprint)
            event.action()
            return True
        return False

    def run_until(self, time_ms: int, after_step: Callable[[], None] | None = None) -> None:
        """Run every event up to `time_ms` (inclusive), calling `after_step` after each one."""
        while True:
            upcoming = self.next_time_ms()
            if upcoming is None or upcoming > time_ms:
                break
            self.step()
            if after_step is not None:
                after_step()
        self.now_ms = max(self.now_ms, time_ms)
