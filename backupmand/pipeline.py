"""What happens during a backup, in one place.

    run_backup: dump ─► compress ─► encrypt ─► SHA-256 ─► stage file, read back by every
                drive while it grows (stream.py; one read of the dump, one write)
                -> the globals companion (server-wide objects), staged the same way
                -> each drive: the dump (from the stream, else from the stage file, with
                   retries), the companion, the manifest; each copy verified (and, when
                   encrypted, checked to begin with the age header) before it counts
                -> settle the status (finished: stage removed; failed: kept for retry)
                -> flag a suspiciously small dump -> retention for the label -> notify

The scheduler, the API and the CLI all come here through runtime.Runtime. Nothing
in this module decides *when* a backup runs, only what running one means.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from . import compression as codecs
from . import manifest as manifests
from .catalog import Catalog, persistent
from .drives.base import Drive, StoredFile
from .errors import CatalogError, DriveError, DumpError, ProcessError, VerificationError
from .files import fsync_directory, fsync_file, remove_quietly
from .locks import slug
from .models import Backup, DriveFile, Status, utcnow
from .notify import tell
from .services import Services
from .sources.base import DumpFacts
from .stream import Chain, describe_os_error, encode_bytes, write_stage

log = structlog.get_logger("backupmand.pipeline")

INTERRUPTED = "interrupted: backupmand was stopped before this backup ended"


def dump_name(label: str, backup_id: str, extension: str, compression: str,
              encrypted: bool = False) -> str:
    """Unique, sortable, and telling: ``<label>-<UTC time>-<id prefix><ext>[.age]``."""
    stamp = utcnow().strftime("%Y%m%d%H%M%S")
    return (f"{slug(label)}-{stamp}-{backup_id[:8]}{extension}{codecs.EXTENSIONS[compression]}"
            + (".age" if encrypted else ""))


def name_pattern(label: str) -> re.Pattern[str]:
    """Matches the names dump_name gives this label's files, and their companions (and
    nothing of other labels)."""
    return re.compile(rf"^\.?{re.escape(slug(label))}-\d{{14}}-[0-9a-f]{{8}}\.")


def companion_paths(backup: Backup) -> list[Path]:
    """The stage files of a backup besides its dump (the globals companion)."""
    if not backup.dump_path or not backup.globals_file:
        return []
    return [Path(backup.dump_path).parent / backup.globals_file["File"]]


# ---------------------------------------------------------------------------- the sentence


async def run_backup(
    services: Services, backup: Backup, *, recorded: Callable[[], None] | None = None
) -> Backup:
    """Run (or resume) one backup to its outcome; never raises but CancelledError.

    ``recorded`` is called as soon as the outcome is in the catalog, before retention
    and notifications: the caller lets go of the source's lock there, so a client that
    reads the outcome can retry or start the source again at once. The catalog's
    writes are ``persistent``: should the disk under it fill up, the outcome is
    recorded once it can be.
    """
    with structlog.contextvars.bound_contextvars(backup_id=backup.id, label=backup.label), \
            persistent():
        started = time.monotonic()
        catalog = services.catalog
        log.info("backup.started", name=backup.name, resumed=backup.dump_status is Status.FINISHED)
        first = backup
        await tell(services.notifiers, "backup_started", lambda n: n.backup_started(first))
        streams: dict[str, asyncio.Task[StoredFile]] = {}
        try:
            if backup.dump_status is not Status.FINISHED:
                backup = await dump(services, backup, streams)
            backup = await upload_everywhere(services, backup, streams)
            backup = await settle(services, backup)
        except (DumpError, ProcessError) as error:
            backup = await catalog.fail_backup(backup.id, str(error))
        except asyncio.CancelledError:
            with persistent(False):
                try:
                    await asyncio.shield(catalog.fail_backup(backup.id, INTERRUPTED))
                except CatalogError as error:
                    # The next start's recovery records it failed.
                    log.error("backup.interruption_not_recorded", error=str(error))
            log.warning("backup.interrupted", reason=INTERRUPTED)
            raise
        except Exception as error:
            log.exception("backup.crashed")
            backup = await catalog.fail_backup(
                backup.id, f"internal error: {type(error).__name__}: {error}")
        finally:
            await _stop_streams(streams)
        seconds = round(time.monotonic() - started, 3)
        if backup.status is Status.FINISHED:
            backup = await flag_if_suspect(services, backup)
            log.info("backup.finished", size=backup.size, rows=backup.row_count,
                     seconds=seconds, suspect=backup.suspect)
        else:
            log.error("backup.failed", error=backup.error, seconds=seconds)
        services.progress(backup.label, backup.status.value)
        if recorded is not None:
            recorded()
        if backup.status is Status.FINISHED and services.settings.retention.enabled:
            from .retention import prune

            try:
                await prune(services, label=backup.label)
            except Exception:
                log.exception("retention.crashed")
        final = backup
        await tell(services.notifiers, "backup_finished", lambda n: n.backup_finished(final))
        if final.suspect:
            await tell(services.notifiers, "backup_suspect", lambda n: n.backup_suspect(final))
        return backup


# ---------------------------------------------------------------------------- dump


async def dump(services: Services, backup: Backup,
               streams: dict[str, asyncio.Task[StoredFile]]) -> Backup:
    """Stream the source's dump through compression, encryption and SHA-256 into its stage
    file, which every drive reads while it grows (their uploads go into ``streams``);
    then stage the globals companion. Returns the backup with its dump recorded."""
    settings = services.settings
    source = services.sources.get(backup.label)
    if source is None:
        raise DumpError(f"data source {backup.label!r} is no longer configured")
    folder = await asyncio.to_thread(lambda: source.config.tmp_folder.expanduser().resolve())
    final = folder / backup.name
    partial = folder / f"{backup.name}.partial"
    workdir = folder / f".{backup.name}.work"
    name, level = settings.compression_for(source.config)
    encryption = settings.encryption_for(source.config)
    recipients = encryption.all_recipients() if encryption is not None else ()
    if bool(recipients) != backup.name.endswith(".age"):
        raise DumpError("the encryption settings changed since this backup was created: "
                        "start a new backup")
    facts = DumpFacts()
    globals_file: dict[str, Any] | None = None
    async with services.dump_slots:
        services.progress(backup.label, "dumping")
        log.info("dump.started", tool=source.provider, compression=name,
                 encrypted=bool(recipients), streaming=settings.uploads.stream)
        started = time.monotonic()
        try:
            try:
                await asyncio.to_thread(_prepare_folders, folder, workdir, final)
                chain = Chain(name, level, settings.compression_threads, recipients)
                handle = await asyncio.to_thread(_create_private, partial)
                try:
                    growing = None
                    if settings.uploads.stream:
                        from .growing import GrowingFile

                        growing = GrowingFile(partial)
                        await _start_streams(services, backup, growing, streams)
                    try:
                        written = await write_stage(
                            source.dump(workdir, facts), handle, chain, growing)
                    except BaseException as error:
                        if growing is not None:
                            growing.fail(error)
                        raise
                finally:
                    await asyncio.to_thread(handle.close)
                # Readers that opened the stage keep reading it; later ones open the
                # published name (the growing file renames under its readers' lock).
                await asyncio.to_thread(_publish, partial, final, growing)
                if growing is not None:
                    growing.finish(written.size, written.sha256)
                script = await source.dump_globals(workdir)
                if script is not None:
                    globals_file = await _stage_globals(script, folder, backup, name, level,
                                                        recipients)
            except OSError as error:
                raise DumpError(describe_os_error(error, partial)) from None
        except BaseException:
            await _stop_streams(streams)
            await _forget_drive_files(services.catalog, backup)
            raise
        finally:
            await asyncio.to_thread(_discard, partial, workdir)
    log.info("dump.finished", raw_bytes=written.raw, size=written.size, sha256=written.sha256,
             rows=sum(facts.tables.values()), tables=len(facts.tables),
             seconds=round(time.monotonic() - started, 3))
    return await services.catalog.update_backup(
        backup.id, dump_status=Status.FINISHED, dump_path=str(final), size=written.size,
        sha256=written.sha256, raw_size=written.raw, error=None, dumped_at=utcnow(),
        database=facts.database, server_version=facts.server_version, tool=facts.tool,
        tool_version=facts.tool_version, dump_format=facts.dump_format,
        tables=facts.tables, objects=facts.objects, row_count=sum(facts.tables.values()),
        table_count=len(facts.tables), globals_file=globals_file,
        manifest_name=manifests.manifest_name(backup.name),
        encryption={"Scheme": "age", "Recipients": list(recipients)} if recipients else None,
    )


async def _start_streams(services: Services, backup: Backup, growing: Any,
                         streams: dict[str, asyncio.Task[StoredFile]]) -> None:
    """A drive file record per drive, and an upload reading the stage file as it grows."""
    for label, drive in services.drives.items():
        record = await _drive_file_record(services.catalog, backup, label, drive)
        if record.status is Status.FINISHED:
            continue
        # Counted as an attempt before it starts: should it land and the process die
        # before it is recorded, the next attempt may adopt it (never overwrites it).
        await services.catalog.update_drive_file(record.id, attempts=record.attempts + 1)
        streams[label] = asyncio.create_task(
            drive.upload_stream(growing, backup.name, adopt=record.attempts > 0),
            name=f"stream-{backup.id[:8]}-{label}")


async def _stop_streams(streams: dict[str, asyncio.Task[StoredFile]]) -> None:
    running = [task for task in streams.values() if not task.done()]
    for task in running:
        task.cancel()
    if running:
        await asyncio.gather(*running, return_exceptions=True)
    for task in streams.values():  # outcomes already handled (or not needed): seen
        if task.done() and not task.cancelled():
            task.exception()


async def _drive_file_record(catalog: Catalog, backup: Backup, label: str,
                             drive: Drive[Any]) -> DriveFile:
    current = await catalog.get_backup(backup.id)
    record = current.drive_file(label)
    if record is None:
        record = await catalog.create_drive_file(
            backup_id=backup.id, drive=label, provider=drive.provider, label=backup.name)
    return record


async def _forget_drive_files(catalog: Catalog, backup: Backup) -> None:
    """A dump that failed leaves no drive file behind (its streams were aborted)."""
    with contextlib.suppress(CatalogError):
        current = await catalog.get_backup(backup.id)
        for record in current.drive_files:
            if record.status is not Status.FINISHED:
                await catalog.delete_drive_file(record.id)


async def _stage_globals(script: bytes, folder: Path, backup: Backup, compression: str,
                         level: int | None, recipients: tuple[str, ...]) -> dict[str, Any]:
    import hashlib

    name = manifests.globals_name(backup.name, codecs.EXTENSIONS[compression], bool(recipients))
    data = await asyncio.to_thread(encode_bytes, script, compression, level, recipients)
    path = folder / name
    await asyncio.to_thread(_write_new, path, data)
    return {"File": name, "Size": len(data), "Sha256": hashlib.sha256(data).hexdigest()}


def _create_private(path: Path) -> Any:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    return os.fdopen(descriptor, "wb")


def _write_new(path: Path, data: bytes) -> None:
    remove_quietly(path)  # this backup's own, from an attempt that did not finish
    with _create_private(path) as handle:
        handle.write(data)


def _prepare_folders(folder: Path, workdir: Path, final: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise DumpError(f"the tmp folder {folder} is not a directory")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The name carries this backup's id, and its dump is not recorded as done: a file
    # there is this backup's own earlier attempt, published just before its process
    # died. It is re-dumped, not trusted.
    remove_quietly(final)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(mode=0o700)


def _publish(partial: Path, final: Path, growing: Any = None) -> None:
    if final.exists():
        raise DumpError(f"{final} already exists: not overwritten")
    if growing is not None:
        growing.rename(final)
    else:
        os.rename(partial, final)


def _discard(partial: Path, workdir: Path) -> None:
    # Best effort: where nothing could be written (the folder is unusable) there is
    # nothing to remove, and the reason already on its way must not be masked.
    with contextlib.suppress(NotADirectoryError):
        remove_quietly(partial)
    shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------------- uploads


async def upload_everywhere(services: Services, backup: Backup,
                            streams: dict[str, asyncio.Task[StoredFile]] | None = None) -> Backup:
    """Store the dump, its globals companion and its manifest on every drive that does
    not hold them yet, all drives at once; each drive's outcome is recorded on its own."""
    assert backup.dump_path is not None and backup.size is not None and backup.sha256
    streams = streams or {}
    dump_path = Path(backup.dump_path)
    missing = [path for path in [dump_path, *companion_paths(backup)]
               if not await asyncio.to_thread(path.is_file)]
    if missing:
        raise DumpError(f"the local dump {missing[0]} is gone: start a new backup")
    services.progress(backup.label, "uploading")
    manifest = manifests.build(backup).to_bytes()
    work: list[tuple[Drive[Any], DriveFile]] = []
    for label, drive in services.drives.items():
        record = await _drive_file_record(services.catalog, backup, label, drive)
        if record.status is Status.FINISHED:
            continue
        if record.status is Status.FAILED:
            record = await services.catalog.update_drive_file(
                record.id, status=Status.PENDING, error=None)
        work.append((drive, record))
    for record in backup.drive_files:  # drives removed from the config since the first try
        if record.drive not in services.drives and record.status is not Status.FINISHED:
            await services.catalog.update_drive_file(
                record.id, status=Status.FAILED, error=f"drive {record.drive!r} is not configured")
    await asyncio.gather(*(
        upload_one(services, backup, drive, record, manifest, streams.get(drive.label))
        for drive, record in work))
    return await services.catalog.get_backup(backup.id)


