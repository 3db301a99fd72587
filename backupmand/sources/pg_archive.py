"""Reading a pg_dump custom-format archive (``-Fc``) as pg_dump writes it.

The archive starts with a header and the table of contents (TOC): one entry per object
(``desc`` TABLE, VIEW, FUNCTION, BLOB, DATABASE, ...), then the data blocks follow, one
per TABLE DATA entry and one BLOBS block for all large objects. Every integer is a sign
byte and ``int_size`` little-endian bytes; every string an integer length and its bytes.
A data block is a type byte, the entry's dump id, then chunks (a length, then bytes)
ending with a zero length; BLOBS holds, per large object, its oid and its chunks, and
ends with oid 0.

With ``--compress=0`` pg_dump writes every COPY row as a chunk of its own, then the
chunk ``\\.\\n\\n\\n`` and the zero length. Rows never contain a NUL byte or a raw
newline, so every row ends in ``\\n`` followed by the next chunk's sign byte ``\\x00``;
walking the chunks in Python would cost a loop turn per row, so the rows are counted
with ``bytes.count`` and one lookahead pattern for the rare false matches (a length byte
can itself be ``\\n`` followed by ``\\x00``: see ``_BlockRows``). The end of a block is
the one place where the chunk ``\\.\\n\\n\\n`` is followed by the zero length.

``count_archive`` reads the file while pg_dump is still writing it (``GrowingFile``), in a
thread of its own, so that counting overlaps the dump; pg_dump rewrites the TOC in place
at the end (to fill in the data offsets), which changes nothing the counter read.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .pg_copy import OBJECT_TYPES, copy_table

MAGIC = b"PGDMP"
BLOCK_DATA = 1
BLOCK_BLOBS = 3
PIECE = 4 * 1024 * 1024


class ArchiveError(ValueError):
    """Raised when a file is not a custom-format archive this reader understands."""


@dataclasses.dataclass(frozen=True)
class TocEntry:
    dump_id: int
    desc: str
    tag: str
    namespace: str | None
    copy_statement: str | None


@dataclasses.dataclass
class Archive:
    """The header and TOC of an archive, and what its data blocks held."""

    version: tuple[int, int, int]
    int_size: int
    offset_size: int
    compression: int
    database: str
    server_version: str
    dump_version: str
    entries: list[TocEntry]
    #: rows per table (``schema.table``), from the data blocks.
    tables: dict[str, int] = dataclasses.field(default_factory=dict)
    large_objects: int = 0

    def objects(self) -> dict[str, int]:
        counts = dict.fromkeys(("tables", "views", "sequences", "routines", "triggers",
                                "events", "large_objects"), 0)
        for entry in self.entries:
            if entry.desc in OBJECT_TYPES:
                counts[OBJECT_TYPES[entry.desc]] += 1
        return counts


class _Reader:
    """Exact reads from a byte source, with the archive's integer and string encodings."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self.int_size = 4

    def exactly(self, size: int) -> bytes:
        data = self._read(size)
        if len(data) != size:
            raise ArchiveError("the archive ends early: it is truncated")
        return data

    def byte(self) -> int:
        return self.exactly(1)[0]

    def integer(self) -> int:
        raw = self.exactly(1 + self.int_size)
        value = int.from_bytes(raw[1:], "little")
        return -value if raw[0] else value

    def string(self) -> str | None:
        length = self.integer()
        if length < 0:
            return None
        return self.exactly(length).decode("utf-8", "surrogateescape")


