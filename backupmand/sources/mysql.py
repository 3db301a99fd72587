"""MySQL and MariaDB: mariadb-dump / mysqldump out, the mariadb / mysql client in.

How the tools are found and reached (credentials in a private option file, TLS) is
in ``mysql_client``; what the dump stream is checked and changed for, in
``mysql_dump_stream``.

Dumps
    ``--single-transaction --quick --routines --triggers --events --hex-blob
    --default-character-set=utf8mb4 --no-tablespaces --skip-add-locks`` (with
    ``--single-transaction`` the tool's ``LOCK TABLES`` around each table's rows
    protect nothing, and make a table whose default draws from a sequence
    unloadable), ``--dump-history`` when the database has system-versioned tables
    (a tool without it fails the dump rather than lose their history), then
    ``options``, then the database name after ``--``. The database is dumped
    *without* ``--databases``: there is no ``CREATE DATABASE`` / ``USE``, and the
    stream filter removes the other places where the tool names the database, so the
    file loads into a database of any name and touches no other. The filter also
    writes the database's own character set, collation and comment into the file,
    puts views in dependency order, keeps statements within the server's
    ``max_allowed_packet``, and counts each table's rows and the objects for the
    manifest. The end-of-dump trailer (``-- Dump completed``) is checked.

Restores
    The target (``--db-name``, else ``db_name``) is created, with the dump's own
    defaults, when it is missing; a failed load drops it again. An existing empty
    target is loaded in place; a failed load empties it again. A target holding
    tables, views, routines or events is refused unless ``force``: then the dump is
    loaded into a side database (``backupmand_restore_<random>``) and, only once that
    load is complete, put in the target's place (``mysql_swap``); the replaced
    contents are kept as ``<target>__before_<UTC stamp>`` unless ``drop_old``. A
    failed load drops the side database and leaves the target as it was. Loads go
    to the client in batch mode, which stops at the first error.

Drills
    The dump is loaded into the scratch database on the source's server (or on
    ``verify_target``), counted (``mysql_inventory``), and the scratch database is
    dropped afterwards whatever happened — also when the drill is cancelled.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .. import process
from ..config import MysqlSource
from ..errors import DumpError, HealthError, ProcessError, RestoreError
from ._shielded import shielded
from ._streams import find_tool, peek
from .base import DumpFacts, Inventory, ServerSource, TailCheck, before_stamp
from .mysql_client import (
    ADMIN_TIMEOUT,
    CLIENT_PACKET,
    DUMP_TOOLS,
    Endpoint,
    Session,
    check_name,
    drop_database,
    hex_equals,
    quote_ident,
    session,
    unhex,
)
from .mysql_dump_stream import TRAILER, DumpStream, DumpStreamError
from .mysql_globals import UnsupportedServer, globals_script
from .mysql_inventory import (
    DatabaseProperties,
    alter_database_sql,
    create_database_sql,
    exists,
    inventory,
    list_databases,
    object_count,
    properties,
)
from .mysql_swap import clear_objects, replace
from .options import check_mysqldump_options

HEALTH_TIMEOUT = 10
#: How much of a dump is read ahead for its defaults (written right after the header).
HEAD_SIZE = 64 * 1024
SIDE_PREFIX = "backupmand_restore_"
_DEFAULTS = re.compile(rb"^ALTER DATABASE CHARACTER SET (\w+) COLLATE (\w+)", re.MULTILINE)
_PREAMBLE_NOTE = (b"-- backupmand: the database's own defaults, for whichever database this "
                  b"file is loaded into\n")

#: Per dump tool: (its version, whether it has --dump-history).
_tool_facts: dict[str, tuple[str, bool]] = {}


async def tool_facts(tool: str) -> tuple[str, bool]:
    if tool not in _tool_facts:
        version = await process.run(process.Command((tool, "--version")), timeout=10)
        text = version.stdout.decode("utf-8", "replace")
        match = re.search(r"Distrib ([^\s,]+)", text) or re.search(r"Ver ([^\s,]+)", text)
        usage = await process.run(process.Command((tool, "--help")), timeout=10)
        _tool_facts[tool] = (match.group(1) if match else text.strip(),
                             b"--dump-history" in usage.stdout)
    return _tool_facts[tool]


async def filtered(stream: DumpStream, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``chunks`` through ``stream``, one chunk ahead: the filter works on the next
    chunk in its own thread while the consumer (compression, hashing) handles this one,
    so the filter adds no latency of its own to the pipeline."""
    loop = asyncio.get_running_loop()
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mysql-dump-stream")
    in_flight: collections.deque[asyncio.Future[list[bytes]]] = collections.deque()
    try:
        async for chunk in chunks:
            in_flight.append(loop.run_in_executor(worker, stream.feed, chunk))
            if len(in_flight) > 1:
                for piece in await in_flight.popleft():
                    yield piece
        while in_flight:
            for piece in await in_flight.popleft():
                yield piece
        for piece in stream.finish():
            yield piece
    finally:
        for future in in_flight:
            future.cancel()  # the dump failed or was closed: its outcome no longer matters
        worker.shutdown(wait=False, cancel_futures=True)