async def upload_one(
    services: Services, backup: Backup, drive: Drive[Any], record: DriveFile,
    manifest: bytes, stream: asyncio.Task[StoredFile] | None = None,
) -> DriveFile:
    """One drive's copy of the dump and its companions; recorded, never raised."""
    catalog = services.catalog
    assert backup.dump_path is not None and backup.size is not None and backup.sha256
    size, sha256 = backup.size, backup.sha256
    dump_path = Path(backup.dump_path)
    with structlog.contextvars.bound_contextvars(drive=drive.label):
        started = time.monotonic()
        try:
            if record.path is None:
                stored = await _from_stream(services, drive, stream)
                if stored is None:
                    record, stored = await _with_retries(
                        services, drive, record, "dump",
                        lambda adopt: drive.upload(dump_path, backup.name, size=size,
                                                   sha256=sha256, adopt=adopt))
                record = await catalog.update_drive_file(record.id, path=stored.path,
                                                         size=stored.size)
                log.info("upload.finished", path=stored.path, bytes=stored.size,
                         seconds=round(time.monotonic() - started, 3),
                         streamed=stream is not None and stream.done()
                         and not stream.cancelled() and stream.exception() is None)
                if backup.encrypted:
                    await check_age_header(drive, stored.path)
            globals_file = backup.globals_file
            if globals_file is not None and record.globals_path is None:
                local = dump_path.parent / globals_file["File"]
                record, stored = await _with_retries(
                    services, drive, record, "globals",
                    lambda adopt: drive.upload(local, globals_file["File"],
                                               size=globals_file["Size"],
                                               sha256=globals_file["Sha256"], adopt=adopt))
                if backup.encrypted:
                    await check_age_header(drive, stored.path)
                record = await catalog.update_drive_file(record.id, globals_path=stored.path)
            if record.manifest_path is None:
                assert backup.manifest_name is not None
                name = backup.manifest_name
                record, stored = await _with_retries(
                    services, drive, record, "manifest",
                    lambda adopt: drive.put_bytes(manifest, name, adopt=adopt))
                record = await catalog.update_drive_file(record.id, manifest_path=stored.path)
        except _UploadFailed as failure:
            services.upload_failures[drive.label] += 1
            log.error("upload.failed", error=failure.reason, part=failure.part,
                      attempts=failure.attempts)
            return await catalog.update_drive_file(record.id, status=Status.FAILED,
                                                   error=failure.reason)
        return await catalog.update_drive_file(
            record.id, status=Status.FINISHED, error=None, finished_at=utcnow(), missing=False)


