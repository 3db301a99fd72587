"""Replacing one MySQL/MariaDB database by another (which the server cannot rename).

A forced restore loads the dump into a side database first; only when that load is
complete does ``replace`` put it in the target's place, keeping the replaced
contents as ``<target>__before_<UTC stamp>``. MariaDB has no RENAME DATABASE, so
"moving" a database's contents to another name is done object by object:

- base tables and sequences move with one ``RENAME TABLE a.t TO b.t, …`` statement,
  which the server applies atomically (data, indexes, AUTO_INCREMENT and
  system-versioned history move without a copy); column defaults that name the old
  database's sequences (``nextval(`a`.`s`)``) are pointed at the new one;
- triggers, views, routines and events cannot move across databases: they are read
  first, as mariadb-dump writes them (``--no-data``, passed through DumpStream so they
  no longer name their database, views in dependency order), dropped, and created
  again in the new database after its tables are there.

Every step has its inverse, and a failure at any step runs the inverses of the steps
done, newest first, so the target is left as it was; the error says so — or, if an
inverse failed too (the server went away mid-swap), which database holds what. All
of it is metadata: it takes about a second whatever the size of the data. The
routines, triggers and events re-created by an undo carry new creation times.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import re

from .. import process
from ..errors import ProcessError, RestoreError
from .mysql_client import ADMIN_TIMEOUT, Session, hex_equals, quote_ident, unhex
from .mysql_dump_stream import TRAILER, DumpStream, DumpStreamError
from .mysql_inventory import (
    BASE_TABLE_TYPES,
    DatabaseProperties,
    alter_database_sql,
    create_database_sql,
    properties,
    tables,
)

#: Copying definitions: the tool's packet limit is the client's (no server to obey).
_NO_LIMIT = 1 << 40
#: A step that waits for a lock (a long transaction of an application on the target)
#: fails after this many seconds — and the swap is undone — instead of the server's
#: default of a day.
LOCK_WAIT = 60
_LOCK_WAIT_SQL = (f"SET SESSION lock_wait_timeout = LEAST(@@GLOBAL.lock_wait_timeout, "
                  f"{LOCK_WAIT});\n")


@dataclasses.dataclass(frozen=True)
class Contents:
    """What moving a database needs to know about it, read before anything changes."""

    name: str
    properties: DatabaseProperties
    #: Base tables and sequences (moved by RENAME TABLE).
    tables: tuple[str, ...]
    #: Triggers, events, routines and views, as SQL that creates them (in any database).
    objects_script: bytes
    counts: collections.abc.Mapping[str, int]

    @property
    def empty(self) -> bool:
        return not self.tables and not any(self.counts.values())


async def read_contents(session: Session, dump_tool: str, name: str, *,
                        timeout: float = ADMIN_TIMEOUT) -> Contents:
    """Everything ``replace`` moves, and the SQL that re-creates what cannot move."""
    defaults = await properties(session, name)
    if defaults is None:
        raise RestoreError(f"database {name!r} does not exist on {session.where}")
    found = await tables(session, name)
    movable = tuple(table for table, kind in found if kind in (*BASE_TABLE_TYPES, "SEQUENCE"))
    views = [table for table, kind in found if kind == "VIEW"]
    counts = await _object_counts(session, name)
    if counts["other routines"]:
        raise RestoreError(f"database {name!r} holds packages, which mysqldump cannot copy: "
                           "it cannot be replaced safely")
    script = await _definitions(session, dump_tool, name, [
        "--no-data", "--no-create-info", "--routines", "--triggers", "--events"], counts,
        timeout=timeout)
    if views:
        script += await _definitions(session, dump_tool, name, [
            "--no-data", "--skip-add-drop-table", "--skip-triggers"], counts, views=views,
            timeout=timeout)
    return Contents(name, defaults, movable, script,
                    {kind: counts[kind] for kind in ("views", "routines", "triggers", "events")})


async def _object_counts(session: Session, name: str) -> dict[str, int]:
    rows = await session.rows(
        "SELECT (SELECT COUNT(*) FROM information_schema.VIEWS WHERE "
        f"{hex_equals('TABLE_SCHEMA', name)}), "
        "(SELECT COUNT(*) FROM information_schema.ROUTINES WHERE "
        f"{hex_equals('ROUTINE_SCHEMA', name)} AND ROUTINE_TYPE IN ('PROCEDURE', 'FUNCTION')), "
        "(SELECT COUNT(*) FROM information_schema.ROUTINES WHERE "
        f"{hex_equals('ROUTINE_SCHEMA', name)} AND ROUTINE_TYPE NOT IN "
        "('PROCEDURE', 'FUNCTION')), "
        "(SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE "
        f"{hex_equals('TRIGGER_SCHEMA', name)}), "
        "(SELECT COUNT(*) FROM information_schema.EVENTS WHERE "
        f"{hex_equals('EVENT_SCHEMA', name)})"
    )
    views, routines, others, triggers, events = (int(value) for value in rows[0])
    return {"views": views, "routines": routines, "other routines": others,
            "triggers": triggers, "events": events}


async def _definitions(session: Session, dump_tool: str, name: str, options: list[str],
                       counts: dict[str, int], *, views: list[str] | None = None,
                       timeout: float) -> bytes:
    """The tool's definitions of ``name``'s objects, free of its name; checked complete."""
    stream = DumpStream(database=name, packet_limit=_NO_LIMIT)
    command = session.command(
        dump_tool, "--single-transaction", "--skip-add-locks", "--skip-lock-tables",
        "--default-character-set=utf8mb4", *options, "--", name, *(views or []))
    pieces: list[bytes] = []
    try:
        async for chunk in process.stream_output(command, timeout=timeout):
            pieces += stream.feed(chunk)
    except ProcessError as error:
        raise RestoreError(f"reading the definitions in {name!r} failed: {error}") from None
    except DumpStreamError as error:
        raise RestoreError(f"reading the definitions in {name!r} failed: {error}") from None
    pieces += stream.finish()
    script = b"".join(pieces)
    if TRAILER not in script[-4096:]:
        raise RestoreError(f"reading the definitions in {name!r} failed: the output is cut")
    kinds = ("views",) if views is not None else ("routines", "triggers", "events")
    for kind in kinds:
        if stream.objects[kind] != counts[kind]:
            raise RestoreError(
                f"database {name!r} has {counts[kind]} {kind} but {stream.objects[kind]} "
                "could be read back: it cannot be replaced safely")
    return script


async def clear_objects(session: Session, name: str) -> None:
    """Drop the triggers, views, routines and events of ``name`` (never its tables)."""
    rows = await session.rows(
        f"SELECT 'TRIGGER', HEX(TRIGGER_NAME) FROM information_schema.TRIGGERS WHERE "
        f"{hex_equals('TRIGGER_SCHEMA', name)} UNION ALL "
        f"SELECT 'VIEW', HEX(TABLE_NAME) FROM information_schema.VIEWS WHERE "
        f"{hex_equals('TABLE_SCHEMA', name)} UNION ALL "
        f"SELECT ROUTINE_TYPE, HEX(ROUTINE_NAME) FROM information_schema.ROUTINES WHERE "
        f"{hex_equals('ROUTINE_SCHEMA', name)} AND ROUTINE_TYPE IN ('PROCEDURE', 'FUNCTION') "
        f"UNION ALL SELECT 'EVENT', HEX(EVENT_NAME) FROM information_schema.EVENTS WHERE "
        f"{hex_equals('EVENT_SCHEMA', name)}"
    )
    if rows:
        await session.execute(_LOCK_WAIT_SQL + "".join(
            f"DROP {kind} {quote_ident(name)}.{quote_ident(unhex(hexed))};\n"
            for kind, hexed in rows))


async def move_tables(session: Session, source: str, target: str,
                      names: collections.abc.Sequence[str]) -> None:
    """``RENAME TABLE source.t TO target.t, …`` in one atomic statement, then point
    column defaults that draw from ``source``'s sequences at ``target``'s."""
    if not names:
        return
    renames = ", ".join(
        f"{quote_ident(source)}.{quote_ident(table)} TO {quote_ident(target)}.{quote_ident(table)}"
        for table in names)
    await session.execute(f"{_LOCK_WAIT_SQL}RENAME TABLE {renames};")
    rows = await session.rows(
        "SELECT HEX(TABLE_NAME), HEX(COLUMN_NAME), HEX(COLUMN_DEFAULT) FROM "
        f"information_schema.COLUMNS WHERE {hex_equals('TABLE_SCHEMA', target)} AND "
        "LOCATE('val(', COLUMN_DEFAULT) > 0"
    )
    qualifier = re.compile(r"(?<!`)" + re.escape(quote_ident(source)) + r"\.(?=`)")
    statements = []
    for table_hex, column_hex, default_hex in rows:
        default = unhex(default_hex)
        moved = qualifier.sub(lambda _match: quote_ident(target) + ".", default)
        if moved != default:
            statements.append(
                f"ALTER TABLE {quote_ident(target)}.{quote_ident(unhex(table_hex))} ALTER "
                f"COLUMN {quote_ident(unhex(column_hex))} SET DEFAULT ({moved});\n")
    if statements:
        # Versioned tables refuse ALTER TABLE unless told to keep their history.
        await session.execute(_LOCK_WAIT_SQL
                              + "SET SESSION system_versioning_alter_history = KEEP;\n"
                              + "".join(statements))


async def create_objects(session: Session, contents: Contents, database: str,
                         *, timeout: float = ADMIN_TIMEOUT) -> None:
    if contents.objects_script:
        await session.load(_once(_LOCK_WAIT_SQL.encode() + contents.objects_script),
                           database=database, timeout=timeout)


async def replace(session: Session, dump_tool: str, *, target: str, side: str,
                  keep_as: str | None, timeout: float = ADMIN_TIMEOUT) -> None:
    """Put ``side``'s contents in ``target``'s place; ``target``'s go to ``keep_as``
    (which must not exist; None when the target is empty). ``side`` is left empty.

    RestoreError on failure, after every step done was undone (the message says
    whether that worked)."""
    old = await read_contents(session, dump_tool, target, timeout=timeout)
    new = await read_contents(session, dump_tool, side, timeout=timeout)
    if not old.empty and keep_as is None:
        raise RestoreError(f"database {target!r} is not empty and there is no name to keep "
                           "it under")
    undo: list[tuple[str, collections.abc.Callable[[], collections.abc.Awaitable[None]]]] = []

    async def step(description: str, action: collections.abc.Awaitable[None],
                   inverse: collections.abc.Callable[[], collections.abc.Awaitable[None]] | None,
                   ) -> None:
        await action
        if inverse is not None:
            undo.append((description, inverse))

    try:
        if not old.empty:
            assert keep_as is not None
            kept = keep_as
            await step(f"create {kept!r}",
                       session.execute(create_database_sql(kept, old.properties)),
                       lambda: session.execute(f"DROP DATABASE {quote_ident(kept)};"))
            await step(f"drop the views, routines, triggers and events of {target!r}",
                       clear_objects(session, target),
                       lambda: create_objects(session, old, target, timeout=timeout))
            await step(f"move the tables of {target!r} to {kept!r}",
                       move_tables(session, target, kept, old.tables),
                       lambda: move_tables(session, kept, target, old.tables))
            await step(f"create the views, routines, triggers and events in {kept!r}",
                       create_objects(session, old, kept, timeout=timeout),
                       lambda: clear_objects(session, kept))
        await step(f"set the defaults of {target!r}",
                   session.execute(_LOCK_WAIT_SQL + alter_database_sql(target, new.properties)),
                   lambda: session.execute(_LOCK_WAIT_SQL
                                           + alter_database_sql(target, old.properties)))
        await step(f"drop the views, routines, triggers and events of {side!r}",
                   clear_objects(session, side), None)
        await step(f"move the tables of {side!r} to {target!r}",
                   move_tables(session, side, target, new.tables),
                   lambda: move_tables(session, target, side, new.tables))
        await step(f"create the views, routines, triggers and events in {target!r}",
                   create_objects(session, new, target, timeout=timeout),
                   lambda: clear_objects(session, target))
    except (ProcessError, RestoreError) as error:
        failed: list[str] = []
        for description, inverse in reversed(undo):
            try:
                await inverse()
            except (ProcessError, RestoreError) as undo_error:
                failed.append(f"undoing '{description}' failed: {undo_error}")
        if failed:
            raise RestoreError(
                f"replacing {target!r} failed ({error}), and putting it back failed too: "
                + "; ".join(failed)
                + (f"; the replaced contents may be in {keep_as!r}" if keep_as else "")
            ) from None
        raise RestoreError(f"replacing {target!r} failed, and it was put back as it was: "
                           f"{error}") from None


async def _once(data: bytes) -> collections.abc.AsyncIterator[bytes]:
    yield data