def read_toc(read: Callable[[int], bytes]) -> tuple[Archive, _Reader]:
    """Parse the header and TOC; the reader is left at the first data block."""
    reader = _Reader(read)
    if reader.exactly(5) != MAGIC:
        raise ArchiveError("not a pg_dump custom-format archive (no PGDMP header)")
    major, minor, revision = reader.exactly(3)
    version = (major, minor, revision)
    if not (1, 12, 0) <= version < (1, 16, 0):
        raise ArchiveError(f"archive version {major}.{minor} is not supported (1.12 to 1.15 are)")
    reader.int_size, offset_size, archive_format = reader.exactly(3)
    if archive_format != 1:
        raise ArchiveError(f"archive format {archive_format} is not the custom format")
    compression = reader.byte() if version >= (1, 15, 0) else reader.integer()
    for _ in range(7):  # creation time: sec, min, hour, mday, mon, year, isdst
        reader.integer()
    database = reader.string() or ""
    server_version = reader.string() or ""
    dump_version = reader.string() or ""
    entries: list[TocEntry] = []
    for _ in range(reader.integer()):
        dump_id = reader.integer()
        reader.integer()  # had dumper
        reader.string()  # table oid
        reader.string()  # oid
        tag = reader.string() or ""
        desc = reader.string() or ""
        reader.integer()  # section
        reader.string()  # definition
        reader.string()  # drop statement
        copy_statement = reader.string()
        namespace = reader.string()
        reader.string()  # tablespace
        reader.string()  # table access method
        if version >= (1, 16, 0):
            reader.byte()  # relkind (not reached: 1.16 is refused above)
        reader.string()  # owner
        reader.string()  # "with oids", always false
        while reader.string() is not None:  # dependencies
            pass
        reader.exactly(1 + offset_size)  # data state and offset
        entries.append(TocEntry(dump_id, desc, tag, namespace, copy_statement))
    archive = Archive(version=version, int_size=reader.int_size, offset_size=offset_size,
                      compression=compression, database=database,
                      server_version=server_version, dump_version=dump_version, entries=entries)
    return archive, reader


class _BlockRows:
    """Counts the rows of one uncompressed TABLE DATA block, fed in pieces.

    Every row ends with ``\n`` followed by the next chunk's sign byte ``\x00``, so the
    rows are the occurrences of ``\n\x00`` (``bytes.count``) minus the false ones: a
    chunk's length bytes can also hold ``\n\x00`` (a row of 10 bytes, of 2,560 to 2,815,
    ...). A false occurrence always lies 2 to 4 bytes after another occurrence (inside
    the header right after a row's end), and a true one never does: true ones are at
    least 6 bytes apart and a header holds nothing else. So the false ones are counted
    by the occurrence before them, with one lookahead pattern (``\n\x00`` followed
    within 2 to 4 bytes by another) that only matches — and allocates — where they are.
    A piece is counted up to a cut 14 bytes before its end; the rest waits for the
    next piece, as the block's end marker may straddle them.
    """

    def __init__(self, int_size: int) -> None:
        self.int_size = int_size
        header = 1 + int_size
        self.false_before = re.compile(rb"\n\x00(?=[\s\S]{0,%d}\n\x00)" % (int_size - 2))
        zero = b"\x00" * header
        terminator = b"\\.\n\n\n"
        # The terminator chunk's header, the terminator, the block's zero length.
        self.end = b"\x00" + len(terminator).to_bytes(int_size, "little") + terminator + zero
        self.header = header
        self.rows = 0
        self.started = False
        self.carry = b""

    def feed(self, piece: bytes) -> bytes | None:
        """Count ``piece``; the bytes after the block once its end is seen, else None."""
        data = self.carry + piece if self.carry else piece
        if not self.started:
            if len(data) < len(self.end):
                self.carry = data
                return None
            self.started = True
            if data.startswith(self.end):  # an empty table
                return data[len(self.end):]
            data = data[self.header:]  # the first row's header: no row ends before it
        end = data.find(self.end)
        if end >= 0:
            self.rows += self._true_rows(data, end)
            self.carry = b""
            return data[end + len(self.end):]
        cut = len(data) - (len(self.end) - 1)
        if cut <= 0:
            self.carry = data
            return None
        self.rows += self._true_rows(data, cut)
        self.carry = data[cut:]
        return None

    def _true_rows(self, data: bytes, cut: int) -> int:
        """True row ends among the occurrences that start before ``cut``."""
        occurrences = data.count(b"\n\x00", 0, cut + 1)
        # Matches never overlap (the pattern cannot overlap itself), so those that start
        # at or after ``cut`` are exactly what a scan from ``cut`` finds.
        false = (len(self.false_before.findall(data))
                 - len(self.false_before.findall(data, cut)))
        return occurrences - false


