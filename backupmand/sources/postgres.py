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
    ``format: plain`` (the default) streams ``pg_dump --format=plain`` and checks its
    end-of-dump trailer. The database's own properties (owner, encoding and locale,
    ``ALTER DATABASE … SET``, ``ALTER ROLE … IN DATABASE … SET``, comment, grants) are
    read first with ``pg_dump --create`` of nothing but the database entry, and carried
    inside the dump (``pg_properties``): a comment at its head with the ``CREATE
    DATABASE`` options and how to restore by hand, statements at its end that name
    psql's ``:"DBNAME"``, so they apply to whatever database the file is loaded into.
    Rows are counted in the COPY stream as it passes (``pg_copy``), objects from
    pg_dump's table-of-contents comments, in a thread beside the stream.

    ``format: custom`` has pg_dump write its archive (``--compress=0``: the pipeline
    compresses anyway) into the private work folder, a seekable file that pg_restore
    needs for a parallel restore; a thread reads the archive while pg_dump writes it
    and counts its rows and objects (``pg_archive``). The archive is checked with
    ``pg_restore --list``, then handed on; it holds the database's properties itself.
    ``options`` add pg_dump arguments (see ``sources/options.py`` for what is refused).

Restores
    Never one big transaction (20,000 large objects need 20,000 locks in one): psql
    with ``ON_ERROR_STOP`` or ``pg_restore --exit-on-error`` (``-j restore_jobs`` for an
    archive, staged in the work folder), stopping at the first error. A missing target
    is created with the dumped properties and loaded, and dropped again when the load
    fails. An existing target is never loaded into: the dump goes into a side
    database ``<target>__restoring_<hex>`` and only a complete load replaces the target
    (two renames, after ending the target's sessions); the replaced database is kept
    as ``<target>__before_<UTC stamp>`` unless ``drop_old`` (an empty one is dropped).
    One that holds any user object is refused unless ``force``. Any failure drops the
    side database and leaves the target as it was. Restores connect to the target,
    the side database and ``postgres`` (``template1`` when the target is ``postgres``)
    for CREATE / ALTER / DROP DATABASE; they never read or change another database.

Globals
    ``dump_globals`` (``globals: true``) writes an idempotent psql script of the roles,
    memberships and tablespaces the database needs (``pg_globals``), without password
    hashes unless ``role_passwords`` (superuser only); ``restore_globals`` applies it.

Drills
    ``drill`` loads a dump exactly as a restore does, into a new database on the
    source's server or on ``verify_target``, counts it (``pg_inventory``) and drops it
    in a ``finally`` that a cancellation cannot cut short. It refuses a scratch name
    that already exists (it drops only what it created).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from .. import process
from ..config import PostgresSource
from ..errors import DumpError, HealthError, ProcessError, RestoreError
from ..files import read_file
from . import pg_globals
from ._shielded import shielded
from ._streams import find_tool, peek, write_chunks
from .base import OBJECT_KINDS, DumpFacts, Inventory, ServerSource, TailCheck, before_stamp
from .options import check_pg_dump_options
from .pg_archive import ArchiveError, count_archive_file, read_toc
from .pg_copy import PlainDumpCounter
from .pg_inventory import INVENTORY_QUERY, row_count_query
from .pg_properties import (
    DatabaseProperties,
    PropertiesError,
    epilogue,
    options_from_head,
    parse_create_output,
    prologue,
)

PLAIN_TRAILER = b"-- PostgreSQL database dump complete"
CUSTOM_MAGIC = b"PGDMP"
HEALTH_TIMEOUT = 10
ADMIN_TIMEOUT = 120
CONNECT_TIMEOUT = 30
ARCHIVE_NAME = "dump.pgdump"
INCOMING_NAME = "incoming.pgdump"
HEAD_SIZE = 64 * 1024
#: PostgreSQL truncates identifiers to 63 bytes (NAMEDATALEN - 1).
NAME_BYTES = 63
#: Counting chunks queued beside a plain dump stream before the stream waits.
COUNTER_BACKLOG = 8
#: Options of the dump that also shape the database-level statements.
_PROPERTY_OPTIONS = ("--no-owner", "-O", "--no-privileges", "--no-acl", "-x", "--no-comments",
                     "--no-security-labels")
_PROPERTY_OPTION_PREFIXES = ("--role=", "--snapshot=")
#: Catalog entries of a custom archive that describe the database itself.
_DATABASE_ENTRY_TYPES = ("DATABASE", "DATABASE PROPERTIES")
_ON_DATABASE_ENTRY_TYPES = ("COMMENT", "ACL", "SECURITY LABEL")
_VERSION = re.compile(r"^-- Dumped (from database|by pg_dump) version (\S+)", re.M)

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
     + (SELECT count(*) FROM pg_catalog.pg_extension WHERE extname <> 'plpgsql')
     + (SELECT count(*) FROM pg_catalog.pg_largeobject_metadata);
"""


def conninfo_dbname(name: str) -> str:
    """``dbname='...'`` with libpq quoting: the name is never parsed as a connection string."""
    return "dbname='" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _check_name(name: str) -> str:
    if not name or any(ch in name for ch in "\0\n\r"):
        raise RestoreError("the database name must be non-empty, without NUL or line breaks")
    if len(name.encode("utf-8")) > NAME_BYTES:
        raise RestoreError(f"the database name {name!r} is longer than PostgreSQL's "
                           f"{NAME_BYTES} bytes")
    return name


def derived_name(base: str, suffix: str) -> str:
    """``base + suffix`` within PostgreSQL's 63 bytes (``base`` shortened, never split
    inside a character), so that the server never truncates it into another name."""
    room = NAME_BYTES - len(suffix.encode("utf-8"))
    encoded = base.encode("utf-8")[:room]
    return encoded.decode("utf-8", "ignore") + suffix


def before_name(target: str, now: dt.datetime | None = None) -> str:
    """``<target>__before_<UTC stamp>``: where a forced restore keeps the old one."""
    return derived_name(target, f"__before_{before_stamp(now)}")


def dump_versions(sql: str) -> tuple[str | None, str | None]:
    """(server version, pg_dump version) from the header of pg_dump's SQL output."""
    found = {kind: version for kind, version in _VERSION.findall(sql)}
    return found.get("from database"), found.get("by pg_dump")


