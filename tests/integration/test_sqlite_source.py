"""The SQLite source against real files and the real sqlite3 shell: dump facts, forced
restores that keep the old file, a damaged target, and drills."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backupmand.config import SqliteSource
from backupmand.errors import RestoreError
from backupmand.sources.base import DumpFacts
from backupmand.sources.sqlite import SqliteDatabase


def make_database(path: Path, rows: int) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        connection.execute("CREATE VIEW named AS SELECT name FROM items")
        connection.execute("CREATE TRIGGER t AFTER INSERT ON items BEGIN SELECT 1; END")
        connection.execute("CREATE VIRTUAL TABLE search USING fts5 (body)")
        connection.executemany("INSERT INTO items (name) VALUES (?)",
                               [(f"item {i}",) for i in range(rows)])
        connection.execute("INSERT INTO search VALUES ('hello')")
    connection.close()


def source_for(path: Path, tmp: Path) -> SqliteDatabase:
    return SqliteDatabase(SqliteSource(provider="sqlite", label="lite", db_path=path,
                                       tmp_folder=tmp))


async def dump(source: SqliteDatabase, workdir: Path) -> tuple[bytes, DumpFacts]:
    workdir.mkdir(exist_ok=True)
    facts = DumpFacts()
    data = b"".join([chunk async for chunk in source.dump(workdir, facts)])
    return data, facts


async def one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def rows(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        (count,) = connection.execute("SELECT count(*) FROM items").fetchone()
    connection.close()
    return int(count)


async def test_facts_are_counted_on_the_snapshot(tmp_path: Path) -> None:
    database = tmp_path / "app.db"
    make_database(database, 250)
    data, facts = await dump(source_for(database, tmp_path), tmp_path / "work")
    assert data.startswith(b"SQLite format 3\0")
    assert facts.dump_format == "sqlite" and facts.tool == "sqlite3"
    assert facts.server_version == facts.tool_version == sqlite3.sqlite_version
    assert facts.database == "app.db"
    assert facts.tables["items"] == 250 and "search_data" in facts.tables  # a shadow table
    assert "search" not in facts.tables  # the virtual table itself
    assert facts.objects == {"tables": len(facts.tables), "views": 1, "sequences": 0,
                             "routines": 0, "triggers": 1, "events": 0, "large_objects": 0}


async def test_force_keeps_the_replaced_file_and_a_damaged_target_is_moved_aside(
    tmp_path: Path,
) -> None:
    database = tmp_path / "app.db"
    make_database(database, 10)
    source = source_for(database, tmp_path)
    data, _ = await dump(source, tmp_path / "work")
    workdir = tmp_path / "restore"
    workdir.mkdir()

    target = tmp_path / "other.db"
    make_database(target, 3)
    with pytest.raises(RestoreError, match="already holds tables"):
        await source.restore(one(data), database=str(target), force=False, workdir=workdir)
    description = await source.restore(one(data), database=str(target), force=True,
                                       workdir=workdir)
    (kept,) = tmp_path.glob("other.db__before_*")
    assert str(kept) in description and rows(kept) == 3 and rows(target) == 10

    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(RestoreError, match="not a database backupmand can read"):
        await source.restore(one(data), database=str(damaged), force=False, workdir=workdir)
    await source.restore(one(data), database=str(damaged), force=True, workdir=workdir)
    (moved,) = tmp_path.glob("damaged.db__before_*")
    assert moved.read_bytes().startswith(b"this is not a database") and rows(damaged) == 10

    # A damaged dump never touches the target, damaged or not.
    spoiled = data[:len(data) // 2] + bytes(8192) + data[len(data) // 2 + 8192:]
    before = damaged.read_bytes()
    with pytest.raises(RestoreError, match="integrity_check"):
        await source.restore(one(spoiled), database=str(damaged), force=True, workdir=workdir)
    assert damaged.read_bytes() == before
    assert sorted(path.name for path in tmp_path.glob("*__before_*")) == sorted(
        [kept.name, moved.name])
    assert list(workdir.iterdir()) == []