def _skip_chunks(reader: _Reader, on_chunk: Callable[[bytes], None] | None = None) -> None:
    """Read chunks up to the zero length, handing each to ``on_chunk``."""
    while (length := reader.integer()) > 0:
        data = reader.exactly(length)
        if on_chunk is not None:
            on_chunk(data)


class GrowingFile:
    """Reads a file that another process is still writing, until it is done."""

    def __init__(self, handle: BinaryIO, writer_done: threading.Event) -> None:
        self._handle = handle
        self._done = writer_done

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; fewer only at the end of a finished file."""
        parts: list[bytes] = []
        wanted = size
        while wanted > 0:
            data = self._handle.read(wanted)
            if data:
                parts.append(data)
                wanted -= len(data)
                continue
            if self._done.is_set():
                data = self._handle.read(wanted)  # what was written before it finished
                if not data:
                    break
                parts.append(data)
                wanted -= len(data)
                continue
            self._done.wait(0.005)
        return b"".join(parts)


def count_archive(read: Callable[[int], bytes]) -> Archive:
    """Parse a whole archive from ``read`` (exact reads): TOC, rows per table, large objects.

    Blocking: run it in a thread. ArchiveError when the archive is not what pg_dump
    writes, or ends early.
    """
    archive, reader = read_toc(read)
    tables_by_id = {entry.dump_id: entry for entry in archive.entries
                    if entry.desc == "TABLE DATA" and entry.copy_statement}
    pending = b""

    def take(size: int) -> bytes:
        nonlocal pending
        if pending:
            data, pending = pending[:size], pending[size:]
            if len(data) < size:
                data += read(size - len(data))
            return data
        return read(size)

    reader = _Reader(take)
    reader.int_size = archive.int_size
    while True:
        kind = take(1)
        if not kind:
            break
        dump_id = reader.integer()
        if kind[0] == BLOCK_BLOBS:
            while reader.integer() != 0:  # oid
                archive.large_objects += 1
                _skip_chunks(reader)
            continue
        if kind[0] != BLOCK_DATA:
            raise ArchiveError(f"unexpected data block type {kind[0]}")
        entry = tables_by_id.get(dump_id)
        if entry is None or entry.copy_statement is None:
            _skip_chunks(reader)
            continue
        table = copy_table(entry.copy_statement)
        if archive.compression:
            archive.tables[table] = _compressed_rows(reader)
            continue
        counter = _BlockRows(archive.int_size)
        rest: bytes | None = None
        while rest is None:
            piece = take(PIECE)
            if not piece:
                raise ArchiveError(f"the archive ends inside the data of {table}")
            rest = counter.feed(piece)
        pending = rest + pending
        archive.tables[table] = counter.rows
    if archive.large_objects != archive.objects()["large_objects"]:
        raise ArchiveError(f"the archive lists {archive.objects()['large_objects']} large objects "
                           f"but holds the data of {archive.large_objects}")
    return archive


def _compressed_rows(reader: _Reader) -> int:
    """Rows of a zlib-compressed data block (an archive dumped with --compress=N)."""
    inflater = zlib.decompressobj()
    newlines = 0
    tail = b""

    def inflate(chunk: bytes) -> None:
        nonlocal newlines, tail
        data = inflater.decompress(chunk)
        newlines += data.count(b"\n")
        tail = (tail + data)[-5:]

    _skip_chunks(reader, inflate)
    data = inflater.flush()
    newlines += data.count(b"\n")
    tail = (tail + data)[-5:]
    if tail != b"\\.\n\n\n":
        raise ArchiveError("a compressed data block does not end with COPY's terminator")
    return newlines - 3


def count_archive_file(path: Path, writer_done: threading.Event | None = None) -> Archive:
    """``count_archive`` of a file, following it while ``writer_done`` is not set."""
    done = writer_done or threading.Event()
    if writer_done is None:
        done.set()
    while not path.exists():
        if done.wait(0.005) and not path.exists():
            raise ArchiveError(f"{path} was never written")
    with open(path, "rb") as handle:
        return count_archive(GrowingFile(handle, done).read)