def database_defaults(head: bytes) -> DatabaseProperties | None:
    """The character set and collation a dump made here asks for (None: older dumps)."""
    match = _DEFAULTS.search(head)
    if match is None:
        return None
    return DatabaseProperties(match.group(1).decode(), match.group(2).decode())


def preamble(defaults: DatabaseProperties) -> bytes:
    """What the dump says about its database, right after the tool's header."""
    return _PREAMBLE_NOTE + f"ALTER DATABASE {defaults.clause()};\n".encode()


class MysqlDatabase(ServerSource[MysqlSource]):
    provider = "mysql"

    # ------------------------------------------------------------------ plumbing

    def endpoint(self) -> Endpoint:
        config = self.config
        return Endpoint(
            host=config.host, port=config.port, user=config.user,
            password=config.password.get_secret_value() if config.password else None,
            tls=config.tls, ca_file=config.ca_file,
        )

    def drill_endpoint(self) -> Endpoint:
        """verify_target, when set: its port and user default to the source's, and so
        does the password when the user does."""
        target = self.config.verify_target
        source = self.endpoint()
        if target is None:
            return source
        if target.password is not None:
            password: str | None = target.password.get_secret_value()
        else:
            password = source.password if target.user is None else None
        return Endpoint(host=target.host, port=target.port or source.port,
                        user=target.user or source.user, password=password,
                        tls=source.tls, ca_file=source.ca_file)

    def session(self, folder: Path, endpoint: Endpoint | None = None,
                ) -> contextlib.AbstractAsyncContextManager[Session]:
        return session(endpoint or self.endpoint(), folder, self.secrets())

    # ------------------------------------------------------------------ dump

    async def dump(self, workdir: Path, facts: DumpFacts) -> AsyncIterator[bytes]:
        database = self.config.db_name
        try:
            options = check_mysqldump_options(self.config.options)
        except ValueError as error:
            raise DumpError(f"invalid options: {error}") from None
        deadline = time.monotonic() + self.config.timeout
        tail = TailCheck()
        try:
            tool = await find_tool(*DUMP_TOOLS)
            async with self.session(workdir) as opened:
                await opened.check_tls()
                tool_version, dumps_history = await tool_facts(tool)
                stream, history, facts.server_version = await self._prepare(
                    opened, Path(tool).name, dumps_history, deadline)
                facts.database = database
                facts.tool, facts.tool_version, facts.dump_format = (
                    Path(tool).name, tool_version, "plain")
                command = opened.command(
                    tool, "--single-transaction", "--quick", "--routines", "--triggers",
                    "--events", "--hex-blob", "--default-character-set=utf8mb4",
                    "--no-tablespaces", "--skip-add-locks", f"--max-allowed-packet={CLIENT_PACKET}",
                    *history, *options, "--", database,
                )
                # The tool gets the whole timeout (the questions before it take moments).
                output = process.stream_output(command, timeout=self.config.timeout)
                async for piece in filtered(stream, output):
                    yield tail.feed(piece)
        except ProcessError as error:
            raise DumpError(str(error)) from None
        except DumpStreamError as error:
            raise DumpError(f"database {database!r} cannot be dumped so that it loads: "
                            f"{error}") from None
        if not tail.contains(TRAILER):
            raise DumpError(
                f"{Path(tool).name} exited 0 but its output lacks the end-of-dump trailer "
                f"({TRAILER.decode()!r}): the dump is incomplete"
            )
        facts.tables = dict(stream.tables)
        facts.objects = {**stream.objects, "large_objects": 0}

    async def _prepare(self, opened: Session, tool: str, dumps_history: bool,
                       deadline: float) -> tuple[DumpStream, tuple[str, ...], str]:
        """The stream filter for this dump, the history options, the server's version."""
        database = self.config.db_name
        remaining = max(deadline - time.monotonic(), 1.0)
        rows = await opened.rows(
            "SELECT VERSION(), @@GLOBAL.max_allowed_packet; SELECT HEX(TABLE_NAME) FROM "
            f"information_schema.TABLES WHERE {hex_equals('TABLE_SCHEMA', database)} AND "
            "TABLE_TYPE = 'SYSTEM VERSIONED' ORDER BY TABLE_NAME",
            timeout=remaining)
        (server_version, packet), versioned = rows[0], [unhex(row[0]) for row in rows[1:]]
        defaults = await properties(opened, database)
        if defaults is None:
            raise DumpError(f"database {database!r} does not exist on {self.where}")
        if versioned and not dumps_history:
            raise DumpError(
                f"table {versioned[0]!r} is system-versioned and {tool} cannot dump its "
                "history (mariadb-dump 10.11 or later can): the backup would lose it")
        stream = DumpStream(database=database, packet_limit=int(packet),
                            preamble=preamble(defaults))
        return stream, (("--dump-history",) if versioned else ()), server_version

    async def dump_globals(self, workdir: Path) -> bytes | None:
        if not self.config.globals:
            return None
        try:
            async with self.session(workdir) as opened:
                await opened.check_tls()
                return await globals_script(opened, self.config.db_name)
        except UnsupportedServer as error:
            raise DumpError(f"{error}; set globals: false for source {self.label!r}") from None
        except ProcessError as error:
            raise DumpError(f"reading the accounts database {self.config.db_name!r} needs "
                            f"failed (the user needs SELECT on mysql.*): {error}") from None

    # ------------------------------------------------------------------ health

    async def health(self) -> None:
        """``SELECT 1`` with the client (``mariadb-admin ping`` answers 0 even when
        the password is refused, so it cannot tell bad credentials)."""
        folder = await asyncio.to_thread(_private_folder)
        try:
            async with self.session(folder) as opened:
                rows = await opened.rows("SELECT 1", timeout=HEALTH_TIMEOUT + 5,
                                         connect_timeout=HEALTH_TIMEOUT)
                await opened.check_tls(HEALTH_TIMEOUT)
        except ProcessError as error:
            raise HealthError(str(error)) from None
        finally:
            await asyncio.to_thread(_remove_folder, folder)
        if rows != [["1"]]:
            raise HealthError(f"unexpected answer to SELECT 1 from {self.where}")

    # ------------------------------------------------------------------ restore

    async def restore(
        self, chunks: AsyncIterator[bytes], *, database: str | None, force: bool,
        workdir: Path, drop_old: bool = False,
    ) -> str:
        try:
            target = check_name(database or self.config.db_name)
        except ValueError as error:
            raise RestoreError(str(error)) from None
        head, stream = await peek(chunks, HEAD_SIZE)
        if not head:
            raise RestoreError("the backup holds an empty dump: nothing to restore")
        defaults = database_defaults(head)
        description = f"MySQL/MariaDB database {target!r} on {self.where}"
        try:
            async with self.session(workdir) as opened:
                await opened.check_tls()
                if not await exists(opened, target):
                    await self._load_new(opened, stream, target, defaults)
                    return description
                objects = await object_count(opened, target)
                if not objects:
                    await self._load_into_empty(opened, stream, target)
                    return description
                if not force:
                    raise RestoreError(
                        f"database {target!r} on {self.where} is not empty ({objects} objects): "
                        "restore into another database (--db-name), or use --force to replace "
                        "it (it is kept under another name)"
                    )
                kept = await self._load_and_replace(opened, stream, target, defaults, drop_old)
                if kept is None:
                    return description + " (the replaced one was dropped)"
                return description + f" (the replaced one is kept as {kept!r})"
        except ProcessError as error:
            raise RestoreError(f"restoring into {target!r} on {self.where} failed: "
                               f"{error}") from None

    async def _load(self, opened: Session, stream: AsyncIterator[bytes], database: str,
                    timeout: float) -> None:
        try:
            await opened.load(stream, database=database, timeout=timeout)
        except ProcessError as error:
            raise _LoadFailed(str(error)) from None

    async def _load_new(self, opened: Session, stream: AsyncIterator[bytes], target: str,
                        defaults: DatabaseProperties | None) -> None:
        await opened.execute(create_database_sql(target, defaults))
        try:
            await self._load(opened, stream, target, self.config.timeout)
        except BaseException as error:
            await shielded(drop_database(opened, target))
            if isinstance(error, _LoadFailed):
                raise RestoreError(f"loading the dump into {target!r} on {self.where} failed "
                                   f"(the database was dropped again): {error}") from None
            raise

    async def _load_into_empty(self, opened: Session, stream: AsyncIterator[bytes],
                               target: str) -> None:
        before = await properties(opened, target)
        assert before is not None
        try:
            await self._load(opened, stream, target, self.config.timeout)
        except BaseException as error:
            await shielded(_empty(opened, target, before))
            if isinstance(error, _LoadFailed):
                raise RestoreError(f"loading the dump into {target!r} on {self.where} failed "
                                   f"(the database was emptied again): {error}") from None
            raise

    async def _load_and_replace(self, opened: Session, stream: AsyncIterator[bytes],
                                target: str, defaults: DatabaseProperties | None,
                                drop_old: bool) -> str | None:
        kept = f"{target}__before_{before_stamp()}"
        try:
            check_name(kept, "the name the replaced database would be kept under")
        except ValueError as error:
            raise RestoreError(f"{error}: restore under a shorter name") from None
        if await exists(opened, kept):
            raise RestoreError(f"database {kept!r} exists already on {self.where}: try again "
                               "in a second")
        dump_tool = await find_tool(*DUMP_TOOLS)
        side = f"{SIDE_PREFIX}{uuid.uuid4().hex[:12]}"
        await opened.execute(create_database_sql(side, defaults))
        try:
            try:
                await self._load(opened, stream, side, self.config.timeout)
            except _LoadFailed as error:
                raise RestoreError(
                    f"loading the dump failed, so {target!r} on {self.where} was not touched "
                    f"(the side database it was loaded into is dropped again): {error}"
                ) from None
            await shielded(replace(opened, dump_tool, target=target, side=side, keep_as=kept))
        finally:
            await shielded(drop_database(opened, side))
        if drop_old:
            await shielded(drop_database(opened, kept))
            return None
        return kept

    async def restore_globals(self, chunks: AsyncIterator[bytes], *, workdir: Path) -> str:
        try:
            async with self.session(workdir) as opened:
                await opened.check_tls()
                await opened.load(chunks, database=None, timeout=ADMIN_TIMEOUT)
        except ProcessError as error:
            raise RestoreError(f"applying the accounts and grants on {self.where} failed: "
                               f"{error}") from None
        return f"the accounts and grants of {self.config.db_name!r} on {self.where}"

    # ------------------------------------------------------------------ drills

    async def drill(
        self, chunks: AsyncIterator[bytes], *, scratch: str, workdir: Path
    ) -> Inventory:
        try:
            name = check_name(scratch, "the scratch database's name")
        except ValueError as error:
            raise RestoreError(str(error)) from None
        endpoint = self.drill_endpoint()
        head, stream = await peek(chunks, HEAD_SIZE)
        if not head:
            raise RestoreError("the backup holds an empty dump: nothing to load")
        try:
            async with self.session(workdir, endpoint) as opened:
                await opened.check_tls()
                if await exists(opened, name):
                    raise RestoreError(f"scratch database {name!r} exists already on "
                                       f"{endpoint.where}: a drill of that backup is running, "
                                       "or one was cut short (dropped at the next start)")
                await opened.execute(create_database_sql(name, database_defaults(head)))
                try:
                    await self._load(opened, stream, name, self.config.verify_timeout)
                    return await inventory(opened, name, timeout=self.config.verify_timeout)
                finally:
                    await shielded(drop_database(opened, name))
        except _LoadFailed as error:
            raise RestoreError(f"the dump does not load into {name!r} on {endpoint.where}: "
                               f"{error}") from None
        except ProcessError as error:
            raise RestoreError(f"the drill in {name!r} on {endpoint.where} failed: "
                               f"{error}") from None

    async def drop_stale_scratch(self, prefix: str) -> list[str]:
        if not prefix:
            raise ValueError("a prefix is needed: without one every database would match")
        endpoint = self.drill_endpoint()
        folder = await asyncio.to_thread(_private_folder)
        try:
            async with self.session(folder, endpoint) as opened:
                stale = [name for name in await list_databases(opened)
                         if name.startswith(prefix)]
                for name in stale:
                    await shielded(drop_database(opened, name))
        except ProcessError as error:
            raise RestoreError(f"dropping stale scratch databases on {endpoint.where} failed: "
                               f"{error}") from None
        finally:
            await asyncio.to_thread(_remove_folder, folder)
        return stale


class _LoadFailed(Exception):
    """The client stopped at an error in the dump (as opposed to the server's setup)."""


async def _empty(opened: Session, name: str, before: DatabaseProperties) -> None:
    """Drop everything in ``name`` and give it back its defaults."""
    await clear_objects(opened, name)
    rows = await opened.rows("SELECT HEX(TABLE_NAME) FROM information_schema.TABLES WHERE "
                             f"{hex_equals('TABLE_SCHEMA', name)}")
    if rows:
        names = ", ".join(f"{quote_ident(name)}.{quote_ident(unhex(row[0]))}" for row in rows)
        await opened.execute(f"SET FOREIGN_KEY_CHECKS = 0;\nDROP TABLE {names};")
    await opened.execute(alter_database_sql(name, before))


def _private_folder() -> Path:
    """A 0700 scratch folder for an option file where there is no work folder."""
    return Path(tempfile.mkdtemp(prefix="backupmand-mysql-"))


def _remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
