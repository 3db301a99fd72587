"""The catalog: every backup and drive file, in SQLite through aiosqlite.

Every SQL statement of the project lives here. The database runs in WAL mode with a
busy timeout, so a daemon and CLI processes can share it. The schema is versioned
with ``PRAGMA user_version`` and migrated forward at open. A catalog that fails its
integrity check is reported, never recreated over.

Writes
    One connection serves a process, so every write takes the catalog's write lock and
    runs in its own ``BEGIN IMMEDIATE`` transaction: writes of concurrent coroutines
    (several backups finishing or being stopped at once) can never interleave, and a
    failure rolls back only its own statements. A write that fails because the disk
    is full or unreadable is retried — with backoff, until it succeeds — when it is
    made inside ``persistent()`` (a backup recording its outcome: the outcome must not
    be lost); elsewhere it raises CatalogError at once. Meanwhile ``write_problem``
    says why, and ``probe()`` (hence /health) reports the catalog DOWN.

Order
    Backups carry ``seq``, a sequence number the catalog hands out at creation and
    never reuses: "newest" always means the highest ``seq``, so a clock set back
    cannot make a new backup look old.

The API objects
    Each backup's API object (``models.BACKUP_FIELDS``) is rendered by SQLite triggers
    into ``backups.api_json`` whenever the backup or one of its drive files changes,
    so that ``GET /api/backups`` reads stored text. The triggers are generated from the
    field list (``render_sql``) and recreated at open whenever it changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import hashlib
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import structlog

from .errors import CatalogError, NotFoundError
from .models import (
    BACKUP_FIELDS,
    DRIVE_FILE_FIELDS,
    ApiField,
    Backup,
    DriveFile,
    Status,
    dumps_json,
    from_db_time,
    loads_json,
    to_db_time,
    utcnow,
)

log = structlog.get_logger("backupmand.catalog")

T = TypeVar("T")

# ---------------------------------------------------------------------------- columns

#: (model attribute, column, kind) of every column a record is built from.
_Column = tuple[str, str, str]
_BACKUP_COLUMNS: tuple[_Column, ...] = (
    *((field.attr, field.sql_column, field.kind) for field in BACKUP_FIELDS),
    ("dump_status", "dump_status", "status"),
    ("tables", "tables_json", "json"),
)
_DRIVE_FILE_COLUMNS: tuple[_Column, ...] = tuple(
    (field.attr, field.sql_column, field.kind) for field in DRIVE_FILE_FIELDS)
BACKUP_COLUMNS = ", ".join(column for _, column, _ in _BACKUP_COLUMNS)
_ID, _LABEL = (next(i for i, (attr, _, _) in enumerate(_BACKUP_COLUMNS) if attr == name)
               for name in ("id", "label"))
DRIVE_FILE_COLUMNS = ", ".join(column for _, column, _ in _DRIVE_FILE_COLUMNS)

#: Attributes update_backup / update_drive_file may set.
_BACKUP_WRITABLE = {attr for attr, _, _ in _BACKUP_COLUMNS} - {
    "id", "label", "source_provider", "created_at", "updated_at", "seq"} | {"pid"}
_DRIVE_FILE_WRITABLE = {attr for attr, _, _ in _DRIVE_FILE_COLUMNS} - {
    "id", "backup_id", "drive", "provider", "created_at", "updated_at"}
_BACKUP_BY_ATTR = {attr: (column, kind) for attr, column, kind in _BACKUP_COLUMNS}
_BACKUP_BY_ATTR["pid"] = ("pid", "integer")
_DRIVE_FILE_BY_ATTR = {attr: (column, kind) for attr, column, kind in _DRIVE_FILE_COLUMNS}
#: Free text that may quote a tool's or a server's words: redacted before it is stored.
_REDACTED = {"error", "verify_error", "suspect_reason"}


def _encode(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "status":
        return value.value if isinstance(value, Status) else str(value)
    if kind == "time":
        return to_db_time(value)
    if kind == "boolean":
        return 1 if value else 0
    if kind == "json":
        return dumps_json(value)
    return value


def _decode(kind: str, value: Any) -> Any:
    if kind == "time":
        return from_db_time(value)
    if kind == "status":
        return Status(value)
    if kind == "boolean":
        return bool(value)
    if kind == "json":
        return loads_json(value)
    return value


def _drive_file(row: Sequence[Any]) -> DriveFile:
    return DriveFile(**{attr: _decode(kind, value)
                        for (attr, _, kind), value in zip(_DRIVE_FILE_COLUMNS, row, strict=True)})


def _backup(row: Sequence[Any], drive_files: Iterable[DriveFile] = ()) -> Backup:
    values = {attr: _decode(kind, value)
              for (attr, _, kind), value in zip(_BACKUP_COLUMNS, row, strict=True)}
    return Backup(**values, drive_files=tuple(drive_files))


# ---------------------------------------------------------------------------- rendering


def _sql_value(field: ApiField, alias: str) -> str:
    column = f"{alias}.{field.sql_column}"
    if field.kind == "time":  # models.rfc3339 of to_db_time's text: drop the fraction
        return f"CASE WHEN {column} IS NULL THEN NULL ELSE substr({column}, 1, 19) || 'Z' END"
    if field.kind == "boolean":
        return f"json(CASE WHEN {column} THEN 'true' ELSE 'false' END)"
    if field.kind == "json":
        return f"json({column})"
    return column


def _json_object(fields: Iterable[ApiField], alias: str,
                 extra: dict[str, tuple[str, str]] | None = None) -> str:
    parts: list[str] = []
    for field in fields:
        parts.append(f"'{field.api}', {_sql_value(field, alias)}")
        if extra and field.api in extra:
            name, expression = extra[field.api]
            parts.append(f"'{name}', {expression}")
    return "json_object(" + ", ".join(parts) + ")"


def render_sql() -> dict[str, str]:
    """The triggers that keep ``backups.api_json`` equal to ``Backup.to_api()``, by name."""
    drive_files = (
        f"(SELECT json_group_array({_json_object(DRIVE_FILE_FIELDS, 'd')}) FROM ("
        # An ordered subquery feeding an aggregate keeps its order (SQLite does not flatten it).
        f"SELECT {DRIVE_FILE_COLUMNS} FROM drive_files WHERE backup_id = b.id "
        "ORDER BY created_at, drive) AS d)"
    )
    backup_json = _json_object(BACKUP_FIELDS, "b", {"UpdatedAt": ("DriveFiles", drive_files)})

    def render(where: str) -> str:
        return (f"UPDATE backups SET api_json = (SELECT {backup_json} FROM backups AS b "
                f"WHERE b.id = backups.id) WHERE {where}")

    rendered_columns = ", ".join(sorted({field.sql_column for field in BACKUP_FIELDS}))
    return {
        "backups_render_inserted": f"AFTER INSERT ON backups BEGIN {render('id = NEW.id')}; END",
        "backups_render_updated": f"AFTER UPDATE OF {rendered_columns} ON backups BEGIN "
                                  f"{render('id = NEW.id')}; END",
        "drive_files_render_inserted": f"AFTER INSERT ON drive_files BEGIN "
                                       f"{render('id = NEW.backup_id')}; END",
        "drive_files_render_updated": f"AFTER UPDATE ON drive_files BEGIN "
                                      f"{render('id IN (OLD.backup_id, NEW.backup_id)')}; END",
        "drive_files_render_deleted": f"AFTER DELETE ON drive_files BEGIN "
                                      f"{render('id = OLD.backup_id')}; END",
        "*": render("TRUE"),
    }


def _render_version() -> str:
    return hashlib.sha256(repr(sorted(render_sql().items())).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- migrations

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
    # 2: each backup's API object (kept current by triggers, see render_sql).
    """
    ALTER TABLE backups ADD COLUMN api_json TEXT;
    """,
    # 3: the second round: the creation sequence, what manifests, drills, suspects and
    # pins record, and the companions of each drive file.
    """
    ALTER TABLE backups ADD COLUMN seq INTEGER;
    UPDATE backups SET seq = numbered.position FROM (
        SELECT rowid AS row, row_number() OVER (ORDER BY rowid) AS position FROM backups
    ) AS numbered WHERE backups.rowid = numbered.row;
    CREATE UNIQUE INDEX backups_by_seq ON backups (seq);
    CREATE INDEX backups_by_label_seq ON backups (label, seq DESC);
    CREATE INDEX backups_by_status_seq ON backups (status, seq DESC);
    CREATE TABLE sequences (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO sequences (name, value) VALUES ('backups', (SELECT coalesce(max(seq), 0) FROM backups));
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    ALTER TABLE backups ADD COLUMN host TEXT;
    ALTER TABLE backups ADD COLUMN database TEXT;
    ALTER TABLE backups ADD COLUMN server_version TEXT;
    ALTER TABLE backups ADD COLUMN tool TEXT;
    ALTER TABLE backups ADD COLUMN tool_version TEXT;
    ALTER TABLE backups ADD COLUMN dump_format TEXT;
    ALTER TABLE backups ADD COLUMN raw_size INTEGER;
    ALTER TABLE backups ADD COLUMN dumped_at TEXT;
    ALTER TABLE backups ADD COLUMN row_count INTEGER;
    ALTER TABLE backups ADD COLUMN table_count INTEGER;
    ALTER TABLE backups ADD COLUMN objects_json TEXT;
    ALTER TABLE backups ADD COLUMN tables_json TEXT;
    ALTER TABLE backups ADD COLUMN encryption_json TEXT;
    ALTER TABLE backups ADD COLUMN globals_json TEXT;
    ALTER TABLE backups ADD COLUMN manifest_name TEXT;
    ALTER TABLE backups ADD COLUMN verification TEXT
        CHECK (verification IS NULL OR verification IN ('passed', 'failed'));
    ALTER TABLE backups ADD COLUMN verified_at TEXT;
    ALTER TABLE backups ADD COLUMN verify_error TEXT;
    ALTER TABLE backups ADD COLUMN suspect INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE backups ADD COLUMN suspect_reason TEXT;
    ALTER TABLE backups ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE backups ADD COLUMN pin_note TEXT;
    ALTER TABLE drive_files ADD COLUMN manifest_path TEXT;
    ALTER TABLE drive_files ADD COLUMN globals_path TEXT;
    ALTER TABLE drive_files ADD COLUMN missing INTEGER NOT NULL DEFAULT 0;
    """,
]


def _statements(script: str) -> Iterator[str]:
    """The statements of a script, one by one (a trigger's body has ";" of its own)."""
    statement = ""
    for piece in script.split(";"):
        statement += piece + ";"
        if sqlite3.complete_statement(statement):
            if statement.strip(" \n;"):
                yield statement
            statement = ""


# ---------------------------------------------------------------------------- writes

#: Set while a backup records its progress: its writes are retried until they succeed.
_PERSISTENT: contextvars.ContextVar[bool] = contextvars.ContextVar("catalog_persistent",
                                                                   default=False)
#: SQLite's primary result codes worth waiting out: the disk (full, failing, read-only,
#: gone) rather than the statement.
_TRANSIENT_CODES = {5, 6, 8, 10, 13, 14}  # BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN
RETRY_FIRST_DELAY = 0.5
RETRY_MAX_DELAY = 30.0


@contextlib.contextmanager
def persistent(enabled: bool = True) -> Iterator[None]:
    """Within this block (and the tasks it starts), catalog writes that fail because of
    the disk are retried until they succeed instead of raising (``enabled=False``:
    raise at once, e.g. while shutting down)."""
    token = _PERSISTENT.set(enabled)
    try:
        yield
    finally:
        _PERSISTENT.reset(token)


def _transient(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(error, sqlite3.OperationalError) and (
        code is None or (code & 0xFF) in _TRANSIENT_CODES)


def _redact(text: str | None) -> str | None:
    if text is None:
        return None
    from .logs import redact_text

    return redact_text(text)


async def _uninterrupted(work: Awaitable[T]) -> T:
    """Run ``work`` to its end even when the caller is cancelled meanwhile, then pass the
    cancellation on. A transaction cut between BEGIN and COMMIT (aiosqlite's thread runs
    the statement whether or not its awaiter is still there) would stay open on the one
    connection, and every later write would fail with "cannot start a transaction within
    a transaction" — among them the record of the cancelled backup's own failure."""
    task = asyncio.ensure_future(work)
    interrupted: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as error:
            interrupted = error
    if interrupted is not None:
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what the caller gets
        raise interrupted
    return task.result()


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
        self._write_lock = asyncio.Lock()
        #: Sleeps between retried writes (tests replace it to count them).
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

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
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
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
            await self._ensure_rendering()
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

    async def _ensure_rendering(self) -> None:
        """(Re)create the rendering triggers when the field list changed, and re-render."""
        version = _render_version()
        rows = await self._db.execute_fetchall("SELECT value FROM meta WHERE key = 'render'")
        if rows and next(iter(rows))[0] == version:
            return
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            rows = await self._db.execute_fetchall("SELECT value FROM meta WHERE key = 'render'")
            if not (rows and next(iter(rows))[0] == version):  # another process may have
                triggers = render_sql()
                for name, body in triggers.items():
                    if name != "*":
                        await self._db.execute(f"DROP TRIGGER IF EXISTS {name}")
                        await self._db.execute(f"CREATE TRIGGER {name} {body}")
                await self._db.execute(triggers["*"])
                await self._db.execute(
                    "INSERT INTO meta (key, value) VALUES ('render', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (version,))
            await self._db.execute("COMMIT")
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ health

    def check_identity(self) -> None:
        """CatalogError when the catalog file is gone or replaced (a stat: cheap)."""
        if self.path is None:
            return
        try:
            stat = self.path.stat()
        except OSError as error:
            raise CatalogError(f"the catalog {self.path} is gone ({error.strerror}): "
                               "backups cannot be recorded") from None
        if (stat.st_dev, stat.st_ino) != self._identity:
            raise CatalogError(f"the catalog {self.path} was replaced by another file "
                               "since backupmand opened it: restart backupmand")

    async def probe(self) -> None:
        """Raise CatalogError unless the catalog is the file opened, intact, and writable.

        Cheap enough for /health (which caches it for a few seconds): a stat, SQLite's
        ``quick_check``, and the state of the last write.
        """
        await asyncio.to_thread(self.check_identity)
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

    # ------------------------------------------------------------------ writing

    async def _write(self, work: Callable[[aiosqlite.Connection], Awaitable[T]],
                     what: str) -> T:
        """Run ``work`` in one transaction of its own, under the write lock."""
        delay = RETRY_FIRST_DELAY
        while True:
            try:
                result = await _uninterrupted(self._transaction(work))
            except sqlite3.Error as error:
                if not _transient(error):
                    raise CatalogError(f"the catalog refused {what}: {error}") from None
                if self.write_problem is None:
                    log.error("catalog.write_failed", what=what, error=str(error),
                              retrying=_PERSISTENT.get())
                self.write_problem = str(error)
                if not _PERSISTENT.get():
                    raise CatalogError(f"the catalog cannot be written ({error}): {what} "
                                       "was not recorded") from None
            else:
                if self.write_problem is not None:
                    log.warning("catalog.write_recovered", what=what)
                    self.write_problem = None
                return result
            await self.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)

    async def _transaction(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        async with self._write_lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                result = await work(self._db)
                await self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        await self._db.execute("ROLLBACK")
                raise
            return result

    async def _update_row(self, table: str, by_attr: dict[str, tuple[str, str]],
                          writable: set[str], identifier: str, fields: dict[str, Any]) -> None:
        unknown = set(fields) - writable
        if unknown:
            raise ValueError(f"unknown {table} fields {sorted(unknown)}")
        values: dict[str, Any] = {}
        for attr, value in fields.items():
            column, kind = by_attr[attr]
            if attr in _REDACTED:
                value = _redact(value)
            values[column] = _encode(kind, value)
        values["updated_at"] = to_db_time(utcnow())
        assignments = ", ".join(f"{column} = ?" for column in values)

        async def work(db: aiosqlite.Connection) -> int:
            cursor = await db.execute(f"UPDATE {table} SET {assignments} WHERE id = ?",
                                      (*values.values(), identifier))
            return cursor.rowcount

        if await self._write(work, f"an update of {table} {identifier}") == 0:
            kind = "backup" if table == "backups" else "drive file"
            raise NotFoundError(f"no {kind} with id {identifier}")

    # ------------------------------------------------------------------ backups

    async def create_backup(
        self, *, label: str, source_provider: str, name: str, compression: str,
        pid: int | None = None, backup_id: str | None = None, host: str | None = None,
    ) -> Backup:
        identifier = backup_id or str(uuid.uuid4())
        now = to_db_time(utcnow())

        async def work(db: aiosqlite.Connection) -> None:
            await db.execute("UPDATE sequences SET value = value + 1 WHERE name = 'backups'")
            await db.execute(
                "INSERT INTO backups (id, label, source_provider, status, dump_status, name, "
                "compression, pid, created_at, host, seq) VALUES (?, ?, ?, 'pending', 'pending', "
                "?, ?, ?, ?, ?, (SELECT value FROM sequences WHERE name = 'backups'))",
                (identifier, label, source_provider, name, compression, pid, now, host),
            )

        await self._write(work, f"the new backup of {label}")
        return await self.get_backup(identifier)

    async def import_backup(self, backup: Backup) -> Backup:
        """Insert a backup found elsewhere (a drive's manifest) with its drive files, as
        they are, under a new sequence number; CatalogError if its id exists."""
        columns = [(column, _encode(kind, getattr(backup, attr)))
                   for attr, column, kind in _BACKUP_COLUMNS if attr != "seq"]

        async def work(db: aiosqlite.Connection) -> None:
            await db.execute("UPDATE sequences SET value = value + 1 WHERE name = 'backups'")
            names = ", ".join(column for column, _ in columns)
            marks = ", ".join("?" for _ in columns)
            await db.execute(
                f"INSERT INTO backups ({names}, seq) VALUES ({marks}, "
                "(SELECT value FROM sequences WHERE name = 'backups'))",
                [value for _, value in columns])
            for record in backup.drive_files:
                file_columns = [(column, _encode(kind, getattr(record, attr)))
                                for attr, column, kind in _DRIVE_FILE_COLUMNS]
                await db.execute(
                    f"INSERT INTO drive_files ({', '.join(c for c, _ in file_columns)}) "
                    f"VALUES ({', '.join('?' for _ in file_columns)})",
                    [value for _, value in file_columns])

        try:
            await self._write(work, f"the imported backup {backup.id}")
        except CatalogError as error:
            if "UNIQUE" in str(error):
                raise CatalogError(f"backup {backup.id} is already in the catalog") from None
            raise
        return await self.get_backup(backup.id)

    async def update_backup(self, backup_id: str, **fields: Any) -> Backup:
        await self._update_row("backups", _BACKUP_BY_ATTR, _BACKUP_WRITABLE, backup_id, fields)
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

    async def has_backup(self, backup_id: str) -> bool:
        rows = await self._db.execute_fetchall("SELECT 1 FROM backups WHERE id = ?",
                                               (backup_id,))
        return bool(list(rows))

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
            f"SELECT api_json FROM backups {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
            (*params, -1 if limit is None else limit, offset),
        )
        return '{"Results":[' + ",".join(row[0] for row in rows) + "]}"

    async def list_backups(
        self, *, status: Status | None = None, label: str | None = None,
        limit: int | None = None, offset: int = 0, oldest_first: bool = False,
    ) -> list[Backup]:
        """Backups newest first (by sequence), with their drive files."""
        where, params = self._list_filter(status, label)
        order = "ASC" if oldest_first else "DESC"
        rows = list(await self._db.execute_fetchall(
            f"SELECT {BACKUP_COLUMNS} FROM backups {where} ORDER BY seq {order} LIMIT ? OFFSET ?",
            (*params, -1 if limit is None else limit, offset),
        ))
        if not rows:
            return []
        by_backup: dict[str, list[DriveFile]] = {row[_ID]: [] for row in rows}
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
        return [_backup(row, by_backup[row[_ID]]) for row in rows]

    async def count_backups(self) -> dict[tuple[str, str], int]:
        rows = await self._db.execute_fetchall(
            "SELECT label, status, count(*) FROM backups GROUP BY label, status"
        )
        return {(row[0], row[1]): row[2] for row in rows}

    async def latest_by_label(self, status: Status | None = None) -> dict[str, Backup]:
        """Each label's newest backup (with ``status``, when given; without drive files)."""
        where = "WHERE status = ?" if status is not None else "WHERE status <> 'pending'"
        params = (status.value,) if status is not None else ()
        rows = await self._db.execute_fetchall(
            f"SELECT {BACKUP_COLUMNS} FROM ("
            f"  SELECT {BACKUP_COLUMNS}, row_number() OVER ("
            "    PARTITION BY label ORDER BY seq DESC) AS rank"
            f"  FROM backups {where}"
            ") WHERE rank = 1", params,
        )
        return {row[_LABEL]: _backup(row) for row in rows}

    async def last_finished_by_label(self) -> dict[str, Backup]:
        """Each label's most recent finished backup (without its drive files), in one query."""
        return await self.latest_by_label(Status.FINISHED)

    async def latest_verified_by_label(self, *, passed: bool = False) -> dict[str, Backup]:
        """Each label's most recently drilled backup (``passed``: whose drill passed),
        without its drive files."""
        where = "verification = 'passed'" if passed else "verification IS NOT NULL"
        rows = await self._db.execute_fetchall(
            f"SELECT {BACKUP_COLUMNS} FROM ("
            f"  SELECT {BACKUP_COLUMNS}, row_number() OVER ("
            "    PARTITION BY label ORDER BY verified_at DESC, seq DESC) AS rank"
            f"  FROM backups WHERE {where}"
            ") WHERE rank = 1"
        )
        return {row[_LABEL]: _backup(row) for row in rows}

    async def count_suspects(self) -> dict[str, int]:
        rows = await self._db.execute_fetchall(
            "SELECT label, count(*) FROM backups WHERE suspect AND status = 'finished' "
            "GROUP BY label")
        return {row[0]: row[1] for row in rows}

    async def last_upload_by_drive(self) -> dict[str, dt.datetime]:
        rows = await self._db.execute_fetchall(
            "SELECT drive, max(finished_at) FROM drive_files WHERE status = 'finished' "
            "GROUP BY drive")
        return {row[0]: from_db_time(row[1]) for row in rows if row[1]}  # type: ignore[misc]

    async def outcomes_since(self, moment: dt.datetime) -> list[tuple[str, Status, bool, dt.datetime]]:
        """(label, status, suspect, created_at) of every backup created at or after
        ``moment``, without the rest of its record: the status page's day strips."""
        rows = await self._db.execute_fetchall(
            "SELECT label, status, suspect, created_at FROM backups WHERE created_at >= ?",
            (to_db_time(moment),))
        return [(row[0], Status(row[1]), bool(row[2]), from_db_time(row[3]))  # type: ignore[misc]
                for row in rows]

    async def pending_backups(self) -> list[Backup]:
        return await self.list_backups(status=Status.PENDING)

    async def delete_backup(self, backup_id: str) -> None:
        async def work(db: aiosqlite.Connection) -> None:
            await db.execute("DELETE FROM drive_files WHERE backup_id = ?", (backup_id,))
            await db.execute("DELETE FROM backups WHERE id = ?", (backup_id,))

        await self._write(work, f"the deletion of backup {backup_id}")

    async def fail_backup(self, backup_id: str, error: str) -> Backup:
        """Mark a pending backup and its unfinished drive files failed in one transaction.

        A backup that is no longer pending is left as it is: its outcome was recorded
        meanwhile (by its own process, which recovery may have seen pending a moment
        before, or just before a cancellation arrived).
        """
        now = to_db_time(utcnow())
        reason = _redact(error)

        async def work(db: aiosqlite.Connection) -> None:
            cursor = await db.execute(
                "UPDATE backups SET status = 'failed', error = ?, updated_at = ?, "
                "dump_status = CASE dump_status WHEN 'pending' THEN 'failed' ELSE dump_status END "
                "WHERE id = ? AND status = 'pending'",
                (reason, now, backup_id),
            )
            if cursor.rowcount:
                await db.execute(
                    "UPDATE drive_files SET status = 'failed', error = coalesce(error, ?), "
                    "updated_at = ? WHERE backup_id = ? AND status = 'pending'",
                    (reason, now, backup_id),
                )

        await self._write(work, f"the failure of backup {backup_id}")
        return await self.get_backup(backup_id)

    # ------------------------------------------------------------------ drive files

    async def create_drive_file(
        self, *, backup_id: str, drive: str, provider: str, label: str
    ) -> DriveFile:
        identifier = str(uuid.uuid4())

        async def work(db: aiosqlite.Connection) -> None:
            await db.execute(
                "INSERT INTO drive_files (id, backup_id, drive, provider, label, status, "
                "created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                (identifier, backup_id, drive, provider, label, to_db_time(utcnow())),
            )

        await self._write(work, f"the drive file of backup {backup_id} on {drive}")
        return await self.get_drive_file(identifier)

    async def update_drive_file(self, drive_file_id: str, **fields: Any) -> DriveFile:
        await self._update_row("drive_files", _DRIVE_FILE_BY_ATTR, _DRIVE_FILE_WRITABLE,
                               drive_file_id, fields)
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
        async def work(db: aiosqlite.Connection) -> None:
            await db.execute("DELETE FROM drive_files WHERE id = ?", (drive_file_id,))

        await self._write(work, f"the deletion of drive file {drive_file_id}")
