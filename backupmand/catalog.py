"""The catalog: every backup and drive file, in SQLite through aiosqlite.

Every SQL statement of the project lives here. The database runs in WAL mode with a
busy timeout, so a daemon and CLI processes can share it; multi-statement writes
take the write lock up front (BEGIN IMMEDIATE). The schema is versioned with
``PRAGMA user_version`` and migrated forward at open. A catalog that fails its
integrity check is reported, never recreated over.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from .errors import CatalogError, NotFoundError
from .models import Backup, DriveFile, Status, from_db_time, to_db_time, utcnow

BACKUP_COLUMNS = (
    "id, label, source_provider, status, dump_status, name, dump_path, compression, size, "
    "sha256, error, created_at, updated_at, finished_at"
)
DRIVE_FILE_COLUMNS = (
    "id, backup_id, drive, provider, label, path, status, size, error, attempts, created_at, "
    "updated_at, finished_at"
)


def _api_time(column: str) -> str:
    """models.rfc3339 of a stored time, in SQL: to_db_time's text without its fraction."""
    return f"CASE WHEN {column} IS NULL THEN NULL ELSE substr({column}, 1, 19) || 'Z' END"


# The API's objects rendered by SQLite (json_object): the same keys, in the same order,
# with the same values as models.DriveFile.to_api and models.Backup.to_api, which stay
# the reference (tests/integration/test_catalog.py compares the two). Migration 2's
# triggers store each backup's object in backups.api_json whenever it changes, so
# listing 10,000 backups reads stored text instead of building dataclasses and calling
# json.dumps (2.4 s) or rendering every row at each request (0.2 s). These expressions
# are frozen into catalogs by that migration: changing them needs a new migration that
# recreates the triggers and renders every row again.
_DRIVE_FILE_JSON = (
    "json_object('Id', d.id, 'BackupId', d.backup_id, 'Provider', d.provider, "
    "'Label', d.label, 'Path', d.path, 'Status', d.status, "
    f"'CreatedAt', {_api_time('d.created_at')}, 'UpdatedAt', {_api_time('d.updated_at')}, "
    "'Drive', d.drive, 'Size', d.size, 'Error', d.error, 'Attempts', d.attempts, "
    f"'FinishedAt', {_api_time('d.finished_at')})"
)
_BACKUP_JSON = (
    "json_object('Id', b.id, 'Status', b.status, 'Label', b.label, 'DumpPath', b.dump_path, "
    f"'CreatedAt', {_api_time('b.created_at')}, 'UpdatedAt', {_api_time('b.updated_at')}, "
    # An ordered subquery feeding an aggregate keeps its order (SQLite does not flatten it).
    f"'DriveFiles', (SELECT json_group_array({_DRIVE_FILE_JSON}) FROM ("
    f"SELECT {DRIVE_FILE_COLUMNS} FROM drive_files WHERE backup_id = b.id "
    "ORDER BY created_at, drive) AS d), "
    "'Provider', b.source_provider, 'Name', b.name, 'Size', b.size, 'Sha256', b.sha256, "
    "'Compression', b.compression, 'Error', b.error, "
    f"'FinishedAt', {_api_time('b.finished_at')})"
)
#: The backups columns _BACKUP_JSON shows (all but dump_status, pid and api_json).
_RENDERED_BACKUP_COLUMNS = (
    "id, label, source_provider, status, name, dump_path, compression, size, sha256, error, "
    "created_at, updated_at, finished_at"
)


def _render(where: str) -> str:
    """SQL storing in api_json the API object of each backup that matches ``where``."""
    return (f"UPDATE backups SET api_json = (SELECT {_BACKUP_JSON} FROM backups AS b "
            f"WHERE b.id = backups.id) WHERE {where}")


MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE backups (
        id              TEXT PRIMARY KEY,
        label           TEXT NOT NULL,
        source_provider TEXT NOT NULL,
        status          TEXT NOT NULL CHECK (status IN ('pending', 'finished', 'failed')),
        dump_status     TEXT NOT NULL CHECK (dump_status IN ('pending', 'finished', 'failed')),
        name            TEXT NOT NULL,
        dump_path       TEXT,
        compression     TEXT NOT NULL,
        size            INTEGER,
        sha256          TEXT,
        error           TEXT,
        pid             INTEGER,
        created_at      TEXT NOT NULL,
        updated_at      TEXT,
        finished_at     TEXT
    );
    CREATE INDEX backups_by_time ON backups (created_at DESC, id DESC);
    CREATE INDEX backups_by_label ON backups (label, created_at DESC);
    CREATE INDEX backups_by_status ON backups (status, created_at DESC);
    CREATE TABLE drive_files (
        id          TEXT PRIMARY KEY,
        backup_id   TEXT NOT NULL REFERENCES backups (id) ON DELETE CASCADE,
        drive       TEXT NOT NULL,
        provider    TEXT NOT NULL,
        label       TEXT NOT NULL,
        path        TEXT,
        status      TEXT NOT NULL CHECK (status IN ('pending', 'finished', 'failed')),
        size        INTEGER,
        error       TEXT,
        attempts    INTEGER NOT NULL DEFAULT 0,
        created_at  TEXT NOT NULL,
        updated_at  TEXT,
        finished_at TEXT,
        UNIQUE (backup_id, drive)
    );
    CREATE INDEX drive_files_by_backup ON drive_files (backup_id);
    """,
    # 2: each backup's API object, rendered when the backup or one of its drive files
    # changes (by triggers, whoever writes), so that listing reads it instead of
    # rendering every row at every request.
    f"""
    ALTER TABLE backups ADD COLUMN api_json TEXT;
    CREATE TRIGGER backups_render_inserted AFTER INSERT ON backups BEGIN
        {_render("id = NEW.id")};
    END;
    CREATE TRIGGER backups_render_updated AFTER UPDATE OF {_RENDERED_BACKUP_COLUMNS}
    ON backups BEGIN
        {_render("id = NEW.id")};
    END;
    CREATE TRIGGER drive_files_render_inserted AFTER INSERT ON drive_files BEGIN
        {_render("id = NEW.backup_id")};
    END;
    CREATE TRIGGER drive_files_render_updated AFTER UPDATE ON drive_files BEGIN
        {_render("id IN (OLD.backup_id, NEW.backup_id)")};
    END;
    CREATE TRIGGER drive_files_render_deleted AFTER DELETE ON drive_files BEGIN
        {_render("id = OLD.backup_id")};
    END;
    {_render("TRUE")};
    """,
]


_BACKUP_FIELDS = {"status", "dump_status", "dump_path", "size", "sha256", "error", "pid",
                  "finished_at", "name"}
_DRIVE_FILE_FIELDS = {"status", "path", "size", "error", "attempts", "finished_at"}


def _statements(script: str) -> Iterator[str]:
    """The statements of a migration, one by one (a trigger's body has ";" of its own)."""
    statement = ""
    for piece in script.split(";"):
        statement += piece + ";"
        if sqlite3.complete_statement(statement):
            if statement.strip(" \n;"):
                yield statement
            statement = ""


def _column_value(value: Any) -> Any:
    if isinstance(value, Status):
        return value.value
    if isinstance(value, dt.datetime):
        return to_db_time(value)
    return value


def _drive_file(row: Sequence[Any]) -> DriveFile:
    return DriveFile(
        id=row[0], backup_id=row[1], drive=row[2], provider=row[3], label=row[4], path=row[5],
        status=Status(row[6]), size=row[7], error=row[8], attempts=row[9],
        created_at=from_db_time(row[10]),  # type: ignore[arg-type]
        updated_at=from_db_time(row[11]), finished_at=from_db_time(row[12]),
    )


def _backup(row: Sequence[Any], drive_files: Iterable[DriveFile] = ()) -> Backup:
    return Backup(
        id=row[0], label=row[1], source_provider=row[2], status=Status(row[3]),
        dump_status=Status(row[4]), name=row[5], dump_path=row[6], compression=row[7],
        size=row[8], sha256=row[9], error=row[10],
        created_at=from_db_time(row[11]),  # type: ignore[arg-type]
        updated_at=from_db_time(row[12]), finished_at=from_db_time(row[13]),
        drive_files=tuple(drive_files),
    )


class Catalog:
    """An open catalog. Use ``async with Catalog.open(...)``."""

    def __init__(self, connection: aiosqlite.Connection, path: Path | None) -> None:
        self._db = connection
        self.path = path
        #: (st_dev, st_ino) of the file opened: a catalog deleted or replaced under a
        #: running daemon is noticed by probe().
        self._identity: tuple[int, int] | None = None
        #: Why the last write failed, while writes keep failing (None when they work).
        self.write_problem: str | None = None

    # ------------------------------------------------------------------ opening

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, provider: str, db_path: Path | None = None) -> AsyncIterator[Catalog]:
        if provider == "memory":
            target, path = ":memory:", None
        else:
            assert db_path is not None
            path = db_path.expanduser().resolve()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise CatalogError(f"cannot create {path.parent}: {error.strerror}") from None
            target = str(path)
        try:
            connection = await aiosqlite.connect(target, timeout=30, isolation_level=None)
        except sqlite3.Error as error:
            raise CatalogError(f"cannot open the catalog {target}: {error}") from None
        catalog = cls(connection, path)
        try:
            await catalog._prepare()
            yield catalog
        finally:
            await connection.close()

    async def _prepare(self) -> None:
        where = self.path or ":memory:"
        try:
            await self._db.execute("PRAGMA busy_timeout = 30000")
            check = await self._db.execute_fetchall("PRAGMA quick_check")
            answer = [row[0] for row in check]
            if answer != ["ok"]:
                raise CatalogError(
                    f"the catalog {where} is damaged ({'; '.join(map(str, answer[:3]))}); it was "
                    "left untouched: restore it from a copy, or move it away to start a new one"
                )
            if self.path is not None:
                await self._db.execute("PRAGMA journal_mode = WAL")
                await self._db.execute("PRAGMA synchronous = FULL")
            await self._db.execute("PRAGMA foreign_keys = ON")
            await self._migrate()
            if self.path is not None:
                stat = await asyncio.to_thread(self.path.stat)
                self._identity = (stat.st_dev, stat.st_ino)
        except sqlite3.DatabaseError as error:
            raise CatalogError(
                f"the catalog {where} cannot be read ({error}); it was left untouched: restore "
                "it from a copy, or move it away to start a new one"
            ) from None

    async def _migrate(self) -> None:
        rows = await self._db.execute_fetchall("PRAGMA user_version")
        version = next(iter(rows))[0]
        if version > len(MIGRATIONS):
            raise CatalogError(
                f"the catalog has schema version {version}, newer than this backupmand "
                f"understands ({len(MIGRATIONS)}): upgrade backupmand"
            )
        for number in range(version, len(MIGRATIONS)):
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                current = next(iter(await self._db.execute_fetchall("PRAGMA user_version")))[0]
                if current == number:  # another process may have migrated meanwhile
                    for statement in _statements(MIGRATIONS[number]):
                        await self._db.execute(statement)
                    await self._db.execute(f"PRAGMA user_version = {number + 1}")
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise
        await self._db.execute("COMMIT")

    async def probe(self) -> None:
        """Raise CatalogError unless the catalog is the file opened, intact, and writable.

        Cheap enough for /health (which caches it for a few seconds): a stat, SQLite's
        ``quick_check``, and the state of the last write.
        """
        if self.path is not None:
            try:
                stat = await asyncio.to_thread(self.path.stat)
            except OSError as error:
                raise CatalogError(f"the catalog {self.path} is gone ({error.strerror}): "
                                   "backups cannot be recorded") from None
            if (stat.st_dev, stat.st_ino) != self._identity:
                raise CatalogError(f"the catalog {self.path} was replaced by another file "
                                   "since backupmand opened it: restart backupmand")
        try:
            rows = await self._db.execute_fetchall("PRAGMA quick_check")
        except sqlite3.Error as error:
            raise CatalogError(f"the catalog cannot be read: {error}") from None
        answer = [str(row[0]) for row in rows]
        if answer != ["ok"]:
            raise CatalogError(f"the catalog is damaged: {'; '.join(answer[:3])}")
        if self.write_problem is not None:
            raise CatalogError(f"the catalog cannot be written: {self.write_problem}")

    async def integrity(self) -> str:
        rows = await self._db.execute_fetchall("PRAGMA integrity_check")
        return "; ".join(str(row[0]) for row in rows)

    async def ping(self) -> None:
        await self._db.execute_fetchall("SELECT 1")

    # ------------------------------------------------------------------ backups

    async def create_backup(
        self, *, label: str, source_provider: str, name: str, compression: str,
        pid: int | None = None, backup_id: str | None = None,
    ) -> Backup:
        identifier = backup_id or str(uuid.uuid4())
        now = to_db_time(utcnow())
        await self._db.execute(
            "INSERT INTO backups (id, label, source_provider, status, dump_status, name, "
            "compression, pid, created_at) VALUES (?, ?, ?, 'pending', 'pending', ?, ?, ?, ?)",
            (identifier, label, source_provider, name, compression, pid, now),
        )
        return await self.get_backup(identifier)

    async def _update(self, table: str, allowed: set[str], identifier: str,
                      fields: dict[str, Any]) -> None:
        """Set ``fields`` (and updated_at) on one row; NotFoundError when there is none."""
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown {table} fields {sorted(unknown)}")
        values: dict[str, Any] = {key: _column_value(value) for key, value in fields.items()}
        values["updated_at"] = to_db_time(utcnow())
        assignments = ", ".join(f"{key} = ?" for key in values)
        cursor = await self._db.execute(
            f"UPDATE {table} SET {assignments} WHERE id = ?", (*values.values(), identifier)
        )
        if cursor.rowcount == 0:
            kind = "backup" if table == "backups" else "drive file"
            raise NotFoundError(f"no {kind} with id {identifier}")

    async def update_backup(self, backup_id: str, **fields: Any) -> Backup:
        await self._update("backups", _BACKUP_FIELDS, backup_id, fields)
        return await self.get_backup(backup_id)

    async def get_backup(self, backup_id: str) -> Backup:
        rows = await self._db.execute_fetchall(
            f"SELECT {BACKUP_COLUMNS} FROM backups WHERE id = ?", (backup_id,)
        )
        row = next(iter(rows), None)
        if row is None:
            raise NotFoundError(f"no backup with id {backup_id}")
        files = await self._db.execute_fetchall(
            f"SELECT {DRIVE_FILE_COLUMNS} FROM drive_files WHERE backup_id = ? "
            "ORDER BY created_at, drive", (backup_id,),
        )
        return _backup(row, map(_drive_file, files))

    @staticmethod
    def _list_filter(status: Status | None, label: str | None) -> tuple[str, list[str]]:
        conditions, params = [], []
        if status is not None:
            conditions.append("status = ?")
            params.append(status.value)
        if label is not None:
            conditions.append("label = ?")
            params.append(label)
        return (f"WHERE {' AND '.join(conditions)}" if conditions else ""), params

    async def list_backups_json(
        self, *, status: Status | None = None, label: str | None = None,
        limit: int | None = None, offset: int = 0,
    ) -> str:
        """``{"Results": [...]}`` for GET /api/backups: list_backups' backups as the API's
        JSON objects (Backup.to_api), as the catalog's triggers rendered them."""
        where, params = self._list_filter(status, label)
        rows = await self._db.execute_fetchall(
            f"SELECT api_json FROM backups {where} "
            "ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
            (*params, -1 if limit is None else limit, offset),
        )
        return '{"Results":[' + ",".join(row[0] for row in rows) + "]}"

    async def list_backups(
        self, *, status: Status | None = None, label: str | None = None,
        limit: int | None = None, offset: int = 0, oldest_first: bool = False,
    ) -> list[Backup]:
        where, params = self._list_filter(status, label)
        order = "ASC" if oldest_first else "DESC"
        rows = list(await self._db.execute_fetchall(
            f"SELECT {BACKUP_COLUMNS} FROM backups {where} "
            f"ORDER BY created_at {order}, rowid {order} LIMIT ? OFFSET ?",
            (*params, -1 if limit is None else limit, offset),
        ))
        if not rows:
            return []
        by_backup: dict[str, list[DriveFile]] = {row[0]: [] for row in rows}
        if limit is None and not params and offset == 0:
            file_rows = await self._db.execute_fetchall(
                f"SELECT {DRIVE_FILE_COLUMNS} FROM drive_files ORDER BY created_at, drive"
            )
        else:
            ids = list(by_backup)
            file_rows = []
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                file_rows.extend(await self._db.execute_fetchall(
                    f"SELECT {DRIVE_FILE_COLUMNS} FROM drive_files WHERE backup_id IN "
                    f"({','.join('?' * len(chunk))}) ORDER BY created_at, drive", chunk,
                ))
        for file_row in file_rows:
            bucket = by_backup.get(file_row[1])
            if bucket is not None:
                bucket.append(_drive_file(file_row))
        return [_backup(row, by_backup[row[0]]) for row in rows]

    async def count_backups(self) -> dict[tuple[str, str], int]:
        rows = await self._db.execute_fetchall(
            "SELECT label, status, count(*) FROM backups GROUP BY label, status"
        )
        return {(row[0], row[1]): row[2] for row in rows}

    async def last_finished_by_label(self) -> dict[str, Backup]:
        """Each label's most recent finished backup (without its drive files), in one query."""
        rows = await self._db.execute_fetchall(
            f"SELECT {BACKUP_COLUMNS} FROM ("
            f"  SELECT {BACKUP_COLUMNS}, row_number() OVER ("
            "    PARTITION BY label ORDER BY coalesce(finished_at, updated_at, created_at) DESC,"
            "    rowid DESC) AS rank"
            "  FROM backups WHERE status = 'finished'"
            ") WHERE rank = 1"
        )
        return {row[1]: _backup(row) for row in rows}

    async def pending_backups(self) -> list[Backup]:
        return await self.list_backups(status=Status.PENDING)

    async def delete_backup(self, backup_id: str) -> None:
        async with self._transaction() as db:
            await db.execute("DELETE FROM drive_files WHERE backup_id = ?", (backup_id,))
            await db.execute("DELETE FROM backups WHERE id = ?", (backup_id,))

    async def fail_backup(self, backup_id: str, error: str) -> Backup:
        """Mark a pending backup and its unfinished drive files failed in one transaction.

        A backup that is no longer pending is left as it is: its outcome was recorded
        meanwhile (by its own process, which recovery may have seen pending a moment
        before, or just before a cancellation arrived).
        """
        now = to_db_time(utcnow())
        async with self._transaction() as db:
            cursor = await db.execute(
                "UPDATE backups SET status = 'failed', error = ?, updated_at = ?, "
                "dump_status = CASE dump_status WHEN 'pending' THEN 'failed' ELSE dump_status END "
                "WHERE id = ? AND status = 'pending'",
                (error, now, backup_id),
            )
            if cursor.rowcount:
                await db.execute(
                    "UPDATE drive_files SET status = 'failed', error = coalesce(error, ?), "
                    "updated_at = ? WHERE backup_id = ? AND status = 'pending'",
                    (error, now, backup_id),
                )
        return await self.get_backup(backup_id)

    # ------------------------------------------------------------------ drive files

    async def create_drive_file(
        self, *, backup_id: str, drive: str, provider: str, label: str
    ) -> DriveFile:
        identifier = str(uuid.uuid4())
        await self._db.execute(
            "INSERT INTO drive_files (id, backup_id, drive, provider, label, status, created_at) "
            "VALUES (?, ?, ?, ?, ?, 'pending', ?)",
            (identifier, backup_id, drive, provider, label, to_db_time(utcnow())),
        )
        return await self.get_drive_file(identifier)

    async def update_drive_file(self, drive_file_id: str, **fields: Any) -> DriveFile:
        await self._update("drive_files", _DRIVE_FILE_FIELDS, drive_file_id, fields)
        return await self.get_drive_file(drive_file_id)

    async def get_drive_file(self, drive_file_id: str) -> DriveFile:
        rows = await self._db.execute_fetchall(
            f"SELECT {DRIVE_FILE_COLUMNS} FROM drive_files WHERE id = ?", (drive_file_id,)
        )
        row = next(iter(rows), None)
        if row is None:
            raise NotFoundError(f"no drive file with id {drive_file_id}")
        return _drive_file(row)

    async def delete_drive_file(self, drive_file_id: str) -> None:
        await self._db.execute("DELETE FROM drive_files WHERE id = ?", (drive_file_id,))
