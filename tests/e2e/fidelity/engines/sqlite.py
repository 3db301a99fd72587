"""SQLite in the restore-fidelity suite: database files in the engine's folder."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from .base import Engine, digest, run_shell

#: Files that come and go with WAL-mode connections: not databases of their own.
_TRANSIENT_SUFFIXES = ("-wal", "-shm")

AWKWARD_SCHEMA = """
CREATE TABLE "Mixed Case ü" (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    name     TEXT NOT NULL COLLATE NOCASE,
    note     TEXT,
    amount   REAL,
    loose    INTEGER,           -- dynamic typing: holds text and blobs too
    created  TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', '2025-01-01'))
);
CREATE TABLE "blobs 🙂" (id INTEGER PRIMARY KEY, payload BLOB, kind TEXT);
CREATE TABLE pairs (a TEXT, b INTEGER, v BLOB, PRIMARY KEY (a, b)) WITHOUT ROWID;
CREATE TABLE strict_values (id INTEGER PRIMARY KEY, anything ANY, label TEXT NOT NULL) STRICT;
CREATE TABLE generated (
    id      INTEGER PRIMARY KEY,
    price   REAL NOT NULL,
    qty     INTEGER NOT NULL,
    total   REAL GENERATED ALWAYS AS (price * qty) STORED,
    doubled REAL GENERATED ALWAYS AS (total * 2) VIRTUAL
);
CREATE TABLE parents (id INTEGER PRIMARY KEY, name TEXT UNIQUE);
CREATE TABLE children (
    id        INTEGER PRIMARY KEY,
    parent_id INTEGER NOT NULL REFERENCES parents (id) ON DELETE CASCADE
                       DEFERRABLE INITIALLY DEFERRED,
    name      TEXT CHECK (length(name) < 100)
);
CREATE TABLE audit (id INTEGER PRIMARY KEY, what TEXT NOT NULL, at INTEGER);
CREATE TABLE many (id INTEGER PRIMARY KEY, pad TEXT);
CREATE INDEX "idx mixed name" ON "Mixed Case ü" (name);
CREATE INDEX idx_partial ON children (parent_id) WHERE name IS NOT NULL;
CREATE INDEX idx_expression ON "Mixed Case ü" (lower(note), amount DESC);
CREATE UNIQUE INDEX idx_unique_pad ON many (pad);
CREATE VIEW parent_view AS SELECT p.id, p.name, count(c.id) AS children
    FROM parents p LEFT JOIN children c ON c.parent_id = p.id GROUP BY p.id;
CREATE VIEW "view over view" AS SELECT name, children * 10 AS weight FROM parent_view
    WHERE children > 0;
CREATE TRIGGER children_audit AFTER INSERT ON children
    BEGIN INSERT INTO audit (what, at) VALUES ('child ' || NEW.name, 1); END;
CREATE TRIGGER parent_view_insert INSTEAD OF INSERT ON parent_view
    BEGIN INSERT INTO parents (name) VALUES (NEW.name); END;
