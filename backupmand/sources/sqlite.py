"""SQLite: an online backup through the `sqlite3` tool, integrity-checked.

The copy is made with SQLite's backup API (the shell's ``.backup``) inside one read
transaction, so it is one consistent snapshot that finishes even while writers are
busy — never a raw file copy. In WAL mode writers go on meanwhile; in rollback-journal
mode they wait (up to their busy timeout) until the copy is taken. The copy is
checked with ``PRAGMA integrity_check`` and counted (its tables' rows, its views and
triggers: the dump facts) before a single byte of it is handed on.

A restore goes back through the same API (``.restore``), so the target's own WAL and
locks are respected and the load is one transaction: it either replaces the target's
pages completely or changes nothing. The incoming file is integrity-checked before
the target is touched. ``force`` replaces a target that holds tables; the replaced
database is first copied (``.backup``) to ``<target>__before_<UTC stamp>`` unless
``drop_old``. A drill loads the dump into a private file under its work folder, takes
its inventory (rows of every table, views, triggers, ``PRAGMA integrity_check``) and
deletes the file, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

from .. import process
from ..config import SqliteSource
from ..errors import DumpError, HealthError, ProcessError, RestoreError
from ..files import read_file
from ._shielded import shielded
from ._streams import write_chunks
from .base import OBJECT_KINDS, DumpFacts, Inventory, Source, before_stamp

SNAPSHOT_NAME = "snapshot.sqlite"
INCOMING_NAME = "incoming.sqlite"
#: The copy is taken inside one read transaction of the connection that copies. Without
#: it, the backup API copies 100 pages at a time and starts over whenever another
#: connection commits in between: under steady writes it never finished (a test with
#: two busy writers waited 300 s; inside the transaction it takes 20 ms).
SNAPSHOT_STEPS = ("BEGIN", "SELECT count(*) FROM sqlite_master;", f".backup {SNAPSHOT_NAME}",
                  "COMMIT")
BUSY_TIMEOUT_MS = 60_000
_COMPANION_SUFFIXES = ("-wal", "-shm", "-journal")


async def _tool() -> str:
    return await process.locate("sqlite3")


async def integrity_check(path: Path, *, timeout: float = 3600) -> None:
    """Raise ProcessError unless ``PRAGMA integrity_check`` answers exactly 'ok'."""
    try:
        result = await process.run(
            process.Command((await _tool(), "-bail", "-readonly", str(path),
                             "PRAGMA integrity_check;")),
            timeout=timeout,
        )
    except ProcessError as error:  # sqlite3 gives up on a badly damaged file
        raise ProcessError(f"integrity_check failed: {error}") from None
    answer = result.stdout.decode("utf-8", "replace").strip()
    if answer != "ok":
        raise ProcessError(f"integrity_check failed: {answer[:500]}")


async def tool_version() -> str:
    """The sqlite3 shell's SQLite version (``3.40.1``): the library that copies and loads."""
    result = await process.run(process.Command((await _tool(), "--version")), timeout=30)
    words = result.stdout.decode("utf-8", "replace").split()
    return words[0] if words else "unknown"


def inventory_of(path: Path, *, check: bool) -> Inventory:
    """Rows of every table and the object counts of the database file ``path``.

    Blocking: run it in a thread. Tables are the ordinary ones (not SQLite's own
    ``sqlite_*`` tables, not virtual tables, whose data lives in their shadow tables,
    which are counted); ``check`` adds ``PRAGMA integrity_check``'s findings as problems.
    Opened immutable: nobody else writes the private copies this counts.
    """
    uri = path.resolve().as_uri() + "?mode=ro&immutable=1"
    connection = sqlite3.connect(uri, uri=True)
    try:
        problems: tuple[str, ...] = ()
        if check:
            answers = [str(row[0]) for row in connection.execute("PRAGMA integrity_check")]
            if answers != ["ok"]:
                problems = tuple(answers[:20])
                return Inventory(tables={}, objects=dict.fromkeys(OBJECT_KINDS, 0),
                                 problems=problems)
        entries = connection.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE type IN ('table', 'view', 'trigger')"
        ).fetchall()
        tables: dict[str, int] = {}
        views = triggers = 0
        for kind, name, sql in entries:
            if kind == "view":
                views += 1
            elif kind == "trigger":
                triggers += 1
            elif not name.startswith("sqlite_") and not (sql or "").lstrip().upper().startswith(
                    "CREATE VIRTUAL"):
                quoted = '"' + name.replace('"', '""') + '"'
                tables[name] = int(connection.execute(f"SELECT count(*) FROM {quoted}").fetchone()[0])
    finally:
        connection.close()
    objects = dict.fromkeys(OBJECT_KINDS, 0)
    objects.update(tables=len(tables), views=views, triggers=triggers)
    return Inventory(tables=dict(sorted(tables.items())), objects=objects, problems=problems)


