"""The event loop every pegasus-kv process runs on: uvloop when it is importable (DESIGN.md section 1).

uvloop roughly halves the per-request cost of the transport compared with the pure-Python selector
loop, so servers and the client start through `run()` (or install the policy with `install_uvloop()`
when something else creates the loop). Everything in the transport also works on the standard loop,
which is what platforms without uvloop (Windows) get.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on every platform we test
    _uvloop_loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
else:
    _uvloop_loop_factory = uvloop.new_event_loop


def uvloop_available() -> bool:
    return _uvloop_loop_factory is not None


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """The constructor of the fastest available event loop."""
    return _uvloop_loop_factory or asyncio.new_event_loop


def new_event_loop() -> asyncio.AbstractEventLoop:
    return loop_factory()()


def install_uvloop() -> bool:
    """Make uvloop the default for loops created through the asyncio policy; False when unavailable.

    Prefer `run()`: event loop policies are deprecated from Python 3.14 on. This is for code that
    hands loop creation to a third party (a test runner, a framework).
    """
    if _uvloop_loop_factory is None:
        logger.info("uvloop is not importable; staying on the standard asyncio loop")
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    """Run `main` to completion on a fresh uvloop loop (the standard loop when uvloop is missing)."""
    with asyncio.Runner(loop_factory=loop_factory(), debug=debug) as runner:
        return runner.run(main)
