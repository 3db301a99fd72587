"""backupmand's benchmark: builds its own data, measures, writes bench/RESULTS.md.

    python bench/run.py [--size-gib 1] [--small-mib 100] [--runs 3] [--before REV]
                        [--smoke] [--output PATH]

Starts a throwaway PostgreSQL 15 cluster and moto's S3 server on loopback ports,
fills two databases with generate_series rows (plain dumps of at least --size-gib GiB
and --small-mib MiB), and measures the real `backupmand` CLI and daemon as separate
processes (see bench/README.md and the Method section of RESULTS.md for what each
figure means). --before REV also measures the package as it was at git revision REV
(exported with `git archive`), interleaved with the current tree, for before/after
figures. --smoke uses tiny sizes and one run of everything: a check that the
benchmark works, not a measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import http.client
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import costs
import memory_breakdown
import peers
import streaming
from links import FakeDrive, Throttle
from measure import (
    Event,
    Summary,
    Timed,
    cpu_seconds,
    first,
    parse_log,
    percentile,
    run_phases,
    run_timed,
)
from report import GIB, MB, MIB, Report, Row, log, ratio_summary, size_label, table
from servers import (
    MOTO_ACCESS_KEY,
    MOTO_SECRET_KEY,
    Mariadb,
    MotoS3,
    Postgres,
    pg_dump_args,
    scratch,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

API_KEY = "bench-api-key-0123456789"


# ---------------------------------------------------------------------------- the bench


@dataclasses.dataclass
class Options:
    big_bytes: int
    small_bytes: int
    runs: int
    quick_runs: int  # for figures that cost milliseconds: more samples
    catalog_backups: int
    smoke: bool
    output: Path
    before: str | None
    keep: bool
    link_rate: float  # bytes/s of each simulated link to a remote service
    part_link_rate: float  # bytes/s per connection of 6c's link
    part_upload_bytes: int  # the file of 6c
    mariadb_bytes: int  # the MariaDB dump of figure 9


class Bench:
    def __init__(self, options: Options, work: Path) -> None:
        self.options = options
        self.work = work
        self.report = Report()
        self.pg = Postgres(work / "pg")
        self.s3 = MotoS3(work / "moto.log")
        self.bucket = ""
        self.trees: dict[str, Path] = {"after": ROOT}
        self.dump_sizes: dict[str, int] = {}
        self.processes: list[subprocess.Popen[bytes]] = []
        #: The simulated links and the Drive stand-in, started when a figure needs them.
        self.s3_link: Throttle | None = None
        self.gdrive: FakeDrive | None = None
        self.gdrive_link: Throttle | None = None
        self.mariadb: Mariadb | None = None
        self.mariadb_rows = 0
        self.helpers: list[Throttle | FakeDrive] = []

    # ------------------------------------------------------------------ set-up

    def setup(self) -> None:
        if self.options.before:
            before = self.work / "before"
            before.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", self.options.before, "backupmand"],
                capture_output=True, check=True).stdout
            archive_path = self.work / "before.tar"
            archive_path.write_bytes(archive)
            with tarfile.open(archive_path) as tar:
                tar.extractall(before, filter="data")
            self.trees["before"] = before
        log("starting PostgreSQL")
        self.pg.start()
        self.pg.psql('CREATE DATABASE "tiny";')
        self.pg.psql("CREATE TABLE t AS SELECT i FROM generate_series(1, 100) AS i;", "tiny")
        log("starting moto's S3 server")
        self.s3.start()
        self.bucket = self.s3.create_bucket()

    def database(self, name: str) -> int:
        """The plain dump size of database ``big`` or ``small``, made at first use."""
        if name not in self.dump_sizes:
            target = self.options.big_bytes if name == "big" else self.options.small_bytes
            log(f"generating data: database {name}, a plain dump of >= {target:,} bytes")
            self.dump_sizes[name] = self.pg.make_database(name, target, log)
        return self.dump_sizes[name]

    def remote(self) -> tuple[Throttle, FakeDrive, Throttle]:
        """The S3 bucket and the Google Drive stand-in, each behind a link of its own."""
        if self.s3_link is None or self.gdrive is None or self.gdrive_link is None:
            rate = self.options.link_rate
            log(f"starting the simulated links ({rate / 1e6:g} MB/s each) and the Drive stand-in")
            self.s3_link = Throttle(("127.0.0.1", self.s3.port), self.work / "s3-link.log",
                                    rate=rate).start()
            self.helpers.append(self.s3_link)
            self.gdrive = FakeDrive(self.work / "gdrive", self.work / "gdrive.log").start()
            self.helpers.append(self.gdrive)
            self.gdrive_link = Throttle(("127.0.0.1", self.gdrive.port),
                                        self.work / "gdrive-link.log", rate=rate).start()
            self.helpers.append(self.gdrive_link)
            self.gdrive.behind(self.gdrive_link)
        return self.s3_link, self.gdrive, self.gdrive_link

    def clear_remote(self) -> None:
        """Nothing kept between runs: moto and the Drive stand-in hold objects in RAM."""
        self.s3.empty_bucket(self.bucket)
        if self.gdrive is not None:
            self.gdrive.clear()

    def servers_cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each server on the machine (not backupmand's)."""
        used = {"PostgreSQL": cpu_seconds(self.pg.server_pid(), children=True)}
        if self.s3.process is not None:
            used["moto (S3)"] = cpu_seconds(self.s3.process.pid)
        if self.s3_link is not None:
            used["S3 link"] = self.s3_link.cpu()
        if self.gdrive is not None and self.gdrive_link is not None:
            used["Drive stand-in"] = self.gdrive.cpu()
            used["Drive link"] = self.gdrive_link.cpu()
        return used

    def teardown(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for helper in reversed(self.helpers):
            helper.stop()
        if self.mariadb is not None:
            self.mariadb.stop()
        self.s3.stop()
        self.pg.stop()

    # ------------------------------------------------------------------ helpers

    def env(self, tree: str = "after") -> dict[str, str]:
        """A backupmand process's environment: its own tree first on the path, no libpq
        or AWS settings from the caller, no systemd variables, offline botocore."""
        env = {k: v for k, v in MotoS3.offline_env().items()
               if not k.startswith(("PG", "MALLOC_", "BENCH_")) and k not in (
                   "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
                   "BACKUPMAND_CONFIG", "BACKUPMAND_LOG_LEVEL")}
        env["PYTHONPATH"] = str(self.trees[tree])
        return env

    @staticmethod
    def backupmand(*args: str, launcher: str | None = None) -> list[str]:
        """The CLI as a new process (the tree comes from PYTHONPATH and the working folder);
        ``launcher``: a bench script that calls the CLI (uncounted.py, traced.py)."""
        if launcher is not None:
            return [sys.executable, str(Path(__file__).parent / launcher), *args]
        return [sys.executable, "-m", "backupmand", *args]

    def source(self, db: str, folder: Path) -> dict[str, Any]:
        return {"provider": "postgres", "label": db, "host": self.pg.host, "port": self.pg.port,
                "db_name": db, "user": self.pg.user, "password": self.pg.password,
                "tmp_folder": str(folder / "tmp")}

    def local_drive(self, label: str, folder: Path) -> dict[str, Any]:
        return {"provider": "local", "label": label, "folder": str(folder)}

    def s3_drive(self, endpoint: str | None = None, **keys: Any) -> dict[str, Any]:
        """The bucket on moto (through ``endpoint``: a link in front of it, when given)."""
        return {"provider": "s3", "label": "s3", "bucket": self.bucket, "region": "us-east-1",
                "endpoint": endpoint or self.s3.endpoint, "force_path_style": True,
                "access_key": MOTO_ACCESS_KEY, "secret_key": MOTO_SECRET_KEY, **keys}

    def config(self, folder: Path, *, db: str, compression: str = "zstd",
               drives: Sequence[dict[str, Any]] | None = None, port: int = 0,
               uploads: dict[str, Any] | None = None, source: dict[str, Any] | None = None,
               **top: Any) -> Path:
        """A fresh folder with a config (JSON is YAML) and nothing else. ``source``:
        keys for the source on top of :meth:`source`'s; ``top``: more top-level keys."""
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        document: dict[str, Any] = {
            "database": {"provider": "sqlite", "db_path": str(folder / "state" / "catalog.db")},
            "data_sources": [{**self.source(db, folder), **(source or {})}],
            "drives": list(drives) if drives is not None else
            [self.local_drive("disk", folder / "drive")],
            "compression": compression,
            # One attempt: a failure must show, not hide in a retry.
            "uploads": {"attempts": 1, **(uploads or {})},
            "retention": {"enabled": False},
            "http": {"listen": "127.0.0.1", "port": port, "api_keys": [API_KEY],
                     "app_url": f"http://127.0.0.1:{port}",
                     "backup_job": {"enabled": False, "cron": "0 3 * * *"}},
            **top,
        }
        path = folder / "config.yml"
        path.write_text(json.dumps(document, indent=2))
        return path

    def run_backupmand(self, tree: str, folder: Path, *, launcher: str | None = None,
                       env: dict[str, str] | None = None, **config: Any
                       ) -> tuple[Timed, list[Event]]:
        """`backupmand run` in a fresh folder: wall time, peak RSS, its log events."""
        path = self.config(folder, **config)
        os.sync()  # earlier runs' dirty pages are not this run's work
        timed = run_timed(self.backupmand("-c", str(path), "run", launcher=launcher),
                          env={**self.env(tree), **(env or {})}, cwd=self.trees[tree],
                          poll_rss=True, check=False)
        events = parse_log(timed.stderr)
        finished = [event for event in events if event.name == "backup.finished"]
        if timed.returncode != 0 or not finished or "error" in finished[0].fields:
            raise RuntimeError(f"backup failed ({timed.returncode}): {timed.stderr[-3000:]}")
        return timed, events

    def run_shell(self, pipeline: str, folder: Path) -> float:
        """The shell pipeline (`... > tmp/f && cp tmp/f drive/`), timed like backupmand."""
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "tmp").mkdir(parents=True)
        (folder / "drive").mkdir()
        os.sync()
        timed = run_timed(["bash", "-c", f"set -euo pipefail; {pipeline}"],
                          env=self.pg.client_env(), cwd=folder)
        shutil.rmtree(folder, ignore_errors=True)
        return timed.seconds

    @staticmethod
    def rounds(variants: Sequence[str], runs: int) -> Iterator[tuple[int, list[str]]]:
        """Each round runs every variant once, the order rotated from round to round."""
        for number in range(runs):
            shift = number % len(variants)
            yield number, [*variants[shift:], *variants[:shift]]

    # ------------------------------------------------------------------ 1. wall time

    def wall_time(self) -> None:
        log("1. wall time of `backupmand run` against the shell pipelines")
        self.database("big")
        dump = shlex.join(["pg_dump", *pg_dump_args("big")])
        shells = {
            "zstd -3 -T0": f"{dump} | zstd -q -3 -T0 > tmp/f.sql.zst && cp tmp/f.sql.zst drive/",
            "gzip -6": f"{dump} | gzip -6 > tmp/f.sql.gz && cp tmp/f.sql.gz drive/",
            "pigz -6": f"{dump} | pigz -6 > tmp/f.sql.gz && cp tmp/f.sql.gz drive/",
            "none": f"{dump} > tmp/f.sql && cp tmp/f.sql drive/",
            # The same work as backupmand: the stream hashed, the copy hashed and fsynced.
            SAME_WORK["zstd"]: f"{dump} | zstd -q -3 -T0 | tee tmp/f.sql.zst | sha256sum "
                               "> tmp/sum && cp tmp/f.sql.zst drive/ && sha256sum "
                               "drive/f.sql.zst > /dev/null && sync drive/f.sql.zst",
            SAME_WORK["none"]: f"{dump} | tee tmp/f.sql | sha256sum > tmp/sum && cp tmp/f.sql "
                               "drive/ && sha256sum drive/f.sql > /dev/null && sync drive/f.sql",
        }
        compressions = ("zstd", "gzip", "none")
        variants = [f"{tree}:{c}" for c in compressions for tree in self.trees]
        variants += [f"shell:{name}" for name in shells]
        times: dict[str, list[float]] = {v: [] for v in variants}
        rss: dict[str, list[float]] = {v: [] for v in variants}
        phases: dict[str, list[tuple[float, ...]]] = {v: [] for v in variants}
        for number, order in self.rounds(variants, self.options.runs):
            for variant in order:
                kind, _, name = variant.partition(":")
                folder = self.work / "wall" / variant.replace(":", "-").replace(" ", "")
                if kind == "shell":
                    seconds = self.run_shell(shells[name], folder)
                else:
                    timed, events = self.run_backupmand(kind, folder, db="big", compression=name)
                    seconds = timed.seconds
                    shutil.rmtree(folder, ignore_errors=True)
                    assert timed.peak_rss_kib is not None
                    rss[variant].append(timed.peak_rss_kib * 1024 / MB)
                    phases[variant].append(run_phases(timed, events))
                times[variant].append(seconds)
                log(f"  round {number + 1}: {variant} {seconds:.2f} s")
        pairs = [("1a", "zstd", "zstd -3 -T0", 1.05), ("1b", "gzip", "gzip -6", 1.0),
                 ("1c", "gzip", "pigz -6", 1.1), ("1d", "none", "none", 1.1)]
        for key, compression, shell, target in pairs:
            summary = ratio_summary(times[f"after:{compression}"], times[f"shell:{shell}"])
            self.report.row(Row(
                key, f"`backupmand run` {compression} / `pg_dump | {shell}`"
                if shell != "none" else "`backupmand run` none / `pg_dump > f`",
                summary, "{:.3f}", "", f"≤ {target}", summary.median <= target))
        references = [(f"{key}*", compression, SAME_WORK[compression])
                      for key, compression in (("1a", "zstd"), ("1d", "none"))]
        for key, compression, shell in references:
            self.report.row(Row(
                key, f"`backupmand run` {compression} / `{shell}` (the same work)",
                ratio_summary(times[f"after:{compression}"], times[f"shell:{shell}"]),
                "{:.3f}", "", "reference", None))
        size = self.dump_sizes["big"]
        rows = [[f"`{v.split(':', 1)[1]}`" if v.startswith("shell") else
                 f"backupmand {v.split(':', 1)[1]}" + (" (before)" if v.startswith("before") else ""),
                 Summary(tuple(times[v])).text("{:.2f}", " s"),
                 Summary(tuple(rss[v])).text("{:.0f}", " MB") if rss[v] else "",
                 " ".join(f"{t:.2f}" for t in times[v])] for v in variants]
        self.report.section(
            "1. Wall time: `backupmand run` against the shell pipeline",
            f"One PostgreSQL source, plain dump of {size:,} bytes (`pg_dump | wc -c`), one "
            "local drive; the shell pipelines end with the file copied to a drive folder "
            "on the same file system. Every round runs every variant once, in an order "
            "rotated from round to round; a ratio is taken within a round.",
            "",
            *table(["variant", "wall min / median / max", "peak RSS (backupmand)",
                    "each round"], rows),
            "",
            *table(["ratio", "each round"], [
                [f"{key} {c} / {s}", " ".join(
                    f"{a / b:.3f}" for a, b in zip(times[f'after:{c}'], times[f'shell:{s}'],
                                                   strict=True))]
                for key, c, s in [(k, c, s) for k, c, s, _ in pairs] + references]),
        )
        self.report.section(
            "1. Where backupmand's time goes",
            "From its log lines (median of the rounds, seconds): *start-up* is process start "
            "to `backup.started` (interpreter, imports, config, catalog, recovery); *dump* "
            "is `dump.started` to `dump.finished` (pg_dump, compression, SHA-256, write); "
            "*upload* is `dump.finished` to the last `upload.finished` (the local "
            "drive's verified copy and its fsync); *finish* is the rest (catalog, removing "
            "the local dump, exit).",
            "",
            *table(["variant", "start-up", "dump", "upload", "finish", "total"],
                   [[f"backupmand {v.split(':', 1)[1]}" + (" (before)" if v.startswith("before")
                                                           else "")]
                    + [f"{statistics.median(p[i] for p in phases[v]):.2f}" for i in range(5)]
                    for v in variants if phases[v]]),
        )
        if "before" in self.trees:
            references = (("zstd", "zstd -3 -T0"), ("gzip", "gzip -6"), ("gzip", "pigz -6"),
                          ("none", "none"))
            self.report.section("1. Before → after", *table(
                ["compression", "median wall before → after", "median ratio before → after",
                 "against", "peak RSS before → after"],
                [[c, f"{statistics.median(times[f'before:{c}']):.2f} → "
                     f"{statistics.median(times[f'after:{c}']):.2f} s",
                  f"{ratio_summary(times[f'before:{c}'], times[f'shell:{s}']).median:.3f} → "
                  f"{ratio_summary(times[f'after:{c}'], times[f'shell:{s}']).median:.3f}",
                  f"`{s}`",
                  f"{statistics.median(rss[f'before:{c}']):.0f} → "
                  f"{statistics.median(rss[f'after:{c}']):.0f} MB"]
                 for c, s in references]))

    # ------------------------------------------------------------------ 2. memory

    def memory(self) -> None:
        log("2. peak RSS of the backupmand process")
        self.database("small")
        self.database("big")
        variants = [f"{tree}:{db}" for db in ("small", "big") for tree in self.trees]
        peaks: dict[str, list[float]] = {v: [] for v in variants}
        bounds: dict[str, list[float]] = {v: [] for v in variants}
        for number, order in self.rounds(variants, self.options.runs):
            for variant in order:
                tree, _, db = variant.partition(":")
                folder = self.work / "rss" / variant.replace(":", "-")
                timed, _ = self.run_backupmand(tree, folder, db=db)
                shutil.rmtree(folder, ignore_errors=True)
                assert timed.peak_rss_kib is not None and timed.rusage_maxrss_kib is not None
                peaks[variant].append(timed.peak_rss_kib * 1024 / MB)
                bounds[variant].append(timed.rusage_maxrss_kib * 1024 / MB)
                log(f"  round {number + 1}: {variant} VmHWM {peaks[variant][-1]:.1f} MB")
        small, big = Summary(tuple(peaks["after:small"])), Summary(tuple(peaks["after:big"]))
        label = {db: size_label(self.dump_sizes[db]) for db in ("small", "big")}
        self.report.row(Row("2a", f"peak RSS, {label['small']} dump", small, "{:.1f}", " MB",
                            "≤ 100 MB", small.median <= 100))
        self.report.row(Row("2b", f"peak RSS, {label['big']} dump", big, "{:.1f}", " MB",
                            "≤ 100 MB", big.median <= 100))
        spread = Summary(tuple(b / s for b, s in zip(peaks["after:big"], peaks["after:small"],
                                                     strict=True)))
        self.report.row(Row("2c", f"peak RSS {label['big']} / {label['small']}", spread,
                            "{:.3f}", "", "0.90 to 1.10", 0.9 <= spread.median <= 1.1))
        self.report.section(
            "2. Peak RSS of the backupmand process",
            "`backupmand run` (zstd, one local drive) for each database. A thread of the "
            "bench reads `VmHWM` (the kernel's high-water mark of the process's resident "
            "set: all its threads, none of its children) from `/proc/<pid>/status` every "
            "5 ms until the process is gone; the last value read is the peak. "
            "`wait4()`'s `ru_maxrss` is shown as a cross-check: it is the largest of the "
            "process *and* the children it reaped (pg_dump), so an upper bound.",
            "",
            *table(["variant", "dump bytes", "VmHWM min / median / max",
                    "ru_maxrss min / median / max"],
                   [[variant.replace("after:", "").replace("before:", "(before) "),
                     f"{self.dump_sizes[variant.split(':')[1]]:,}",
                     Summary(tuple(peaks[variant])).text("{:.1f}", " MB"),
                     Summary(tuple(bounds[variant])).text("{:.1f}", " MB")]
                    for variant in variants]),
        )

    # ------------------------------------------------------------------ 3. three drives

    def drives(self) -> None:
        log("3. uploads to three drives at once against the slowest alone")
        self.database("big")
        folder = self.work / "drives"
        drives = {
            "local-a": self.local_drive("local-a", folder / "a"),
            "local-b": self.local_drive("local-b", folder / "b"),
            "s3": self.s3_drive(),
        }
        variants = ["all", *drives]
        phases: dict[str, list[float]] = {v: [] for v in variants}
        per_drive: dict[str, list[float]] = {d: [] for d in drives}
        sizes: set[int] = set()
        for number, order in self.rounds(variants, self.options.runs):
            for variant in order:
                chosen = list(drives.values()) if variant == "all" else [drives[variant]]
                timed, events = self.run_backupmand("after", folder / "run", db="big",
                                                    drives=chosen)
                dumped = first(events, "dump.finished")
                sizes.add(int(dumped.fields["size"]))
                uploads = [e for e in events if e.name == "upload.finished"]
                assert len(uploads) == len(chosen), timed.stderr
                phase = (max(e.at for e in uploads) - dumped.at).total_seconds()
                phases[variant].append(phase)
                if variant == "all":
                    for event in uploads:
                        per_drive[event.fields["drive"]].append(float(event.fields["seconds"]))
                log(f"  round {number + 1}: {variant} upload phase {phase:.2f} s")
                shutil.rmtree(folder, ignore_errors=True)
                self.s3.empty_bucket(self.bucket)
        slowest = [max(phases[d][i] for d in drives) for i in range(self.options.runs)]
        summary = ratio_summary(phases["all"], slowest)
        self.report.row(Row("3", "upload phase, 3 drives / slowest drive alone", summary,
                            "{:.3f}", "", "≤ 1.3", summary.median <= 1.3))
        self.report.section(
            "3. Three drives at once",
            "`backupmand run` of the large database (zstd) to two local folders and an S3 "
            "bucket on moto's server (a separate process on loopback), then to each drive "
            "alone, in rotated order. The upload phase runs from the `dump.finished` log "
            "line to the last `upload.finished` line (millisecond timestamps). The "
            "drive-alone runs upload a dump of the same database: the same bytes but for "
            "the random `\\restrict` key pg_dump 15.14+ writes into every dump, so sizes "
            f"within {max(sizes) - min(sizes)} bytes ({min(sizes):,} to {max(sizes):,}). The "
            "ratio is taken within a round: the three-drive phase over that round's "
            "slowest single drive.",
            "",
            *table(["upload phase", "min / median / max", "each round"],
                   [[v if v != "all" else "all three", Summary(tuple(phases[v])).text(
                       "{:.2f}", " s"), " ".join(f"{p:.2f}" for p in phases[v])]
                    for v in variants]),
            "",
            *table(["drive (`seconds=` in the three-drive runs)", "min / median / max"],
                   [[d, Summary(tuple(per_drive[d])).text("{:.2f}", " s")] for d in drives]),
        )

    # ------------------------------------------------------------------ 4. API

    def start_serve(self, tree: str, config: Path, port: int, log_name: str) -> str:
        sink = open(self.work / log_name, "ab")
        process = subprocess.Popen(
            self.backupmand("-c", str(config), "serve", "--port", str(port)),
            stdout=sink, stderr=subprocess.STDOUT, env=self.env(tree), cwd=self.trees[tree])
        sink.close()
        self.processes.append(process)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"serve exited: {(self.work / log_name).read_text()[-3000:]}")
            try:
                request("127.0.0.1", port, "GET", "/ping")
                return f"127.0.0.1:{port}"
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("serve did not answer /ping in 60 s")

    def stop_serve(self) -> None:
        while self.processes:
            process = self.processes.pop()
            process.send_signal(signal.SIGTERM)
            process.wait(60)

    def ping_during_backup(self) -> None:
        log("4a. GET /ping while the large backup runs under `backupmand serve`")
        self.database("big")
        self.ping_while_backing_up(
            "4a", f"`GET /ping` p99 during a {size_label(self.dump_sizes['big'])} backup (serve)",
            "4a. /ping while a backup runs", "zstd, one local drive", None)

    def ping_three_drives(self) -> None:
        log("4d. GET /ping while the large backup streams to three drives under `serve`")
        self.database("big")
        link, gdrive, _ = self.remote()
        folder = self.work / "serve-three"
        drives = [self.local_drive("disk", folder / "drive"), self.s3_drive(link.endpoint),
                  gdrive.drive("gdrive")]
        self.ping_while_backing_up(
            "4d", f"`GET /ping` p99 during a {size_label(self.dump_sizes['big'])} backup "
            "streamed to 3 drives (serve)", "4d. /ping while a backup streams to three drives",
            f"zstd, streamed to a local folder, S3 and Google Drive over links of "
            f"{link.describe()} each", drives, folder=folder)

    def ping_while_backing_up(self, key: str, figure: str, title: str, setting: str,
                              drives: list[dict[str, Any]] | None,
                              folder: Path | None = None) -> None:
        from servers import free_port

        port = free_port()
        config = self.config(folder or self.work / "serve", db="big", port=port, drives=drives)
        self.start_serve("after", config, port, f"serve-{key}.log")
        p99s: list[float] = []
        details: list[list[str]] = []
        for number in range(self.options.runs):
            os.sync()
            deadline = time.monotonic() + 30
            while True:  # the last backup's record is final a moment before its task ends
                status, body = request("127.0.0.1", port, "POST", "/api/backups")
                if status != 409 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert status == 200, body
            (backup_id,) = json.loads(body)["BackupIds"]
            latencies: list[float] = []
            state = "pending"
            started = time.monotonic()
            while state == "pending":
                begin = time.perf_counter()
                status, _ = request("127.0.0.1", port, "GET", "/ping")
                latencies.append(time.perf_counter() - begin)
                assert status == 200
                if len(latencies) % 25 == 0:
                    state = self.backup_status(port, backup_id)
                time.sleep(0.01)
            state = self.backup_status(port, backup_id)
            assert state == "finished", state
            if drives is not None:
                self.clear_remote()
            p99 = percentile(latencies, 0.99)
            p99s.append(p99 * 1000)
            details.append([str(number + 1), f"{time.monotonic() - started:.1f} s",
                            str(len(latencies)),
                            f"{percentile(latencies, 0.5) * 1000:.2f} ms",
                            f"{p99 * 1000:.2f} ms", f"{max(latencies) * 1000:.2f} ms"])
            log(f"  run {number + 1}: {len(latencies)} pings, p99 {p99 * 1000:.2f} ms")
        self.stop_serve()
        summary = Summary(tuple(p99s))
        self.report.row(Row(key, figure, summary, "{:.2f}", " ms", "≤ 50 ms",
                            summary.median <= 50))
        self.report.section(
            title,
            f"A real `backupmand serve` ({setting}); the bench starts a backup "
            "with `POST /api/backups`, then sends `GET /ping` on a new connection every "
            "10 ms (and asks for the backup's status every 25 pings) until the backup ends. "
            "p99 is the nearest-rank 99th percentile of one backup's pings.",
            "",
            *table(["run", "backup", "pings", "median", "p99", "max"], details),
        )

    def backup_status(self, port: int, backup_id: str) -> str:
        status, body = request("127.0.0.1", port, "GET", f"/api/backups/{backup_id}")
        assert status == 200, body
        return str(json.loads(body)["Status"])

    def catalog_list(self) -> None:
        count = self.options.catalog_backups
        log(f"4b. GET /api/backups with {count} backups x 3 drive files")
        from servers import free_port

        ports: dict[str, int] = {}
        seed = self.work / "catalog-seed.db"
        make_catalog(seed, count)
        for tree in self.trees:
            folder = self.work / f"list-{tree}"
            port = free_port()
            config = self.config(folder, db="tiny", port=port)
            (folder / "state").mkdir()
            shutil.copy(seed, folder / "state" / "catalog.db")
            self.start_serve(tree, config, port, f"serve-list-{tree}.log")
            ports[tree] = port
        paths = {"all": "/api/backups", "limit": "/api/backups?limit=50"}
        status, body = request("127.0.0.1", ports["after"], "GET", paths["all"])
        results = json.loads(body)["Results"]
        assert status == 200 and len(results) == count, (status, len(results))
        assert all(len(r["DriveFiles"]) == 3 for r in results)
        response_bytes = len(body)
        variants = [f"{tree}:{what}" for what in paths for tree in self.trees]
        times: dict[str, list[float]] = {v: [] for v in variants}
        for variant in variants:  # warm-up: first requests pay for imports and caches
            tree, _, what = variant.partition(":")
            request("127.0.0.1", ports[tree], "GET", paths[what])
        for _, order in self.rounds(variants, self.options.quick_runs):
            for variant in order:
                tree, _, what = variant.partition(":")
                begin = time.perf_counter()
                status, body = request("127.0.0.1", ports[tree], "GET", paths[what])
                times[variant].append((time.perf_counter() - begin) * 1000)
                assert status == 200
        self.stop_serve()
        whole, limited = Summary(tuple(times["after:all"])), Summary(tuple(times["after:limit"]))
        self.report.row(Row("4b", f"`GET /api/backups`, {count:,} backups x 3 drive files",
                            whole, "{:.1f}", " ms", "median ≤ 150 ms", whole.median <= 150))
        self.report.row(Row("4c", "`GET /api/backups?limit=50`", limited, "{:.2f}", " ms",
                            "median ≤ 10 ms", limited.median <= 10))
        self.report.section(
            "4b, 4c. Listing the catalog",
            f"A catalog of {count:,} backups with 3 drive files each (written with SQL "
            "into a catalog file of backupmand's first schema, which each tree migrates to "
            "its own when it starts), served by a real "
            f"`backupmand serve`; the whole list is {response_bytes:,} bytes of JSON. Each "
            "sample is one request on a new connection, timed until the last byte of the "
            f"body; {self.options.quick_runs} samples per variant after one warm-up request.",
            "",
            *table(["request", "min / median / max"],
                   [[f"{paths[v.split(':')[1]]}" + (" (before)" if v.startswith("before")
                                                    else ""),
                     Summary(tuple(times[v])).text("{:.2f}", " ms")] for v in variants]),
        )

    # ------------------------------------------------------------------ 5. start-up

    def startup(self) -> None:
        log("5. start-up of `backupmand --help` and `backupmand version`")
        commands = {"--help": ("--help",), "version": ("version",)}
        variants = [f"{tree}:{c}" for c in commands for tree in self.trees]
        times: dict[str, list[float]] = {v: [] for v in variants}
        for variant in variants:  # warm the page cache once
            tree, _, command = variant.partition(":")
            run_timed(self.backupmand(*commands[command]), env=self.env(tree),
                      cwd=self.trees[tree])
        for _, order in self.rounds(variants, self.options.quick_runs):
            for variant in order:
                tree, _, command = variant.partition(":")
                timed = run_timed(self.backupmand(*commands[command]),
                                  env=self.env(tree), cwd=self.trees[tree])
                times[variant].append(timed.seconds)
        heavy = ("aioboto3", "aiobotocore", "botocore", "boto3", "aiogoogle", "aiohttp",
                 "pydantic", "apscheduler", "aiosqlite", "zstandard", "yaml", "structlog",
                 "prometheus_client", "aiosmtplib")
        imported: dict[str, list[str]] = {}
        slowest: dict[str, str] = {}
        for variant in variants:
            tree, _, command = variant.partition(":")
            result = subprocess.run(
                [sys.executable, "-X", "importtime", "-m", "backupmand", *commands[command]],
                env=self.env(tree), cwd=self.trees[tree], capture_output=True, text=True,
                check=True)
            modules: list[tuple[int, str]] = []
            for line in result.stderr.splitlines():
                if line.startswith("import time:") and "|" in line:
                    _, cumulative, name = (part.strip() for part in line[12:].split("|"))
                    if cumulative.isdigit():
                        modules.append((int(cumulative), name))
            imported[variant] = sorted({n.split(".")[0] for _, n in modules
                                        if n.split(".")[0] in heavy})
            top = sorted((m for m in modules if "." not in m[1]), reverse=True)[:3]
            slowest[variant] = ", ".join(f"{name} {us / 1000:.0f} ms" for us, name in top)
        for key, command in (("5a", "--help"), ("5b", "version")):
            summary = Summary(tuple(times[f"after:{command}"]))
            self.report.row(Row(key, f"`backupmand {command}`", summary, "{:.3f}", " s",
                                "≤ 0.3 s", summary.median <= 0.3))
        self.report.section(
            "5. Start-up",
            f"`python -m backupmand …` as a new process, {self.options.quick_runs} samples "
            "each, interleaved, after one warm-up run. `python -X importtime` lists the "
            "top-level imports:",
            "",
            *table(["command", "wall min / median / max", "heavy modules imported",
                    "largest top-level imports (cumulative)"],
                   [[f"`{v.split(':')[1]}`" + (" (before)" if v.startswith("before") else ""),
                     Summary(tuple(times[v])).text("{:.3f}", " s"),
                     ", ".join(imported[v]) or "none", slowest[v]] for v in variants]),
            "",
            f"Heavy modules looked for: {', '.join(heavy)}.",
        )

    # ------------------------------------------------------------------ report

    def write(self, started: float, argv: Sequence[str]) -> None:
        options = self.options
        lines = ["# backupmand benchmark results", ""]
        if options.smoke:
            lines += ["**Smoke run** (tiny sizes, one run each): a check that the benchmark "
                      "works. These numbers are not measurements; PASS/MISS means nothing "
                      "here.", ""]
        lines += [
            f"Written by `python bench/run.py {' '.join(argv)}` on "
            f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}, in "
            f"{(time.monotonic() - started) / 60:.1f} minutes. Every figure is min / "
            f"median / max over {options.runs} runs (more for the millisecond figures, as "
            "stated); PASS/MISS compares the **median** with the target.", "",
            "## Machine", "", *table(["", ""], machine()), "",
            "## Versions", "", *table(["", ""], versions(self.trees)), "",
            "## Figures", "",
            *table(["#", "figure", "min / median / max", "target", "result"],
                   [row.cells() for row in sorted(self.report.rows, key=_figure_order)]),
            "",
        ]
        if "before" in self.trees:
            lines += [f"`(before)` rows measure the package at `{options.before}` "
                      "(exported with `git archive`), interleaved with the current tree "
                      "in the same rounds.", ""]
        for section in self.report.sections:
            lines += [f"## {section.title}", "", *section.lines, ""]
        lines += ["## Method", "", *METHOD, ""]
        notes = Path(__file__).parent / "NOTES.md"
        if notes.exists() and not options.smoke:
            lines += ["## Notes (bench/NOTES.md, written by hand)", "",
                      notes.read_text().split("\n", 1)[1].strip(), ""]
        options.output.parent.mkdir(parents=True, exist_ok=True)
        options.output.write_text("\n".join(lines))
        log(f"wrote {options.output}")


