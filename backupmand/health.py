"""The health report: cheap checks of every component, run at once, each time-boxed.

The Database component is ``catalog.probe()``: the file opened is still there (not
deleted or replaced), passes SQLite's quick_check, and the last write worked.

``/health`` answers from a HealthCache: a report is reused for CACHE_SECONDS, and
callers arriving while one is being made wait for that one, so any number of
concurrent callers run each check (a psql, a bucket HEAD) at most once at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from .runtime import Runtime
from .version import build_info

log = structlog.get_logger("backupmand.health")

CHECK_TIMEOUT = 5.0
#: How long a report is served again before the checks run anew.
CACHE_SECONDS = 3.0


async def _check(kind: str, name: str, probe: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    try:
        await asyncio.wait_for(probe(), CHECK_TIMEOUT)
    except TimeoutError:
        log.warning("health.down", component=kind, name=name,
                    reason=f"no answer within {CHECK_TIMEOUT:g} s")
        return {"Status": "DOWN", "Components": None}
    except Exception as error:
        log.warning("health.down", component=kind, name=name, reason=str(error))
        return {"Status": "DOWN", "Components": None}
    return {"Status": "UP", "Components": None}


def _group(components: dict[str, dict[str, Any]]) -> dict[str, Any]:
    up = all(item["Status"] == "UP" for item in components.values())
    return {"Status": "UP" if up else "DOWN", "Components": components}


async def report(runtime: Runtime) -> dict[str, Any]:
    services = runtime.services
    groups: dict[str, dict[str, Callable[[], Awaitable[None]]]] = {
        "Drives": {label: drive.health for label, drive in services.drives.items()},
        "DataSources": {label: source.health for label, source in services.sources.items()},
        "Notifiers": {notifier.name: notifier.health for notifier in services.notifiers},
    }
    database, *results = await asyncio.gather(
        _check("Database", "catalog", services.catalog.probe),
        *(_check(kind, name, probe) for kind, probes in groups.items()
          for name, probe in probes.items()),
    )
    details: dict[str, Any] = {"Database": database}
    position = 0
    for kind, probes in groups.items():
        components = {}
        for name in probes:
            components[name] = results[position]
            position += 1
        details[kind] = _group(components)
    up = all(item["Status"] == "UP" for item in details.values())
    return {**build_info(), "Status": "UP" if up else "DOWN", "Details": details}


class HealthCache:
    """One report at a time, reused for ``seconds``, shared by every concurrent caller."""

    def __init__(self, runtime: Runtime, seconds: float = CACHE_SECONDS) -> None:
        self.runtime = runtime
        self.seconds = seconds
        self._report: dict[str, Any] | None = None
        self._made_at = 0.0
        self._running: asyncio.Future[dict[str, Any]] | None = None

    async def report(self) -> dict[str, Any]:
        if self._report is not None and time.monotonic() - self._made_at < self.seconds:
            return self._report
        if self._running is None:
            self._running = asyncio.ensure_future(self._make())
        # A caller that gives up (a closed connection) must not cancel the others' report.
        return await asyncio.shield(self._running)

    async def _make(self) -> dict[str, Any]:
        try:
            body = await report(self.runtime)
            self._report, self._made_at = body, time.monotonic()
            return body
        finally:
            self._running = None
