"""Counting what a plain pg_dump stream holds while it passes, at C speed.

A plain dump is SQL with the data of every table in a ``COPY ... FROM stdin;`` block
that ends with a ``\\.`` line. In COPY's text format a row is exactly one line (a
newline inside a value is written ``\\n``, a backslash ``\\\\``), so a block's rows are
its newlines, counted with ``bytes.count`` per chunk; ``bytes.find`` looks for the
``\\.`` line. Outside the blocks the counter reads pg_dump's own table-of-contents
comments (``-- Name: x; Type: TABLE; Schema: s; Owner: o``), one per object, for the
object counts. A COPY block is only taken for data when pg_dump's ``-- Data for Name:
...; Type: TABLE DATA`` comment introduces it, so a function body that happens to hold
a line starting with ``COPY`` is never mistaken for one.

Only complete lines are looked at outside a block; what a chunk leaves unfinished is
kept (a line, or a data header waiting for its COPY line) and joined to the next chunk.
"""

from __future__ import annotations

import collections
import re

from .pg_sql import tokens, unquote_ident

#: pg_dump's TOC types counted as objects, by OBJECT_KINDS key.
OBJECT_TYPES: dict[str, str] = {
    "TABLE": "tables",
    "VIEW": "views",
    "MATERIALIZED VIEW": "views",
    "SEQUENCE": "sequences",
    "FUNCTION": "routines",
    "PROCEDURE": "routines",
    "AGGREGATE": "routines",
    "TRIGGER": "triggers",
    "BLOB": "large_objects",
}

_OBJECT_HEADER = re.compile(rb"^-- Name: [^\n]*; Type: ([A-Z][A-Z ]*); Schema: [^\n]*$", re.M)
_DATA_HEADER = b"-- Data for Name: "
_COPY_LINE = re.compile(rb"[^\n]*; Type: TABLE DATA; Schema: [^\n]*\n--\n\n(COPY [^\n]* FROM stdin;)\n")
_TERMINATOR = b"\\.\n"


def copy_table(statement: str) -> str:
    """``schema.table`` of a ``COPY schema.table (columns) FROM stdin;`` line."""
    names: list[str] = []
    expect_name = True
    for kind, piece in tokens(statement[len("COPY "):]):
        if kind == "space":
            continue
        if expect_name and kind in ("ident", "word"):
            names.append(unquote_ident(piece))
            expect_name = False
        elif not expect_name and piece == ".":
            expect_name = True
        else:
            break
    if len(names) != 2:
        raise ValueError(f"cannot read the table of {statement[:200]!r}")
    return f"{names[0]}.{names[1]}"


class PlainDumpCounter:
    """Rows per table and objects per kind of a plain dump, fed chunk by chunk."""

    def __init__(self) -> None:
        self.tables: dict[str, int] = {}
        self.types: collections.Counter[str] = collections.Counter()
        self._table: str | None = None  # inside this table's COPY block
        self._pending = b""

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk if self._pending else chunk
        self._pending = b""
        position = 0
        while position < len(data):
            if self._table is not None:
                position = self._rows(data, position)
            else:
                position = self._schema(data, position)
            if position < 0:
                return  # the unfinished rest waits for the next chunk

    def finish(self) -> None:
        """Raise ValueError when the stream ended inside a COPY block."""
        if self._table is not None:
            raise ValueError(f"the dump ends inside the data of {self._table}")

    def objects(self) -> dict[str, int]:
        counts = dict.fromkeys(("tables", "views", "sequences", "routines", "triggers",
                                "events", "large_objects"), 0)
        for kind, number in self.types.items():
            if kind in OBJECT_TYPES:
                counts[OBJECT_TYPES[kind]] += number
        return counts

    # ------------------------------------------------------------------ the two states

    def _rows(self, data: bytes, position: int) -> int:
        """Count rows from ``position`` (a line start); the position after the block,
        or -1 after keeping an unfinished line for the next chunk."""
        assert self._table is not None
        if data.startswith(_TERMINATOR, position):
            end = position
        else:
            found = data.find(b"\n" + _TERMINATOR, position)
            end = found + 1 if found >= 0 else -1
        if end >= 0:
            self.tables[self._table] += data.count(b"\n", position, end)
            self._table = None
            return end + len(_TERMINATOR)
        last = data.rfind(b"\n", position)
        if last >= 0:
            self.tables[self._table] += data.count(b"\n", position, last + 1)
            position = last + 1
        self._pending = data[position:]
        return -1

    def _schema(self, data: bytes, position: int) -> int:
        """Read complete schema lines from ``position``; the position where a COPY block
        starts, or -1 after keeping the unfinished rest for the next chunk."""
        header = data.find(_DATA_HEADER, position)
        while header > 0 and data[header - 1] != 0x0A:  # only at a line start
            header = data.find(_DATA_HEADER, header + 1)
        limit = header if header >= 0 else data.rfind(b"\n", position) + 1
        if limit > position:
            self._count_headers(data, position, limit)
        if header < 0:
            self._pending = data[max(limit, position):]
            return -1
        match = _COPY_LINE.match(data, header + len(_DATA_HEADER))
        if match is None:
            if data.count(b"\n", header) < 4:  # the header's lines are not all here yet
                self._pending = data[header:]
                return -1
            # A data header without a COPY line (pg_dump --inserts, or a large object's
            # data): read on as schema after the header line.
            return data.index(b"\n", header) + 1
        self._table = copy_table(match.group(1).decode("utf-8", "surrogateescape"))
        self.tables.setdefault(self._table, 0)
        return match.end()

    def _count_headers(self, data: bytes, start: int, end: int) -> None:
        for match in _OBJECT_HEADER.finditer(data, start, end):
            self.types[match.group(1).decode("ascii")] += 1