def _figure_order(row: Row) -> tuple[int, str, str]:
    """1a < 1a* < 1b < … < 2e < 3 < 4a < … < 9c: by number, letter, then the rest."""
    found = re.match(r"(\d+)([a-z]*)(.*)", row.key)
    assert found is not None
    return int(found.group(1)), found.group(2), found.group(3)


METHOD = [
    "- Everything runs on this machine over loopback: a PostgreSQL 15 cluster made by "
    "the bench with `initdb` (scram-sha-256 on TCP, fsync off), a MariaDB 10.11 server "
    "(figure 9), moto's S3 server as its own process, the tests' Google Drive v3 stand-in "
    "as its own process (`bench/gdrive_server.py`), throttling proxies "
    "(`tests/servers/throttle.py`, each its own process) in front of S3 and Drive where a "
    "figure says so, and backupmand as real processes (`python -m backupmand`, the same "
    "as the `backupmand` script; `bench/uncounted.py` and `bench/traced.py` call the same "
    "CLI with counting off or a memory tracer on). Data: one table of generate_series "
    "rows (numbers, timestamps, short words, an md5 and a run of letters per row) sized "
    "so that the plain dump reaches the requested size.",
    "- The shell pipelines run `pg_dump` with the arguments backupmand's PostgreSQL "
    "source uses (`--no-password --dbname=dbname='…' --format=plain`, libpq variables "
    "for host, port, user and password) and write to the same file system as backupmand. "
    "`set -o pipefail` is on.",
    "- backupmand runs with a fresh catalog and folders for every run, retention off, "
    "one upload attempt (so that a failure cannot hide in a retry). `os.sync()` runs "
    "before every timed run so that no run pays for an earlier one's dirty pages. "
    "backupmand hashes the stream into its stage file while every drive reads that file "
    "back as it grows (`uploads.stream`, on by default; the previous release and "
    "`stream: false` upload after the dump); each drive's copy is verified (the local "
    "one hashed and fsynced), and the stage file is removed, never fsynced. The shell "
    "pipelines do none of that, except the two marked *the same work* (`*` rows): `tee` "
    "into `sha256sum`, then `cp`, `sha256sum` of the copy and `sync` of it.",
    "- Wall time is measured from just before the process is started to its reaping, "
    "by the bench (`time.perf_counter`). Between runs moto's bucket and the Drive "
    "stand-in are emptied (both keep objects in RAM).",
    "- The machine is shared and noisy: variants are interleaved and their order "
    "rotated; ratios are taken within a round, then summarised. The servers that stand "
    "in for remote services use the same 2 cores as backupmand and PostgreSQL: the CPU "
    "tables say how much.",
]


