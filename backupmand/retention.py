"""Retention: which backups may go (retention_policy, pure), and deleting them.

``plan`` asks the policy about every backup of every label (or one label) and says,
for each, whether it goes and which rules keep it; ``prune`` deletes what goes —
remote files first (on the drive that holds them, found by its label), then the
local dump, then the record; a remote delete that fails leaves the record in place
(and is logged), and the rest carries on.

Whatever the policy, never deleted: a pending backup, a pinned one, the newest
``min_keep`` finished backups of a label that *count*. A finished backup counts when
every copy the catalog records is still there and it is not suspect: before anything
is deleted, the copies of the backups being kept are checked on their drives (a cheap
stat / HEAD); one found missing is marked (``Missing`` on its drive file), its backup
stops counting, and the plan is made again — so a lost copy is never what protects
the history while older good copies go.

"Newest" is the catalog's creation sequence, never the wall clock alone: a clock set
back cannot make a new backup look old.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from .config import RetentionConfig
from .errors import NotFoundError
from .files import remove_quietly
from .models import Backup, DriveFile, Status, rfc3339, utcnow
from .retention_policy import Candidate, Decision, decide
from .schedule import resolve_timezone

if TYPE_CHECKING:
    from .services import Services

log = structlog.get_logger("backupmand.retention")

#: Rounds of "check the kept copies, plan again" before giving up on a stable plan.
MAX_ROUNDS = 20


@dataclasses.dataclass(frozen=True)
class Verdict:
    backup: Backup
    decision: Decision

    @property
    def goes(self) -> bool:
        return not self.decision.keep


def counts(backup: Backup) -> bool:
    """Whether a finished backup may fill a keep rule or a min_keep place."""
    return not backup.suspect and not any(record.missing for record in backup.drive_files)


def _candidate(backup: Backup) -> Candidate:
    return Candidate(id=backup.id, seq=backup.seq, created_at=backup.created_at,
                     status=backup.status.value, pinned=backup.pinned, counts=counts(backup))


def judge(services: Services, backups: Iterable[Backup], now: dt.datetime) -> list[Verdict]:
    """The policy's answer for each backup (pure)."""
    zone = resolve_timezone(services.settings.http.backup_job.timezone)
    return judge_with(services.settings.retention, backups, now, zone)


def select_expired(backups: Iterable[Backup], policy: RetentionConfig, now: dt.datetime,
                   zone: dt.tzinfo = dt.UTC) -> list[Backup]:
    """The backups the policy lets go, oldest first (pure)."""
    return [verdict.backup for verdict in judge_with(policy, backups, now, zone) if verdict.goes]


def judge_with(policy: RetentionConfig, backups: Iterable[Backup], now: dt.datetime,
               zone: dt.tzinfo) -> list[Verdict]:
    by_label: dict[str, list[Backup]] = defaultdict(list)
    for backup in backups:
        by_label[backup.label].append(backup)
    verdicts = []
    for items in by_label.values():
        decisions = decide([_candidate(b) for b in items], policy, now=now, timezone=zone)
        verdicts += [Verdict(b, decisions[b.id]) for b in items]
    verdicts.sort(key=lambda verdict: verdict.backup.seq)
    return verdicts


async def plan(services: Services, *, label: str | None = None, now: dt.datetime | None = None,
               check_copies: bool = True, mark: bool = True) -> list[Verdict]:
    """Every backup with its verdict, oldest first. With ``check_copies`` (and something
    to delete), the kept backups' copies are checked first; ``mark`` records a missing
    one in the catalog (a preview passes ``mark=False``)."""
    moment = now or utcnow()
    backups = await services.catalog.list_backups(label=label)
    checked: set[str] = set()
    for _ in range(MAX_ROUNDS):
        verdicts = judge(services, backups, moment)
        if not check_copies or not any(v.goes for v in verdicts):
            return verdicts
        unchecked = [v.backup for v in verdicts if not v.goes and v.backup.id not in checked
                     and v.backup.status is Status.FINISHED and counts(v.backup)]
        if not unchecked:
            return verdicts
        lost = False
        for backup in unchecked:
            checked.add(backup.id)
            missing = await _missing_copies(services, backup)
            if missing:
                lost = True
                log.error("retention.copy_missing", backup_id=backup.id, label=backup.label,
                          drives=sorted(record.drive for record in missing))
                replaced = dataclasses.replace(backup, drive_files=tuple(
                    dataclasses.replace(record, missing=True) if record in missing else record
                    for record in backup.drive_files))
                if mark:
                    for record in missing:
                        await services.catalog.update_drive_file(record.id, missing=True)
                backups = [replaced if b.id == backup.id else b for b in backups]
        if not lost:
            return verdicts
    return judge(services, backups, moment)


