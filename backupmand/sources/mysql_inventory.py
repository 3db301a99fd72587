"""What a MySQL/MariaDB database holds, read from information_schema.

``inventory`` counts the way ``DumpStream`` counts a dump, so a faithful restore of a
dump gives the dump's own numbers: rows of every base table (every row version of a
system-versioned table, since its history is dumped too), and the tables, views,
sequences, routines (procedures and functions), triggers and events.
"""

from __future__ import annotations

import dataclasses
import re

from .base import Inventory
from .mysql_client import Session, hex_equals, quote_ident, unhex

#: Table types information_schema gives a base table (MariaDB names versioned ones).
BASE_TABLE_TYPES = ("BASE TABLE", "SYSTEM VERSIONED")
_NAME = re.compile(r"[A-Za-z0-9_]+")


@dataclasses.dataclass(frozen=True)
class DatabaseProperties:
    """A database's own defaults: what CREATE DATABASE / ALTER DATABASE set."""

    charset: str
    collation: str
    #: None where the server has no database comments (MySQL).
    comment: str | None = None

    def __post_init__(self) -> None:
        for value in (self.charset, self.collation):
            if not _NAME.fullmatch(value):
                raise ValueError(f"unexpected character set or collation name {value!r}")

    def clause(self, *, empty_comment: bool = False) -> str:
        """``CHARACTER SET … COLLATE … [COMMENT …]`` for CREATE/ALTER DATABASE
        (``empty_comment``: also ``COMMENT ''``, which clears one)."""
        text = f"CHARACTER SET {self.charset} COLLATE {self.collation}"
        if self.comment or (self.comment is not None and empty_comment):
            text += f" COMMENT {quote_literal(self.comment)}"
        return text


def quote_literal(value: str) -> str:
    """A string literal with backslash escapes (sessions that use it run BACKSLASH_SQL)."""
    escaped = (value.replace("\\", "\\\\").replace("'", "\\'").replace("\0", "\\0")
               .replace("\n", "\\n").replace("\r", "\\r").replace("\x1a", "\\Z"))
    return f"'{escaped}'"


#: Put first in a session that uses quote_literal: backslashes escape, whatever the
#: server's default sql_mode.
BACKSLASH_SQL = "SET SESSION sql_mode = REPLACE(@@SESSION.sql_mode, 'NO_BACKSLASH_ESCAPES', '');\n"


async def properties(session: Session, name: str) -> DatabaseProperties | None:
    """The database's defaults, or None when there is no such database."""
    mariadb_comment = await _has_schema_comment(session)
    comment = "HEX(IFNULL(SCHEMA_COMMENT, ''))" if mariadb_comment else "''"
    rows = await session.rows(
        f"SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME, {comment} "
        f"FROM information_schema.SCHEMATA WHERE {hex_equals('SCHEMA_NAME', name)}"
    )
    if not rows:
        return None
    charset, collation, comment_hex = rows[0]
    return DatabaseProperties(charset, collation, unhex(comment_hex) if mariadb_comment else None)


async def _has_schema_comment(session: Session) -> bool:
    """MariaDB 10.5+ has database comments; MySQL has none."""
    rows = await session.rows(
        "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "
        "'information_schema' AND TABLE_NAME = 'SCHEMATA' AND COLUMN_NAME = 'SCHEMA_COMMENT'")
    return rows == [["1"]]


async def exists(session: Session, name: str) -> bool:
    rows = await session.rows("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE "
                              f"{hex_equals('SCHEMA_NAME', name)}")
    return rows == [["1"]]


async def object_count(session: Session, name: str) -> int:
    """Tables (views and sequences included), routines and events in ``name``."""
    rows = await session.rows(
        "SELECT (SELECT COUNT(*) FROM information_schema.TABLES WHERE "
        f"{hex_equals('TABLE_SCHEMA', name)}) + "
        "(SELECT COUNT(*) FROM information_schema.ROUTINES WHERE "
        f"{hex_equals('ROUTINE_SCHEMA', name)}) + "
        "(SELECT COUNT(*) FROM information_schema.EVENTS WHERE "
        f"{hex_equals('EVENT_SCHEMA', name)})"
    )
    return int(rows[0][0])


async def list_databases(session: Session) -> list[str]:
    rows = await session.rows("SELECT HEX(SCHEMA_NAME) FROM information_schema.SCHEMATA")
    return [unhex(row[0]) for row in rows]


async def tables(session: Session, name: str) -> list[tuple[str, str]]:
    """(table, TABLE_TYPE) of every table, view and sequence in ``name``."""
    rows = await session.rows(
        "SELECT HEX(TABLE_NAME), TABLE_TYPE FROM information_schema.TABLES WHERE "
        f"{hex_equals('TABLE_SCHEMA', name)} ORDER BY TABLE_NAME"
    )
    return [(unhex(table), kind) for table, kind in rows]


async def inventory(session: Session, name: str, *, timeout: float) -> Inventory:
    found = await tables(session, name)
    base = [(table, kind) for table, kind in found if kind in BASE_TABLE_TYPES]
    kinds = [kind for _, kind in found]
    rows = await session.rows(
        "SELECT (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE "
        f"{hex_equals('ROUTINE_SCHEMA', name)} AND ROUTINE_TYPE IN ('PROCEDURE', 'FUNCTION')), "
        "(SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE "
        f"{hex_equals('TRIGGER_SCHEMA', name)}), "
        "(SELECT COUNT(*) FROM information_schema.EVENTS WHERE "
        f"{hex_equals('EVENT_SCHEMA', name)})"
    )
    routines, triggers, events = (int(value) for value in rows[0])
    counts: dict[str, int] = {}
    if base:
        # One SELECT per table, in one client run; the number says which table.
        statements = [
            f"SELECT {index}, COUNT(*) FROM {quote_ident(name)}.{quote_ident(table)}"
            + (" FOR SYSTEM_TIME ALL" if kind == "SYSTEM VERSIONED" else "") + ";"
            for index, (table, kind) in enumerate(base)
        ]
        answers = await session.rows("\n".join(statements), timeout=timeout)
        for index, count in answers:
            counts[base[int(index)][0]] = int(count)
    return Inventory(
        tables=counts,
        objects={"tables": len(base), "views": kinds.count("VIEW"),
                 "sequences": kinds.count("SEQUENCE"), "routines": routines,
                 "triggers": triggers, "events": events, "large_objects": 0},
    )


def create_database_sql(name: str, defaults: DatabaseProperties | None) -> str:
    clause = f" {defaults.clause()}" if defaults is not None else ""
    return f"{BACKSLASH_SQL}CREATE DATABASE {quote_ident(name)}{clause};"


def alter_database_sql(name: str, defaults: DatabaseProperties) -> str:
    clause = defaults.clause(empty_comment=True)
    return f"{BACKSLASH_SQL}ALTER DATABASE {quote_ident(name)} {clause};"