def request(host: str, port: int, method: str, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        connection.request(method, path, headers={"X-Api-Key": API_KEY})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# ---------------------------------------------------------------------------- catalog data


def make_catalog(path: Path, count: int) -> None:
    """A catalog file with ``count`` backups x 3 drive files, in schema 1 (backupmand's
    first migration): every tree understands it, and migrates it further when it opens it."""
    from backupmand.catalog import MIGRATIONS
    from backupmand.models import to_db_time

    with sqlite3.connect(path, isolation_level=None) as connection:
        connection.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    connection.close()
    rng = random.Random(20250702)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    labels = ["main", "analytics", "billing", "auth", "search"]
    drives = [("disk", "local"), ("offsite", "s3"), ("gdrive", "google_drive")]
    backups, files = [], []
    for number in range(count):
        identifier = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        label = labels[number % len(labels)]
        created = now - dt.timedelta(minutes=10 * number)
        finished = created + dt.timedelta(seconds=rng.randint(30, 900))
        failed = number % 20 == 7
        name = f"{label}-{created:%Y%m%d%H%M%S}-{identifier[:8]}.sql.zst"
        size = rng.randint(10**6, 10**10)
        backups.append((
            identifier, label, "postgres", "failed" if failed else "finished", "finished",
            name, f"/var/lib/backupmand/tmp/{label}/{name}" if failed else None, "zstd",
            size, hashlib.sha256(identifier.encode()).hexdigest(),
            "upload to offsite failed: timeout" if failed else None, None,
            to_db_time(created), to_db_time(finished), None if failed else to_db_time(finished)))
        for drive, provider in drives:
            bad = failed and drive == "offsite"
            files.append((
                str(uuid.UUID(int=rng.getrandbits(128), version=4)), identifier, drive, provider,
                name, None if bad else (f"backups/{name}" if provider != "local" else
                                        f"/var/backups/backupmand/{name}"),
                "failed" if bad else "finished", None if bad else size,
                "timeout" if bad else None, 1, to_db_time(created + dt.timedelta(seconds=20)),
                to_db_time(finished), None if bad else to_db_time(finished)))
    connection = sqlite3.connect(path)
    with connection:
        connection.executemany(
            "INSERT INTO backups (id, label, source_provider, status, dump_status, name, "
            "dump_path, compression, size, sha256, error, pid, created_at, updated_at, "
            "finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", backups)
        connection.executemany(
            "INSERT INTO drive_files (id, backup_id, drive, provider, label, path, status, "
            "size, error, attempts, created_at, updated_at, finished_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", files)
    connection.close()


# ---------------------------------------------------------------------------- machine


def _first_line(argv: Sequence[str]) -> str:
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=30,
                                check=False)
    except OSError as error:
        return f"not available ({error.strerror})"
    text = (result.stdout or result.stderr).strip()
    return text.splitlines()[0] if text else "?"