CREATE VIRTUAL TABLE documents USING fts5 (title, body);
"""


class SqliteEngine(Engine):
    name = "sqlite"

    def __init__(self, server: Any, folder: Path) -> None:
        super().__init__(server, folder)
        self.databases_folder = folder / "databases"
        self.databases_folder.mkdir(parents=True, exist_ok=True)
        # Another database beside the ones under test, in rollback-journal mode so that
        # reading it never changes a byte: the fingerprint proves nothing wrote to it.
        neighbour = self.databases_folder / "neighbour.sqlite"
        with contextlib.closing(sqlite3.connect(neighbour)) as connection:
            connection.execute("CREATE TABLE kept (id INTEGER PRIMARY KEY, value TEXT)")
            connection.executemany("INSERT INTO kept (value) VALUES (?)",
                                   [(f"value {i}",) for i in range(100)])
            connection.commit()

    # ------------------------------------------------------------------ names and config

    def database_name(self, stem: str) -> str:
        return str(self.databases_folder / f"{stem} Ü 'q'.sqlite")

    def data_source(self, database: str, *, label: str, tmp_folder: Path) -> dict[str, Any]:
        return {"provider": "sqlite", "label": label, "db_path": database,
                "tmp_folder": str(tmp_folder)}

    # ------------------------------------------------------------------ the awkward database

    def build(self, database: str) -> None:
        path = Path(database)
        assert not path.exists(), path
        with _connect(path) as connection:
            connection.execute("PRAGMA page_size = 8192")  # not the default 4096
            connection.execute("PRAGMA user_version = 42")
            connection.execute("PRAGMA application_id = 1111638593")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.executescript(AWKWARD_SCHEMA)
            connection.executemany(
                'INSERT INTO "Mixed Case ü" (name, note, amount, loose) VALUES (?, ?, ?, ?)',
                [
                    ("Zoë 🙂", "nul\x00inside", 1e-300, 7),
                    ("quote's \"double\"", "line1\nline2\ttab \\ back", -0.0, "text in int"),
                    ("BLOB in int", None, 12345678901234.5, b"\x00\xff"),
                    ("nulls", None, None, None),
                ] + [(f"bulk {i}", f"note {i % 13}", i / 7, i) for i in range(2000)],
            )
            connection.execute("DELETE FROM \"Mixed Case ü\" WHERE id % 11 = 0")
            connection.executemany('INSERT INTO "blobs 🙂" (payload, kind) VALUES (?, ?)', [
                (bytes(range(256)) * 12_000, "3 MB of every byte"),
                (b"", "empty"),
                (None, "null"),
                (b"\x00" * 10, "zeros"),
            ])
            connection.executemany("INSERT INTO pairs VALUES (?, ?, ?)",
                                   [(f"k{i % 10}", i, bytes([i % 256]) * 3) for i in range(500)])
            connection.executemany(
                "INSERT INTO strict_values (anything, label) VALUES (?, ?)",
                [(1, "int"), (1.5, "real"), ("1", "text"), (b"1", "blob"), (None, "null")])
            connection.executemany("INSERT INTO generated (price, qty) VALUES (?, ?)",
                                   [(i * 0.25, i) for i in range(1, 301)])
            connection.executemany("INSERT INTO parents (name) VALUES (?)",
                                   [(f"parent {i}",) for i in range(50)])
            connection.executemany("INSERT INTO children (parent_id, name) VALUES (?, ?)",
                                   [(1 + i % 40, f"child {i}") for i in range(400)])
            connection.execute("INSERT INTO parent_view (name) VALUES ('through the view')")
            connection.executemany("INSERT INTO many (pad) VALUES (?)",
                                   [(f"{i:08d}" * 8,) for i in range(20_000)])
            connection.executemany("INSERT INTO documents (title, body) VALUES (?, ?)", [
                (f"title {i}", f"the quick brown fox {i} jumps over the lazy dog")
                for i in range(300)])
            connection.execute("ANALYZE")  # sqlite_stat1: the planner's statistics
            connection.commit()

    def snapshot(self, database: str) -> dict[str, Any]:
        path = Path(database)
        state: dict[str, Any] = {}
        with _connect(path, readonly=True) as connection:
            for pragma in ("user_version", "application_id", "page_size", "encoding",
                           "journal_mode", "auto_vacuum", "integrity_check"):
                state[pragma] = connection.execute(f"PRAGMA {pragma}").fetchall()
            schema = connection.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
            ).fetchall()
            state["schema"] = schema
            for kind, name, _table, sql in schema:
                if kind != "table" or (sql or "").upper().startswith("CREATE VIRTUAL"):
                    continue
                rows = connection.execute(f"SELECT * FROM {_quote(name)}").fetchall()
                state[f"rows {name}"] = (len(rows), digest(sorted(repr(row) for row in rows)))
            # The full-text index answers as it did (its shadow tables are compared above).
            state["fts"] = connection.execute(
                "SELECT rowid FROM documents WHERE documents MATCH 'fox AND 17' ORDER BY rowid"
            ).fetchall()
            state["view over view"] = connection.execute(
                'SELECT * FROM "view over view" ORDER BY name').fetchall()
        assert state["integrity_check"] == [("ok",)], state["integrity_check"]
        return state

    def row_counts(self, database: str) -> dict[str, int]:
        with _connect(Path(database), readonly=True) as connection:
            names = [name for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite!_%'"
                " ESCAPE '!' AND upper(sql) NOT LIKE 'CREATE VIRTUAL%'")]
            return {name: connection.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()[0]
                    for name in names}

    def scribble(self, database: str) -> None:
        with _connect(Path(database)) as connection:
            connection.execute("INSERT INTO audit (what, at) VALUES ('scribbled', 2)")
            connection.execute("CREATE TABLE scribbled (x)")
            connection.commit()

    # ------------------------------------------------------------------ the folder around it

    def databases(self) -> set[str]:
        return {str(path) for path in self.databases_folder.iterdir()
                if not path.name.endswith(_TRANSIENT_SUFFIXES)}

    def fingerprint_others(self, ours: Collection[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for path in sorted(self.databases_folder.iterdir()):
            if any(str(path).startswith(name) for name in ours):
                continue
            found[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
        return found

    def drop(self, database: str) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(database + suffix).unlink(missing_ok=True)

    # ------------------------------------------------------------------ by hand

    def restore_by_hand(self, stored: Path, database: str, *, globals_file: Path | None,
                        workdir: Path) -> None:
        assert globals_file is None, "SQLite backups have no globals"
        # The backup is the database file itself: decompress it into place, then check it.
        assert not Path(database).exists(), database
        answer = run_shell('zstd -q -dc "$1" > "$2"\nsqlite3 "$2" "PRAGMA integrity_check;"',
                           str(stored), database, what="zstd -dc > FILE; sqlite3 integrity_check")
        assert answer.strip() == "ok", answer

    def spoil(self, raw: bytes) -> bytes:
        # Zero a few pages in the middle of the file: SQLite's integrity check finds
        # invalid b-tree pages, as it would on a file damaged in storage.
        page_size = int.from_bytes(raw[16:18], "big") or 65536
        pages = len(raw) // page_size
        spoiled = bytearray(raw)
        for page in range(pages // 2, min(pages // 2 + 4, pages)):
            spoiled[page * page_size:(page + 1) * page_size] = bytes(page_size)
        return bytes(spoiled)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@contextlib.contextmanager
def _connect(path: Path, *, readonly: bool = False) -> Iterator[sqlite3.Connection]:
    uri = path.as_uri() + ("?mode=ro" if readonly else "")
    connection = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None
                                 if readonly else "DEFERRED")
    try:
        yield connection
    finally:
        connection.close()
