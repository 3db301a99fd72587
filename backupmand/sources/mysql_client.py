"""Talking to a MySQL/MariaDB server with its own client tools, credentials kept out of argv.

Whichever tools are installed are used (``mariadb-dump`` first, then ``mysqldump``;
``mariadb`` then ``mysql`` for the client).

Credentials
    host, port, user, password and the TLS settings go into a private (0600) option
    file created in a work folder for the duration of one session and given as
    ``--defaults-file=`` — the first argument, as the tools require. It is
    ``--defaults-file`` rather than ``--defaults-extra-file`` on purpose: with the
    latter the service user's ``~/.my.cnf`` is read *after* backupmand's file and
    would silently override the configured user and password. Values are written
    double-quoted with the option-file escapes (``\\\\``, ``\\"``, ``\\n``...), so any
    password works. Nothing secret is ever in argv or in MYSQL_PWD.

    ``tls: true`` turns TLS on (``ssl``; with ``ca_file`` also ``ssl-ca`` and server
    certificate verification; MySQL's own tools get the equivalent ``ssl-mode``).
    Because a MariaDB client with ``--ssl`` but no CA to verify against silently
    falls back to plain text when the server has no TLS, ``check_tls`` asks the
    server whether the session is encrypted (``Ssl_cipher``) and fails when not.

Names
    Database and object names are never spliced into SQL as text: identifiers are
    backtick-quoted (``quote_ident``), compared values are hex literals
    (``hex_literal``), and names read back come as ``HEX()`` (``unhex``), so no name
    — whatever its characters — can change what a statement does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from .. import process
from ..errors import ProcessError
from ._streams import find_tool, write_private_file

DUMP_TOOLS = ("mariadb-dump", "mysqldump")
CLIENT_TOOLS = ("mariadb", "mysql")
ADMIN_TIMEOUT = 120
#: The client's own packet limit when loading (the server's limit still applies).
CLIENT_PACKET = 1024 * 1024 * 1024
#: MySQL/MariaDB identifiers are at most this many characters.
NAME_LIMIT = 64

_flavors: dict[str, str] = {}


def option_value(value: str) -> str:
    """``value`` double-quoted for a MySQL/MariaDB option file."""
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


def quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def hex_literal(value: str) -> str:
    """``value`` as a utf8mb4 string literal that no sql_mode or escaping can misread."""
    return f"_utf8mb4 X'{value.encode('utf-8').hex().upper()}'" if value else "''"


def hex_equals(column: str, value: str) -> str:
    """``column = value`` compared byte for byte, whatever the collations."""
    return f"HEX({column}) = '{value.encode('utf-8').hex().upper()}'"


def unhex(value: str) -> str:
    """A name read back with ``HEX()``."""
    return bytes.fromhex(value).decode("utf-8", "replace")


def check_name(name: str, what: str = "the database name") -> str:
    if not name or any(ch in name for ch in "\0\n\r"):
        raise ValueError(f"{what} must be non-empty, without NUL or line breaks")
    if len(name) > NAME_LIMIT:
        raise ValueError(f"{what} {name!r} is longer than {NAME_LIMIT} characters")
    return name


async def flavor(tool: str) -> str:
    """'mariadb' or 'mysql': whose client this is (their TLS options differ)."""
    if tool not in _flavors:
        result = await process.run(process.Command((tool, "--version")), timeout=10)
        _flavors[tool] = "mariadb" if b"mariadb" in result.stdout.lower() else "mysql"
    return _flavors[tool]


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where a session connects, and as whom."""

    host: str
    port: int
    user: str
    password: str | None
    tls: bool = False
    ca_file: Path | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def option_file_text(self, client_flavor: str) -> str:
        lines = [
            "# written by backupmand for one session; removed afterwards",
            "[client]",
            f"host={option_value(self.host)}",
            f"port={self.port}",
            f"user={option_value(self.user)}",
        ]
        if self.password is not None:
            lines.append(f"password={option_value(self.password)}")
        if self.tls:
            ca = str(self.ca_file.expanduser()) if self.ca_file is not None else None
            if client_flavor == "mariadb":
                lines.append("ssl")
                if ca is not None:
                    lines += [f"ssl-ca={option_value(ca)}", "ssl-verify-server-cert"]
            else:
                lines.append("ssl-mode=VERIFY_CA" if ca is not None else "ssl-mode=REQUIRED")
                if ca is not None:
                    lines.append(f"ssl-ca={option_value(ca)}")
        return "\n".join(lines) + "\n"


