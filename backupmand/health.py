"""The health report: cheap checks of every component, run at once, each time-boxed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from .runtime import Runtime
from .version import build_info

log = structlog.get_logger("backupmand.health")

CHECK_TIMEOUT = 5.0


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
        _check("Database", "catalog", services.catalog.ping),
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
