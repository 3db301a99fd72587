"""What counting rows in a MariaDB dump costs: the source's dump with and without DumpStream.

    .venv/bin/python bench/mysql_counting.py [--rows 1200000] [--rounds 3]

Starts a throwaway MariaDB 10.11 (as the test fixtures do: mariadb-install-db and
mariadbd --no-defaults in a folder under /tmp, on a free loopback port), fills one
table with string-heavy rows (quotes, backslashes, ``),(``, emoji: about 340 MB of dump
for 1.2 million rows), then times, in alternating rounds, the work a backup does with
the dump: mariadb-dump's output read as the source reads it, compressed (zstd level 3)
and hashed (SHA-256) in a worker thread —

- ``plain``: the tool's output as it comes;
- ``counted``: the same through ``MysqlDatabase.dump`` (DumpStream in a thread:
  row and object counts, rewrites, packet checks).

It prints each round's wall time, backupmand's CPU time, and the CPU time spent
inside ``DumpStream.feed`` (thread time: the one figure the machine's other load
hardly moves), and the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from servers import MARIADB_FILL, Mariadb

from backupmand import process  # (imports after the sys.path line: run as a script)
from backupmand.config import MysqlSource
from backupmand.sources import mysql_dump_stream
from backupmand.sources.base import DumpFacts
from backupmand.sources.mysql import MysqlDatabase

DATABASE = "bench counting"


async def consume(chunks: AsyncIterator[bytes]) -> int:
    """Compress and hash in one worker thread, as the pipeline does; the compressed size."""
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    digest = hashlib.sha256()
    size = 0

    def work(chunk: bytes) -> int:
        out = compressor.compress(chunk)
        digest.update(out)
        return len(out)

    async for chunk in chunks:
        size += await asyncio.to_thread(work, chunk)
    return size + len(compressor.flush())


async def plain(source: MysqlDatabase, workdir: Path) -> AsyncIterator[bytes]:
    """mariadb-dump with the source's own arguments, its output as it comes."""
    async with source.session(workdir) as opened:
        command = opened.command(
            "mariadb-dump", "--single-transaction", "--quick", "--routines", "--triggers",
            "--events", "--hex-blob", "--default-character-set=utf8mb4", "--no-tablespaces",
            "--skip-add-locks", "--max-allowed-packet=1073741824", "--", DATABASE)
        async for chunk in process.stream_output(command, timeout=3600):
            yield chunk


async def rounds(source: MysqlDatabase, workdir: Path, count: int) -> None:
    spent = [0.0]
    original = mysql_dump_stream.DumpStream.feed

    def timed_feed(self: mysql_dump_stream.DumpStream, chunk: bytes) -> list[bytes]:
        started = time.thread_time()
        try:
            return original(self, chunk)
        finally:
            spent[0] += time.thread_time() - started

    mysql_dump_stream.DumpStream.feed = timed_feed  # type: ignore[method-assign]
    shares: list[float] = []
    walls: list[float] = []
    for number in range(count):
        results = {}
        order = ("plain", "counted") if number % 2 == 0 else ("counted", "plain")
        for variant in order:
            spent[0] = 0.0
            started, cpu = time.perf_counter(), time.process_time()
            if variant == "plain":
                size = await consume(plain(source, workdir))
            else:
                facts = DumpFacts()
                size = await consume(source.dump(workdir, facts))
            results[variant] = (time.perf_counter() - started, time.process_time() - cpu,
                                spent[0], size)
        plain_wall, plain_cpu, _, plain_size = results["plain"]
        counted_wall, counted_cpu, feed, _ = results["counted"]
        extra = counted_cpu - plain_cpu
        shares.append(extra / plain_wall)
        walls.append(counted_wall / plain_wall - 1)
        print(f"round {number + 1}: wall plain {plain_wall:.2f} s, counted {counted_wall:.2f} s "
              f"({counted_wall / plain_wall - 1:+.1%}); backupmand's CPU plain {plain_cpu:.2f} s, "
              f"counted {counted_cpu:.2f} s (+{extra:.2f} s = {extra / plain_wall:.1%} of the "
              f"plain dump's wall time), of which DumpStream.feed {feed:.2f} s; "
              f"{plain_size / 1e6:.0f} MB compressed", flush=True)
    print(f"median extra CPU of counting: {statistics.median(shares):.1%} of a dump's wall "
          f"time; median wall difference {statistics.median(walls):+.1%} (noisy on a shared "
          "machine)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = Mariadb(Path(tempfile.mkdtemp(prefix="bench-my-", dir="/tmp")))
    server.start()
    try:
        server.sql(f"CREATE DATABASE `{DATABASE}` CHARACTER SET utf8mb4;\nUSE `{DATABASE}`;\n"
                   + MARIADB_FILL.format(rows=args.rows))
        size = subprocess.run(
            ["mariadb-dump", "--no-defaults", f"--socket={server.socket}", "-u", server.admin,
             "--single-transaction", "--hex-blob", DATABASE], capture_output=True,
            check=True).stdout
        print(f"dump of {len(size) / 1e6:.0f} MB ({args.rows} rows)", flush=True)
        del size
        source = MysqlDatabase(MysqlSource(provider="mariadb", label="bench", db_name=DATABASE,
                                           host=server.host, port=server.port, user=server.user,
                                           password=server.password))
        with tempfile.TemporaryDirectory() as folder:
            asyncio.run(rounds(source, Path(folder), args.rounds))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
