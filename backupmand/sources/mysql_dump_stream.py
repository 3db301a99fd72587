"""A pass over mariadb-dump / mysqldump output as it streams: counted, checked, made loadable.

``DumpStream.feed`` takes the tool's output in whatever pieces it comes and returns
the pieces that may go on — the very chunks it was given, unless something in them
had to change (held back: a chunk with an incomplete statement, and the final views
until the last one is in). On the way it

- counts the rows of every table in the dump (``tables``) and the objects it creates
  (``objects``: tables, views, sequences, routines, triggers, events), so that a
  restore drill can compare what comes back with what went in;
- makes the file independent of the database's name: ``ALTER DATABASE `orig` …``
  (the tool wraps routines, triggers and events created under another character
  set in it) loses the name, so it applies to the database the file is loaded into,
  and ``nextval(`orig`.`seq`)`` in column defaults and views becomes
  ``nextval(`seq`)``; a restore under another name never touches the original;
- writes, after the tool's header, ``ALTER DATABASE CHARACTER SET … COLLATE …``
  with the database's own defaults (``preamble``), so the target gets them;
- puts the final view definitions in dependency order (the tool writes them
  alphabetically over stand-ins, and a ``WITH CHECK OPTION`` view over a stand-in
  does not load);
- keeps every statement within the server's ``max_allowed_packet``: a statement
  over it has its ``0x…`` hex literals (``--hex-blob``, twice the size of the data)
  written as ``_binary'…'`` strings instead; still over, the dump fails naming
  the table (DumpStreamError).

Cost: per INSERT one ``bytes.find`` for its end and one ``bytes.count`` of line
breaks, no copy and no Python loop per row or byte. The tool escapes line breaks
inside strings, so in its one-row-per-line format (MariaDB 10.11) every raw line
break in an INSERT ends a row; in the one-line format (MySQL's mysqldump) string
literals are cut out with one ``re.sub`` before ``),(`` is counted, and only for
statements that contain ``),(`` at all.

The input is the tool's own output (``--quote-names``, comments on): lines, each
statement ending with its delimiter at the end of a line.
"""

from __future__ import annotations

import collections
import dataclasses
import re

from .chunk_window import ChunkWindow

#: The tools' end-of-dump trailer: a dump without it is incomplete.
TRAILER = b"-- Dump completed"
#: Every kind this stream counts (``large_objects`` is always 0 on MySQL/MariaDB).
COUNTED_KINDS = ("tables", "views", "sequences", "routines", "triggers", "events")

_QUOTED = rb"`((?:[^`]|``)+)`"
#: A DEFINER's account: user, optionally @host, each quoted or bare.
_ACCOUNT = (rb"(?:`(?:[^`]|``)*`|'(?:[^']|'')*'|[^\s@*]+)"
            rb"(?:@(?:`(?:[^`]|``)*`|'(?:[^']|'')*'|[^\s*]+))?")
_INSERT = re.compile(rb"(?:INSERT|REPLACE)(?: IGNORE| DELAYED)? INTO " + _QUOTED)
_CREATE_TABLE = re.compile(rb"CREATE TABLE (?:IF NOT EXISTS )?" + _QUOTED)
_CREATE_SEQUENCE = re.compile(rb"CREATE (?:OR REPLACE )?SEQUENCE (?:IF NOT EXISTS )?" + _QUOTED)
_ROUTINE = re.compile(rb"CREATE (?:DEFINER=" + _ACCOUNT + rb" )?(?:AGGREGATE )?(?:PROCEDURE|FUNCTION) ")
_TRIGGER = re.compile(rb"/\*!50003 CREATE\*/ (?:/\*!50017 DEFINER=" + _ACCOUNT
                      + rb"\s*\*/ )?/\*!50003 TRIGGER ")
_EVENT = re.compile(rb"/\*!50106 CREATE\*/ (?:/\*!50117 DEFINER=" + _ACCOUNT
                    + rb"\s*\*/ )?/\*!50106 EVENT ")
_HEADER_SET = re.compile(rb"/\*!40\d{3} SET ")
_FINAL_VIEW = b"/*!50001 CREATE ALGORITHM="
_VIEW_NAME = re.compile(rb"/\*!50001 VIEW " + _QUOTED + rb" AS ")
_VIEW_SECTION = b"-- Final view structure for view "
_IDENTIFIERS = re.compile(_QUOTED)
#: A string literal (backslash escapes, as the tools write them) or a quoted name.
_LITERALS = re.compile(rb"'[^'\\]*(?:\\.[^'\\]*)*'|`[^`]*(?:``[^`]*)*`")
_HEX_OR_LITERAL = re.compile(rb"'[^'\\]*(?:\\.[^'\\]*)*'|`[^`]*(?:``[^`]*)*`|\b0x([0-9A-Fa-f]+)")
#: The header's last SET: the preamble goes right after it.
_HEADER_END = b"SQL_NOTES=0"
_SANDBOX = b"/*M!999999\\-"
#: Semicolons tried as the end of an INSERT before searching for ");\n" itself.
_SEMICOLON_TRIES = 32
#: Room for the protocol's own bytes around a statement.
PACKET_MARGIN = 1024


class DumpStreamError(Exception):
    """Raised when the dump cannot be made to load (a statement over the packet limit)
    or is not in the format the tools write."""


def quote_name(name: str) -> bytes:
    return b"`" + name.encode("utf-8").replace(b"`", b"``") + b"`"


def _unquote(quoted: bytes) -> str:
    return quoted.replace(b"``", b"`").decode("utf-8", "replace")


def count_rows(statement: bytes) -> int:
    """Rows in one whole ``INSERT … VALUES (…),(…);\\n`` statement."""
    first_line = statement.find(b"\n")
    lines = statement.count(b"\n")
    if statement[:first_line].endswith(b"VALUES"):
        return lines - 1  # a header line, then one line per row
    if lines > 1 or b"),(" not in statement:
        return lines  # one line per row, the first after the header
    return _LITERALS.sub(b"", statement).count(b"),(") + 1


def escape_binary(data: bytes) -> bytes:
    """``data`` as the body of a ``_binary'…'`` literal (the escapes mysqldump uses)."""
    return (data.replace(b"\\", b"\\\\").replace(b"'", b"\\'").replace(b"\0", b"\\0")
            .replace(b"\n", b"\\n").replace(b"\r", b"\\r").replace(b"\x1a", b"\\Z"))


def reencode_hex(statement: bytes) -> bytes:
    """``statement`` with every hex literal outside strings written as ``_binary'…'``."""

    def replace(match: re.Match[bytes]) -> bytes:
        digits = match.group(1)
        if digits is None:
            return match.group(0)
        if len(digits) % 2:
            digits = b"0" + digits
        return b"_binary'" + escape_binary(bytes.fromhex(digits.decode("ascii"))) + b"'"

    return _HEX_OR_LITERAL.sub(replace, statement)


def sort_views(blocks: list[tuple[str, set[str], bytes]]) -> list[bytes]:
    """The view blocks (name, names used, text) with every view after the views it uses.

    Stable: views keep the tool's order unless a dependency says otherwise; a cycle
    (impossible in a real database, but names can look alike) keeps the tool's order.
    """
    names = {name for name, _, _ in blocks}
    remaining = [(name, (uses & names) - {name}, text) for name, uses, text in blocks]
    done: set[str] = set()
    ordered: list[bytes] = []
    while remaining:
        index = next((position for position, (_, uses, _) in enumerate(remaining)
                      if uses <= done), 0)
        name, _, text = remaining.pop(index)
        done.add(name)
        ordered.append(text)
    return ordered


@dataclasses.dataclass
class _ViewBlock:
    name: str | None = None
    uses: set[str] = dataclasses.field(default_factory=set)
    parts: list[bytes] = dataclasses.field(default_factory=list)