async def _missing_copies(services: Services, backup: Backup) -> list[DriveFile]:
    """The backup's finished drive files whose dump is gone from the drive. A drive that
    cannot answer is not taken to have lost anything (and deletes nothing less)."""
    missing = []
    for record in backup.drive_files:
        if record.status is not Status.FINISHED or record.path is None:
            continue
        drive = services.drives.get(record.drive)
        if drive is None:
            continue
        try:
            size = await drive.size(record.path)
        except Exception as error:
            log.warning("retention.copy_unchecked", drive=record.drive, path=record.path,
                        error=str(error) or type(error).__name__)
            continue
        if size is None:
            missing.append(record)
    return missing


async def prune(
    services: Services, *, label: str | None = None, dry_run: bool = False,
    now: dt.datetime | None = None,
) -> list[Backup]:
    """Delete what the policy lets go: remote files first, then the local dump, then the
    record. Returns the backups selected (all of them on a dry run)."""
    catalog = services.catalog
    verdicts = await plan(services, label=label, now=now, mark=not dry_run)
    expired = [verdict.backup for verdict in verdicts if verdict.goes]
    if dry_run:
        return expired
    deleted: list[Backup] = []
    for backup in expired:
        with structlog.contextvars.bound_contextvars(backup_id=backup.id, label=backup.label):
            lock = None
            if backup.status is Status.FAILED and services.locks is not None:
                # A failed backup can be retried at any moment: hold its source's lock,
                # and make sure it is still failed, so a retry and a delete never cross.
                lock = services.locks.source(backup.label)
                if not await asyncio.to_thread(lock.try_acquire):
                    log.info("retention.skipped", reason="a backup of this source is in flight")
                    continue
            try:
                try:
                    current = await catalog.get_backup(backup.id)
                except NotFoundError:
                    continue
                if current.pinned or current.status is not backup.status:
                    continue  # pinned or retried since the plan was made
                if await _delete_remote_files(services, backup):
                    if backup.dump_path:
                        from .pipeline import companion_paths

                        for path in [Path(backup.dump_path), *companion_paths(backup)]:
                            await asyncio.to_thread(remove_quietly, path)
                    await catalog.delete_backup(backup.id)
                    log.info("retention.deleted", created_at=rfc3339(backup.created_at),
                             status=backup.status.value)
                    deleted.append(backup)
            finally:
                if lock is not None:
                    lock.release()
    return deleted


async def _delete_remote_files(services: Services, backup: Backup) -> bool:
    """Every drive's files of the backup: the dump and the globals companion first, the
    manifest last (a manifest left alone says a dump is missing; a dump without its
    manifest would be invisible to ``catalog rebuild``)."""
    complete = True
    for record in backup.drive_files:
        paths = [path for path in (record.path, record.globals_path, record.manifest_path)
                 if path is not None]
        if not paths:
            continue
        drive = services.drives.get(record.drive)
        if drive is None:
            log.error("retention.delete_failed", drive=record.drive,
                      error="the drive is no longer configured")
            complete = False
            continue
        for path in paths:
            try:
                await drive.delete(path)
            except Exception as error:
                log.error("retention.delete_failed", drive=record.drive, path=path,
                          error=str(error) or type(error).__name__)
                complete = False
                break  # keep the manifest while the dump may still be there
    # Drive file records stay until every remote delete succeeded: deletes are
    # idempotent, so the next run finishes the job.
    return complete


def preview(verdicts: list[Verdict]) -> dict[str, object]:
    """GET /api/retention/preview's body: what a prune would delete, and why each kept
    backup stays."""
    def entry(verdict: Verdict) -> dict[str, object]:
        backup = verdict.backup
        return {"Id": backup.id, "Label": backup.label, "Status": backup.status.value,
                "CreatedAt": rfc3339(backup.created_at), "Sequence": backup.seq,
                "Pinned": backup.pinned, "Reasons": list(verdict.decision.reasons)}

    newest_first = sorted(verdicts, key=lambda verdict: verdict.backup.seq, reverse=True)
    return {"Delete": [entry(v) for v in newest_first if v.goes],
            "Keep": [entry(v) for v in newest_first if not v.goes]}