def _remove_database_file(path: Path) -> None:
    for candidate in (path, *(Path(f"{path}{suffix}") for suffix in _COMPANION_SUFFIXES)):
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()


def before_name(target: Path, now: dt.datetime | None = None) -> Path:
    """``<target>__before_<UTC stamp>``: where a forced restore keeps the old file."""
    return target.with_name(f"{target.name}__before_{before_stamp(now)}")


class SqliteDatabase(Source[SqliteSource]):
    provider = "sqlite"

    @property
    def extension(self) -> str:
        return ".sqlite"

    def __init__(self, config: SqliteSource) -> None:
        super().__init__(config)
        self.path = config.db_path.expanduser().resolve()

    async def dump(self, workdir: Path, facts: DumpFacts) -> AsyncIterator[bytes]:
        # Checked first: sqlite3 would otherwise create an empty database and back it up.
        if not await asyncio.to_thread(self.path.is_file):
            raise DumpError(f"SQLite database {self.path} does not exist")
        snapshot = workdir / SNAPSHOT_NAME
        try:
            try:
                version = await tool_version()
                await process.run(
                    process.Command(
                        (await _tool(), "-bail", str(self.path), f".timeout {BUSY_TIMEOUT_MS}",
                         *SNAPSHOT_STEPS),
                        cwd=workdir,
                    ),
                    timeout=self.config.timeout,
                )
                await integrity_check(snapshot, timeout=self.config.timeout)
            except ProcessError as error:
                raise DumpError(str(error)) from None
            try:
                counted = await asyncio.to_thread(inventory_of, snapshot, check=False)
            except sqlite3.Error as error:
                raise DumpError(f"counting the rows of the snapshot failed: {error}") from None
            facts.database = self.path.name
            facts.server_version = version
            facts.tool = "sqlite3"
            facts.tool_version = version
            facts.dump_format = "sqlite"
            facts.tables = counted.tables
            facts.objects = counted.objects
            async for block in read_file(snapshot):
                yield block
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(snapshot.unlink)

    async def health(self) -> None:
        if not await asyncio.to_thread(self.path.is_file):
            raise HealthError(f"{self.path} does not exist")
        if not await asyncio.to_thread(os.access, self.path, os.R_OK):
            raise HealthError(f"{self.path} is not readable")
        try:
            await process.run(
                process.Command((await _tool(), "-bail", "-readonly", str(self.path),
                                 "PRAGMA schema_version;")),
                timeout=10,
            )
        except ProcessError as error:
            raise HealthError(str(error)) from None

    # ------------------------------------------------------------------ restore

    async def restore(
        self, chunks: AsyncIterator[bytes], *, database: str | None, force: bool,
        workdir: Path, drop_old: bool = False,
    ) -> str:
        target = Path(database).expanduser().resolve() if database else self.path
        state = await asyncio.to_thread(_target_state, target)
        if state != "empty" and not force:
            what = "already holds tables" if state == "tables" else "is not a database backupmand can read"
            raise RestoreError(f"{target} {what}: use --force to replace it (the old file is "
                               "kept beside it)")
        incoming = workdir / INCOMING_NAME
        kept: Path | None = None
        aside = False  # the unreadable old file was moved to ``kept``, not copied
        replaced = False
        try:
            await write_chunks(chunks, incoming)
            await integrity_check(incoming)  # before the target is touched
            await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
            if state == "unreadable":
                # SQLite cannot open it, so neither copy nor load through it: move it
                # (and its journal files) aside whole, and load into a new file.
                kept = before_name(target)
                await asyncio.to_thread(_move_database_file, target, kept)
                aside = True
            elif state == "tables" and not drop_old:
                kept = before_name(target)
                await self._copy(target, kept)
            await process.run(
                process.Command(
                    (await _tool(), "-bail", str(target), f".timeout {BUSY_TIMEOUT_MS}",
                     f".restore {INCOMING_NAME}"),
                    cwd=workdir,
                ),
                timeout=3600,
            )
            replaced = True
            await integrity_check(target)
        except BaseException as error:
            if kept is not None and not replaced:  # the old one is still the target's
                if aside:
                    await shielded(asyncio.to_thread(_remove_database_file, target))
                    await shielded(asyncio.to_thread(_move_database_file, kept, target))
                else:
                    await shielded(asyncio.to_thread(_remove_database_file, kept))
            if isinstance(error, ProcessError):
                if replaced:
                    raise RestoreError(f"{target} was restored but fails its integrity check"
                                       + (f"; the replaced database is kept as {kept}" if kept
                                          else "") + f": {error}") from None
                raise RestoreError(f"restore into {target} failed (it is as it was): "
                                   f"{error}") from None
            raise
        finally:
            await asyncio.to_thread(_remove_database_file, incoming)
        if kept is not None and aside and drop_old:
            await asyncio.to_thread(_remove_database_file, kept)
            kept = None
        if kept is not None:
            return f"{target} (the replaced database is kept as {kept})"
        return str(target)

    async def _copy(self, database: Path, copy: Path) -> None:
        """A consistent copy of a live database through the backup API."""
        await process.run(
            process.Command(
                (await _tool(), "-bail", str(database), f".timeout {BUSY_TIMEOUT_MS}",
                 "BEGIN", "SELECT count(*) FROM sqlite_master;", f".backup {_shell_quote(copy)}",
                 "COMMIT"),
            ),
            timeout=3600,
        )

    # ------------------------------------------------------------------ drills

    async def drill(
        self, chunks: AsyncIterator[bytes], *, scratch: str, workdir: Path
    ) -> Inventory:
        """Write the dump to ``workdir/<scratch>.sqlite``, check and count it, delete it."""
        name = Path(scratch).name or "scratch"
        path = workdir / (name if name.endswith(".sqlite") else name + ".sqlite")
        try:
            await write_chunks(chunks, path)
            try:
                return await asyncio.to_thread(inventory_of, path, check=True)
            except sqlite3.Error as error:
                raise RestoreError(f"the dump does not open as an SQLite database: {error}") from None
        finally:
            await shielded(asyncio.to_thread(_remove_database_file, path))


def _shell_quote(path: Path) -> str:
    """A path as one double-quoted argument of a sqlite3 shell dot-command (the shell
    resolves backslash escapes inside double quotes, and nothing else)."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _move_database_file(path: Path, destination: Path) -> None:
    """Rename a database file and its journal files (an atomic rename each)."""
    for suffix in ("", *_COMPANION_SUFFIXES):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.rename(Path(f"{destination}{suffix}"))


def _target_state(path: Path) -> str:
    """empty (missing, empty or without tables), tables, or unreadable (not a database)."""
    if not path.exists() or path.stat().st_size == 0:
        return "empty"
    try:
        connection = sqlite3.connect(path.as_uri() + "?mode=ro", uri=True, timeout=30)
        try:
            row = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        if getattr(error, "sqlite_errorname", "") in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
            return "unreadable"  # never overwritten without --force
        return "tables"  # locked or busy: a live database, handled through SQLite
    return "tables" if row and row[0] else "empty"
