"""The catalog: schema versions, WAL, sharing between processes, list queries."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from backupmand.catalog import MIGRATIONS, Catalog
from backupmand.errors import CatalogError, NotFoundError
from backupmand.models import Status


async def test_schema_version_wal_and_reopening(tmp_path: Path):
    path = tmp_path / "catalog.db"
    async with Catalog.open("sqlite", path) as catalog:
        backup = await catalog.create_backup(label="a", source_provider="sqlite", name="n",
                                             compression="zstd")
    async with Catalog.open("sqlite", path) as catalog:  # migrations are idempotent
        assert (await catalog.get_backup(backup.id)).label == "a"
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_newer_schema_is_refused(tmp_path: Path):
    path = tmp_path / "catalog.db"
    async with Catalog.open("sqlite", path):
        pass
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(CatalogError, match="upgrade backupmand"):
        async with Catalog.open("sqlite", path):
            pass


async def test_two_connections_write_at_the_same_time(tmp_path: Path):
    path = tmp_path / "catalog.db"
    async with Catalog.open("sqlite", path) as first, Catalog.open("sqlite", path) as second:
        async def write(catalog: Catalog, label: str) -> None:
            for index in range(100):
                backup = await catalog.create_backup(label=label, source_provider="sqlite",
                                                     name=f"{label}-{index}", compression="none")
                record = await catalog.create_drive_file(backup_id=backup.id, drive="d",
                                                         provider="local", label=backup.name)
                await catalog.update_drive_file(record.id, status=Status.FINISHED, path="/x")
                await catalog.update_backup(backup.id, status=Status.FINISHED)

        await asyncio.gather(write(first, "one"), write(second, "two"))
        everything = await first.list_backups()
    assert len(everything) == 200
    assert all(b.status is Status.FINISHED and len(b.drive_files) == 1 for b in everything)


async def test_list_order_filters_and_lookups():
    async with Catalog.open("memory") as catalog:
        made = []
        for index in range(6):
            made.append(await catalog.create_backup(
                label="even" if index % 2 == 0 else "odd", source_provider="sqlite",
                name=f"n{index}", compression="zstd"))
        await catalog.update_backup(made[0].id, status=Status.FAILED, error="boom")
        listed = await catalog.list_backups()
        assert [b.id for b in listed] == [b.id for b in reversed(made)]
        assert [b.id for b in await catalog.list_backups(limit=2, offset=1)] == [made[4].id, made[3].id]
        assert {b.label for b in await catalog.list_backups(label="odd")} == {"odd"}
        (failed,) = await catalog.list_backups(status=Status.FAILED)
        assert failed.error == "boom" and failed.updated_at is not None
        assert made[1].updated_at is None, "UpdatedAt is null until the first change"
        with pytest.raises(NotFoundError):
            await catalog.get_backup("missing")
        with pytest.raises(NotFoundError):
            await catalog.update_backup("missing", status=Status.FAILED)
        counts = await catalog.count_backups()
        assert counts[("even", "failed")] == 1 and counts[("even", "pending")] == 2


async def test_fail_backup_fails_pending_drive_files_only():
    async with Catalog.open("memory") as catalog:
        backup = await catalog.create_backup(label="a", source_provider="sqlite", name="n",
                                             compression="zstd")
        done = await catalog.create_drive_file(backup_id=backup.id, drive="one", provider="local",
                                               label="n")
        await catalog.update_drive_file(done.id, status=Status.FINISHED)
        await catalog.create_drive_file(backup_id=backup.id, drive="two", provider="local", label="n")
        failed = await catalog.fail_backup(backup.id, "interrupted")
    assert failed.status is Status.FAILED and failed.dump_status is Status.FAILED
    assert {f.drive: f.status for f in failed.drive_files} == {
        "one": Status.FINISHED, "two": Status.FAILED}


async def _assert_list_matches_to_api(catalog: Catalog) -> None:
    filters: list[dict[str, object]] = [
        {}, {"limit": 3}, {"limit": 2, "offset": 2}, {"offset": 5}, {"offset": 50},
        {"status": Status.FAILED}, {"label": "even"}, {"label": "odd 'quoted' \"label\""},
        {"status": Status.PENDING, "label": "even", "limit": 1},
    ]
    for chosen in filters:
        expected = {"Results": [b.to_api() for b in await catalog.list_backups(**chosen)]}
        assert json.loads(await catalog.list_backups_json(**chosen)) == expected, chosen


async def _fill(catalog: Catalog) -> None:
    """Backups and drive files in every state the pipeline leaves them in."""
    for index in range(7):
        backup = await catalog.create_backup(
            label="even" if index % 2 == 0 else "odd 'quoted' \"label\"",
            source_provider="postgres", name=f"n{index}.sql.zst", compression="zstd")
        for drive in ("zeta", "alpha", "mid")[: index % 4]:
            record = await catalog.create_drive_file(
                backup_id=backup.id, drive=drive, provider="local", label=backup.name)
            if drive != "mid":
                await catalog.update_drive_file(
                    record.id, status=Status.FINISHED, path=f"/d/{drive}/é\\n", size=12,
                    attempts=2, finished_at=record.created_at)
        if index % 3 == 1:
            await catalog.update_backup(backup.id, status=Status.FAILED, size=index,
                                        sha256="ab" * 32, error="boom:\n\t\"quoted\" ✓")
        elif index % 3 == 2:
            await catalog.update_backup(backup.id, status=Status.FINISHED, dump_path="/tmp/x")


async def test_the_api_list_rendered_by_sqlite_matches_to_api():
    """list_backups_json (GET /api/backups) serves what Backup.to_api says, for every filter,
    after every kind of write: the triggers keep each backup's stored rendering current."""
    async with Catalog.open("memory") as catalog:
        await _fill(catalog)
        await _assert_list_matches_to_api(catalog)
        # Two drive files created at the same instant are ordered by drive label.
        await catalog._db.execute(
            "UPDATE drive_files SET created_at = '2025-07-02T10:00:00.000000Z'")
        await _assert_list_matches_to_api(catalog)
        listed = await catalog.list_backups()
        assert [f.drive for f in listed[3].drive_files] == ["alpha", "mid", "zeta"]
        # fail_backup, a deleted drive file, a deleted backup (and its files, by cascade).
        pending = await catalog.list_backups(status=Status.PENDING)
        await catalog.fail_backup(pending[0].id, "interrupted")
        await catalog.delete_drive_file(listed[3].drive_files[1].id)
        await catalog.delete_backup(listed[4].id)
        await catalog._db.execute("DELETE FROM backups WHERE id = ?", (listed[5].id,))
        await _assert_list_matches_to_api(catalog)
        assert len(await catalog.list_backups()) == 5


