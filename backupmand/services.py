"""The ``Services`` bundle: everything a backup, a prune or a drill needs, built once by
runtime.Runtime. Its own module so that pipeline, retention and drills can share it
without importing each other."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from .catalog import Catalog
from .config import Settings
from .drives.base import Drive
from .locks import Locks
from .notifiers.base import Notifier
from .sources.base import Source


@dataclasses.dataclass
class Services:
    settings: Settings
    catalog: Catalog
    sources: dict[str, Source[Any]]
    drives: dict[str, Drive[Any]]
    notifiers: list[Notifier]
    dump_slots: asyncio.Semaphore
    #: Uploads that failed for good (after their retries), by drive, since start.
    upload_failures: Counter[str] = dataclasses.field(default_factory=Counter)
    #: Upload attempts that failed (retried or not), by drive, since start.
    upload_attempt_failures: Counter[str] = dataclasses.field(default_factory=Counter)
    #: Scheduled ticks that could not start their work, by job, since start.
    schedule_failures: Counter[str] = dataclasses.field(default_factory=Counter)
    #: Restore drills by (label, result) since start.
    verifications: Counter[tuple[str, str]] = dataclasses.field(default_factory=Counter)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    #: The per-source locks (retention holds one while it deletes a failed backup).
    locks: Locks | None = None
    #: Called with (label, step) as a backup moves on: feeds STATUS= and the CLI's progress.
    on_progress: Callable[[str, str], None] | None = None

    @property
    def host(self) -> str:
        return self.settings.host_name

    def progress(self, label: str, step: str) -> None:
        if self.on_progress is not None:
            self.on_progress(label, step)
