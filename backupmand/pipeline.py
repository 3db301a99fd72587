"""What happens during a backup, in one place.

    run_backup: dump -> compress + hash -> .partial -> rename
                -> upload to every drive at once (each retried, verified, recorded on its own)
                -> settle the status (finished: local dump removed; failed: dump kept for retry)
                -> retention for the label -> notifications

The scheduler, the API and the CLI all come here through runtime.Runtime. Nothing
in this module decides *when* a backup runs, only what running one means.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import hashlib
import os
import random
import re
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from . import compression as codecs
from .catalog import Catalog
from .config import Settings
from .drives.base import Drive
from .errors import DriveError, DumpError, ProcessError
from .files import fsync_directory, fsync_file, remove_quietly
from .locks import Locks, slug
from .models import Backup, DriveFile, Status, utcnow
from .notifiers.base import Notifier
from .sources.base import DumpFacts, Source

log = structlog.get_logger("backupmand.pipeline")

BLOCK_SIZE = 1024 * 1024
NOTIFY_TIMEOUT = 120.0
INTERRUPTED = "interrupted: backupmand was stopped before this backup ended"


@dataclasses.dataclass
class Services:
    """Everything a backup run needs, built once by runtime.Runtime."""

    settings: Settings
    catalog: Catalog
    sources: dict[str, Source[Any]]
    drives: dict[str, Drive[Any]]
    notifiers: list[Notifier]
    dump_slots: asyncio.Semaphore
    upload_failures: Counter[str] = dataclasses.field(default_factory=Counter)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    #: The per-source locks (retention holds one while it deletes a failed backup).
    locks: Locks | None = None
    #: Called with (label, step) as a backup moves on: feeds STATUS= and the CLI's progress.
    on_progress: Callable[[str, str], None] | None = None


def dump_name(label: str, backup_id: str, extension: str, compression: str) -> str:
    """Unique, sortable, and telling: ``<label>-<UTC time>-<id prefix><ext>``."""
    stamp = utcnow().strftime("%Y%m%d%H%M%S")
    return f"{slug(label)}-{stamp}-{backup_id[:8]}{extension}{codecs.EXTENSIONS[compression]}"


def name_pattern(label: str) -> re.Pattern[str]:
    """Matches the names dump_name gives this label's files (and nothing of other labels)."""
    return re.compile(rf"^\.?{re.escape(slug(label))}-\d{{14}}-[0-9a-f]{{8}}\.")


# ---------------------------------------------------------------------------- the sentence


async def run_backup(
    services: Services, backup: Backup, *, recorded: Callable[[], None] | None = None
) -> Backup:
    """Run (or resume) one backup to its outcome; never raises but CancelledError.

    ``recorded`` is called as soon as the outcome is in the catalog, before retention
    and notifications: the caller lets go of the source's lock there, so a client that
    reads the outcome can retry or start the source again at once.
    """
    with structlog.contextvars.bound_contextvars(backup_id=backup.id, label=backup.label):
        started = time.monotonic()
        log.info("backup.started", name=backup.name, resumed=backup.dump_status is Status.FINISHED)
        await _notify(services, "backup_started", backup)
        try:
            if backup.dump_status is not Status.FINISHED:
                backup = await dump(services, backup)
            backup = await upload_everywhere(services, backup)
            backup = await settle(services, backup)
        except (DumpError, ProcessError) as error:
            backup = await services.catalog.fail_backup(backup.id, str(error))
        except asyncio.CancelledError:
            await asyncio.shield(services.catalog.fail_backup(backup.id, INTERRUPTED))
            log.warning("backup.interrupted", reason=INTERRUPTED)
            raise
        except Exception as error:
            log.exception("backup.crashed")
            backup = await services.catalog.fail_backup(
                backup.id, f"internal error: {type(error).__name__}: {error}")
        seconds = round(time.monotonic() - started, 3)
        if backup.status is Status.FINISHED:
            log.info("backup.finished", size=backup.size, seconds=seconds)
        else:
            log.error("backup.failed", error=backup.error, seconds=seconds)
        _progress(services, backup.label, backup.status.value)
        if recorded is not None:
            recorded()
        if backup.status is Status.FINISHED and services.settings.retention.enabled:
            from .retention import prune

            try:
                await prune(services, label=backup.label)
            except Exception:
                log.exception("retention.crashed")
        await _notify(services, "backup_finished", backup)
        return backup


