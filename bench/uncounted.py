"""backupmand's CLI with row counting switched off (bench only): the reference of figure 9.

    python bench/uncounted.py -c CONFIG run

The same process as ``python -m backupmand`` (it calls ``backupmand.cli.main``), with
three replacements made before the CLI starts, each taking away the counting and
nothing else the backup does:

- PostgreSQL, plain: ``_BackgroundCounter`` (which feeds every chunk of pg_dump's output
  to ``PlainDumpCounter`` in a thread of its own) becomes one that takes the chunks and
  counts nothing. The dump's trailer check, prologue and epilogue stay.
- PostgreSQL, custom: ``count_archive_file`` (which follows the archive while pg_dump
  writes it, reading every data block) becomes one that waits for pg_dump to finish
  and reads the header and the table of contents only (the versions the manifest
  needs), as the pipeline's own ``pg_restore --list`` check does anyway.
- MariaDB/MySQL: ``filtered`` (the dump through ``DumpStream`` in a worker thread) becomes
  a pass-through. DumpStream does more than count (the preamble, name rewrites, view
  order, packet checks: see ``backupmand/sources/mysql_dump_stream.py``), so this
  reference takes all of that away: what it shows is an upper bound of counting's cost.

The backup's manifest then has no row counts (``rows=0`` in ``dump.finished``); the
bench checks that it says so, so that a reference that still counted cannot pass
unnoticed.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from backupmand.sources import mysql, pg_archive, postgres


class _NoCounter:
    """Takes what ``_BackgroundCounter`` takes; counts nothing."""

    def __init__(self) -> None:
        self.tables: dict[str, int] = {}

    async def feed(self, chunk: bytes) -> None:
        return None

    async def finish(self) -> _NoCounter:
        return self

    def objects(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        return None


def _table_of_contents_only(path: Path, writer_done: threading.Event | None = None
                            ) -> pg_archive.Archive:
    if writer_done is not None:
        writer_done.wait()
    with open(path, "rb") as handle:
        archive, _ = pg_archive.read_toc(handle.read)
    return archive


async def _passed_through(stream: Any, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        yield chunk


def main() -> int:
    postgres._BackgroundCounter = _NoCounter  # type: ignore[assignment,misc]
    postgres.count_archive_file = _table_of_contents_only
    mysql.filtered = _passed_through  # type: ignore[assignment]
    from backupmand.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
