"""The config's schedules as APScheduler jobs; no backup or drill logic here.

``backup_job`` starts a backup of every source; ``verify_job`` (SPEC §6.3) drills the
latest finished backup of every source, one at a time. A tick only *starts* work
through the Runtime and returns (backups) or runs the drills it owns (verify), so
APScheduler never holds a running backup: the Runtime owns those tasks and stops
them on purpose at shutdown. A source already in flight is skipped by its lock;
missed ticks are coalesced into one.

A tick that fails for any other reason (too many open files, a catalog that cannot
be written, a bug) is never silent: an error event (``schedule.failed``, which
``journalctl -p err`` shows), the ``backupmand_schedule_failures_total{schedule}``
counter and a ``schedule_failed`` notification; the next tick tries again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from .config import BackupJob
from .errors import ConflictError
from .notify import tell
from .runtime import Runtime
from .schedule import next_fire_times, parse_cron, resolve_timezone

log = structlog.get_logger("backupmand.scheduler")

JOB_ID = "backup_job"
VERIFY_JOB_ID = "verify_job"


class Schedule:
    def __init__(self, runtime: Runtime) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self.runtime = runtime
        self.job_config = runtime.settings.http.backup_job
        self.verify_config = runtime.settings.http.verify_job
        self._scheduler: Any = AsyncIOScheduler(
            timezone=resolve_timezone(self.job_config.timezone))
        self.ticks = 0
        self.verify_ticks = 0

    def start(self) -> None:
        jobs = [(JOB_ID, self.job_config, self._tick, "backup of every data source"),
                (VERIFY_JOB_ID, self.verify_config, self._verify_tick,
                 "restore drill of every data source's latest backup")]
        started = False
        for job_id, config, tick, name in jobs:
            if not config.enabled:
                log.info("schedule.disabled", schedule=job_id)
                continue
            self._scheduler.add_job(
                self._guarded(job_id, tick), parse_cron(config.cron, config.timezone),
                id=job_id, name=name, coalesce=True, max_instances=1, misfire_grace_time=600,
            )
            started = True
        if started:
            self._scheduler.start()
            for job_id, config, _tick, _name in jobs:
                if config.enabled:
                    log.info("schedule.started", schedule=job_id, cron=config.cron,
                             next_run=self.next_run_text(job_id))

    def _guarded(self, job_id: str, tick: Callable[[], Awaitable[None]]
                 ) -> Callable[[], Awaitable[None]]:
        async def guarded() -> None:
            try:
                await tick()
            except Exception as error:
                await self.tick_failed(job_id, error)

        return guarded

    async def tick_failed(self, job_id: str, error: BaseException) -> None:
        reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        self.runtime.services.schedule_failures[job_id] += 1
        log.error("schedule.failed", schedule=job_id, error=reason,
                  next_run=self.next_run_text(job_id), exc_info=error)
        await tell(self.runtime.services.notifiers, "schedule_failed",
                   lambda notifier: notifier.schedule_failed(job_id, reason))

    async def _tick(self) -> None:
        self.ticks += 1
        try:
            backups = await self.runtime.start_backups(None)
        except ConflictError as error:
            log.warning("schedule.skipped", schedule=JOB_ID, reason=str(error))
            return
        log.info("schedule.fired", schedule=JOB_ID, backups=[b.id for b in backups],
                 next_run=self.next_run_text())

    async def _verify_tick(self) -> None:
        self.verify_ticks += 1
        log.info("schedule.fired", schedule=VERIFY_JOB_ID,
                 next_run=self.next_run_text(VERIFY_JOB_ID))
        await self.runtime.verify_latest()

    # ------------------------------------------------------------------ what is next

    def next_run(self, job_id: str = JOB_ID) -> dt.datetime | None:
        if not self._scheduler.running:
            return None
        job = self._scheduler.get_job(job_id)
        return job.next_run_time if job else None

    def next_run_text(self, job_id: str = JOB_ID) -> str:
        moment = self.next_run(job_id)
        return moment.isoformat() if moment else "never"

    def interval(self, job_id: str = JOB_ID) -> float | None:
        """Seconds between the job's next two runs (None when it is not scheduled)."""
        config: BackupJob = self.job_config if job_id == JOB_ID else self.verify_config
        if not config.enabled:
            return None
        first, second = next_fire_times(parse_cron(config.cron, config.timezone), 2)
        return (second - first).total_seconds()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
