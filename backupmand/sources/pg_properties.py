"""A database's own properties, carried inside its dump and applied under any name.

pg_dump writes a database's properties (owner, encoding and locale, ``ALTER DATABASE
... SET``, ``ALTER ROLE ... IN DATABASE ... SET``, comment, grants) only with
``--create``, and then names the original database in every one of them. This module
reads those statements (from ``pg_dump --create`` or ``pg_restore --create`` output) and
rewrites them to name psql's ``:"DBNAME"`` — the database psql is connected to — so
that they apply to whatever database the dump is loaded into:

- a plain dump carries them in a comment at its head (the ``CREATE DATABASE`` options,
  to create the target with, and how to restore by hand) and as statements at its end;
- a custom-format archive holds pg_dump's own entries already; a restore reads them
  from the archive with the same parser.
"""

from __future__ import annotations

import dataclasses
import re

from .pg_sql import next_statement, tokens

#: The header of one TOC entry in pg_dump's SQL output.
_HEADER = re.compile(r"^-- Name: (?P<name>.*); Type: (?P<type>[A-Z][A-Z ]*); Schema: .*$\n--\n",
                     re.M)
#: What CREATE DATABASE's options may look like (pg_dump's own rendering).
_OPTIONS = re.compile(
    r"WITH(?: (?:CONNECTION LIMIT|[A-Z_]+) = (?:'(?:[^'\n]|'')*'|-?[A-Za-z0-9_]+|\"(?:[^\"\n]|\"\")*\"))+")
_IDENTIFIER = r'(?:"(?:[^"]|"")*"|[A-Za-z_][A-Za-z0-9_$]*)'
#: The statements pg_dump writes about a database (nothing else is ever applied).
_STATEMENT = re.compile(
    r'(?:ALTER DATABASE :"DBNAME" (?:OWNER TO |SET |RESET |IS_TEMPLATE |ALLOW_CONNECTIONS |'
    r"CONNECTION LIMIT |WITH )"
    rf"|ALTER ROLE {_IDENTIFIER} IN DATABASE :\"DBNAME\" (?:SET |RESET )"
    r'|COMMENT ON DATABASE :"DBNAME" IS '
    r'|(?:GRANT|REVOKE) [A-Z, ]+ ON DATABASE :"DBNAME" (?:TO|FROM) '
    rf'|SECURITY LABEL (?:FOR {_IDENTIFIER} )?ON DATABASE :"DBNAME" IS )')
OPTIONS_MARK = "-- backupmand-create-database: "
_DATABASE_TYPES = ("DATABASE", "DATABASE PROPERTIES")
_ON_DATABASE_TYPES = ("COMMENT", "ACL", "SECURITY LABEL")


class PropertiesError(ValueError):
    """Raised when pg_dump's database statements are not what this module understands."""


@dataclasses.dataclass(frozen=True)
class DatabaseProperties:
    """``CREATE DATABASE`` options and the statements that set everything else."""

    #: e.g. ``WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc ...``
    create_options: str
    #: Each naming the database as ``:"DBNAME"``.
    statements: tuple[str, ...]


def _retarget(statement: str) -> str:
    """``statement`` with the identifier after its first ``DATABASE`` keyword replaced by
    ``:"DBNAME"`` (quotes, literals and dollar bodies are tokens of their own)."""
    parts: list[str] = []
    state = "before"
    for kind, token in tokens(statement):
        if state == "before" and kind == "word" and token.upper() == "DATABASE":
            state = "name"
        elif state == "name" and kind != "space":
            if kind not in ("ident", "word"):
                raise PropertiesError(f"no database name in {statement[:200]!r}")
            parts.append(':"DBNAME"')
            state = "after"
            continue
        parts.append(token)
    if state != "after":
        raise PropertiesError(f"no database name in {statement[:200]!r}")
    return "".join(parts)