def machine() -> list[list[str]]:
    model = "?"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        total_kib = int(meminfo.readline().split()[1])
    return [
        ["CPU", model],
        ["cores", f"{len(os.sched_getaffinity(0))} available ({os.cpu_count()} online)"],
        ["RAM", f"{total_kib / 1024 / 1024:.1f} GiB"],
        ["kernel", f"{platform.system()} {platform.release()}"],
        ["OS", platform.freedesktop_os_release().get("PRETTY_NAME", "?")
         if hasattr(platform, "freedesktop_os_release") else "?"],
        ["file system of the dumps", _first_line(["findmnt", "-n", "-o", "FSTYPE,SOURCE",
                                                  "--target", os.environ.get("BENCH_TMPDIR",
                                                                             "/tmp")])],
    ]


def versions(trees: dict[str, Path]) -> list[list[str]]:
    import zstandard

    from backupmand.version import build_info

    info = build_info()
    rows = [
        ["python", sys.version.split()[0]],
        ["backupmand", f"{info['Version']} (commit {info['CommitSHA']}"
                       f"{', uncommitted changes' if _dirty() else ''})"],
        ["pg_dump", _first_line(["pg_dump", "--version"])],
        ["zstd", _first_line(["zstd", "--version"])],
        ["gzip", _first_line(["gzip", "--version"])],
        ["pigz", _first_line(["pigz", "--version"])],
        ["python-zstandard (libzstd)", f"{zstandard.__version__} (libzstd "
         f"{'.'.join(map(str, zstandard.ZSTD_VERSION))})"],
        ["moto", _module_version("moto")],
        ["aiohttp", _module_version("aiohttp")],
        ["aioboto3 (botocore)", f"{_module_version('aioboto3')} "
                                f"({_module_version('botocore')})"],
        ["aiogoogle", _module_version("aiogoogle")],
        ["pyrage (age)", _module_version("pyrage")],
        ["MariaDB", _first_line(["mariadbd", "--version"])],
        ["borgmatic (borg)", f"{_first_line(['borgmatic', '--version'])} "
                             f"({_first_line(['borg', '--version'])})"],
    ]
    return rows


