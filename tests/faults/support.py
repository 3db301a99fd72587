"""Helpers for the fault-injection tests: databases of a chosen weight, the process
table, and what a crash may leave behind on disk."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from backupmand.drives.local import TEMP_PREFIX


def make_indexed_sqlite(path: Path, rows: int) -> Path:
    """A database whose ``PRAGMA integrity_check`` takes a while: many rows, two indexes.

    1M rows make a ~75 MB file whose check alone takes seconds on this kind of machine:
    a dump that is really slow, done by the real tool, without any test-only hook.
    """
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, key BLOB, value INTEGER)")
        connection.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO items (key, value) SELECT randomblob(16), random() FROM n", (rows,))
        connection.execute("CREATE INDEX items_key ON items (key)")
        connection.execute("CREATE INDEX items_value ON items (value)")
        connection.commit()
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    return path


def make_blob_sqlite(path: Path, megabytes: float) -> Path:
    """A database of incompressible blobs, about ``megabytes`` large."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
        count = max(1, int(megabytes * 16))
        connection.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO blobs (data) SELECT randomblob(65536) FROM n", (count,))
        connection.commit()
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    return path


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone meanwhile
        if state == "Z" or not raw:
            continue  # a zombie has already stopped; its parent reaps it
        cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        if text in cmdline:
            found.append((int(entry.name), cmdline))
    return found


def dump_processes(text: str) -> list[tuple[int, str]]:
    """Live sqlite3 processes working on anything under ``text``."""
    return [(pid, cmd) for pid, cmd in processes_mentioning(text)
            if Path(cmd.split(" ", 1)[0]).name == "sqlite3"]


def wait_until(predicate: Any, timeout: float = 30, interval: float = 0.02) -> None:
    """Poll another process's state, which no event announces."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def leftovers(tmp_folders: Iterable[Path], drive_folders: Iterable[Path]) -> list[Path]:
    """What an interrupted dump or upload may leave: .partial files, .work folders,
    and the local drive's temporary upload files."""
    found: list[Path] = []
    for folder in tmp_folders:
        if folder.is_dir():
            found += [p for p in folder.iterdir()
                      if p.name.endswith(".partial") or p.name.endswith(".work")]
    for folder in drive_folders:
        if folder.is_dir():
            found += [p for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)]
    return found


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def catalog_integrity(path: Path) -> str:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return "; ".join(str(row[0]) for row in connection.execute("PRAGMA integrity_check"))
    finally:
        connection.close()


def check_finished_backup(
    backup: dict[str, Any], drives: dict[str, Path], *, hash_files: bool = True
) -> None:
    """A finished backup is on every drive, byte for byte, and nothing is kept locally."""
    assert backup["Status"] == "finished", backup
    assert backup["DumpPath"] is None, backup
    files = {record["Drive"]: record for record in backup["DriveFiles"]}
    assert set(files) == set(drives), backup
    for label, folder in drives.items():
        record = files[label]
        assert record["Status"] == "finished", record
        stored = Path(record["Path"])
        assert stored.parent == folder, record
        assert stored.is_file(), f"{stored} is missing"
        assert stored.stat().st_size == backup["Size"] == record["Size"], record
        if hash_files:
            assert sha256(stored) == backup["Sha256"], f"{stored} differs from what was recorded"
