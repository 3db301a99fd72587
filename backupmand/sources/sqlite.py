"""SQLite: an online backup through the `sqlite3` tool, integrity-checked.

The copy is made with SQLite's backup API (the shell's ``.backup``) inside one read
transaction, so it is one consistent snapshot that finishes even while writers are
busy — never a raw file copy. In WAL mode writers go on meanwhile; in rollback-journal
mode they wait (up to their busy timeout) until the copy is taken. The copy is
checked with ``PRAGMA integrity_check`` before a single byte of it is handed on, and
a restore goes back through the same API (``.restore``), so the target's own WAL and
locks are respected.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

from .. import process
from ..config import SqliteSource
from ..errors import DumpError, HealthError, ProcessError, RestoreError
from ..files import read_file
from .base import DumpFacts, Source

SNAPSHOT_NAME = "snapshot.sqlite"
#: The copy is taken inside one read transaction of the connection that copies. Without
#: it, the backup API copies 100 pages at a time and starts over whenever another
#: connection commits in between: under steady writes it never finished (a test with
#: two busy writers waited 300 s; inside the transaction it takes 20 ms).
SNAPSHOT_STEPS = ("BEGIN", "SELECT count(*) FROM sqlite_master;", f".backup {SNAPSHOT_NAME}",
                  "COMMIT")
BUSY_TIMEOUT_MS = 60_000


async def _tool() -> str:
    return await process.locate("sqlite3")


async def integrity_check(path: Path, *, timeout: float = 3600) -> None:
    """Raise ProcessError unless ``PRAGMA integrity_check`` answers exactly 'ok'."""
    result = await process.run(
        process.Command((await _tool(), "-bail", "-readonly", str(path), "PRAGMA integrity_check;")),
        timeout=timeout,
    )
    answer = result.stdout.decode("utf-8", "replace").strip()
    if answer != "ok":
        raise ProcessError(f"integrity_check failed: {answer[:500]}")


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

    async def restore(
        self, chunks: AsyncIterator[bytes], *, database: str | None, force: bool,
        workdir: Path, drop_old: bool = False,
    ) -> str:
        target = Path(database).expanduser().resolve() if database else self.path
        if not force and await asyncio.to_thread(_has_tables, target):
            raise RestoreError(f"{target} already holds tables: use --force to overwrite it")
        incoming = workdir / "incoming.sqlite"
        try:
            handle = await asyncio.to_thread(open, incoming, "wb")
            try:
                async for chunk in chunks:
                    await asyncio.to_thread(handle.write, chunk)
            finally:
                await asyncio.to_thread(handle.close)
            await integrity_check(incoming)
            target.parent.mkdir(parents=True, exist_ok=True)
            await process.run(
                process.Command(
                    (await _tool(), "-bail", str(target), f".timeout {BUSY_TIMEOUT_MS}",
                     f".restore {incoming.name}"),
                    cwd=workdir,
                ),
                timeout=3600,
            )
            await integrity_check(target)
        except ProcessError as error:
            raise RestoreError(f"restore into {target} failed: {error}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                incoming.unlink()
        return str(target)


def _has_tables(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return False
    try:
        connection = sqlite3.connect(path.as_uri() + "?mode=ro", uri=True, timeout=30)
        try:
            row = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            connection.close()
    except sqlite3.DatabaseError:
        return True  # not a database we can read: never overwrite it silently
    return bool(row and row[0])