class _UploadFailed(Exception):
    def __init__(self, part: str, reason: str, attempts: int) -> None:
        super().__init__(reason)
        self.part = part
        self.reason = reason
        self.attempts = attempts


async def _from_stream(services: Services, drive: Drive[Any],
                       stream: asyncio.Task[StoredFile] | None) -> StoredFile | None:
    """The streamed upload's result, or None when there was none or it failed (the dump
    is then uploaded from the stage file)."""
    if stream is None:
        return None
    try:
        return await stream
    except asyncio.CancelledError:
        if not stream.cancelled():
            raise
        return None
    except Exception as error:
        services.upload_attempt_failures[drive.label] += 1
        log.warning("upload.stream_failed", error=str(error) or type(error).__name__,
                    then="uploading from the stage file")
        return None


#: Failures of a transport that a later attempt may not meet again.
_TRANSIENT = (OSError, TimeoutError, aiohttp.ClientError)


async def _with_retries(
    services: Services, drive: Drive[Any], record: DriveFile, part: str,
    attempt_upload: Callable[[bool], Awaitable[StoredFile]],
) -> tuple[DriveFile, StoredFile]:
    """Upload one file with retries and backoff. Retried: a retryable DriveError and a
    transport failure; a programming error is not retried (and is logged with its
    traceback). ``attempt_upload(adopt)``: ``adopt`` is True when an earlier attempt (of
    this process or a dead one) may have stored it — for the dump, when the drive file
    records an earlier attempt (``Attempts`` counts the dump's uploads); the companions
    carry the backup's id in their names and content, so an identical one already there
    is always this backup's own."""
    policy = services.settings.uploads
    attempts = drive.config.attempts or policy.attempts
    reason = "not attempted"
    for attempt in range(1, attempts + 1):
        if part == "dump":
            adopt = record.attempts > 0
            record = await services.catalog.update_drive_file(record.id,
                                                              attempts=record.attempts + 1)
        else:
            adopt = True
        try:
            return record, await attempt_upload(adopt)
        except DriveError as failure:
            reason = str(failure) or type(failure).__name__
            retry = failure.retryable and attempt < attempts
        except _TRANSIENT as failure:
            reason = f"{type(failure).__name__}: {failure}"
            retry = attempt < attempts
        except Exception as failure:
            log.exception("upload.crashed", part=part)
            services.upload_attempt_failures[drive.label] += 1
            raise _UploadFailed(part, f"internal error: {type(failure).__name__}: {failure}",
                                attempt) from None
        services.upload_attempt_failures[drive.label] += 1
        if not retry:
            raise _UploadFailed(part, reason, attempt)
        delay = backoff(attempt, policy.initial_backoff, policy.max_backoff)
        log.warning("upload.retrying", part=part, attempt=attempt, error=reason,
                    delay=round(delay, 2))
        await services.sleep(delay)
    raise _UploadFailed(part, reason, attempts)


