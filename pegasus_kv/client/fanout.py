"""Run the per-partition parts of one call concurrently; the first failure cancels the rest."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from pegasus_kv.client.session import invariant


async def run_all(parts: list[Coroutine[Any, Any, None]], *, name: str) -> None:
    """Await every part; raise the first error after cancelling (and awaiting) the others.

    The tasks belong to this call: if the caller is cancelled they are cancelled too, so nothing
    outlives the call.
    """
    if len(parts) == 1:
        await parts[0]  # the common case needs no task
        return
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(part, name=f"{name} part {i}") for i, part in enumerate(parts)]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        # Also runs when we were cancelled: the parts unwind before the call does.
        results = await asyncio.gather(*tasks, return_exceptions=True)
    invariant(len(results) == len(tasks), "one result per part")
    for task in tasks:  # the first in input order among those that failed, for a stable error
        if task in done and not task.cancelled():
            error = task.exception()
            if error is not None:
                raise error
    invariant(not pending, "every part finished when none failed")