class Session:
    """The client tools pointed at one server through one private option file."""

    def __init__(self, endpoint: Endpoint, option_file: Path, client: str,
                 secrets: tuple[str, ...]) -> None:
        self.endpoint = endpoint
        self.option_file = option_file
        self.client_tool = client
        self.secrets = secrets

    @property
    def where(self) -> str:
        return self.endpoint.where

    def command(self, tool: str, *argv: str) -> process.Command:
        # --defaults-file must come first: the tools ignore it anywhere else.
        return process.Command((tool, f"--defaults-file={self.option_file}", *argv),
                               secrets=self.secrets)

    def client_command(self, *argv: str, database: str | None = None) -> process.Command:
        args = ["--batch", "--default-character-set=utf8mb4"]
        if database is not None:
            args.append(f"--database={database}")
        return self.command(self.client_tool, *args, *argv)

    async def rows(self, sql: str, *, database: str | None = None,
                   timeout: float = ADMIN_TIMEOUT, connect_timeout: int = 30,
                   ) -> list[list[str]]:
        """Run ``sql`` (one or more statements); the rows, tab-separated batch text."""
        result = await process.run(
            self.client_command("--skip-column-names", f"--connect-timeout={connect_timeout}",
                                database=database),
            timeout=timeout, input_chunks=_once(sql.encode("utf-8")),
        )
        text = result.stdout.decode("utf-8", "replace")
        return [line.split("\t") for line in text.splitlines()]

    async def execute(self, sql: str | bytes, *, database: str | None = None,
                      timeout: float = ADMIN_TIMEOUT, keep_going: bool = False) -> None:
        """Run a script; the client stops at its first error (ProcessError), unless
        ``keep_going`` (``--force``: every statement is tried)."""
        data = sql.encode("utf-8") if isinstance(sql, str) else sql
        argv = ("--force",) if keep_going else ()
        await process.run(self.client_command(*argv, database=database), timeout=timeout,
                          input_chunks=_once(data), stdout_limit=0, check=not keep_going)

    async def load(self, chunks: AsyncIterator[bytes], *, database: str | None,
                   timeout: float) -> None:
        """Feed a dump to the client, which stops at the first error (ProcessError).

        ``--binary-mode`` so that data is never taken for client commands.
        """
        await process.run(
            self.client_command("--binary-mode", f"--max-allowed-packet={CLIENT_PACKET}",
                                database=database),
            timeout=timeout, input_chunks=chunks, stdout_limit=0,
        )

    async def check_tls(self, timeout: float = 10) -> None:
        """With ``tls: true``, fail unless the server really encrypts the session."""
        if not self.endpoint.tls:
            return
        rows = await self.rows("SHOW SESSION STATUS LIKE 'Ssl_cipher'", timeout=timeout + 5,
                               connect_timeout=int(timeout))
        cipher = rows[0][1] if rows and len(rows[0]) > 1 else ""
        if not cipher:
            raise ProcessError(f"tls is true but the connection to {self.where} is not "
                               "encrypted: the server does not offer TLS")


@contextlib.asynccontextmanager
async def session(endpoint: Endpoint, folder: Path, secrets: tuple[str, ...],
                  ) -> AsyncIterator[Session]:
    """A Session whose 0600 option file lives in ``folder`` until the block ends."""
    client = await find_tool(*CLIENT_TOOLS)
    client_flavor = await flavor(client) if endpoint.tls else "mariadb"
    path = folder / f".backupmand-{uuid.uuid4().hex}.cnf"
    await asyncio.to_thread(write_private_file, path, endpoint.option_file_text(client_flavor))
    try:
        yield Session(endpoint, path, client, secrets)
    finally:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(path.unlink)


async def drop_database(session: Session, name: str) -> None:
    """End the sessions still using ``name`` (a cancelled load's), then drop it."""
    rows = await session.rows("SELECT ID FROM information_schema.PROCESSLIST WHERE "
                              f"{hex_equals('DB', name)} AND ID <> CONNECTION_ID()")
    if rows:
        await session.execute("".join(f"KILL CONNECTION {int(row[0])};\n" for row in rows),
                              keep_going=True)
    await session.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)};")


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