async def check_age_header(drive: Drive[Any], path: str) -> None:
    """The drive's own copy must begin with the age header: never silently plaintext."""
    from .encryption import AGE_HEADER

    head = bytearray()
    async for block in drive.download(path, start=0, end=len(AGE_HEADER)):
        head += block
    if bytes(head[:len(AGE_HEADER)]) != AGE_HEADER:
        raise VerificationError(
            f"the copy on drive {drive.label!r} ({path}) does not begin with the age header: "
            "it is not encrypted", retryable=False)


def backoff(attempt: int, initial: float, maximum: float) -> float:
    """Exponential backoff, capped at ``maximum``, with "equal" jitter: a random wait in
    the upper half of each step (attempt 1 waits between ``initial``/2 and ``initial``)."""
    ceiling = min(maximum, initial * (2 ** min(attempt - 1, 60)))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography


# ---------------------------------------------------------------------------- outcome


async def settle(services: Services, backup: Backup) -> Backup:
    """Finished when every drive holds the files (then the stage goes); else failed."""
    catalog = services.catalog
    failed = [f for f in backup.drive_files if f.status is not Status.FINISHED]
    if not backup.drive_files:
        return await catalog.update_backup(backup.id, status=Status.FAILED,
                                           error="no drive is configured")
    if failed:
        reason = "; ".join(f"upload to {f.drive} failed: {f.error}" for f in failed)
        if backup.dump_path:
            for kept_file in [backup.dump_path, *map(str, companion_paths(backup))]:
                await keep_dump(kept_file)
        return await catalog.update_backup(backup.id, status=Status.FAILED, error=reason)
    # One write: nobody ever reads "finished" with a DumpPath about to vanish. Should
    # the process die before the file goes, recovery removes it (runtime.recover).
    kept = [Path(backup.dump_path), *companion_paths(backup)] if backup.dump_path else []
    backup = await catalog.update_backup(
        backup.id, status=Status.FINISHED, error=None, finished_at=utcnow(), dump_path=None)
    for path in kept:
        await asyncio.to_thread(remove_dump_file, path)
    return backup


