"""Retention: which backups may go (pure policy), and deleting them (remote first).

The policy never selects a pending backup, nor any of the newest ``min_keep``
finished backups of a label, whatever their age. ``by: age`` selects backups older
than ``value`` days; ``by: count`` keeps the newest ``value`` finished backups of a
label and selects older finished ones, and failed ones older than the oldest kept
finished backup (they are superseded).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from .config import RetentionConfig
from .errors import NotFoundError
from .files import remove_quietly
from .models import Backup, Status, rfc3339, utcnow

if TYPE_CHECKING:
    from .services import Services

log = structlog.get_logger("backupmand.retention")


def select_expired(
    backups: Iterable[Backup], policy: RetentionConfig, now: dt.datetime
) -> list[Backup]:
    by_label: dict[str, list[Backup]] = defaultdict(list)
    for backup in backups:
        by_label[backup.label].append(backup)
    expired: list[Backup] = []
    for items in by_label.values():
        items.sort(key=lambda b: (b.created_at, b.id), reverse=True)
        finished = [b for b in items if b.status is Status.FINISHED]
        protected = {b.id for b in finished[: policy.min_keep]}
        if policy.by == "age":
            cutoff = now - dt.timedelta(days=policy.value)
            candidates = [b for b in items if b.created_at < cutoff]
        else:
            kept = finished[: policy.value]
            oldest_kept = kept[-1].created_at if len(kept) == policy.value else None
            candidates = [b for b in finished[policy.value:]]
            if oldest_kept is not None:
                candidates += [b for b in items
                               if b.status is Status.FAILED and b.created_at < oldest_kept]
        expired.extend(
            b for b in candidates if b.status is not Status.PENDING and b.id not in protected
        )
    expired.sort(key=lambda b: (b.created_at, b.id))
    return expired


# ---------------------------------------------------------------------------- applying it


async def prune(
    services: Services, *, label: str | None = None, dry_run: bool = False,
    now: dt.datetime | None = None,
) -> list[Backup]:
    """Delete what the policy selects: remote files first, then the local dump, then the
    record. A remote delete that fails leaves the record in place (and is logged); the
    rest carries on. Returns the backups selected (all of them on a dry run)."""
    catalog = services.catalog
    policy = services.settings.retention
    backups = await catalog.list_backups(label=label)
    expired = select_expired(backups, policy, now or utcnow())
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
                if lock is not None:
                    try:
                        current = await catalog.get_backup(backup.id)
                    except NotFoundError:
                        continue
                    if current.status is not Status.FAILED:
                        continue
                if await _delete_remote_files(services, backup):
                    if backup.dump_path:
                        await asyncio.to_thread(remove_quietly, Path(backup.dump_path))
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
