"""The long-lived parts of a backupmand process, and how backups are started.

A Runtime owns the catalog, the sources, drives and notifiers, the locks, and the
tasks of the backups it runs. ``serve``, ``run``, ``retry`` and the API all start
backups through it, so every path takes the same per-source lock and runs the same
pipeline. Opening a Runtime recovers what a dead process left behind; closing it
stops in-flight backups after a grace period and records them as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import structlog

from . import logs
from .catalog import Catalog
from .config import Settings
from .drives import build_drive
from .drives.base import Drive
from .errors import ConflictError, DriveError, InvalidInputError, NotFoundError
from .files import remove_quietly
from .locks import FileLock, Locks, slug
from .models import Backup, Status
from .notifiers import Notifier, build_notifiers
from .pipeline import (
    INTERRUPTED,
    Services,
    dump_name,
    keep_dump,
    name_pattern,
    remove_dump_file,
    remove_local_dump,
    run_backup,
)
from .sources import build_source

log = structlog.get_logger("backupmand.runtime")

RECOVERED = "interrupted: the process running this backup stopped before it ended"
#: Seconds each drive's sweep may take at start (S3 lists its unfinished uploads).
SWEEP_TIMEOUT = 10.0


def _remove_existing(paths: list[Path]) -> None:
    for path in paths:
        if path.exists():
            remove_dump_file(path)
            log.info("recovery.removed", path=str(path))


class Runtime:
    def __init__(self, settings: Settings, services: Services, locks: Locks) -> None:
        self.settings = settings
        self.services = services
        self.catalog = services.catalog
        self.locks = locks
        self.closing = False
        self._tasks: dict[str, asyncio.Task[Backup]] = {}
        self._progress_listeners: list[Callable[[str, str], None]] = []
        #: label -> (backup id, set once that backup let go of the source's lock)
        self._releases: dict[str, tuple[str, asyncio.Event]] = {}
        self.running: dict[str, str] = {}  # label -> step, for STATUS= and /health
        services.on_progress = self._on_progress

    # ------------------------------------------------------------------ life cycle

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, settings: Settings, *, daemon: bool = False, recover: bool = True
    ) -> AsyncIterator[Runtime]:
        logs.register_secrets(settings.secrets())
        private_locks: str | None = None
        if settings.database.provider == "memory":
            # A memory catalog is private to this process, and so are its locks.
            private_locks = tempfile.mkdtemp(prefix="backupmand-locks-")
            locks = Locks(Path(private_locks))
        else:
            locks = Locks(settings.state_directory / "locks")
        daemon_lock: FileLock | None = locks.daemon() if daemon else None
        try:
            async with Catalog.open(settings.database.provider, settings.database.db_path) as catalog:
                sources = {config.label: build_source(config) for config in settings.data_sources}
                drives = {config.label: build_drive(config, settings.host_name)
                          for config in settings.drives}
                for source in sources.values():
                    logs.register_secrets(source.secrets())
                for drive in drives.values():
                    logs.register_secrets(drive.secrets())
                services = Services(
                    settings=settings, catalog=catalog, sources=sources, drives=drives,
                    notifiers=build_notifiers(settings),
                    dump_slots=asyncio.Semaphore(settings.dump_concurrency),
                    locks=locks,
                )
                runtime = cls(settings, services, locks)
                try:
                    if recover:
                        await runtime.recover()
                    yield runtime
                finally:
                    await runtime.close()
        finally:
            if daemon_lock is not None:
                daemon_lock.release()
            if private_locks is not None:
                shutil.rmtree(private_locks, ignore_errors=True)

    async def close(self) -> None:
        await self.stop(self.settings.shutdown_grace)
        closables: list[Drive[Any] | Notifier] = [*self.services.drives.values(),
                                                  *self.services.notifiers]
        for closable in closables:
            try:
                await closable.aclose()
            except Exception as error:
                log.warning("close.failed", component=type(closable).__name__, error=str(error))

    async def stop(self, grace: float) -> None:
        """Take no new work; let in-flight backups run ``grace`` seconds, then stop them."""
        self.closing = True
        tasks = list(self._tasks.values())
        if not tasks:
            return
        log.info("shutdown.waiting", backups=len(tasks), grace=grace)
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("shutdown.stopping_backups", backups=len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    # ------------------------------------------------------------------ recovery

    async def recover(self) -> None:
        """Make the catalog and the tmp folders tell the truth after a crash.

        A pending backup whose source lock nobody holds was left by a dead process: it
        becomes failed. ``.partial`` files and scratch folders of free sources go, and so
        do temporary files in local drives. Kept dumps stay, ready for ``retry``.
        """
        for backup in await self.catalog.pending_backups():
            lock = self.locks.source(backup.label)
            if await asyncio.to_thread(lock.try_acquire):
                try:
                    # Still pending? Its process may have ended it since the list was read.
                    recovered = await self.catalog.fail_backup(backup.id, RECOVERED)
                    if recovered.error != RECOVERED:
                        continue
                    log.warning("backup.recovered", backup_id=backup.id, label=backup.label,
                                reason=RECOVERED)
                    source = self.services.sources.get(backup.label)
                    if recovered.dump_status is Status.FAILED and source is not None:
                        # A dump published just before the process died, never recorded.
                        folder = source.config.tmp_folder.expanduser()
                        await asyncio.to_thread(remove_quietly, folder / backup.name)
                    elif recovered.dump_path:
                        await keep_dump(recovered.dump_path)
                finally:
                    lock.release()
        uploaded: list[Path] = []
        for backup in await self.catalog.list_backups(status=Status.FINISHED, limit=200):
            # Died between recording success and removing the dump.
            if backup.dump_path:
                await remove_local_dump(self.catalog, backup)
            source = self.services.sources.get(backup.label)
            if source is not None:
                uploaded.append(source.config.tmp_folder.expanduser() / backup.name)
        await asyncio.to_thread(_remove_existing, uploaded)
        free = []
        for label in self.services.sources:
            lock = self.locks.source(label)
            if await asyncio.to_thread(lock.try_acquire):
                free.append((label, lock))
        try:
            await asyncio.to_thread(self._sweep, [label for label, _ in free])
            await self._sweep_drives([label for label, _ in free])
        finally:
            for _, lock in free:
                lock.release()

    def _sweep(self, labels: list[str]) -> None:
        patterns = [name_pattern(label) for label in labels]
        folders = {self.services.sources[label].config.tmp_folder.expanduser() for label in labels}
        for folder in folders:
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                if not any(p.match(entry.name) for p in patterns):
                    continue
                if entry.name.endswith(".partial"):
                    remove_quietly(entry)
                    log.info("recovery.removed", path=str(entry))
                elif entry.name.startswith(".") and entry.name.endswith(".work") and entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                    log.info("recovery.removed", path=str(entry))

    async def _sweep_drives(self, labels: list[str]) -> None:
        """What uploads of dead processes left on the drives (temporary files, unfinished
        multipart uploads) for the sources whose locks this process holds; best effort,
        each drive within SWEEP_TIMEOUT seconds."""
        if not labels:
            return
        patterns = [name_pattern(label) for label in labels]

        def is_stale(name: str) -> bool:
            return any(pattern.match(name) for pattern in patterns)

        async def sweep(drive: Drive[Any]) -> None:
            try:
                async with asyncio.timeout(SWEEP_TIMEOUT):
                    removed = await drive.sweep(is_stale)
            except (DriveError, OSError, TimeoutError) as error:
                log.warning("recovery.sweep_failed", drive=drive.label,
                            error=str(error) or type(error).__name__)
                return
            for leftover in removed:
                log.info("recovery.removed", drive=drive.label, path=leftover)

        await asyncio.gather(*(sweep(drive) for drive in self.services.drives.values()))

    # ------------------------------------------------------------------ starting backups

    def source_labels(self, labels: Iterable[str] | None) -> list[str]:
        if not labels:
            return list(self.services.sources)
        chosen = list(dict.fromkeys(labels))
        unknown = [label for label in chosen if label not in self.services.sources]
        if unknown:
            raise InvalidInputError(f"unknown data source(s): {', '.join(unknown)}")
        return chosen

    async def start_backups(self, labels: Iterable[str] | None = None) -> list[Backup]:
        """Create a pending backup for every selected source that is not already running,
        start them, and return the records. ConflictError when none could start."""
        if self.closing:
            raise ConflictError("backupmand is shutting down")
        started: list[Backup] = []
        busy: list[str] = []
        for label in self.source_labels(labels):
            lock = await self._acquire(label)
            if lock is None:
                busy.append(label)
                log.info("backup.skipped", label=label, reason="a backup of it is in flight")
                continue
            try:
                source = self.services.sources[label]
                compression, _level = self.settings.compression_for(source.config)
                backup_id = str(uuid.uuid4())
                backup = await self.catalog.create_backup(
                    backup_id=backup_id, label=label, source_provider=source.provider,
                    name=dump_name(label, backup_id, source.extension, compression),
                    compression=compression, pid=os.getpid(),
                )
            except BaseException:
                lock.release()
                raise
            self._launch(backup, lock)
            started.append(backup)
        if not started:
            raise ConflictError(
                f"a backup is already in flight for {', '.join(busy)}" if busy else
                "no data source selected")
        return started

    async def retry(self, backup_id: str) -> Backup:
        """Re-run what failed: the dump if it failed, then the unfinished uploads."""
        if self.closing:
            raise ConflictError("backupmand is shutting down")
        backup = await self.catalog.get_backup(backup_id)
        if backup.status is not Status.FAILED:
            raise ConflictError(f"backup {backup_id} is {backup.status.value}, not failed")
        if backup.label not in self.services.sources and backup.dump_status is not Status.FINISHED:
            raise ConflictError(f"data source {backup.label!r} is no longer configured")
        if backup.dump_status is Status.FINISHED and (
            not backup.dump_path or not Path(backup.dump_path).is_file()
        ):
            raise ConflictError(
                f"the local dump of backup {backup_id} is gone, so its uploads cannot be "
                "retried: start a new backup")
        lock = await self._acquire(backup.label)
        if lock is None:
            raise ConflictError(f"a backup of {backup.label} is in flight")
        try:
            backup = await self.catalog.update_backup(
                backup_id, status=Status.PENDING, error=None, pid=os.getpid(),
                dump_status=Status.PENDING if backup.dump_status is Status.FAILED
                else backup.dump_status,
            )
        except BaseException:
            lock.release()
            raise
        self._launch(backup, lock)
        return backup

    def _launch(self, backup: Backup, lock: FileLock) -> None:
        released = asyncio.Event()
        self._releases[backup.label] = (backup.id, released)

        def release() -> None:
            lock.release()
            released.set()

        async def run() -> Backup:
            try:
                return await run_backup(self.services, backup, recorded=release)
            finally:
                if lock.held:  # stopped before its outcome was recorded
                    release()
                    self.running.pop(backup.label, None)
                self._tasks.pop(backup.id, None)
                if self._releases.get(backup.label, (None,))[0] == backup.id:
                    del self._releases[backup.label]

        self._tasks[backup.id] = asyncio.create_task(run(), name=f"backup-{backup.id}")

    async def _acquire(self, label: str) -> FileLock | None:
        """The source's lock, or None while a backup of it is in flight.

        A backup of ours whose outcome is already in the catalog is about to let go of
        the lock: a client that read that outcome and asks again at once waits for the
        release instead of getting a spurious 409.
        """
        lock = self.locks.source(label)
        if await asyncio.to_thread(lock.try_acquire):
            return lock
        holder = self._releases.get(label)
        if holder is None:
            return None
        backup_id, released = holder
        try:
            current = await self.catalog.get_backup(backup_id)
        except NotFoundError:
            current = None
        if current is not None and current.status is Status.PENDING:
            return None
        try:
            await asyncio.wait_for(released.wait(), 10)
        except TimeoutError:
            return None
        return lock if await asyncio.to_thread(lock.try_acquire) else None

    async def wait(self, backup_ids: Iterable[str]) -> list[Backup]:
        """Wait for the given backups to end; return their final records."""
        ids = list(backup_ids)
        tasks = [self._tasks[i] for i in ids if i in self._tasks]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        return [await self.catalog.get_backup(i) for i in ids]

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    # ------------------------------------------------------------------ progress

    def add_progress_listener(self, listener: Callable[[str, str], None]) -> None:
        self._progress_listeners.append(listener)

    def _on_progress(self, label: str, step: str) -> None:
        if step in (Status.FINISHED.value, Status.FAILED.value):
            self.running.pop(label, None)
        else:
            self.running[label] = step
        for listener in self._progress_listeners:
            with contextlib.suppress(Exception):
                listener(label, step)

    # ------------------------------------------------------------------ lookups

    async def find_download(self, identifier: str) -> tuple[Backup, Any]:
        """A backup id or drive file id -> (backup, drive file or None for the local dump)."""
        try:
            backup = await self.catalog.get_backup(identifier)
            record = None
        except NotFoundError:
            drive_file = await self.catalog.get_drive_file(identifier)
            backup = await self.catalog.get_backup(drive_file.backup_id)
            return backup, drive_file
        finished = [f for f in backup.drive_files if f.status is Status.FINISHED and f.path]
        finished.sort(key=lambda f: f.provider != "local")
        if finished:
            record = finished[0]
        elif not (backup.dump_path and Path(backup.dump_path).is_file()):
            raise ConflictError(f"backup {identifier} has no stored file to download")
        return backup, record

    def drive(self, label: str) -> Drive[Any]:
        try:
            return self.services.drives[label]
        except KeyError:
            raise ConflictError(f"drive {label!r} is not configured") from None


__all__ = ["INTERRUPTED", "RECOVERED", "Runtime", "slug"]
