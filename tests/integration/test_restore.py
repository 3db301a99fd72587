"""restore_backup end to end with SQLite sources and local drives (no server needed)."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from backupmand.catalog import Catalog
from backupmand.config import Settings
from backupmand.errors import ConflictError, NotFoundError, RestoreError
from backupmand.models import Backup, Status
from backupmand.restore import restore_backup
from backupmand.sources import build_source
from tests.backup_helpers import dump_bytes, make_settings, store_backup

ROWS = [(1, "plain"), (2, "Zoë 🙂"), (3, "back\\slash 'q' \"dq\""), (4, None)]


def make_database(path: Path, rows: list[tuple[int, str | None]] = ROWS) -> None:
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, blob BLOB)")
        connection.executemany(
            "INSERT INTO items (id, name, blob) VALUES (?, ?, ?)",
            [(key, name, bytes(range(key * 10, key * 10 + 20))) for key, name in rows],
        )
        connection.execute("CREATE VIEW names AS SELECT name FROM items")
    connection.close()


def read_rows(path: Path) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute("SELECT id, name, blob FROM items ORDER BY id").fetchall()
    finally:
        connection.close()


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    database = tmp_path / "app.db"
    make_database(database)
    settings = make_settings(
        sources=[
            {"provider": "sqlite", "label": "app", "db_path": str(database),
             "tmp_folder": str(tmp_path / "tmp-app")},
            {"provider": "sqlite", "label": "other", "db_path": str(tmp_path / "other.db"),
             "tmp_folder": str(tmp_path / "tmp-other")},
            {"provider": "postgres", "label": "pg", "db_name": "x",
             "tmp_folder": str(tmp_path / "tmp-pg")},
        ],
        drives=[
            {"provider": "local", "label": "Local A", "folder": str(tmp_path / "drive-a")},
            {"provider": "local", "label": "Local B", "folder": str(tmp_path / "drive-b")},
        ],
    )
    return {"settings": settings, "database": database, "tmp": tmp_path}


@pytest.fixture
async def catalog() -> AsyncIterator[Catalog]:
    async with Catalog.open("memory") as opened:
        yield opened


async def sqlite_backup(catalog: Catalog, settings: Settings, tmp: Path, *,
                        compression: str = "zstd", drive: str = "Local A",
                        keep_local: bool = False) -> tuple[Backup, bytes]:
    source = build_source(settings.source("app"))
    raw = await dump_bytes(source, tmp / "work")
    backup = await store_backup(
        catalog, settings, label="app", provider="sqlite", extension=source.extension,
        data=raw, drive_label=drive, staging=tmp / "staging", compression=compression,
        keep_local=keep_local,
    )
    return backup, raw


def scratch_leftovers(tmp: Path) -> list[Path]:
    return sorted(tmp.rglob(".backupmand-restore-*"))


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
async def test_restore_into_a_new_sqlite_database(setup: dict[str, Any], catalog: Catalog,
                                                  compression: str) -> None:
    settings, tmp = setup["settings"], setup["tmp"]
    backup, _ = await sqlite_backup(catalog, settings, tmp, compression=compression)
    target = tmp / "restored.db"
    description = await restore_backup(settings, catalog, backup.id, to_source="app",
                                       database=str(target))
    assert read_rows(target) == read_rows(setup["database"])
    assert str(target) in description and backup.id in description
    assert "Local A" in description
    assert scratch_leftovers(tmp) == []


async def test_restore_into_another_source_of_the_same_engine(setup: dict[str, Any],
                                                              catalog: Catalog) -> None:
    settings, tmp = setup["settings"], setup["tmp"]
    backup, _ = await sqlite_backup(catalog, settings, tmp)
    await restore_backup(settings, catalog, backup.id, to_source="other")
    assert read_rows(tmp / "other.db") == read_rows(setup["database"])


async def test_restore_refuses_a_database_with_tables_unless_forced(setup: dict[str, Any],
                                                                    catalog: Catalog) -> None:
    settings, tmp = setup["settings"], setup["tmp"]
    backup, _ = await sqlite_backup(catalog, settings, tmp)
    target = tmp / "busy.db"
    make_database(target, [(9, "keep me")])
    with pytest.raises(RestoreError, match="already holds tables"):
        await restore_backup(settings, catalog, backup.id, to_source="app", database=str(target))
    assert [row[:2] for row in read_rows(target)] == [(9, "keep me")]
    await restore_backup(settings, catalog, backup.id, to_source="app", database=str(target),
                         force=True)
    assert read_rows(target) == read_rows(setup["database"])


async def test_to_file_writes_the_plain_dump_atomically(setup: dict[str, Any],
                                                        catalog: Catalog) -> None:
    settings, tmp = setup["settings"], setup["tmp"]
    backup, raw = await sqlite_backup(catalog, settings, tmp, compression="gzip")
    out = tmp / "out"
    out.mkdir()
    target = out / "copy.sqlite"
    description = await restore_backup(settings, catalog, backup.id, to_file=target)
    assert target.read_bytes() == raw
    assert "SQLite database file" in description
    assert sorted(p.name for p in out.iterdir()) == ["copy.sqlite"]  # no temporary left

    # An existing file is never overwritten without force, and is left as it was.
    target.write_bytes(b"precious")
    with pytest.raises(RestoreError, match="already exists"):
        await restore_backup(settings, catalog, backup.id, to_file=target)
    assert target.read_bytes() == b"precious"
    await restore_backup(settings, catalog, backup.id, to_file=target, force=True)
    assert target.read_bytes() == raw

    # A directory: the dump lands inside, named after the backup minus ".gz".
    await restore_backup(settings, catalog, backup.id, to_file=out)
    named = out / backup.name.removesuffix(".gz")
    assert named.read_bytes() == raw
    assert scratch_leftovers(tmp) == []


async def test_checksum_mismatch_loads_nothing(setup: dict[str, Any], catalog: Catalog) -> None:
    settings, tmp = setup["settings"], setup["tmp"]
    backup, _ = await sqlite_backup(catalog, settings, tmp)
    stored = Path(backup.drive_files[0].path or "")
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    stored.write_bytes(bytes(data))
    target = tmp / "never.db"
    with pytest.raises(RestoreError, match="does not match the backup") as caught:
        await restore_backup(settings, catalog, backup.id, to_source="app", database=str(target))
    assert "nothing was restored" in str(caught.value)
    assert not target.exists()
    with pytest.raises(RestoreError, match="does not match"):
        await restore_backup(settings, catalog, backup.id, to_file=tmp / "never.sqlite")
    assert not (tmp / "never.sqlite").exists()

    # A longer file is refused as soon as it outgrows the recorded size.
    stored.write_bytes(bytes(data) + b"x" * 10)
    with pytest.raises(RestoreError, match="more than"):
        await restore_backup(settings, catalog, backup.id, to_source="app", database=str(target))
    assert not target.exists()
    assert scratch_leftovers(tmp) == []


async def test_drive_choice(setup: dict[str, Any], catalog: Catalog) -> None:
    settings, tmp = setup["settings"], setup["tmp"]
    backup, raw = await sqlite_backup(catalog, settings, tmp, keep_local=True)
    assert backup.dump_path is not None

    # No drive named: the local dump is used while it exists.
    description = await restore_backup(settings, catalog, backup.id, to_file=tmp / "a.sqlite")
    assert "local dump" in description

    # Named drive: that drive's file, even when the local dump exists.
    description = await restore_backup(settings, catalog, backup.id, drive="Local A",
                                       to_file=tmp / "b.sqlite")
    assert "drive 'Local A'" in description
    assert (tmp / "b.sqlite").read_bytes() == raw

    # Without the local dump, the finished drive file is used.
    Path(backup.dump_path).unlink()
    description = await restore_backup(settings, catalog, backup.id, to_file=tmp / "c.sqlite")
    assert "drive 'Local A'" in description

    with pytest.raises(ConflictError, match="no file on drive 'Local B'"):
        await restore_backup(settings, catalog, backup.id, drive="Local B",
                             to_file=tmp / "d.sqlite")
    with pytest.raises(RestoreError, match="no drive labelled 'Nope'"):
        await restore_backup(settings, catalog, backup.id, drive="Nope", to_file=tmp / "e.sqlite")


async def test_no_finished_copy_is_a_conflict(setup: dict[str, Any], catalog: Catalog) -> None:
    settings, tmp = setup["settings"], setup["tmp"]
    backup, _ = await sqlite_backup(catalog, settings, tmp)
    await catalog.update_drive_file(backup.drive_files[0].id, status=Status.FAILED)
    with pytest.raises(ConflictError, match="nothing to restore from"):
        await restore_backup(settings, catalog, backup.id, to_file=tmp / "x.sqlite")

    pending = await catalog.create_backup(label="app", source_provider="sqlite",
                                          name="app-pending.sqlite.zst", compression="zstd")
    with pytest.raises(ConflictError, match="no finished dump"):
        await restore_backup(settings, catalog, pending.id, to_file=tmp / "y.sqlite")
    assert not (tmp / "x.sqlite").exists() and not (tmp / "y.sqlite").exists()


async def test_bad_requests(setup: dict[str, Any], catalog: Catalog) -> None:
    settings, tmp = setup["settings"], setup["tmp"]
    backup, _ = await sqlite_backup(catalog, settings, tmp)
    with pytest.raises(NotFoundError):
        await restore_backup(settings, catalog, "no-such-id", to_file=tmp / "x")
    with pytest.raises(RestoreError, match="exactly one target"):
        await restore_backup(settings, catalog, backup.id)
    with pytest.raises(RestoreError, match="exactly one target"):
        await restore_backup(settings, catalog, backup.id, to_file=tmp / "x", to_source="app")
    with pytest.raises(RestoreError, match="no data source labelled"):
        await restore_backup(settings, catalog, backup.id, to_source="missing")
    with pytest.raises(RestoreError, match="is a sqlite dump; data source 'pg' is postgres"):
        await restore_backup(settings, catalog, backup.id, to_source="pg")
    with pytest.raises(RestoreError, match="--db-name"):
        await restore_backup(settings, catalog, backup.id, to_file=tmp / "x", database="y")


async def test_provider_aliases_are_the_same_engine(setup: dict[str, Any],
                                                    catalog: Catalog) -> None:
    """A backup recorded as 'postgresql' is refused by SQLite for its engine, not its alias."""
    settings, tmp = setup["settings"], setup["tmp"]
    backup = await store_backup(
        catalog, settings, label="pg", provider="postgresql", extension=".sql",
        data=b"SELECT 1;\n", drive_label="Local A", staging=tmp / "staging",
    )
    with pytest.raises(RestoreError, match="is a postgres dump; data source 'app' is sqlite"):
        await restore_backup(settings, catalog, backup.id, to_source="app")
    written = await restore_backup(settings, catalog, backup.id, to_file=tmp / "pg.sql")
    assert "plain SQL dump" in written
    assert hashlib.sha256((tmp / "pg.sql").read_bytes()).hexdigest() == hashlib.sha256(
        b"SELECT 1;\n").hexdigest()