# ---------------------------------------------------------------------------- dump


async def dump(services: Services, backup: Backup) -> Backup:
    """Stream the source's dump through compression and SHA-256 into its final file."""
    source = services.sources.get(backup.label)
    if source is None:
        raise DumpError(f"data source {backup.label!r} is no longer configured")
    folder = await asyncio.to_thread(lambda: source.config.tmp_folder.expanduser().resolve())
    final = folder / backup.name
    partial = folder / f"{backup.name}.partial"
    workdir = folder / f".{backup.name}.work"
    name, level = services.settings.compression_for(source.config)
    async with services.dump_slots:
        _progress(services, backup.label, "dumping")
        log.info("dump.started", tool=source.provider, compression=name)
        started = time.monotonic()
        try:
            try:
                await asyncio.to_thread(_prepare_folders, folder, workdir, final)
                size, sha256, raw = await write_compressed(
                    source.dump(workdir, DumpFacts()), partial, name, level,
                    services.settings.compression_threads,
                )
                await asyncio.to_thread(_publish, partial, final)
            except OSError as error:
                raise DumpError(_describe_os_error(error, partial)) from None
        finally:
            await asyncio.to_thread(_discard, partial, workdir)
    log.info("dump.finished", raw_bytes=raw, size=size, sha256=sha256,
             seconds=round(time.monotonic() - started, 3))
    return await services.catalog.update_backup(
        backup.id, dump_status=Status.FINISHED, dump_path=str(final), size=size, sha256=sha256,
        error=None,
    )


