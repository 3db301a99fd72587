"""PostgreSQL: pg_dump out, psql / pg_restore in.

Connection
    host, port, user and the TLS settings reach the tools through libpq's
    environment variables (PGHOST, PGPORT, PGUSER, PGSSLMODE, PGSSLROOTCERT), the
    password through PGPASSWORD in the child's environment only (readable by the
    same user and root, never shown in argv), and the database as a quoted
    ``dbname='...'`` connection string, so no name is ever taken for another
    option. ``tls: true`` means ``sslmode=require`` (libpq then also verifies the
    server against ``ca_file`` when one is given); ``ssl_mode`` chooses any libpq
    mode explicitly (``verify-full`` checks the host name too). Without either,
    libpq's default applies (``prefer``). A ``host`` starting with ``/`` is a
    Unix-socket folder, as in libpq.

Dumps
    ``format: plain`` (the default) streams ``pg_dump --format=plain`` and checks
    pg_dump's end-of-dump trailer. ``format: custom`` has pg_dump write its archive
    into the private work folder (a seekable file, which pg_restore needs for a
    selective or parallel restore), checks it with ``pg_restore --list``, then hands
    it on; its extension is ``.dump``. pg_dump's own compression is off
    (``--compress=0``), as the pipeline compresses the archive anyway; add
    ``--compress=N`` to ``options`` to have it back. ``options`` add pg_dump arguments (see
    ``sources/options.py`` for what is refused); ``--no-owner`` / ``--no-privileges``
    there make dumps restorable by a user who does not own the original objects.

Restores
    The target database (``--db-name``, else ``db_name``) is created (``TEMPLATE
    template0``) when it does not exist. One that holds any user object (table,
    view, sequence, function, type, schema besides ``public``, or extension besides
    plpgsql) is refused unless ``force``; with ``force`` it is dropped (``WITH
    (FORCE)``, which ends other sessions) and created again. Plain dumps load with
    ``psql -v ON_ERROR_STOP=1 --single-transaction``, custom archives with
    ``pg_restore --exit-on-error --single-transaction``: a failure leaves nothing
    half-loaded, and a database this restore created is dropped again. Ownership and
    grants are restored as dumped, so the roles must exist on the target server
    (or dump with ``--no-owner --no-privileges``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from .. import process
from ..config import PostgresSource
from ..errors import DumpError, HealthError, ProcessError, RestoreError
from ..files import read_file
from ._streams import find_tool, peek, write_chunks
from .base import DumpFacts, ServerSource, TailCheck
from .options import check_pg_dump_options

PLAIN_TRAILER = b"-- PostgreSQL database dump complete"
CUSTOM_MAGIC = b"PGDMP"
HEALTH_TIMEOUT = 10
ADMIN_TIMEOUT = 120
CONNECT_TIMEOUT = 30
ARCHIVE_NAME = "dump.pgdump"
INCOMING_NAME = "incoming.pgdump"

# Objects a freshly created database does not have: anything outside the system
# schemas, any schema besides public, any extension besides plpgsql.
_USER_OBJECTS_SQL = r"""
SELECT (SELECT count(*) FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\_%')
     + (SELECT count(*) FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\_%')
     + (SELECT count(*) FROM pg_catalog.pg_type t
          JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\_%' AND t.typrelid = 0 AND t.typelem = 0)
     + (SELECT count(*) FROM pg_catalog.pg_namespace n
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'public')
           AND n.nspname NOT LIKE 'pg\_%')
     + (SELECT count(*) FROM pg_catalog.pg_extension WHERE extname <> 'plpgsql');
"""


def conninfo_dbname(name: str) -> str:
    """``dbname='...'`` with libpq quoting: the name is never parsed as a connection string."""
    return "dbname='" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _check_name(name: str) -> str:
    if not name or any(ch in name for ch in "\0\n\r"):
        raise RestoreError("the database name must be non-empty, without NUL or line breaks")
    return name


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


class PostgresDatabase(ServerSource[PostgresSource]):
    provider = "postgres"

    @property
    def extension(self) -> str:
        return ".dump" if self.config.format == "custom" else ".sql"

    # ------------------------------------------------------------------ plumbing

    def environment(self, *, connect_timeout: int = CONNECT_TIMEOUT) -> dict[str, str]:
        """libpq settings for a child; the daemon's own PG* variables never leak in."""
        config = self.config
        env = {
            "PGHOST": config.host,
            "PGPORT": str(config.port),
            "PGUSER": config.user,
            "PGCONNECT_TIMEOUT": str(connect_timeout),
            "PGAPPNAME": "backupmand",
        }
        if config.password is not None:
            env["PGPASSWORD"] = config.password.get_secret_value()
        mode = config.ssl_mode or ("require" if config.tls else None)
        if mode is not None:
            env["PGSSLMODE"] = mode
        if config.ca_file is not None:
            env["PGSSLROOTCERT"] = str(config.ca_file.expanduser())
        return env

    def command(self, *argv: str, env: Mapping[str, str] | None = None) -> process.Command:
        return process.Command(
            argv, env=dict(self.environment() if env is None else env), secrets=self.secrets()
        )

    async def admin_query(self, sql: str, *, database: str, variables: Mapping[str, str],
                          time_limit: float = ADMIN_TIMEOUT) -> str:
        """Run ``sql`` through psql's stdin (``:'var'`` / ``:"var"`` interpolation); stdout."""
        argv = [await find_tool("psql"), "-X", "-w", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                f"--dbname={conninfo_dbname(database)}"]
        for key, value in variables.items():
            argv += ["-v", f"{key}={value}"]
        result = await process.run(
            self.command(*argv), timeout=time_limit, input_chunks=_one(sql.encode("utf-8")),
        )
        return result.stdout.decode("utf-8", "replace").strip()

    # ------------------------------------------------------------------ dump

    async def dump(self, workdir: Path, facts: DumpFacts) -> AsyncIterator[bytes]:
        try:
            options = check_pg_dump_options(self.config.options,
                                            custom=self.config.format == "custom")
        except ValueError as error:
            raise DumpError(f"invalid options: {error}") from None
        try:
            tool = await find_tool("pg_dump")
        except ProcessError as error:
            raise DumpError(str(error)) from None
        base = [tool, "--no-password", f"--dbname={conninfo_dbname(self.config.db_name)}"]
        if self.config.format == "custom":
            async for block in self._dump_custom(base, options, workdir):
                yield block
            return
        tail = TailCheck()
        try:
            async for chunk in process.stream_output(
                self.command(*base, "--format=plain", *options), timeout=self.config.timeout
            ):
                yield tail.feed(chunk)
        except ProcessError as error:
            raise DumpError(str(error)) from None
        if not tail.contains(PLAIN_TRAILER):
            raise DumpError(
                "pg_dump exited 0 but its output lacks the end-of-dump trailer "
                f"({PLAIN_TRAILER.decode()!r}): the dump is incomplete"
            )

    async def _dump_custom(
        self, base: list[str], options: tuple[str, ...], workdir: Path
    ) -> AsyncIterator[bytes]:
        archive = workdir / ARCHIVE_NAME
        deadline = time.monotonic() + self.config.timeout
        try:
            try:
                # The pipeline compresses the archive anyway: pg_dump's own (slow) zlib
                # compression is off unless the options ask for it (--compress=N, last wins).
                await process.run(
                    self.command(*base, "--format=custom", "--compress=0", f"--file={archive}",
                                 *options),
                    timeout=self.config.timeout, stdout_limit=0,
                )
                # Reads the whole table of contents: a truncated or foreign file fails.
                await process.run(
                    self.command(await find_tool("pg_restore"), "--list", str(archive)),
                    timeout=max(deadline - time.monotonic(), 30.0), stdout_limit=0,
                )
            except ProcessError as error:
                raise DumpError(str(error)) from None
            async for block in read_file(archive):
                yield block
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(archive.unlink)

    # ------------------------------------------------------------------ health

    async def health(self) -> None:
        """``SELECT 1`` through psql: proves the server is up *and* the credentials work."""
        try:
            psql = await find_tool("psql")
            result = await process.run(
                self.command(
                    psql, "-X", "-w", "-q", "-A", "-t",
                    f"--dbname={conninfo_dbname(self.config.db_name)}", "-c", "SELECT 1",
                    env=self.environment(connect_timeout=HEALTH_TIMEOUT),
                ),
                timeout=HEALTH_TIMEOUT + 5,
            )
        except ProcessError as error:
            raise HealthError(str(error)) from None
        if result.stdout.strip() != b"1":
            raise HealthError(f"unexpected answer to SELECT 1 from {self.where}")

    # ------------------------------------------------------------------ restore

    async def restore(
        self, chunks: AsyncIterator[bytes], *, database: str | None, force: bool,
        workdir: Path, drop_old: bool = False,
    ) -> str:
        target = _check_name(database or self.config.db_name)
        head, stream = await peek(chunks, len(CUSTOM_MAGIC))
        if not head:
            raise RestoreError("the backup holds an empty dump: nothing to restore")
        custom = head == CUSTOM_MAGIC
        created = await self._prepare_target(target, force)
        try:
            if custom:
                await self._load_custom(stream, target, workdir)
            else:
                await self._load_plain(stream, target)
        except Exception:
            if created:
                with contextlib.suppress(ProcessError):
                    await self._drop(target)
            raise
        kind = "custom-format archive" if custom else "SQL dump"
        return f"PostgreSQL database {target!r} on {self.where} ({kind})"

    def _maintenance(self, target: str) -> str:
        return "template1" if target == "postgres" else "postgres"

    async def _prepare_target(self, target: str, force: bool) -> bool:
        """Make ``target`` an empty database; True when this restore (re)created it."""
        maintenance = self._maintenance(target)
        try:
            exists = await self.admin_query(
                "SELECT count(*) FROM pg_catalog.pg_database WHERE datname = :'target';",
                database=maintenance, variables={"target": target},
            )
            if exists == "1":
                objects = int(await self.admin_query(_USER_OBJECTS_SQL, database=target,
                                                     variables={}) or "0")
                if objects == 0:
                    return False
                if not force:
                    raise RestoreError(
                        f"database {target!r} on {self.where} is not empty ({objects} objects): "
                        "restore into another database (--db-name), or use --force to drop "
                        "and recreate it"
                    )
                await self._drop(target)
            await self.admin_query("CREATE DATABASE :\"target\" TEMPLATE template0;",
                                   database=maintenance, variables={"target": target})
        except ProcessError as error:
            raise RestoreError(f"preparing database {target!r} on {self.where} failed: "
                               f"{error}") from None
        return True

    async def _drop(self, target: str) -> None:
        await self.admin_query("DROP DATABASE IF EXISTS :\"target\" WITH (FORCE);",
                               database=self._maintenance(target), variables={"target": target})

    async def _load_plain(self, stream: AsyncIterator[bytes], target: str) -> None:
        try:
            await process.run(
                self.command(
                    await find_tool("psql"), "-X", "-w", "-q", "-v", "ON_ERROR_STOP=1",
                    "--single-transaction", "-f", "-", f"--dbname={conninfo_dbname(target)}",
                ),
                timeout=self.config.timeout, input_chunks=stream, stdout_limit=0,
            )
        except ProcessError as error:
            raise RestoreError(f"loading the dump into {target!r} on {self.where} failed "
                               f"(nothing was committed): {error}") from None

    async def _load_custom(self, stream: AsyncIterator[bytes], target: str, workdir: Path) -> None:
        archive = workdir / INCOMING_NAME
        try:
            await write_chunks(stream, archive)
            await process.run(
                self.command(
                    await find_tool("pg_restore"), "--exit-on-error", "--single-transaction",
                    "--no-password", f"--dbname={conninfo_dbname(target)}", str(archive),
                ),
                timeout=self.config.timeout, stdout_limit=0,
            )
        except ProcessError as error:
            raise RestoreError(f"pg_restore into {target!r} on {self.where} failed "
                               f"(nothing was committed): {error}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(archive.unlink)
