"""Reading the status page's facts: the catalog, the health report, the schedule."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Protocol

from .. import health
from ..models import utcnow
from ..runtime import Runtime
from ..schedule import resolve_timezone
from ..version import VERSION
from .view import Facts, strip_start


class ScheduleFacts(Protocol):
    """What the page asks of the daemon's scheduler.Schedule."""

    def next_run(self) -> dt.datetime | None: ...

    def interval(self) -> float | None: ...


def _zone_name(name: str | None, zone: dt.tzinfo) -> str:
    return name or getattr(zone, "key", None) or str(zone)


async def gather(runtime: Runtime, schedule: ScheduleFacts | None,
                 now: dt.datetime | None = None) -> Facts:
    settings = runtime.settings
    catalog = runtime.catalog
    moment = now or utcnow()
    zone_setting = settings.http.backup_job.timezone
    # The host's zone (no timezone configured) is read from /etc/localtime the first time.
    zone = await asyncio.to_thread(resolve_timezone, zone_setting)
    today = moment.astimezone(zone).date()
    # The health report runs beside the catalog reads: its probes are network round trips.
    report_task = asyncio.create_task(health.report(runtime))
    try:
        latest = await catalog.latest_by_label()
        last_finished = await catalog.last_finished_by_label()
        last_drilled = await catalog.latest_verified_by_label()
        last_uploads = await catalog.last_upload_by_drive()
        outcomes = await catalog.outcomes_since(strip_start(today, zone))
        report = await report_task
    finally:
        report_task.cancel()
    details = report["Details"]
    drive_components = details["Drives"]["Components"] or {}
    source_components = details["DataSources"]["Components"] or {}
    return Facts(
        now=moment, zone=zone, zone_name=_zone_name(zone_setting, zone),
        host=settings.host_name, version=VERSION,
        sources=[(source.label, source.provider) for source in settings.data_sources],
        drives=[(drive.label, drive.provider) for drive in settings.drives],
        latest=latest, last_finished=last_finished, last_drilled=last_drilled,
        running=dict(runtime.running),
        outcomes=outcomes,
        next_run=schedule.next_run() if schedule is not None else None,
        interval=schedule.interval() if schedule is not None else None,
        drive_health={label: item["Status"] for label, item in drive_components.items()},
        source_health={label: item["Status"] for label, item in source_components.items()},
        catalog_health=details["Database"]["Status"],
        last_uploads=last_uploads,
    )