def _prepare_folders(folder: Path, workdir: Path, final: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise DumpError(f"the tmp folder {folder} is not a directory")
    folder.mkdir(parents=True, exist_ok=True)
    # The name carries this backup's id, and its dump is not recorded as done: a file
    # there is this backup's own earlier attempt, published just before its process
    # died. It is re-dumped, not trusted.
    remove_quietly(final)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(mode=0o700)


def _publish(partial: Path, final: Path) -> None:
    if final.exists():
        raise DumpError(f"{final} already exists: not overwritten")
    os.rename(partial, final)


def _discard(partial: Path, workdir: Path) -> None:
    # Best effort: where nothing could be written (the folder is unusable) there is
    # nothing to remove, and the reason already on its way must not be masked.
    with contextlib.suppress(NotADirectoryError):
        remove_quietly(partial)
    shutil.rmtree(workdir, ignore_errors=True)


def _describe_os_error(error: OSError, path: Path) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full while writing {path}: {error.strerror}"
    if error.errno == errno.EFBIG:
        return f"file size limit reached while writing {path}: {error.strerror}"
    return f"cannot write {error.filename or path}: {error.strerror or error}"


async def write_compressed(
    chunks: AsyncIterator[bytes], partial: Path, compression: str, level: int | None,
    threads: int = 0,
) -> tuple[int, str, int]:
    """Compress and hash ``chunks`` into ``partial`` (created, written, closed).

    The local dump is not fsynced here: it is only a stage. Each drive's copy is made
    durable and verified against this function's SHA-256, and the local dump is removed
    once every copy is; it is fsynced only when a failed backup keeps it for ``retry``
    (settle). Should the machine lose power in between, the copy's verification fails
    the backup honestly. Durability paid once instead of twice: for a 1 GiB plain dump
    that is 1 GiB less written to disk.

    Returns (compressed size, SHA-256 of the compressed bytes, raw size). Pieces read
    from the pipe are gathered into 1 MiB blocks before each hop to the worker
    thread; meanwhile the event loop goes on buffering the pipe, so the dump tool and
    the compressor run side by side. Memory stays bounded by the pipe buffer.
    """
    compressor = codecs.compressor(compression, level, threads)
    digest = hashlib.sha256()
    handle = await asyncio.to_thread(open, partial, "xb")
    written = 0
    raw = 0

    def absorb(block: bytes | None) -> None:
        nonlocal written
        output = compressor.compress(block) if block is not None else compressor.flush()
        if output:
            digest.update(output)
            handle.write(output)
            written += len(output)
        if block is None:
            handle.flush()

    try:
        pending = bytearray()
        try:
            async for chunk in chunks:
                raw += len(chunk)
                if not pending and len(chunk) >= BLOCK_SIZE:
                    await asyncio.to_thread(absorb, chunk)  # already a block: no copy
                    continue
                pending += chunk
                if len(pending) >= BLOCK_SIZE:
                    block = bytes(pending)
                    pending.clear()
                    await asyncio.to_thread(absorb, block)
        finally:
            with contextlib.suppress(Exception):
                await chunks.aclose()  # type: ignore[attr-defined]
        if pending:
            await asyncio.to_thread(absorb, bytes(pending))
        if raw == 0:
            raise DumpError("the dump tool produced no output")
        await asyncio.to_thread(absorb, None)
    finally:
        await asyncio.to_thread(handle.close)
    return written, digest.hexdigest(), raw


# ---------------------------------------------------------------------------- uploads


async def upload_everywhere(services: Services, backup: Backup) -> Backup:
    """Upload the dump to every drive that does not hold it yet, all at once."""
    assert backup.dump_path is not None and backup.size is not None and backup.sha256
    dump_path = Path(backup.dump_path)
    if not await asyncio.to_thread(dump_path.is_file):
        raise DumpError(f"the local dump {dump_path} is gone: start a new backup")
    _progress(services, backup.label, "uploading")
    work: list[tuple[Drive[Any], DriveFile]] = []
    for label, drive in services.drives.items():
        record = backup.drive_file(label)
        if record is None:
            record = await services.catalog.create_drive_file(
                backup_id=backup.id, drive=label, provider=drive.provider, label=backup.name)
        elif record.status is Status.FINISHED:
            continue
        else:
            record = await services.catalog.update_drive_file(
                record.id, status=Status.PENDING, error=None)
        work.append((drive, record))
    for record in backup.drive_files:  # drives removed from the config since the first try
        if record.drive not in services.drives and record.status is not Status.FINISHED:
            await services.catalog.update_drive_file(
                record.id, status=Status.FAILED, error=f"drive {record.drive!r} is not configured")
    await asyncio.gather(*(upload_one(services, backup, dump_path, drive, record)
                           for drive, record in work))
    return await services.catalog.get_backup(backup.id)


async def upload_one(
    services: Services, backup: Backup, dump_path: Path, drive: Drive[Any], record: DriveFile
) -> DriveFile:
    """One drive's upload with retries; its outcome is recorded, never raised."""
    policy = services.settings.uploads
    attempts = drive.config.attempts or policy.attempts
    error: BaseException | None = None
    with structlog.contextvars.bound_contextvars(drive=drive.label):
        for attempt in range(1, attempts + 1):
            await services.catalog.update_drive_file(record.id, attempts=record.attempts + attempt)
            started = time.monotonic()
            try:
                assert backup.size is not None and backup.sha256 is not None
                # An earlier attempt (of this run, or recorded by a process that died)
                # may have stored the file before it could say so: only then may the
                # drive take the same bytes under the name as this upload's own.
                stored = await drive.upload(
                    dump_path, backup.name, size=backup.size, sha256=backup.sha256,
                    adopt=record.attempts + attempt > 1)
            except DriveError as failure:
                error = failure
                retry = failure.retryable and attempt < attempts
            except Exception as failure:  # a client library's own error: worth another try
                error = failure
                retry = attempt < attempts
                log.warning("upload.unexpected_error", error_type=type(failure).__name__)
            else:
                log.info("upload.finished", path=stored.path, bytes=stored.size,
                         seconds=round(time.monotonic() - started, 3), attempt=attempt)
                return await services.catalog.update_drive_file(
                    record.id, status=Status.FINISHED, path=stored.path, size=stored.size,
                    error=None, finished_at=utcnow())
            services.upload_failures[drive.label] += 1
            if not retry:
                break
            delay = backoff(attempt, policy.initial_backoff, policy.max_backoff)
            log.warning("upload.retrying", attempt=attempt, error=str(error),
                        delay=round(delay, 2))
            await services.sleep(delay)
        log.error("upload.failed", error=str(error), attempts=attempt)
        return await services.catalog.update_drive_file(
            record.id, status=Status.FAILED, error=str(error) or type(error).__name__)


def backoff(attempt: int, initial: float, maximum: float) -> float:
    """Exponential backoff, capped at ``maximum``, with "equal" jitter: a random wait in
    the upper half of each step (attempt 1 waits between ``initial``/2 and ``initial``)."""
    ceiling = min(maximum, initial * (2 ** (attempt - 1)))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography


# ---------------------------------------------------------------------------- outcome


async def settle(services: Services, backup: Backup) -> Backup:
    """Finished when every drive holds the file (then the local dump goes); else failed."""
    catalog = services.catalog
    failed = [f for f in backup.drive_files if f.status is not Status.FINISHED]
    if not backup.drive_files:
        return await catalog.update_backup(backup.id, status=Status.FAILED,
                                           error="no drive is configured")
    if failed:
        reason = "; ".join(f"upload to {f.drive} failed: {f.error}" for f in failed)
        if backup.dump_path:
            await keep_dump(backup.dump_path)
        return await catalog.update_backup(backup.id, status=Status.FAILED, error=reason)
    # One write: nobody ever reads "finished" with a DumpPath about to vanish. Should
    # the process die before the file goes, recovery removes it (runtime.recover).
    kept = backup.dump_path
    backup = await catalog.update_backup(
        backup.id, status=Status.FINISHED, error=None, finished_at=utcnow(), dump_path=None)
    if kept:
        await asyncio.to_thread(remove_dump_file, Path(kept))
    return backup


async def keep_dump(dump_path: str) -> None:
    """A failed backup keeps its local dump for ``retry``: now it is worth making durable."""
    try:
        await asyncio.to_thread(fsync_file, Path(dump_path))
    except OSError as error:
        log.warning("dump.not_durable", path=dump_path, error=error.strerror or str(error))


async def remove_local_dump(catalog: Catalog, backup: Backup) -> Backup:
    if backup.dump_path:
        await asyncio.to_thread(remove_dump_file, Path(backup.dump_path))
        backup = await catalog.update_backup(backup.id, dump_path=None)
    return backup


def remove_dump_file(path: Path) -> None:
    remove_quietly(path)
    with contextlib.suppress(OSError):
        fsync_directory(path.parent)


# ---------------------------------------------------------------------------- side channels


async def _notify(services: Services, method: str, backup: Backup) -> None:
    async def one(notifier: Notifier) -> None:
        try:
            await asyncio.wait_for(getattr(notifier, method)(backup), NOTIFY_TIMEOUT)
        except Exception as error:
            log.error("notify.failed", channel=notifier.name, error=str(error) or
                      type(error).__name__)

    if services.notifiers:
        await asyncio.gather(*(one(notifier) for notifier in services.notifiers))


def _progress(services: Services, label: str, step: str) -> None:
    if services.on_progress is not None:
        services.on_progress(label, step)