def _first_word(version: str) -> str:
    return version.split()[0] if version.split() else version


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


class _BackgroundCounter:
    """Feeds a plain dump's chunks to a PlainDumpCounter in a thread of its own, so that
    counting overlaps compression; at most COUNTER_BACKLOG chunks wait for it."""

    def __init__(self) -> None:
        self.counter = PlainDumpCounter()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-count")
        self._queued: collections.deque[Future[None]] = collections.deque()

    async def feed(self, chunk: bytes) -> None:
        self._queued.append(self._executor.submit(self.counter.feed, chunk))
        while len(self._queued) > COUNTER_BACKLOG:
            await asyncio.wrap_future(self._queued.popleft())

    async def finish(self) -> PlainDumpCounter:
        while self._queued:
            await asyncio.wrap_future(self._queued.popleft())
        self.counter.finish()
        return self.counter

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class PostgresDatabase(ServerSource[PostgresSource]):
    provider = "postgres"

    @property
    def extension(self) -> str:
        return ".dump" if self.config.format == "custom" else ".sql"

    # ------------------------------------------------------------------ plumbing

    def environment(self, *, connect_timeout: int = CONNECT_TIMEOUT,
                    verify: bool = False) -> dict[str, str]:
        """libpq settings for a child; the daemon's own PG* variables never leak in.

        ``verify`` reaches ``verify_target`` instead (its port and user default to the
        source's, its password to the source's password).
        """
        config = self.config
        host, port, user, password = config.host, config.port, config.user, config.password
        target = config.verify_target
        if verify and target is not None:
            host = target.host
            port = target.port or config.port
            user = target.user or config.user
            password = target.password if target.password is not None else config.password
        env = {
            "PGHOST": host,
            "PGPORT": str(port),
            "PGUSER": user,
            "PGCONNECT_TIMEOUT": str(connect_timeout),
            "PGAPPNAME": "backupmand",
        }
        if password is not None:
            env["PGPASSWORD"] = password.get_secret_value()
        mode = config.ssl_mode or ("require" if config.tls else None)
        if mode is not None:
            env["PGSSLMODE"] = mode
        if config.ca_file is not None:
            env["PGSSLROOTCERT"] = str(config.ca_file.expanduser())
        return env

    def where_for(self, env: Mapping[str, str]) -> str:
        return f"{env['PGHOST']}:{env['PGPORT']}"

    def command(self, *argv: str, env: Mapping[str, str] | None = None) -> process.Command:
        return process.Command(
            argv, env=dict(self.environment() if env is None else env), secrets=self.secrets()
        )

    async def admin_query(self, sql: str, *, database: str, variables: Mapping[str, str],
                          time_limit: float = ADMIN_TIMEOUT,
                          env: Mapping[str, str] | None = None) -> str:
        """Run ``sql`` through psql's stdin (``:'var'`` / ``:"var"`` interpolation); stdout."""
        argv = [await find_tool("psql"), "-X", "-w", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                f"--dbname={conninfo_dbname(database)}"]
        for key, value in variables.items():
            argv += ["-v", f"{key}={value}"]
        result = await process.run(
            self.command(*argv, env=env), timeout=time_limit,
            input_chunks=_one(sql.encode("utf-8")),
        )
        return result.stdout.decode("utf-8", "replace").strip()

    def _dump_options(self) -> tuple[str, ...]:
        try:
            return check_pg_dump_options(self.config.options,
                                         custom=self.config.format == "custom")
        except ValueError as error:
            raise DumpError(f"invalid options: {error}") from None

    def _has_option(self, *names: str) -> bool:
        return any(option in names for option in self.config.options)

    # ------------------------------------------------------------------ dump

    async def dump(self, workdir: Path, facts: DumpFacts) -> AsyncIterator[bytes]:
        options = self._dump_options()
        try:
            tool = await find_tool("pg_dump")
        except ProcessError as error:
            raise DumpError(str(error)) from None
        base = [tool, "--no-password", f"--dbname={conninfo_dbname(self.config.db_name)}"]
        facts.database = self.config.db_name
        facts.tool = "pg_dump"
        if self.config.format == "custom":
            facts.dump_format = "custom"
            async for block in self._dump_custom(base, options, workdir, facts):
                yield block
            return
        facts.dump_format = "plain"
        properties_sql = await self._properties_sql(base, options)
        try:
            properties = parse_create_output(properties_sql)
        except PropertiesError as error:
            raise DumpError(f"reading the database's properties failed: {error}") from None
        server_version, tool_version = dump_versions(properties_sql)
        facts.server_version = _first_word(server_version) if server_version else None
        facts.tool_version = _first_word(tool_version) if tool_version else None
        # The prologue goes out with pg_dump's first chunk (then pg_dump is running).
        head: bytes | None = prologue(properties, self.config.db_name)
        tail = TailCheck()
        counting = _BackgroundCounter()
        try:
            try:
                async for chunk in process.stream_output(
                    self.command(*base, "--format=plain", *options), timeout=self.config.timeout
                ):
                    await counting.feed(chunk)
                    tail.feed(chunk)
                    if head is not None:
                        chunk, head = head + chunk, None
                    yield chunk
            except ProcessError as error:
                raise DumpError(str(error)) from None
            if not tail.contains(PLAIN_TRAILER):
                raise DumpError(
                    "pg_dump exited 0 but its output lacks the end-of-dump trailer "
                    f"({PLAIN_TRAILER.decode()!r}): the dump is incomplete"
                )
            try:
                counted = await counting.finish()
            except ValueError as error:
                raise DumpError(f"counting the dump's rows failed: {error}") from None
        finally:
            counting.close()
        facts.tables = dict(sorted(counted.tables.items()))
        facts.objects = counted.objects()
        yield epilogue(self._filtered(properties))

    async def _properties_sql(self, base: list[str], options: tuple[str, ...]) -> str:
        """pg_dump's rendering of the database entry alone (``--create``, every schema
        excluded), with the dump's own owner/privilege/comment/snapshot options."""
        shaping = [option for option in options
                   if option in _PROPERTY_OPTIONS or option.startswith(_PROPERTY_OPTION_PREFIXES)]
        try:
            result = await process.run(
                self.command(*base, "--format=plain", "--create", "--schema-only",
                             "--exclude-schema=*", "--no-blobs", *shaping),
                timeout=min(self.config.timeout, ADMIN_TIMEOUT),
            )
        except ProcessError as error:
            raise DumpError(str(error)) from None
        return result.stdout.decode("utf-8", "surrogateescape")

    def _filtered(self, properties: DatabaseProperties) -> DatabaseProperties:
        """The properties without what the source's options leave out of a restore."""
        kept = []
        for statement in properties.statements:
            words = statement.split(None, 4)
            if self._has_option("--no-owner", "-O") and " OWNER TO " in statement and (
                    words[:2] == ["ALTER", "DATABASE"]):
                continue
            if self._has_option("--no-privileges", "--no-acl", "-x") and words[0] in (
                    "GRANT", "REVOKE"):
                continue
            if self._has_option("--no-comments") and words[:1] == ["COMMENT"]:
                continue
            kept.append(statement)
        return DatabaseProperties(properties.create_options, tuple(kept))

    async def _dump_custom(self, base: list[str], options: tuple[str, ...], workdir: Path,
                           facts: DumpFacts) -> AsyncIterator[bytes]:
        archive = workdir / ARCHIVE_NAME
        deadline = time.monotonic() + self.config.timeout
        written = threading.Event()
        counting = asyncio.ensure_future(asyncio.to_thread(count_archive_file, archive, written))
        try:
            try:
                try:
                    # The pipeline compresses the archive anyway: pg_dump's own (slow) zlib
                    # compression is off unless the options ask for it (--compress=N, last wins).
                    await process.run(
                        self.command(*base, "--format=custom", "--compress=0",
                                     f"--file={archive}", *options),
                        timeout=self.config.timeout, stdout_limit=0,
                    )
                finally:
                    written.set()
                # Reads the whole table of contents: a truncated or foreign file fails.
                await process.run(
                    self.command(await find_tool("pg_restore"), "--list", str(archive)),
                    timeout=max(deadline - time.monotonic(), 30.0), stdout_limit=0,
                )
            except ProcessError as error:
                raise DumpError(str(error)) from None
            try:
                counted = await counting
            except (ArchiveError, ValueError) as error:
                raise DumpError(f"reading the archive pg_dump wrote failed: {error}") from None
            facts.server_version = _first_word(counted.server_version)
            facts.tool_version = _first_word(counted.dump_version)
            facts.tables = dict(sorted(counted.tables.items()))
            facts.objects = counted.objects()
            async for block in read_file(archive):
                yield block
        finally:
            written.set()
            with contextlib.suppress(BaseException):
                await shielded(counting)
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(archive.unlink)

    # ------------------------------------------------------------------ globals

    async def dump_globals(self, workdir: Path) -> bytes | None:
        if not self.config.globals:
            return None
        try:
            if self.config.role_passwords:
                superuser = await self.admin_query(pg_globals.IS_SUPERUSER_QUERY,
                                                   database=self.config.db_name, variables={})
                if superuser != "t":
                    raise DumpError(
                        f"role_passwords: true needs a superuser: {self.config.user!r} cannot "
                        "read the password hashes (pg_authid); connect as a superuser or set "
                        "role_passwords: false")
            answer = await self.admin_query(
                pg_globals.GLOBALS_QUERY, database=self.config.db_name,
                variables={"passwords": "on" if self.config.role_passwords else "off"})
        except ProcessError as error:
            if isinstance(error, DumpError):
                raise
            raise DumpError(f"reading the roles and tablespaces failed: {error}") from None
        try:
            document = pg_globals.parse_document(answer)
        except ValueError as error:
            raise DumpError(f"reading the roles and tablespaces failed: {error}") from None
        return pg_globals.render_script(document, self.config.db_name).encode("utf-8")

    async def restore_globals(self, chunks: AsyncIterator[bytes], *, workdir: Path) -> str:
        try:
            await process.run(
                self.command(await find_tool("psql"), "-X", "-w", "-q", "-v", "ON_ERROR_STOP=1",
                             "-f", "-", f"--dbname={conninfo_dbname(self._maintenance(''))}"),
                timeout=self.config.timeout, input_chunks=chunks, stdout_limit=0,
            )
        except ProcessError as error:
            raise RestoreError(f"applying the globals on {self.where} failed: {error}") from None
        return f"roles, memberships and tablespaces on {self.where}"

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
        env = self.environment()
        where = self.where_for(env)
        try:
            state = await self._state(target, env)
        except ProcessError as error:
            raise RestoreError(f"checking database {target!r} on {where} failed: {error}") from None
        if state == "occupied" and not force:
            raise RestoreError(
                f"database {target!r} on {where} is not empty: restore into another database "
                "(--db-name), or use --force to replace it (the old one is then kept as "
                f"{target + '__before_<UTC stamp>'!r})")
        if state == "missing":
            kind = await self._load_new(chunks, target, workdir, env)
            return f"PostgreSQL database {target!r} on {where} ({kind})"
        side = derived_name(target, f"__restoring_{secrets.token_hex(4)}")
        kind = await self._load_new(chunks, side, workdir, env)
        keep = state == "occupied" and not drop_old
        kept = await self._swap(target, side, keep=keep, env=env)
        replaced = f"; the replaced database is kept as {kept!r}" if kept else ""
        return f"PostgreSQL database {target!r} on {where} ({kind}{replaced})"

    def _maintenance(self, target: str) -> str:
        return "template1" if target == "postgres" else "postgres"

    async def _exists(self, name: str, env: Mapping[str, str]) -> bool:
        answer = await self.admin_query(
            "SELECT count(*) FROM pg_catalog.pg_database WHERE datname = :'name';",
            database=self._maintenance(name), variables={"name": name}, env=env)
        return answer == "1"

    async def _state(self, target: str, env: Mapping[str, str]) -> str:
        """missing, empty (nothing a fresh database lacks) or occupied."""
        if not await self._exists(target, env):
            return "missing"
        objects = int(await self.admin_query(_USER_OBJECTS_SQL, database=target, variables={},
                                             env=env) or "0")
        return "occupied" if objects else "empty"

    async def _drop(self, name: str, env: Mapping[str, str]) -> None:
        await self.admin_query("DROP DATABASE IF EXISTS :\"name\" WITH (FORCE);",
                               database=self._maintenance(name), variables={"name": name},
                               env=env)

    async def _load_new(self, chunks: AsyncIterator[bytes], name: str, workdir: Path,
                        env: Mapping[str, str]) -> str:
        """Create database ``name`` with the dump's properties and load the dump into it,
        stopping at the first error; a failure (or a cancellation) drops it again."""
        where = self.where_for(env)
        head, stream = await peek(chunks, HEAD_SIZE)
        if not head:
            raise RestoreError("the backup holds an empty dump: nothing to restore")
        custom = head.startswith(CUSTOM_MAGIC)
        archive = workdir / INCOMING_NAME
        created = False
        try:
            if custom:
                try:
                    await write_chunks(stream, archive)
                    properties = await self._archive_properties(archive, env)
                except (ProcessError, ArchiveError, PropertiesError) as error:
                    raise RestoreError(f"reading the archive failed: {error}") from None
                options = properties.create_options
            else:
                try:
                    options = options_from_head(head) or "WITH TEMPLATE = template0"
                except PropertiesError as error:
                    raise RestoreError(str(error)) from None
                properties = None
            try:
                created = True
                await self.admin_query(f"CREATE DATABASE :\"name\" {options};",
                                       database=self._maintenance(name),
                                       variables={"name": name}, env=env)
            except ProcessError as error:
                created = False
                raise RestoreError(f"creating database {name!r} on {where} failed: {error}") from None
            if custom:
                assert properties is not None
                await self._load_archive(archive, name, properties, env)
            else:
                await self._load_plain(stream, name, env)
        except BaseException:
            if created:
                with contextlib.suppress(ProcessError):
                    await shielded(self._drop(name, env))
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(archive.unlink)
        return "custom-format archive" if custom else "SQL dump"

    async def _load_plain(self, stream: AsyncIterator[bytes], name: str,
                          env: Mapping[str, str]) -> None:
        try:
            await process.run(
                self.command(
                    await find_tool("psql"), "-X", "-w", "-q", "-v", "ON_ERROR_STOP=1",
                    "-f", "-", f"--dbname={conninfo_dbname(name)}", env=env,
                ),
                timeout=self.config.timeout, input_chunks=stream, stdout_limit=0,
            )
        except ProcessError as error:
            raise RestoreError(f"loading the dump into {name!r} on {self.where_for(env)} "
                               f"failed: {error}") from None

    async def _archive_properties(self, archive: Path,
                                  env: Mapping[str, str]) -> DatabaseProperties:
        """The database entries of a staged archive, through ``pg_restore --create -L``."""
        def database_entries() -> list[int]:
            with open(archive, "rb") as handle:
                parsed, _ = read_toc(handle.read)
            return [entry.dump_id for entry in parsed.entries
                    if entry.desc in _DATABASE_ENTRY_TYPES or (
                        entry.desc in _ON_DATABASE_ENTRY_TYPES and entry.tag.startswith("DATABASE "))]

        entries = await asyncio.to_thread(database_entries)
        if not entries:
            return DatabaseProperties("WITH TEMPLATE = template0", ())
        listing = archive.with_name("database-entries.list")
        await asyncio.to_thread(listing.write_text, "".join(f"{dump_id};\n" for dump_id in entries))
        try:
            result = await process.run(
                self.command(await find_tool("pg_restore"), "--create", "-L", str(listing),
                             "-f", "-", str(archive), env=env),
                timeout=ADMIN_TIMEOUT,
            )
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(listing.unlink)
        return self._filtered(parse_create_output(result.stdout.decode("utf-8", "surrogateescape")))

    async def _load_archive(self, archive: Path, name: str, properties: DatabaseProperties,
                            env: Mapping[str, str]) -> None:
        argv = [await find_tool("pg_restore"), "--exit-on-error", "--no-password",
                f"--dbname={conninfo_dbname(name)}"]
        if self.config.restore_jobs > 1:
            argv.append(f"--jobs={self.config.restore_jobs}")
        if self._has_option("--no-owner", "-O"):
            argv.append("--no-owner")
        if self._has_option("--no-privileges", "--no-acl", "-x"):
            argv.append("--no-privileges")
        if self._has_option("--no-comments"):
            argv.append("--no-comments")
        where = self.where_for(env)
        try:
            await process.run(self.command(*argv, str(archive), env=env),
                              timeout=self.config.timeout, stdout_limit=0)
        except ProcessError as error:
            raise RestoreError(f"pg_restore into {name!r} on {where} failed: {error}") from None
        if properties.statements:
            script = "\n".join(properties.statements) + "\n"
            try:
                await self.admin_query(script, database=name, variables={}, env=env)
            except ProcessError as error:
                raise RestoreError(f"applying the database's properties to {name!r} on {where} "
                                   f"failed: {error}") from None

    async def _swap(self, target: str, side: str, *, keep: bool,
                    env: Mapping[str, str]) -> str | None:
        """Put the loaded ``side`` database in ``target``'s place; the old target's name
        when it is kept. Any failure puts the target back and drops ``side``."""
        where = self.where_for(env)
        old = before_name(target) if keep else derived_name(target, f"__replaced_{secrets.token_hex(4)}")
        while keep and await self._exists(old, env):  # two forced restores in one second
            old = derived_name(target, f"__before_{before_stamp()}_{secrets.token_hex(2)}")
        maintenance = self._maintenance(target)
        try:
            await self.admin_query(
                "SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity"
                " WHERE datname = :'target' AND pid <> pg_catalog.pg_backend_pid();\n"
                "ALTER DATABASE :\"target\" RENAME TO :\"old\";\n",
                database=maintenance, variables={"target": target, "old": old}, env=env)
        except ProcessError as error:
            with contextlib.suppress(ProcessError):
                await shielded(self._drop(side, env))
            raise RestoreError(f"replacing database {target!r} on {where} failed (it is as it "
                               f"was; is it in use?): {error}") from None
        try:
            await self.admin_query("ALTER DATABASE :\"side\" RENAME TO :\"target\";",
                                   database=maintenance, variables={"side": side, "target": target},
                                   env=env)
        except BaseException as error:
            with contextlib.suppress(ProcessError):
                await shielded(self.admin_query(
                    "ALTER DATABASE :\"old\" RENAME TO :\"target\";", database=maintenance,
                    variables={"old": old, "target": target}, env=env))
                await shielded(self._drop(side, env))
            if isinstance(error, ProcessError):
                raise RestoreError(f"replacing database {target!r} on {where} failed (it is as "
                                   f"it was): {error}") from None
            raise
        if not keep:
            try:
                await self._drop(old, env)
            except ProcessError as error:
                raise RestoreError(f"database {target!r} on {where} was replaced, but dropping "
                                   f"the old one ({old!r}) failed: {error}") from None
            return None
        return old

    # ------------------------------------------------------------------ drills

    async def drill(
        self, chunks: AsyncIterator[bytes], *, scratch: str, workdir: Path
    ) -> Inventory:
        name = _check_name(scratch)
        env = self.environment(verify=True)
        where = self.where_for(env)
        try:
            if await self._exists(name, env):
                raise RestoreError(f"the scratch database {name!r} already exists on {where}: "
                                   "it is not this drill's to drop (a crash leftover is dropped "
                                   "at the next start)")
        except ProcessError as error:
            raise RestoreError(f"reaching the scratch server {where} failed: {error}") from None
        # A load that fails (or is cancelled) drops the database it created itself.
        await self._load_new(chunks, name, workdir, env)
        try:
            return await self._inventory(name, env)
        except (ProcessError, ValueError) as error:
            raise RestoreError(f"counting the scratch database {name!r} failed: {error}") from None
        finally:
            with contextlib.suppress(ProcessError):
                await shielded(self._drop(name, env))

    async def inventory(self, database: str, *, verify: bool = False) -> Inventory:
        """What ``database`` holds, counted the way a dump's facts count it."""
        return await self._inventory(database, self.environment(verify=verify))

    async def _inventory(self, database: str, env: Mapping[str, str]) -> Inventory:
        answer = json.loads(await self.admin_query(INVENTORY_QUERY, database=database,
                                                   variables={}, env=env))
        tables = [(schema, table) for schema, table in answer.pop("data_tables")]
        counts = json.loads(await self.admin_query(row_count_query(tables), database=database,
                                                   variables={}, env=env,
                                                   time_limit=self.config.verify_timeout))
        objects = {kind: int(answer[kind]) for kind in OBJECT_KINDS}
        return Inventory(tables=dict(sorted((key, int(value)) for key, value in counts.items())),
                         objects=objects)

    async def drop_stale_scratch(self, prefix: str) -> list[str]:
        if not prefix:
            raise ValueError("a scratch prefix must not be empty")
        dropped: list[str] = []
        servers = [self.environment()]
        if self.config.verify_target is not None:
            servers.append(self.environment(verify=True))
        for env in servers:
            answer = await self.admin_query(
                "SELECT coalesce(pg_catalog.json_agg(datname ORDER BY datname), '[]')"
                " FROM pg_catalog.pg_database WHERE pg_catalog.starts_with(datname, :'prefix');",
                database="postgres", variables={"prefix": prefix}, env=env)
            for name in json.loads(answer):
                await self._drop(name, env)
                dropped.append(name)
        return dropped
