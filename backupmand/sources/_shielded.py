"""Clean-up that a cancellation cannot cut short (scratch databases, scratch files)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def shielded(work: Awaitable[T]) -> T:
    """Await ``work`` to its end even when the caller is cancelled meanwhile.

    ``asyncio.shield`` alone only protects the inner task: the caller's ``await`` still
    raises at once, and a drill's ``finally`` would return while its scratch database
    is still being dropped. Here the caller waits for the work, then re-raises the
    cancellation it received.
    """
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
            continue
        if cancelled:
            raise asyncio.CancelledError
        return result
