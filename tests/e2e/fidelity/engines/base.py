"""The engine protocol of the restore-fidelity suite (tests/e2e/fidelity).

One suite, many engines: every data-source engine (sqlite, postgres, mariadb) plugs
into the suite through one ``Engine`` subclass, listed in ``engines/__init__.py``.
The suite never speaks an engine's SQL itself; it asks the engine to

- build its *awkward* database: the features real applications use and dumps get
  wrong (``build``);
- describe it: a ``snapshot`` of everything a restore must bring back, equal for a
  faithful copy under any name, and the exact ``row_counts`` the dump facts and drills
  report;
- watch the rest of the server: ``databases`` (every name, to see leftovers) and
  ``fingerprint_others`` (a digest of every database the suite does not own, to prove
  no restore or drill touched them);
- change a database visibly (``scribble``), drop one (``drop``);
- restore a stored backup file by hand with the engine's stock tools
  (``restore_by_hand``), as the docs tell an operator to;
- spoil a raw dump so that it loads part-way and then fails (``spoil``);
- give the ``data_sources`` entry that backs a database up (``data_source``).

Names: ``database_name(stem)`` turns a short stem into the engine's name for a
database — what ``db_name`` / ``db_path`` in a data source and ``restore --db-name``
take (a file path for SQLite; a name that needs quoting for the server engines). Every
other method takes such a name.

Engines are synchronous (plain subprocess or client calls): the suite calls them
between the steps it awaits, never while a restore or drill of its own is running,
except ``databases`` (quick, read-only).
"""

from __future__ import annotations

import abc
import hashlib
import subprocess
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any, ClassVar


class Engine(abc.ABC):
    """One engine's side of the restore-fidelity suite."""

    #: The suite's parameter id, e.g. ``postgres``.
    name: ClassVar[str]
    #: The session fixture that starts this engine's server (tests/servers), or None.
    server_fixture: ClassVar[str | None] = None

    def __init__(self, server: Any, folder: Path) -> None:
        """``server`` is the value of ``server_fixture`` (None without one); ``folder``
        is private to this engine for the whole module (files, scratch)."""
        self.server = server
        self.folder = folder

    # ------------------------------------------------------------------ names and config

    @abc.abstractmethod
    def database_name(self, stem: str) -> str:
        """This engine's name for a database made from ``stem`` (letters, digits, ``_``).

        Engines make the names awkward where they can (mixed case, spaces, quotes,
        non-ASCII), so that every command that names a database is tested with one that
        needs quoting. Distinct stems give names none of which starts with another.
        """

    @abc.abstractmethod
    def data_source(self, database: str, *, label: str, tmp_folder: Path) -> dict[str, Any]:
        """The ``data_sources`` entry that backs up ``database`` (and restores into it)."""

    # ------------------------------------------------------------------ the awkward database

    @abc.abstractmethod
    def build(self, database: str) -> None:
        """Create ``database`` (absent before) holding this engine's awkward database."""

    @abc.abstractmethod
    def snapshot(self, database: str) -> dict[str, Any]:
        """Everything a restore must bring back, as plain data compared with ``==``.

        Schema and definitions, every table's contents (a checksum over its ordered
        rows), sequence positions, database-level properties, routines, triggers,
        events, large objects, ... Independent of the database's own name: where a
        definition names the database itself, the snapshot shows ``{database}``, so a
        copy that still points at its original differs from a faithful one.
        """

    @abc.abstractmethod
    def row_counts(self, database: str) -> dict[str, int]:
        """``SELECT count(*)`` of every table, keyed as ``DumpFacts.tables`` keys them."""

    @abc.abstractmethod
    def scribble(self, database: str) -> None:
        """Change ``database`` so that its snapshot differs (and it still works)."""

    # ------------------------------------------------------------------ the server around it

    @abc.abstractmethod
    def databases(self) -> set[str]:
        """Every database this engine can see (SQLite: every file in its folder)."""

    @abc.abstractmethod
    def fingerprint_others(self, ours: Collection[str]) -> dict[str, str]:
        """A digest per database whose name does not start with any of ``ours``.

        Covers what a stray restore could change: contents, definitions, properties.
        """

    @abc.abstractmethod
    def drop(self, database: str) -> None:
        """Remove ``database`` if it exists."""

    # ------------------------------------------------------------------ dumps by hand

    @abc.abstractmethod
    def restore_by_hand(self, stored: Path, database: str, *, globals_file: Path | None,
                        workdir: Path) -> None:
        """Load the stored backup file ``stored`` (compressed with zstd, as on a drive)
        into a new ``database`` with stock tools only, the way the docs tell an operator
        to; ``globals_file`` is the stored companion file when the backup has one.
        ``workdir`` is an empty folder for scratch files. Raise AssertionError on failure."""

    @abc.abstractmethod
    def spoil(self, raw: bytes) -> bytes:
        """A copy of the raw (uncompressed) dump ``raw`` that loads part-way, then fails."""


# --------------------------------------------------------------------------- shared helpers


def digest(items: Iterable[object]) -> str:
    """SHA-256 over the ``repr`` of each item, in order (types included: 1 != '1')."""
    hasher = hashlib.sha256()
    for item in items:
        hasher.update(repr(item).encode("utf-8", "surrogatepass"))
        hasher.update(b"\x00")
    return hasher.hexdigest()


def decompress(stored: Path) -> bytes:
    """The raw dump inside a stored ``.zst`` backup file, with the stock zstd tool."""
    result = subprocess.run(["zstd", "-q", "-dc", str(stored)], capture_output=True,
                            timeout=300, check=False)
    if result.returncode != 0:
        raise AssertionError(f"zstd -dc {stored} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout


def run_shell(script: str, *args: str, what: str, env: dict[str, str] | None = None,
              timeout: float = 600) -> str:
    """Run a by-hand restore pipeline in bash (``set -euo pipefail``), ``args`` as
    ``$1``, ``$2``, ... (never pasted into the script); its stdout."""
    result = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script, "bash", *args],
                            capture_output=True, text=True, timeout=timeout, env=env,
                            check=False)
    if result.returncode != 0:
        raise AssertionError(f"{what} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout
