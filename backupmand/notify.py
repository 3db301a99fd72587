"""Telling every notifier, each within a time limit, none able to break the caller.

The typed calls of ``notifiers.base.Notifier`` go through ``tell``: a channel that
fails or hangs is logged (``notify.failed``, with the channel's name) and never
changes the outcome it reports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog

from .notifiers.base import Notifier

log = structlog.get_logger("backupmand.notify")

NOTIFY_TIMEOUT = 120.0


async def tell(notifiers: Sequence[Notifier], event: str,
               call: Callable[[Notifier], Awaitable[None]]) -> None:
    """Run ``call(notifier)`` for every notifier at once; log the failures."""
    async def one(notifier: Notifier) -> None:
        try:
            await asyncio.wait_for(call(notifier), NOTIFY_TIMEOUT)
        except Exception as error:
            log.error("notify.failed", channel=notifier.name, notify_event=event,
                      error=str(error) or type(error).__name__)

    if notifiers:
        await asyncio.gather(*(one(notifier) for notifier in notifiers))
