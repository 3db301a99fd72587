"""The config's schedule as APScheduler jobs; no backup logic here.

A tick only *starts* backups through the Runtime and returns, so APScheduler never
holds (or cancels) a running backup: the Runtime owns those tasks and stops them on
purpose at shutdown. A source already in flight is skipped by its lock; missed ticks
are coalesced into one.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import structlog

from .errors import ConflictError
from .runtime import Runtime
from .schedule import parse_cron, resolve_timezone

log = structlog.get_logger("backupmand.scheduler")

JOB_ID = "backup_job"


class Schedule:
    def __init__(self, runtime: Runtime) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self.runtime = runtime
        self.job_config = runtime.settings.http.backup_job
        self._scheduler: Any = AsyncIOScheduler(
            timezone=resolve_timezone(self.job_config.timezone))
        self.ticks = 0

    def start(self) -> None:
        if not self.job_config.enabled:
            log.info("schedule.disabled")
            return
        trigger = parse_cron(self.job_config.cron, self.job_config.timezone)
        self._scheduler.add_job(
            self._tick, trigger, id=JOB_ID, name="backup of every data source",
            coalesce=True, max_instances=1, misfire_grace_time=600,
        )
        self._scheduler.start()
        log.info("schedule.started", cron=self.job_config.cron, next_run=self.next_run_text())

    async def _tick(self) -> None:
        self.ticks += 1
        try:
            backups = await self.runtime.start_backups(None)
        except ConflictError as error:
            log.warning("schedule.skipped", reason=str(error))
            return
        log.info("schedule.fired", backups=[b.id for b in backups], next_run=self.next_run_text())

    def next_run(self) -> dt.datetime | None:
        if not self._scheduler.running:
            return None
        job = self._scheduler.get_job(JOB_ID)
        return job.next_run_time if job else None

    def next_run_text(self) -> str:
        moment = self.next_run()
        return moment.isoformat() if moment else "never"

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