async def flag_if_suspect(services: Services, backup: Backup) -> Backup:
    """A finished backup much smaller than the label's recent ones, in size or in rows,
    is flagged suspect (SPEC §6.3); it stays finished."""
    policy = services.settings.anomaly
    if not policy.enabled or backup.size is None:
        return backup
    history = [b for b in await services.catalog.list_backups(
        label=backup.label, status=Status.FINISHED, limit=policy.history + 1)
        if b.id != backup.id and b.seq < backup.seq][:policy.history]
    reason = suspect_reason(backup, history, policy.threshold)
    if reason is None:
        return backup
    log.warning("backup.suspect", reason=reason)
    return await services.catalog.update_backup(backup.id, suspect=True, suspect_reason=reason)


#: Fewer earlier backups than this make no baseline worth comparing with.
MIN_HISTORY = 3


def suspect_reason(backup: Backup, history: list[Backup], threshold: float) -> str | None:
    """Why ``backup`` looks suspicious against ``history`` (its label's previous finished
    backups, newest first), or None."""
    if len(history) < MIN_HISTORY:
        return None
    floor = 1 - threshold
    sizes = [b.size for b in history if b.size is not None]
    if backup.size is not None and len(sizes) >= MIN_HISTORY:
        median = statistics.median(sizes)
        if backup.size < floor * median:
            return (f"{_bytes(backup.size)}, the last {len(sizes)} had a median of "
                    f"{_bytes(median)}")
    rows = [b.row_count for b in history if b.row_count is not None]
    if backup.row_count is not None and len(rows) >= MIN_HISTORY:
        median = statistics.median(rows)
        if backup.row_count < floor * median:
            return (f"{backup.row_count} rows, the last {len(rows)} had a median of "
                    f"{median:g} rows")
    return None


def _bytes(count: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count} bytes"


async def keep_dump(dump_path: str) -> None:
    """A failed backup keeps its local dump for ``retry``: now it is worth making durable."""
    try:
        await asyncio.to_thread(fsync_file, Path(dump_path))
    except OSError as error:
        log.warning("dump.not_durable", path=dump_path, error=error.strerror or str(error))


async def remove_local_dump(catalog: Catalog, backup: Backup) -> Backup:
    if backup.dump_path:
        for path in [Path(backup.dump_path), *companion_paths(backup)]:
            await asyncio.to_thread(remove_dump_file, path)
        backup = await catalog.update_backup(backup.id, dump_path=None)
    return backup


def remove_dump_file(path: Path) -> None:
    remove_quietly(path)
    with contextlib.suppress(OSError):
        fsync_directory(path.parent)
