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
from .errors import ConflictError, InvalidInputError, NotFoundError, RestoreError
from .files import remove_quietly
from .locks import FileLock, Locks, slug
from .models import Backup, Status
from .notifiers import Notifier, build_notifiers
from .pipeline import (
    INTERRUPTED,
    dump_name,
    keep_dump,
    name_pattern,
    remove_dump_file,
    remove_local_dump,
    run_backup,
)
from .services import Services
from .sources import build_source

log = structlog.get_logger("backupmand.runtime")

RECOVERED = "interrupted: the process running this backup stopped before it ended"


def _remove_unrecorded(folder: Path, name: str) -> None:
    from .manifest import stem

    remove_quietly(folder / name)
    with contextlib.suppress(ValueError, OSError):
        for companion in folder.glob(f"{stem(name)}.globals.*"):
            remove_quietly(companion)


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
        #: Restore drills running in this process, by backup id, with their source's label.
        self._drills: dict[str, asyncio.Task[Any]] = {}
        self._drill_labels: dict[str, str] = {}
        services.on_progress = self._on_progress

    # ------------------------------------------------------------------ life cycle

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, settings: Settings, *, daemon: bool = False, recover: bool = True,
        drop_scratch: bool | None = None,
    ) -> AsyncIterator[Runtime]:
        """``drop_scratch``: also drop the scratch databases crashed drills left behind
        (default: for the daemon)."""
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
                        await runtime.recover(drop_scratch=daemon if drop_scratch is None
                                              else drop_scratch)
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
        """Take no new work; let in-flight backups run ``grace`` seconds, then stop them.
        Drills are stopped at once (their scratch databases are dropped)."""
        self.closing = True
        drills = list(self._drills.values())
        for task in drills:
            task.cancel()
        if drills:
            await asyncio.gather(*drills, return_exceptions=True)
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

    async def recover(self, *, drop_scratch: bool = False) -> None:
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
                        # A dump (and its companion) published just before the process
                        # died, never recorded.
                        folder = source.config.tmp_folder.expanduser()
                        await asyncio.to_thread(_remove_unrecorded, folder, backup.name)
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
            labels = [label for label, _ in free]
            await asyncio.to_thread(self._sweep, labels)
            if drop_scratch:
                from .drills import drop_leftovers

                await drop_leftovers(self.services, labels)
            patterns = [name_pattern(label) for label in labels]
            for drive in self.services.drives.values():
                try:
                    removed = await drive.sweep(lambda name: any(p.match(name) for p in patterns))
                except Exception as error:
                    log.warning("recovery.sweep_failed", drive=drive.label,
                                error=str(error) or type(error).__name__)
                    continue
                for leftover in removed:
                    log.info("recovery.removed", drive=drive.label, path=leftover)
        finally:
            for _, lock in free:
                lock.release()

    def _sweep(self, labels: list[str]) -> None:
        """The tmp folders' leftovers of dead dumps (drives sweep their own)."""
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
        await asyncio.to_thread(self.catalog.check_identity)
        started: list[Backup] = []
        busy: list[str] = []
        for label in self.source_labels(labels):
            lock = await self._acquire(label)
            if lock is None and await self._stop_drills_of(label):
                lock = await self._acquire(label)
            if lock is None:
                busy.append(label)
                log.info("backup.skipped", label=label, reason="a backup of it is in flight")
                continue
            try:
                source = self.services.sources[label]
                compression, _level = self.settings.compression_for(source.config)
                encrypted = self.settings.encryption_for(source.config) is not None
                backup_id = str(uuid.uuid4())
                backup = await self.catalog.create_backup(
                    backup_id=backup_id, label=label, source_provider=source.provider,
                    name=dump_name(label, backup_id, source.extension, compression, encrypted),
                    compression=compression, pid=os.getpid(), host=self.settings.host_name,
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
        await asyncio.to_thread(self.catalog.check_identity)
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

    # ------------------------------------------------------------------ drills

    async def verify(self, backup_id: str, *, drive: str | None = None,
                     identity: Path | None = None) -> Backup:
        """Drill one backup now, holding its source's lock (ConflictError when busy)."""
        backup = await self.catalog.get_backup(backup_id)
        if backup.status is not Status.FINISHED:
            raise ConflictError(f"backup {backup_id} is {backup.status.value}: only finished "
                                "backups are drilled")
        lock = await self._acquire(backup.label)
        if lock is None:
            raise ConflictError(f"a backup or drill of {backup.label} is in flight")
        try:
            from .drills import drill

            return await drill(self.services, backup, drive=drive, identity=identity)
        finally:
            lock.release()

    def drilling(self, backup_id: str) -> bool:
        return backup_id in self._drills

    def _track_drill(self, backup_id: str, label: str, task: asyncio.Task[Any]) -> None:
        self._drills[backup_id] = task
        self._drill_labels[backup_id] = label

    def _untrack_drill(self, backup_id: str) -> None:
        self._drills.pop(backup_id, None)
        self._drill_labels.pop(backup_id, None)

    async def _stop_drills_of(self, label: str) -> bool:
        """A backup has priority over a drill of the same source: stop this process's
        drills of ``label`` (their scratch targets are dropped; the next verify tick
        drills again). True when there was one."""
        tasks = [task for backup_id, task in self._drills.items()
                 if self._drill_labels.get(backup_id) == label]
        for task in tasks:
            log.info("verify.yielded", label=label, reason="a backup of the source starts")
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        return bool(tasks)

    async def start_verify(self, backup_id: str, *, drive: str | None = None) -> None:
        """Start a drill in the background (the API's 202); ConflictError while a drill of
        that backup runs, NotFoundError / ConflictError for a backup that cannot be."""
        if self.closing:
            raise ConflictError("backupmand is shutting down")
        backup = await self.catalog.get_backup(backup_id)
        if backup.status is not Status.FINISHED:
            raise ConflictError(f"backup {backup_id} is {backup.status.value}: only finished "
                                "backups are drilled")
        if drive is not None and drive not in self.services.drives:
            raise InvalidInputError(f"drive {drive!r} is not configured")
        if backup_id in self._drills:
            raise ConflictError(f"a drill of backup {backup_id} is already running")

        async def run() -> Backup | None:
            try:
                return await self.verify(backup_id, drive=drive)
            except (ConflictError, RestoreError) as error:
                log.error("verify.not_run", backup_id=backup_id, label=backup.label,
                          reason=str(error))
                return None
            except Exception:
                log.exception("verify.crashed", backup_id=backup_id, label=backup.label)
                return None
            finally:
                self._untrack_drill(backup_id)

        self._track_drill(backup_id, backup.label,
                          asyncio.create_task(run(), name=f"drill-{backup_id}"))

    async def verify_latest(self) -> list[Backup]:
        """Drill the latest finished backup of every source, one at a time (verify_job);
        a source whose backup is running is skipped until the next tick."""
        latest = await self.catalog.last_finished_by_label()
        results = []
        for label in self.services.sources:
            if self.closing:
                break
            backup = latest.get(label)
            if backup is None:
                log.info("verify.skipped", label=label, reason="no finished backup yet")
                continue
            try:
                task = asyncio.create_task(self.verify(backup.id))
                self._track_drill(backup.id, label, task)
                try:
                    results.append(await task)
                finally:
                    self._untrack_drill(backup.id)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if self.closing or (current is not None and current.cancelling()):
                    raise
                continue  # the drill yielded to a backup of the source: the next tick
            except ConflictError as error:
                log.info("verify.skipped", label=label, reason=str(error))
            except RestoreError as error:
                log.error("verify.not_run", backup_id=backup.id, label=label, reason=str(error))
        return results

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
