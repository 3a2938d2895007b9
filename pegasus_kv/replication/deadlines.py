"""Call timeouts grouped into ticks, so that a call does not pay for a timer of its own.

A connection sends tens of thousands of calls a second and nearly all of them are answered long
before their timeout. One `loop.call_later` per call (and its cancel) was about 15% of an echo
round trip, so calls share timers instead: a deadline is rounded up to the next tick (5 ms by
default), every tick that holds calls gets one timer, and a call that finishes early only leaves
its tick's dict. A timeout therefore fires up to one tick late, never early.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from pegasus_kv.core.errors import InvalidArgumentError

DEFAULT_TICK_S = 0.005
_INFINITY = math.inf


class Deadlines:
    """Deadlines of keyed calls; `on_expired(key, timeout_s)` runs for each one still registered."""

    __slots__ = (
        "_last_after",
        "_last_keys",
        "_last_tick",
        "_last_until",
        "_loop",
        "_on_expired",
        "_tick_s",
        "_ticks",
        "_timers",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_expired: Callable[[int, float], None],
        *,
        tick_s: float = DEFAULT_TICK_S,
    ) -> None:
        if not (tick_s > 0 and math.isfinite(tick_s)):
            raise InvalidArgumentError(f"tick_s must be a positive number of seconds, got {tick_s!r}")
        self._loop = loop
        self._on_expired = on_expired
        self._tick_s = tick_s
        # tick -> {key: timeout_s}; a tick stays (maybe empty) until its timer fires: re-arming a
        # timer each time a tick empties and refills would cost what this class saves.
        self._ticks: dict[int, dict[int, float]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        # The tick the last add chose while it has not fired: a deadline in (after, until] goes
        # there without the rounding and the lookup (calls made together share a tick).
        self._last_tick = 0
        self._last_after = _INFINITY
        self._last_until = -_INFINITY
        self._last_keys: dict[int, float] = {}

    def add(self, key: int, timeout_s: float) -> dict[int, float]:
        """Register a deadline timeout_s from now; returns its tick's entries, to pass to `discard`.

        A caller on a hot path may forget the deadline itself with `entries.pop(key, None)`, which
        is all `discard` does: no Python frame and no lookup of the tick (once per client call).
        Popping from the entries of a tick that already fired is harmless: they are no longer read.
        """
        deadline = self._loop.time() + timeout_s
        if self._last_after < deadline <= self._last_until:
            last = self._last_keys
            last[key] = timeout_s
            return last
        tick_s = self._tick_s
        tick = math.ceil(deadline / tick_s)
        if tick * tick_s < deadline:  # the division rounded down by an ulp
            tick += 1
        keys = self._ticks.get(tick)
        if keys is None:
            keys = self._ticks[tick] = {}
            self._timers[tick] = self._loop.call_at(tick * tick_s, self._fire, tick)
        keys[key] = timeout_s
        self._last_tick = tick
        self._last_after = (tick - 1) * tick_s
        self._last_until = tick * tick_s
        self._last_keys = keys
        return keys

    def discard(self, key: int, entries: dict[int, float]) -> None:
        """The call finished (or expired): forget its deadline. Unknown keys are ignored."""
        entries.pop(key, None)

    @property
    def armed_timers(self) -> int:
        return len(self._timers)

    def close(self) -> None:
        """Cancel every timer; later `add`s still work (a closed connection rejects calls first)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._ticks.clear()
        self._forget_last()

    def _forget_last(self) -> None:
        self._last_after = _INFINITY
        self._last_until = -_INFINITY
        self._last_keys = {}

    def _fire(self, tick: int) -> None:
        if tick == self._last_tick:  # a tick that fired takes no more deadlines
            self._forget_last()
        self._timers.pop(tick, None)
        keys = self._ticks.pop(tick, None)
        if not keys:
            return
        for key, timeout_s in keys.items():
            self._on_expired(key, timeout_s)