def _entries(sql: str) -> list[tuple[str, str, str]]:
    """(type, name, statement) for every statement, under the TOC header before it.

    The text is walked from its start, one statement at a time, so a header is only
    ever recognised between statements — never inside a string literal such as a
    database comment, however it is worded.
    """
    found: list[tuple[str, str, str]] = []
    kind = name = ""
    position = 0
    while position < len(sql):
        if sql[position].isspace():
            position += 1
            continue
        if sql.startswith("--", position) or sql.startswith("\\", position):
            header = _HEADER.match(sql, position)
            if header is not None:
                kind, name = header.group("type"), header.group("name")
                position = header.end()
                continue
            if sql.startswith("\\", position):
                kind = name = ""  # a \connect: what follows belongs to no entry
            line_end = sql.find("\n", position)
            position = len(sql) if line_end < 0 else line_end + 1
            continue
        statement = next_statement(sql, position)
        if statement is None:
            raise PropertiesError(f"an unfinished statement: {sql[position:position + 200]!r}")
        found.append((kind, name, statement[0]))
        position = statement[1]
    return found


def parse_create_output(sql: str) -> DatabaseProperties:
    """The database's properties from pg_dump/pg_restore ``--create`` output."""
    options: str | None = None
    statements: list[str] = []
    for kind, name, statement in _entries(sql):
        if kind not in _DATABASE_TYPES and not (
                kind in _ON_DATABASE_TYPES and name.startswith("DATABASE ")):
            continue
        retargeted = _retarget(statement)
        if retargeted.startswith('CREATE DATABASE :"DBNAME" '):
            options = retargeted[len('CREATE DATABASE :"DBNAME" '):].rstrip(";").strip()
            if not _OPTIONS.fullmatch(options):
                raise PropertiesError(f"unexpected CREATE DATABASE options {options[:200]!r}")
            continue
        if not _STATEMENT.match(retargeted):
            raise PropertiesError(f"unexpected statement about the database: {retargeted[:200]!r}")
        statements.append(retargeted)
    if options is None:
        raise PropertiesError("the output holds no CREATE DATABASE statement")
    return DatabaseProperties(create_options=options, statements=tuple(statements))


def prologue(properties: DatabaseProperties, database: str) -> bytes:
    """The comment at the head of a plain dump: how to restore it by hand, and the
    options backupmand creates the target with."""
    shown = database.replace("\n", " ")
    lines = [
        "--",
        f"-- backupmand: a pg_dump of the database {shown!r}, with its database-level",
        "-- properties (owner, settings, comment, grants) applied at the end of this file",
        "-- to whatever database it is loaded into (psql's :\"DBNAME\").",
        "--",
        "-- To restore it by hand, create the roles first (the .globals.sql file beside",
        "-- it: psql -X -v ON_ERROR_STOP=1 -d postgres -f NAME.globals.sql), then an empty",
        "-- database with the encoding and locale this one had:",
        f"--   CREATE DATABASE \"new name\" {properties.create_options};",
        "-- and load this file into it, stopping at the first error:",
        "--   psql -X -v ON_ERROR_STOP=1 -d \"new name\" -f FILE",
        "--",
        OPTIONS_MARK + properties.create_options,
        "--",
        "",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def epilogue(properties: DatabaseProperties) -> bytes:
    """The statements at the end of a plain dump (after pg_dump's own trailer)."""
    lines = [
        "",
        "--",
        "-- backupmand: the database's own properties, applied to the database this file",
        "-- was loaded into.",
        "--",
        "",
        *properties.statements,
        "",
        "-- backupmand: end of the database properties",
        "",
    ]
    return "\n".join(lines).encode("utf-8")


EPILOGUE_END = b"-- backupmand: end of the database properties\n"


def options_from_head(head: bytes) -> str | None:
    """The CREATE DATABASE options a plain dump's prologue names, or None without one."""
    text = head.decode("utf-8", "replace")
    for line in text.splitlines()[:40]:
        if line.startswith(OPTIONS_MARK):
            options = line[len(OPTIONS_MARK):].strip()
            if not _OPTIONS.fullmatch(options):
                raise PropertiesError("the dump's CREATE DATABASE options are malformed")
            return options
        if line and not line.startswith("--"):
            break
    return None