def _module_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _dirty() -> bool:
    result = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                             "backupmand"], capture_output=True, text=True, check=False)
    return bool(result.stdout.strip())


# ---------------------------------------------------------------------------- main


FIGURES: dict[str, Callable[[Bench], None]] = {
    "wall": Bench.wall_time,
    "memory": Bench.memory,
    "drives": Bench.drives,
    "ping": Bench.ping_during_backup,
    "list": Bench.catalog_list,
    "startup": Bench.startup,
    "links": streaming.throttled,
    "parts": streaming.parallel_parts,
    "where-memory": memory_breakdown.breakdown,
    "ping-links": Bench.ping_three_drives,
    "peers": peers.peers,
    "encryption": costs.encryption,
    "counting": costs.counting,
}


#: The reference pipelines doing what backupmand does (hash, copy, verify, fsync).
SAME_WORK = {"zstd": "zstd -3 -T0, hashed, fsynced", "none": "none, hashed, fsynced"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size-gib", type=float, default=1.0,
                        help="the large plain dump, GiB (default 1)")
    parser.add_argument("--small-mib", type=float, default=100.0,
                        help="the small plain dump for the memory figure, MiB (default 100)")
    parser.add_argument("--runs", type=int, default=3, help="rounds per figure (default 3)")
    parser.add_argument("--catalog-backups", type=int, default=10_000)
    parser.add_argument("--link-mbps", type=float, default=60.0,
                        help="MB/s of each simulated link to S3 and Google Drive (default 60)")
    parser.add_argument("--part-link-mbps", type=float, default=20.0,
                        help="MB/s per connection of figure 6c's link (default 20)")
    parser.add_argument("--part-upload-gib", type=float, default=1.0,
                        help="the file figure 6c uploads, GiB (default 1)")
    parser.add_argument("--mariadb-mib", type=float, default=300.0,
                        help="the MariaDB dump of figure 9, MiB (default 300)")
    parser.add_argument("--before", metavar="REV",
                        help="also measure the package at this git revision (before/after)")
    parser.add_argument("--only", action="append", choices=sorted(FIGURES),
                        help="measure only these figures (repeatable)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, one run: check that the benchmark works")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args(argv)
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    links = {"link_rate": args.link_mbps * MB, "part_link_rate": args.part_link_mbps * MB}
    if args.smoke:
        options = Options(big_bytes=8 * MIB, small_bytes=2 * MIB, runs=1, quick_runs=1,
                          catalog_backups=100, smoke=True, output=args.output,
                          before=args.before, keep=args.keep, part_upload_bytes=40 * MIB,
                          mariadb_bytes=4 * MIB, **links)
    else:
        if args.runs < 3:
            parser.error("--runs must be at least 3 (use --smoke for a quick check)")
        options = Options(big_bytes=int(args.size_gib * GIB), small_bytes=int(args.small_mib * MIB),
                          runs=args.runs, quick_runs=max(10, args.runs),
                          catalog_backups=args.catalog_backups, smoke=False,
                          output=args.output, before=args.before, keep=args.keep,
                          part_upload_bytes=int(args.part_upload_gib * GIB),
                          mariadb_bytes=int(args.mariadb_mib * MIB), **links)
    for tool in ("pg_dump", "psql", "createdb", "zstd", "gzip", "pigz", "git", "mariadbd",
                 "mariadb-dump"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not on PATH (pigz: apt-get install pigz; mariadbd: "
                         "apt-get install mariadb-server)")
    if missing := peers.borg_missing():
        log(f"figures 7a and 7b will not be measured: {missing}")
    started = time.monotonic()
    with scratch(keep=options.keep) as work:
        bench = Bench(options, work)
        try:
            bench.setup()
            for name, figure in FIGURES.items():
                if args.only is None or name in args.only:
                    figure(bench)
        finally:
            bench.teardown()
        bench.write(started, raw_argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
