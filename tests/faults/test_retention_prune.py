"""retention.prune against real folders and a real catalog, with failing deletes;
and `backupmand prune [--dry-run]` as a real process."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

from backupmand.catalog import Catalog
from backupmand.config import RetentionConfig
from backupmand.drives.local import LocalFolder
from backupmand.errors import DriveError
from backupmand.models import Status, utcnow
from backupmand.retention import plan, prune
from tests.helpers import base_config, run_cli, stored_names, write_config


class WatchedFolder(LocalFolder):
    """Records every delete, checks the record is still there, fails on demand."""

    def __init__(self, config: Any, catalog: Catalog, log: list[tuple[str, str]]) -> None:
        super().__init__(config)
        self.catalog = catalog
        self.log = log
        self.refuse: set[str] = set()

    async def delete(self, path: str) -> None:
        self.log.append((self.label, path))
        records = [f for b in await self.catalog.list_backups() for f in b.drive_files]
        assert any(path in (f.path, f.manifest_path, f.globals_path) and f.drive == self.label
                   for f in records), \
            "a remote file is deleted while its record still points at it, never after"
        if path in self.refuse:
            raise DriveError(f"injected: cannot delete {path}")
        await super().delete(path)


def two_drives(tmp_path: Path) -> dict[str, Any]:
    return {"drives": [{"provider": "local", "label": "one", "folder": str(tmp_path / "one")},
                       {"provider": "local", "label": "two", "folder": str(tmp_path / "two")}]}


async def history(runtime: Any, count: int) -> list[Any]:
    finals = []
    for _ in range(count):
        (backup,) = await runtime.start_backups()
        finals += await runtime.wait([backup.id])
    assert all(b.status is Status.FINISHED for b in finals)
    return finals


def stored_paths(backup: Any) -> set[tuple[str, str]]:
    """(drive, path) of every file a backup has on its drives (dumps and manifests)."""
    return {(record.drive, path) for record in backup.drive_files
            for path in (record.path, record.manifest_path, record.globals_path) if path}


def use_policy(runtime: Any, **policy: Any) -> None:
    retention = RetentionConfig(enabled=True, **policy)
    runtime.services.settings = runtime.settings.model_copy(update={"retention": retention})


async def test_remote_files_go_first_and_a_failed_delete_keeps_the_record(
    tmp_path, make_settings, open_runtime
):
    settings = make_settings(**two_drives(tmp_path))
    async with open_runtime(settings) as runtime:
        oldest, middle, newest = await history(runtime, 3)
        deletes: list[tuple[str, str]] = []
        one, two = (WatchedFolder(settings.drive(label), runtime.catalog, deletes)
                    for label in ("one", "two"))
        runtime.services.drives.update(one=one, two=two)
        # The oldest's copy on drive two cannot be deleted (yet).
        two.refuse.add(oldest.drive_file("two").path)
        use_policy(runtime, by="count", value=1, min_keep=1)

        deleted = await prune(runtime.services)

        assert [b.id for b in deleted] == [middle.id], "the failure did not stop the rest"
        left = {b.id: b for b in await runtime.catalog.list_backups()}
        assert set(left) == {oldest.id, newest.id}
        assert left[oldest.id].drive_files == oldest.drive_files, "record intact, retried later"
        # Each file was deleted on the drive that holds it, found by its label.
        # The manifest goes last: the oldest's stays on drive two with its dump.
        expected = (stored_paths(oldest) | stored_paths(middle)) - {
            ("two", oldest.drive_file("two").manifest_path)}
        assert set(deletes) == expected and len(deletes) == 7
        assert not Path(oldest.drive_file("one").path).exists()
        assert Path(oldest.drive_file("two").path).exists()
        for record in middle.drive_files:
            assert not Path(record.path).exists()
        for record in newest.drive_files:
            assert Path(record.path).is_file()

        # The drive works again: the next run finishes the job; deletes are idempotent.
        two.refuse.clear()
        deletes.clear()
        deleted = await prune(runtime.services)
        assert [b.id for b in deleted] == [oldest.id]
        assert {b.id for b in await runtime.catalog.list_backups()} == {newest.id}
        assert sorted(deletes) == sorted(stored_paths(oldest))
        assert sorted(p.name for p in (tmp_path / "one").iterdir()) == stored_names(newest.name)
        assert sorted(p.name for p in (tmp_path / "two").iterdir()) == stored_names(newest.name)
        assert await prune(runtime.services) == []


async def test_an_unconfigured_drive_keeps_the_record(tmp_path, make_settings, open_runtime):
    settings = make_settings(**two_drives(tmp_path))
    async with open_runtime(settings) as runtime:
        oldest, newest = await history(runtime, 2)
        del runtime.services.drives["two"]  # removed from the config since
        use_policy(runtime, by="count", value=1, min_keep=1)
        assert await prune(runtime.services) == []
        assert {b.id for b in await runtime.catalog.list_backups()} == {oldest.id, newest.id}
        assert Path(oldest.drive_file("two").path).is_file()


async def test_age_never_pending_never_the_newest_and_kept_dumps_go(
    tmp_path, make_settings, open_runtime
):
    blocked = tmp_path / "blocked"
    settings = make_settings(drives=[
        {"provider": "local", "label": "one", "folder": str(tmp_path / "one")},
        {"provider": "local", "label": "flaky", "folder": str(blocked / "drive")}])
    async with open_runtime(settings) as runtime:
        blocked.write_text("blocks the drive")
        (failed,) = await history_of_failures(runtime)
        assert failed.dump_path and Path(failed.dump_path).is_file()
        blocked.unlink()
        finished = await history(runtime, 2)
        pending = await runtime.catalog.create_backup(
            label="app", source_provider="sqlite", name="app-pending.sqlite.zst",
            compression="zstd")
        use_policy(runtime, by="age", value=1, min_keep=1)
        # Nothing is a day old yet.
        assert await prune(runtime.services, dry_run=True) == []
        later = utcnow() + dt.timedelta(days=2)
        would = await prune(runtime.services, dry_run=True, now=later)
        assert [b.id for b in would] == [failed.id, finished[0].id]
        assert len(await runtime.catalog.list_backups()) == 4, "a dry run deletes nothing"
        deleted = await prune(runtime.services, now=later)
        assert [b.id for b in deleted] == [failed.id, finished[0].id]
        left = {b.id: b.status for b in await runtime.catalog.list_backups()}
        assert left == {pending.id: Status.PENDING, finished[1].id: Status.FINISHED}
        assert not Path(failed.dump_path).exists(), "the kept dump of a deleted backup goes too"
        assert sorted(p.name for p in (tmp_path / "one").iterdir()) == stored_names(
            finished[1].name)


async def history_of_failures(runtime: Any) -> list[Any]:
    (backup,) = await runtime.start_backups()
    finals = await runtime.wait([backup.id])
    assert finals[0].status is Status.FAILED
    return finals


async def test_retention_runs_after_each_finished_backup(tmp_path, make_settings, open_runtime):
    settings = make_settings(retention={"enabled": True, "by": "count", "value": 2, "min_keep": 1})
    async with open_runtime(settings) as runtime:
        finals = await history(runtime, 4)
        left = await runtime.catalog.list_backups()
    assert [b.id for b in left] == [finals[3].id, finals[2].id]
    assert sorted(p.name for p in (tmp_path / "drive").iterdir()) == stored_names(
        finals[2].name, finals[3].name)


def test_prune_cli_dry_run_then_for_real(tmp_path: Path) -> None:
    building = write_config(tmp_path / "build.yml", base_config(tmp_path))
    for _ in range(3):
        result = run_cli("run", config=building)
        assert result.returncode == 0, result.stdout + result.stderr
    pruning = write_config(tmp_path / "prune.yml", base_config(
        tmp_path, retention={"enabled": True, "by": "count", "value": 1, "min_keep": 1}))
    catalog = tmp_path / "state" / "catalog.db"
    with sqlite3.connect(catalog) as connection:
        rows = connection.execute("SELECT id, name FROM backups ORDER BY created_at").fetchall()
    ids = [row[0] for row in rows]
    files_before = sorted((tmp_path / "drive").iterdir())
    assert len(ids) == 3 and sorted(p.name for p in files_before) == stored_names(
        *(r[1] for r in rows))

    dry = run_cli("prune", "--dry-run", config=pruning)
    assert dry.returncode == 0, dry.stderr
    assert [line.split()[2] for line in dry.stdout.splitlines() if line.startswith("would delete")] \
        == ids[:2]
    (kept,) = [line for line in dry.stdout.splitlines() if line.startswith("keep")]
    assert ids[2] in kept and "(min_keep, count)" in kept, "the rules that keep it"
    assert sorted((tmp_path / "drive").iterdir()) == files_before
    with sqlite3.connect(catalog) as connection:
        assert connection.execute("SELECT count(*) FROM backups").fetchone()[0] == 3

    real = run_cli("prune", config=pruning)
    assert real.returncode == 0, real.stderr
    assert [line.split()[1] for line in real.stdout.splitlines() if line.startswith("deleted")] \
        == ids[:2]
    with sqlite3.connect(catalog) as connection:
        assert [row[0] for row in connection.execute("SELECT id FROM backups")] == [ids[2]]
        assert connection.execute("SELECT count(*) FROM drive_files").fetchone()[0] == 1
    assert sorted(p.name for p in (tmp_path / "drive").iterdir()) == stored_names(rows[2][1])
    again = run_cli("prune", "--dry-run", config=pruning)
    assert again.returncode == 0 and "0 backup(s)" in again.stdout


async def test_a_failed_backup_being_retried_is_never_pruned(tmp_path, make_settings, open_runtime):
    settings = make_settings()
    async with open_runtime(settings) as runtime:
        (first,) = await history(runtime, 1)
        (broken,) = await runtime.start_backups()
        (broken,) = await runtime.wait([broken.id])
        broken = await runtime.catalog.fail_backup(broken.id, "made to fail")
        await runtime.catalog.update_backup(broken.id, status=Status.FAILED, error="made to fail")
        await history(runtime, 1)
        use_policy(runtime, by="count", value=1, min_keep=1)
        lock = runtime.locks.source("app")  # as a retry in another process would hold it
        assert lock.try_acquire()
        try:
            deleted = await prune(runtime.services)
        finally:
            lock.release()
        left = {b.id for b in await runtime.catalog.list_backups()}
        assert first.id in {b.id for b in deleted}
        assert broken.id in left, "the failed backup's source was busy: it stays"
        deleted = await prune(runtime.services)
        assert broken.id in {b.id for b in deleted}


def test_prune_with_retention_disabled_deletes_nothing(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yml", base_config(tmp_path))
    for _ in range(2):
        assert run_cli("run", config=config).returncode == 0
    result = run_cli("prune", config=config)
    assert result.returncode == 0 and "retention is not enabled" in result.stdout
    assert len(list((tmp_path / "drive").iterdir())) == 2 * 2, "two dumps, two manifests"


async def test_a_lost_copy_never_protects_the_history(tmp_path, make_settings, open_runtime):
    """The newest backup's only copy vanished from its drive: before deleting anything,
    retention checks the copies it keeps, marks the lost one, and keeps the older good
    backup that min_keep now protects."""
    settings = make_settings(retention={"enabled": False, "by": "count", "value": 1,
                                        "min_keep": 1})
    async with open_runtime(settings) as runtime:
        older, newest = await history(runtime, 2)
        Path(newest.drive_files[0].path).unlink()
        use_policy(runtime, by="count", value=1, min_keep=1)
        preview = {v.backup.id: v for v in await plan(runtime.services, mark=False)}
        assert preview[older.id].decision.keep, "the preview sees it too, marking nothing"
        assert not (await runtime.catalog.get_backup(newest.id)).drive_files[0].missing
        deleted = await prune(runtime.services)
        assert deleted == []
        left = {b.id: b for b in await runtime.catalog.list_backups()}
        assert set(left) == {older.id, newest.id}
        assert left[newest.id].drive_files[0].missing, "the lost copy is marked"
        assert not left[older.id].drive_files[0].missing
        # A third, good backup (retention runs after it): now both may go.
        (third,) = await history(runtime, 1)
        assert [b.id for b in await runtime.catalog.list_backups()] == [third.id]