async def test_migrating_renders_the_backups_already_there(tmp_path: Path):
    """A catalog of schema 1 with backups in it: opening it numbers them in the order
    they were written (not by their clock), and renders their API objects."""
    path = tmp_path / "catalog.db"
    with sqlite3.connect(path, isolation_level=None) as raw:
        for statement in MIGRATIONS[0].split(";"):
            if statement.strip():
                raw.execute(statement)
        raw.execute("PRAGMA user_version = 1")
        # The second backup was written with a clock set back: it looks older.
        for index, created in enumerate(["2025-07-02T10:00:00.000000Z",
                                         "2025-07-01T09:00:00.000000Z",
                                         "2025-07-03T08:00:00.000000Z"]):
            raw.execute(
                "INSERT INTO backups (id, label, source_provider, status, dump_status, name, "
                "compression, size, sha256, created_at) VALUES (?, 'a', 'sqlite', 'finished', "
                "'finished', ?, 'zstd', 10, ?, ?)", (f"b{index}", f"n{index}", "ab" * 32, created))
            raw.execute(
                "INSERT INTO drive_files (id, backup_id, drive, provider, label, path, status, "
                "attempts, created_at) VALUES (?, ?, 'd', 'local', ?, '/x', 'finished', 1, ?)",
                (f"f{index}", f"b{index}", f"n{index}", created))
    async with Catalog.open("sqlite", path) as catalog:
        listed = await catalog.list_backups()
        assert [b.id for b in listed] == ["b2", "b1", "b0"]
        assert [b.seq for b in listed] == [3, 2, 1]
        await _assert_list_matches_to_api(catalog)
        newer = await catalog.create_backup(label="a", source_provider="sqlite", name="n3",
                                            compression="zstd")
        assert newer.seq == 4


async def test_a_changed_field_list_renders_every_backup_again(tmp_path: Path):
    """The rendering triggers are derived from models' field lists: when they change
    (another backupmand version), opening the catalog recreates them and re-renders."""
    path = tmp_path / "catalog.db"
    async with Catalog.open("sqlite", path) as catalog:
        await _fill(catalog)
    with sqlite3.connect(path, isolation_level=None) as raw:
        raw.execute("UPDATE backups SET api_json = '{}'")
        raw.execute("UPDATE meta SET value = 'an older field list' WHERE key = 'render'")
    async with Catalog.open("sqlite", path) as catalog:
        await _assert_list_matches_to_api(catalog)