class DumpStream:
    """Feed it the tool's output; write the pieces it returns; read the counts."""

    def __init__(self, *, database: str, packet_limit: int, preamble: bytes = b"") -> None:
        self.database = database
        self.packet_limit = packet_limit
        self.preamble = preamble
        #: Rows per table in the dump ("table" -> rows), tables without rows included.
        self.tables: dict[str, int] = {}
        self.objects: collections.Counter[str] = collections.Counter(
            dict.fromkeys(COUNTED_KINDS, 0))
        quoted = re.escape(quote_name(database))
        self._own_alter = re.compile(rb"ALTER DATABASE " + quoted + rb" ")
        # `orig`. in a definition means "this database": unqualified, it means the
        # database the definition is loaded into. (Not inside a quoted name: `a``orig`.)
        self._own_qualifier = re.compile(rb"(?<!`)" + quoted + rb"\.(?=`)")
        self._window = ChunkWindow()
        self._cursor = 0  # where the next line or statement starts
        self._statement: list[bytes] = []  # lines of the statement in progress
        self._statement_start = 0
        self._delimiter = b";"
        self._searched = 0  # where the search for an INSERT's end resumes
        self._header_done = not preamble
        self._views: list[_ViewBlock] | None = None
        self._views_start = 0

    # ------------------------------------------------------------------ the stream

    def feed(self, chunk: bytes) -> list[bytes]:
        """Take the next piece of the dump; return the pieces that may be written."""
        self._window.append(chunk)
        self._process()
        limit = self._views_start if self._views is not None else self._held_from()
        return self._window.release(limit)

    def finish(self) -> list[bytes]:
        """The rest, at the end of the tool's output (an incomplete tail goes out as it
        is: the trailer check then sees a cut dump)."""
        self._process()
        if self._statement:
            self._unit(b"".join(self._statement), self._statement_start, statement=True)
            self._statement = []
        self._end_views(self._cursor)
        self._header(self._window.end)
        return self._window.release_all()

    def _held_from(self) -> int:
        return self._statement_start if self._statement else self._cursor

    def _process(self) -> None:
        window = self._window
        while self._cursor < window.end:
            cursor = self._cursor
            if not self._statement and self._delimiter == b";":
                head = window.piece(cursor, cursor + 8)
                if head.startswith((b"INSERT ", b"REPLACE ")):
                    end = self._insert_end(max(cursor, self._searched))
                    if end < 0:
                        return
                    self._searched = 0
                    self._insert(cursor, end)
                    self._cursor = end
                    continue
                if len(head) < 8 and b"\n" not in head and (
                        b"INSERT "[:len(head)] == head or b"REPLACE "[:len(head)] == head):
                    return  # too little to tell yet
            newline = window.find(b"\n", cursor)
            if newline < 0:
                return
            self._line(window.piece(cursor, newline + 1), cursor)
            self._cursor = newline + 1

    def _insert_end(self, start: int) -> int:
        """Where the INSERT going on at ``start`` ends (after its ``);\\n``), or -1 when
        that has not arrived yet (``_searched`` then says where to look next time).

        No raw line break can be inside a string, so the first ``);\\n`` ends it. A
        semicolon is rare in most data, and ``find(b";")`` runs at memchr speed:
        semicolons are tried first; after a few that end nothing (text full of them)
        the three bytes are searched for instead.
        """
        window = self._window
        position = start
        for _ in range(_SEMICOLON_TRIES):
            semicolon = window.find(b";", position)
            if semicolon < 0 or semicolon + 1 >= window.end:
                self._searched = max(start, window.end - 2)
                return -1
            if window.piece(semicolon - 1, semicolon + 2) == b");\n":
                return semicolon + 2
            position = semicolon + 1
        found = window.find(b");\n", position - 1)
        if found < 0:
            self._searched = max(start, window.end - 2)
            return -1
        return found + 3

    # ------------------------------------------------------------------ units

    def _line(self, line: bytes, start: int) -> None:
        if self._statement:
            self._statement.append(line)
            if line.rstrip().endswith(self._delimiter):
                text = b"".join(self._statement)
                self._statement = []
                self._unit(text, self._statement_start, statement=True)
            return
        stripped = line.strip()
        if not stripped or stripped.startswith(b"--") or stripped.startswith(_SANDBOX):
            self._unit(line, start, statement=False)
        elif stripped.startswith(b"DELIMITER "):
            self._unit(line, start, statement=False)
            self._delimiter = stripped[len(b"DELIMITER "):].strip()
        elif stripped.endswith(self._delimiter):
            self._unit(line, start, statement=True)
        else:
            self._statement = [line]
            self._statement_start = start

    def _unit(self, text: bytes, start: int, *, statement: bool) -> None:
        """One comment line or one whole statement (DDL, SET, ...), in stream order."""
        if self._views is not None:
            if not statement or text.startswith(b"/*!50001 "):
                self._view_part(text, statement=statement)
                return
            self._end_views(start)
        elif not statement and text.startswith(_VIEW_SECTION):
            self._views = []
            self._views_start = start
            self._view_part(text, statement=False)
            return
        if not statement:
            return
        header = _HEADER_SET.match(text) is not None
        if not header:
            self._header(start)
        changed = self._statement_text(text)
        if changed != text:
            self._window.edit(start, start + len(text), changed)
        if header and _HEADER_END in text:
            self._header(start + len(text))

    def _header(self, position: int) -> None:
        """The preamble, once: after the tool's header, before anything it creates."""
        if not self._header_done:
            self._header_done = True
            self._window.edit(position, position, self.preamble)

    def _statement_text(self, text: bytes) -> bytes:
        """Count the objects a statement creates; the statement as it must be written."""
        what = "a statement"
        if text.startswith(b"CREATE TABLE "):
            match = _CREATE_TABLE.match(text)
            if match is None:
                raise DumpStreamError(f"unexpected CREATE TABLE statement: {text[:80]!r}")
            name = _unquote(match.group(1))
            self.tables.setdefault(name, 0)
            self.objects["tables"] += 1
            text = self._own_qualifier.sub(b"", text)
            what = f"the definition of table {name!r}"
        elif _CREATE_SEQUENCE.match(text):
            self.objects["sequences"] += 1
        elif own := self._own_alter.match(text):
            text = b"ALTER DATABASE " + text[own.end():]
        else:
            for pattern, kind, description in ((_TRIGGER, "triggers", "a trigger"),
                                               (_EVENT, "events", "an event"),
                                               (_ROUTINE, "routines", "a routine")):
                if pattern.match(text):
                    self.objects[kind] += 1
                    text = self._own_qualifier.sub(b"", text)
                    what = description
                    break
        self._check_size(len(text), what)
        return text

    def _insert(self, start: int, end: int) -> None:
        window = self._window
        match = _INSERT.match(window.piece(start, min(end, start + 8192)))
        if match is None:
            raise DumpStreamError(
                f"unexpected INSERT statement: {window.piece(start, start + 80)!r}")
        self._header(start)
        name = _unquote(match.group(1))
        first_line = window.find(b"\n", start, end)
        lines = window.count(b"\n", start, end)
        if window.piece(first_line - 6, first_line) == b"VALUES":
            rows = lines - 1  # a header line, then one line per row
        elif lines > 1 or window.find(b"),(", start, end) < 0:
            rows = lines  # one line per row, the first after the header
        else:
            rows = count_rows(window.piece(start, end))
        self.tables[name] = self.tables.get(name, 0) + rows
        if end - start + PACKET_MARGIN > self.packet_limit:
            statement = reencode_hex(window.piece(start, end))
            self._check_size(len(statement), f"table {name!r}: one of its rows")
            window.edit(start, end, statement)

    def _check_size(self, size: int, what: str) -> None:
        if size + PACKET_MARGIN > self.packet_limit:
            raise DumpStreamError(
                f"{what} needs a statement of {_size(size)}, more than the server's "
                f"max_allowed_packet ({_size(self.packet_limit)}): a restore would fail; "
                "raise max_allowed_packet on the server (and on any server this backup "
                "may be restored to)"
            )

    # ------------------------------------------------------------------ views

    def _view_part(self, text: bytes, *, statement: bool) -> None:
        assert self._views is not None
        if (not statement and text.startswith(_VIEW_SECTION)) or not self._views:
            self._views.append(_ViewBlock())
        block = self._views[-1]
        if statement and text.startswith(_FINAL_VIEW):
            match = _VIEW_NAME.search(text)
            if match is None:
                raise DumpStreamError(f"unexpected view definition: {text[:120]!r}")
            block.name = _unquote(match.group(1))
            block.uses = {_unquote(found) for found in _IDENTIFIERS.findall(text, match.end())}
            text = self._own_qualifier.sub(b"", text)
            self.objects["views"] += 1
            self._check_size(len(text), f"view {block.name!r}")
        block.parts.append(text)

    def _end_views(self, end: int) -> None:
        """The views section [views_start, end) ends: written again, in dependency order."""
        if self._views is None:
            return
        blocks = [(block.name or f"\0{index}", block.uses, b"".join(block.parts))
                  for index, block in enumerate(self._views)]
        self._views = None
        self._window.edit(self._views_start, end, b"".join(sort_views(blocks)))


def _size(count: int) -> str:
    if count >= 1024 * 1024:
        return f"{count / (1024 * 1024):.1f} MiB"
    return f"{count / 1024:.1f} KiB"
