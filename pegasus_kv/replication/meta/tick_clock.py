"""The meta server's clock: ticks counted from the Unix epoch, advanced by the monotonic clock.

The meta core takes time as a tick number (DESIGN.md section 10). Some ticks end up in the durable
state (a table's create_tick, a dropped table's expire_tick), so they must keep their meaning across
restarts and from one meta leader to the next: a counter starting at 0 in every process would make a
dropped table wait its whole hold period again after each restart. So tick = Unix time / tick length.

Within a process the tick only moves forward (the core asserts it): the wall clock is read once, at
construction, and from then on the monotonic clock measures the time elapsed, so a wall clock stepped
back by NTP cannot make a tick repeat, and one stepped forward cannot declare every replica server
dead at once. Two metas (or a restarted one) may disagree by their wall clocks' difference; only the
drop hold period depends on that, and it is days long.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pegasus_kv.core.errors import InvalidArgumentError


class TickClock:
    def __init__(
        self,
        tick_ms: int,
        *,
        wall_clock_s: Callable[[], float] = time.time,
        monotonic_s: Callable[[], float] = time.monotonic,
    ) -> None:
        if tick_ms < 1:
            raise InvalidArgumentError(f"tick_ms must be >= 1, got {tick_ms}")
        self.tick_ms = tick_ms
        self._monotonic_s = monotonic_s
        self._origin_wall_ms = wall_clock_s() * 1000.0
        self._origin_monotonic_s = monotonic_s()
        self._last_tick = 0

    def now(self) -> int:
        """The current tick: never smaller than a tick returned before."""
        elapsed_ms = (self._monotonic_s() - self._origin_monotonic_s) * 1000.0
        tick = int((self._origin_wall_ms + max(0.0, elapsed_ms)) // self.tick_ms)
        # A monotonic clock does not go back; the max keeps that true even for an injected one.
        self._last_tick = max(self._last_tick, tick)
        return self._last_tick

    def seconds_until_tick(self, tick: int) -> float:
        """How long until `tick` begins (0 when it has)."""
        elapsed_ms = (self._monotonic_s() - self._origin_monotonic_s) * 1000.0
        now_ms = self._origin_wall_ms + max(0.0, elapsed_ms)
        return max(0.0, (tick * self.tick_ms - now_ms) / 1000.0)
