"""Restore drills: proof that a backup restores, compared with what its dump held.

A drill (SPEC §6.3) takes one drive's copy of a finished backup — the drive asked for,
else the first healthy one in config order — streams it through its SHA-256 check,
decryption and decompression into a scratch target (a database
``backupmand_verify_<id prefix>`` on the source's server or on its ``verify_target``;
a temporary file for SQLite) loaded stopping at the first error, and compares what
came back with the dump's own facts (its manifest's ``Tables`` and ``Objects``):
the same table set, every table's row count, every object count, and for SQLite
``PRAGMA integrity_check``. The scratch target is always dropped (the source makes
sure of it, also on a failure, a timeout or a cancellation); one left by a crash is
dropped at the next start.

The outcome is recorded on the backup (``Verification``, ``VerifiedAt``,
``VerifyError`` — which check failed), counted in the metrics and told to the
notifiers; it never changes the backup's ``Status``. A drill holds its source's lock,
so it never overlaps a backup (or another drill) of the same source.

Not a verification result, but an error (the backup is not to blame): the source is no
longer configured, no identity to decrypt with, no drive reachable.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from .catalog import persistent
from .decoding import explained, identities_for, plain, verified
from .drives.base import Drive
from .errors import ConflictError, RestoreError
from .models import Backup, Status, Verification, utcnow
from .notify import tell
from .services import Services
from .sources.base import OBJECT_KINDS, Inventory

log = structlog.get_logger("backupmand.drills")

SCRATCH_PREFIX = "backupmand_verify_"
HEALTH_TIMEOUT = 10.0


def scratch_name(backup: Backup) -> str:
    return f"{SCRATCH_PREFIX}{backup.id[:8]}"


def compare(backup: Backup, inventory: Inventory) -> list[str]:
    """What differs between the restored database and the dump's facts (empty: none)."""
    problems = list(inventory.problems)
    tables = backup.tables
    if tables is not None:
        for table in sorted(set(tables) - set(inventory.tables)):
            problems.append(f"table {table}: missing after the restore ({tables[table]} rows "
                            "in the dump)")
        for table in sorted(set(inventory.tables) - set(tables)):
            problems.append(f"table {table}: restored, but not in the dump")
        for table in sorted(set(tables) & set(inventory.tables)):
            if tables[table] != inventory.tables[table]:
                problems.append(f"table {table}: {inventory.tables[table]} rows restored, "
                                f"{tables[table]} in the dump")
    objects = backup.objects
    if objects is not None:
        for kind in OBJECT_KINDS:
            if kind in objects and objects[kind] != inventory.objects.get(kind, 0):
                problems.append(f"{kind}: {inventory.objects.get(kind, 0)} restored, "
                                f"{objects[kind]} in the dump")
    return problems


async def choose_drive(services: Services, backup: Backup,
                       label: str | None) -> tuple[Drive[Any], str]:
    """The drive to drill from and the dump's path there."""
    records = {record.drive: record for record in backup.drive_files
               if record.status is Status.FINISHED and record.path and not record.missing}
    if label is not None:
        if label not in services.drives:
            raise RestoreError(f"drive {label!r} is not configured")
        if label not in records:
            raise ConflictError(f"backup {backup.id} has no finished copy on drive {label!r}")
        return services.drives[label], str(records[label].path)
    reasons = []
    for name, drive in services.drives.items():
        if name not in records:
            continue
        try:
            await asyncio.wait_for(drive.health(), HEALTH_TIMEOUT)
        except Exception as error:
            reasons.append(f"{name}: {error or type(error).__name__}")
            continue
        return drive, str(records[name].path)
    raise RestoreError(f"no healthy drive holds a copy of backup {backup.id}"
                       + (f" ({'; '.join(reasons)})" if reasons else ""))


async def drill(services: Services, backup: Backup, *, drive: str | None = None,
                identity: Path | None = None) -> Backup:
    """Drill one finished backup (the caller holds its source's lock); record and tell
    the outcome; return the updated backup. RestoreError/ConflictError when no drill
    could be made (nothing is recorded then)."""
    if backup.status is not Status.FINISHED:
        raise ConflictError(f"backup {backup.id} is {backup.status.value}: only finished "
                            "backups are drilled")
    source = services.sources.get(backup.label)
    if source is None:
        raise RestoreError(f"data source {backup.label!r} is no longer configured")
    assert backup.size is not None and backup.sha256 is not None
    identities = await identities_for(services.settings, backup, identity=identity,
                                      source=source.config)
    chosen, path = await choose_drive(services, backup, drive)
    with structlog.contextvars.bound_contextvars(backup_id=backup.id, label=backup.label,
                                                 drive=chosen.label), persistent():
        log.info("verify.started", scratch=scratch_name(backup))
        started = time.monotonic()
        problems: list[str] = []
        scratch_folder = await asyncio.to_thread(_scratch_folder, source.config.tmp_folder)
        try:
            chunks = plain(verified(chosen.download(path), size=backup.size, sha256=backup.sha256,
                                    where=f"the copy on drive {chosen.label!r} ({path})"),
                           compression=backup.compression, encrypted=backup.encrypted,
                           identities=identities, recipients=backup.recipients)
            try:
                async with asyncio.timeout(source.config.verify_timeout):
                    inventory = await source.drill(chunks, scratch=scratch_name(backup),
                                                   workdir=scratch_folder)
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]
            problems = compare(backup, inventory)
        except TimeoutError:
            problems = [f"the drill took longer than verify_timeout "
                        f"({source.config.verify_timeout:g} s)"]
        except RestoreError as failure:
            verdict = await explained(failure, lambda: chosen.download(path), size=backup.size,
                                      sha256=backup.sha256,
                                      where=f"the copy on drive {chosen.label!r} ({path})")
            problems = [f"the dump did not restore: {verdict}" if verdict is failure
                        else str(verdict)]
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch_folder, True)
        outcome = Verification.FAILED if problems else Verification.PASSED
        reason = "; ".join(problems)[:4000] if problems else None
        updated = await services.catalog.update_backup(
            backup.id, verification=outcome.value, verified_at=utcnow(), verify_error=reason)
        services.verifications[(backup.label, outcome.value)] += 1
        seconds = round(time.monotonic() - started, 3)
        if problems:
            log.error("verify.failed", error=reason, seconds=seconds)
        else:
            log.info("verify.passed", seconds=seconds, tables=len(backup.tables or {}),
                     rows=backup.row_count)
    await tell(services.notifiers, "verify_finished",
               lambda notifier: notifier.verify_finished(updated))
    return updated


def _scratch_folder(tmp_folder: Path) -> Path:
    parent = tmp_folder.expanduser()
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".backupmand-verify-", dir=parent))


async def drop_leftovers(services: Services, labels: list[str]) -> None:
    """Scratch databases a crashed drill left behind, on the sources in ``labels``."""
    for label in labels:
        source = services.sources[label]
        try:
            dropped = await source.drop_stale_scratch(SCRATCH_PREFIX)
        except Exception as error:
            log.warning("verify.leftovers_unchecked", label=label,
                        error=str(error) or type(error).__name__)
            continue
        for name in dropped:
            log.warning("verify.leftover_dropped", label=label, scratch=name)

