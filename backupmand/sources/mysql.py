"""MySQL and MariaDB: mariadb-dump / mysqldump out, the mariadb / mysql client in.

Whichever tool is installed is used (``mariadb-dump`` first, then ``mysqldump``;
``mariadb`` then ``mysql`` for the client).

Credentials
    host, port, user, password and the TLS settings go into a private (0600) option
    file created in the work folder for the duration of one call and given as
    ``--defaults-file=`` — the first argument, as the tools require. It is
    ``--defaults-file`` rather than ``--defaults-extra-file`` on purpose: with the
    latter the service user's ``~/.my.cnf`` is read *after* backupmand's file and
    would silently override the configured user and password. Values are written
    double-quoted with the option-file escapes (``\\\\``, ``\\"``, ``\\n``...), so any
    password works. Nothing secret is ever in argv or in MYSQL_PWD.

    ``tls: true`` turns TLS on (``ssl``; with ``ca_file`` also ``ssl-ca`` and server
    certificate verification; MySQL's own tools get the equivalent ``ssl-mode``).
    Because a MariaDB client with ``--ssl`` but no CA to verify against silently
    falls back to plain text when the server has no TLS, every dump and health check
    with ``tls: true`` first asks the server whether the session is encrypted
    (``Ssl_cipher``) and fails when it is not.

Dumps
    ``--single-transaction --quick --routines --triggers --events --hex-blob
    --default-character-set=utf8mb4 --no-tablespaces``, then ``options``, then the
    database name after ``--``. The database is dumped *without* ``--databases``:
    the dump has no ``CREATE DATABASE`` / ``USE``, so it can be restored into a
    database of another name. The end-of-dump trailer (``-- Dump completed``) is
    checked. Routines, triggers, views and events keep their DEFINER.

Restores
    The target (``--db-name``, else ``db_name``) is created (``utf8mb4``) when it is
    missing; one holding tables, views, routines or events is refused unless
    ``force``, which drops and recreates it. The dump is fed to the client in batch
    mode, which stops at the first error (``--binary-mode`` so data is never taken
    for client commands). MySQL cannot roll DDL back, so a failed load may leave
    part of the dump behind: a database this restore created is dropped again; a
    pre-existing (empty) one is left as the failure left it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from .. import process
from ..config import MysqlSource
from ..errors import DumpError, HealthError, ProcessError, RestoreError
from ._streams import find_tool, peek, write_private_file
from .base import DumpFacts, ServerSource, TailCheck
from .options import check_mysqldump_options

DUMP_TOOLS = ("mariadb-dump", "mysqldump")
CLIENT_TOOLS = ("mariadb", "mysql")
TRAILER = b"-- Dump completed"
HEALTH_TIMEOUT = 10
ADMIN_TIMEOUT = 120

_flavors: dict[str, str] = {}


def option_value(value: str) -> str:
    """``value`` double-quoted for a MySQL/MariaDB option file."""
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


def quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _hex_equals(column: str, value: str) -> str:
    """``column = value`` compared byte for byte, whatever the sql_mode and collations."""
    return f"HEX({column}) = '{value.encode('utf-8').hex().upper()}'"


def _check_name(name: str) -> str:
    if not name or any(ch in name for ch in "\0\n\r"):
        raise RestoreError("the database name must be non-empty, without NUL or line breaks")
    return name


async def _flavor(tool: str) -> str:
    """'mariadb' or 'mysql': whose client this is (their TLS options differ)."""
    if tool not in _flavors:
        result = await process.run(process.Command((tool, "--version")), timeout=10)
        _flavors[tool] = "mariadb" if b"mariadb" in result.stdout.lower() else "mysql"
    return _flavors[tool]


class MysqlDatabase(ServerSource[MysqlSource]):
    provider = "mysql"

    # ------------------------------------------------------------------ plumbing

    def option_file_text(self, flavor: str) -> str:
        config = self.config
        lines = [
            "# written by backupmand for one command; removed afterwards",
            "[client]",
            f"host={option_value(config.host)}",
            f"port={config.port}",
            f"user={option_value(config.user)}",
        ]
        if config.password is not None:
            lines.append(f"password={option_value(config.password.get_secret_value())}")
        if config.tls:
            ca = str(config.ca_file.expanduser()) if config.ca_file is not None else None
            if flavor == "mariadb":
                lines.append("ssl")
                if ca is not None:
                    lines += [f"ssl-ca={option_value(ca)}", "ssl-verify-server-cert"]
            else:
                lines.append("ssl-mode=VERIFY_CA" if ca is not None else "ssl-mode=REQUIRED")
                if ca is not None:
                    lines.append(f"ssl-ca={option_value(ca)}")
        return "\n".join(lines) + "\n"

    @contextlib.asynccontextmanager
    async def option_file(self, folder: Path, tool: str) -> AsyncIterator[Path]:
        """A 0600 option file with the credentials in ``folder``, removed on exit."""
        flavor = await _flavor(tool) if self.config.tls else "mariadb"
        path = folder / f".backupmand-{uuid.uuid4().hex}.cnf"
        await asyncio.to_thread(write_private_file, path, self.option_file_text(flavor))
        try:
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(path.unlink)

    def command(self, tool: str, option_file: Path, *argv: str) -> process.Command:
        # --defaults-file must come first: the tools ignore it anywhere else.
        return process.Command((tool, f"--defaults-file={option_file}", *argv),
                               secrets=self.secrets())

    async def client(self, option_file: Path, sql: str, *, database: str | None = None,
                     time_limit: float = ADMIN_TIMEOUT, connect_timeout: int = 30,
                     ) -> list[list[str]]:
        """Run one statement with the client; the rows (batch mode, tab-separated)."""
        argv = ["--batch", "--skip-column-names", f"--connect-timeout={connect_timeout}",
                "--default-character-set=utf8mb4"]
        if database is not None:
            argv.append(f"--database={database}")
        argv += ["--execute", sql]
        result = await process.run(
            self.command(await find_tool(*CLIENT_TOOLS), option_file, *argv),
            timeout=time_limit,
        )
        text = result.stdout.decode("utf-8", "replace")
        return [line.split("\t") for line in text.splitlines()]

    async def check_tls(self, option_file: Path) -> None:
        """With ``tls: true``, fail unless the server really encrypts the session."""
        if not self.config.tls:
            return
        rows = await self.client(option_file, "SHOW SESSION STATUS LIKE 'Ssl_cipher'",
                                 time_limit=HEALTH_TIMEOUT + 5, connect_timeout=HEALTH_TIMEOUT)
        cipher = rows[0][1] if rows and len(rows[0]) > 1 else ""
        if not cipher:
            raise ProcessError(f"tls is true but the connection to {self.where} is not "
                               "encrypted: the server does not offer TLS")

    # ------------------------------------------------------------------ dump

    async def dump(self, workdir: Path, facts: DumpFacts) -> AsyncIterator[bytes]:
        try:
            options = check_mysqldump_options(self.config.options)
        except ValueError as error:
            raise DumpError(f"invalid options: {error}") from None
        try:
            tool = await find_tool(*DUMP_TOOLS)
        except ProcessError as error:
            raise DumpError(str(error)) from None
        tail = TailCheck()
        try:
            async with self.option_file(workdir, tool) as option_file:
                await self.check_tls(option_file)
                command = self.command(
                    tool, option_file, "--single-transaction", "--quick", "--routines",
                    "--triggers", "--events", "--hex-blob", "--default-character-set=utf8mb4",
                    "--no-tablespaces", *options, "--", self.config.db_name,
                )
                async for chunk in process.stream_output(command, timeout=self.config.timeout):
                    yield tail.feed(chunk)
        except ProcessError as error:
            raise DumpError(str(error)) from None
        if not tail.contains(TRAILER):
            raise DumpError(
                f"{Path(tool).name} exited 0 but its output lacks the end-of-dump trailer "
                f"({TRAILER.decode()!r}): the dump is incomplete"
            )

    # ------------------------------------------------------------------ health

    async def health(self) -> None:
        """``SELECT 1`` with the client (``mariadb-admin ping`` answers 0 even when
        the password is refused, so it cannot tell bad credentials)."""
        try:
            tool = await find_tool(*CLIENT_TOOLS)
            folder = await asyncio.to_thread(_private_folder)
            try:
                async with self.option_file(folder, tool) as option_file:
                    rows = await self.client(option_file, "SELECT 1", time_limit=HEALTH_TIMEOUT + 5,
                                             connect_timeout=HEALTH_TIMEOUT)
                    await self.check_tls(option_file)
            finally:
                await asyncio.to_thread(_remove_folder, folder)
        except ProcessError as error:
            raise HealthError(str(error)) from None
        if rows != [["1"]]:
            raise HealthError(f"unexpected answer to SELECT 1 from {self.where}")

    # ------------------------------------------------------------------ restore

    async def restore(
        self, chunks: AsyncIterator[bytes], *, database: str | None, force: bool,
        workdir: Path, drop_old: bool = False,
    ) -> str:
        target = _check_name(database or self.config.db_name)
        head, stream = await peek(chunks, 1)
        if not head:
            raise RestoreError("the backup holds an empty dump: nothing to restore")
        try:
            client = await find_tool(*CLIENT_TOOLS)
        except ProcessError as error:
            raise RestoreError(str(error)) from None
        async with self.option_file(workdir, client) as option_file:
            created = await self._prepare_target(option_file, target, force)
            try:
                await process.run(
                    self.command(
                        client, option_file, "--batch", "--binary-mode",
                        "--default-character-set=utf8mb4", "--max-allowed-packet=1073741824",
                        f"--database={target}",
                    ),
                    timeout=self.config.timeout, input_chunks=stream, stdout_limit=0,
                )
            except Exception as error:
                if created:
                    with contextlib.suppress(ProcessError):
                        await self.client(option_file, f"DROP DATABASE IF EXISTS "
                                                       f"{quote_ident(target)}")
                if isinstance(error, ProcessError):
                    raise RestoreError(
                        f"loading the dump into {target!r} on {self.where} failed"
                        + (" (the database was dropped again)" if created else "")
                        + f": {error}"
                    ) from None
                raise
        return f"MySQL/MariaDB database {target!r} on {self.where}"

    async def _prepare_target(self, option_file: Path, target: str, force: bool) -> bool:
        """Make ``target`` an empty database; True when this restore (re)created it."""
        state_sql = (
            "SELECT (SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE "
            f"{_hex_equals('SCHEMA_NAME', target)}), "
            "(SELECT COUNT(*) FROM information_schema.TABLES WHERE "
            f"{_hex_equals('TABLE_SCHEMA', target)}) + "
            "(SELECT COUNT(*) FROM information_schema.ROUTINES WHERE "
            f"{_hex_equals('ROUTINE_SCHEMA', target)}) + "
            "(SELECT COUNT(*) FROM information_schema.EVENTS WHERE "
            f"{_hex_equals('EVENT_SCHEMA', target)})"
        )
        quoted = quote_ident(target)
        try:
            await self.check_tls(option_file)
            rows = await self.client(option_file, state_sql)
            exists, objects = int(rows[0][0]), int(rows[0][1])
            if exists and not objects:
                return False
            if exists:
                if not force:
                    raise RestoreError(
                        f"database {target!r} on {self.where} is not empty ({objects} objects): "
                        "restore into another database (--db-name), or use --force to drop "
                        "and recreate it"
                    )
                await self.client(option_file, f"DROP DATABASE {quoted}")
            await self.client(option_file, f"CREATE DATABASE {quoted} CHARACTER SET utf8mb4 "
                                           "COLLATE utf8mb4_unicode_ci")
        except ProcessError as error:
            raise RestoreError(f"preparing database {target!r} on {self.where} failed: "
                               f"{error}") from None
        return True


def _private_folder() -> Path:
    """A 0700 scratch folder for a health check's option file (no work folder there)."""
    return Path(tempfile.mkdtemp(prefix="backupmand-health-"))


def _remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
