"""Call deadlines share timers by tick: never early, forgotten once the call is done."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from pegasus_kv.replication.deadlines import Deadlines
from tests.unit.test_transport_support import on_both_loops, run

# uvloop's clock counts whole milliseconds: its times and our sums of them differ by an ulp or so.
FLOAT_NOISE_S = 1e-9


@on_both_loops
def test_a_deadline_fires_no_earlier_than_its_timeout_and_a_discarded_one_never(loop_name: str) -> None:
    async def story() -> None:
        loop = asyncio.get_running_loop()
        fired: dict[int, tuple[float, float]] = {}

        def expired(key: int, timeout_s: float) -> None:
            fired[key] = (loop.time(), timeout_s)

        deadlines = Deadlines(loop, expired, tick_s=0.01)
        started = loop.time()
        deadlines.add(1, 0.02)
        deadlines.add(2, 0.05)
        answered_in_time = deadlines.add(3, 0.05)
        deadlines.discard(3, answered_in_time)

        await asyncio.sleep(0.1)
        assert sorted(fired) == [1, 2]
        for fired_at, timeout_s in fired.values():
            assert fired_at - started >= timeout_s - FLOAT_NOISE_S
        assert deadlines.armed_timers == 0  # every tick's timer is spent

    run(loop_name, story())


@on_both_loops
def test_calls_made_together_share_one_timer_and_closing_cancels_them(loop_name: str) -> None:
    async def story() -> None:
        loop = asyncio.get_running_loop()
        fired: list[int] = []
        deadlines = Deadlines(loop, lambda key, timeout_s: fired.append(key), tick_s=0.05)
        for key in range(1000):
            deadlines.add(key, 0.02)
        assert deadlines.armed_timers <= 2  # a thousand calls, at most two ticks

        deadlines.close()
        assert deadlines.armed_timers == 0
        await asyncio.sleep(0.1)
        assert fired == []

    run(loop_name, story())


class _ManualLoop:
    """A clock set by hand and timers run by hand: what a loop gives Deadlines (time, call_at)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Callable[[int], None], int]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[int], None], tick: int) -> asyncio.TimerHandle:
        self.timers.append((when, callback, tick))
        return cast(asyncio.TimerHandle, None)


def test_a_deadline_added_after_its_tick_fired_early_still_fires() -> None:
    # uvloop counts whole milliseconds, so a timer may run while loop.time() still reads a little
    # less than the time it was set for; a call made then must not join the tick that just fired.
    loop = _ManualLoop()
    fired: list[int] = []
    deadlines = Deadlines(
        cast(asyncio.AbstractEventLoop, loop), lambda key, timeout_s: fired.append(key), tick_s=0.01
    )
    deadlines.add(1, 0.001)
    when, fire, tick = loop.timers.pop()
    assert when == 0.01
    loop.now = 0.0095  # the timer runs half a millisecond before its time
    fire(tick)
    assert fired == [1]

    deadlines.add(2, 0.0001)  # due at 0.0096: the fired tick would have taken it, and never fired again
    assert len(loop.timers) == 1
    when, fire, tick = loop.timers.pop()
    loop.now = when
    fire(tick)
    assert fired == [1, 2]
