"""Figures 7a, 7b and 7c: against borgmatic (a peer users would pick instead) and by hand.

The same database (``peer``, a file-level copy of the large one) is backed up by
backupmand to a local drive and by borgmatic (Debian's ``borgmatic`` and ``borgbackup``)
into a new local repository each round (its *first* backup: nothing to deduplicate
against), both compressing with zstd level 3; then restored by each, and by hand
(``zstd -dc FILE | psql -v ON_ERROR_STOP=1`` into a new database). Every restore is
checked: the restored table must hold as many rows as the source.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import shutil
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from measure import Summary, Timed, first, parse_log, run_timed
from report import MB, Row, log, ratio_summary, size_label, table

if TYPE_CHECKING:
    from run import Bench

DATABASE = "peer"

BORGMATIC_CONFIG = """\
location:
    source_directories: []
    repositories:
        - {repository}
    borgmatic_source_directory: {work}
storage:
    compression: zstd,3
    borg_base_directory: {base}
    archive_name_format: 'bench-{{now:%Y-%m-%dT%H:%M:%S.%f}}'
retention:
    keep_daily: 7
hooks:
    postgresql_databases:
        - name: {database}
          hostname: {host}
          port: {port}
          username: {user}
          password: {password}
          format: custom
{options}"""


def borg_missing() -> str | None:
    """Why the borgmatic figures cannot run here, or None."""
    missing = [tool for tool in ("borgmatic", "borg") if shutil.which(tool) is None]
    if missing:
        return (f"{' and '.join(missing)} not installed (apt-get install borgmatic "
                "borgbackup)")
    return None


class Borgmatic:
    """One borgmatic configuration with a repository of its own."""

    def __init__(self, bench: Bench, folder: Path, *, dump_options: str | None) -> None:
        self.bench = bench
        self.folder = folder
        self.config = folder / "config.yaml"
        self.repository = folder / "repo"
        self.log = folder / "borgmatic.log"
        self.dump_options = dump_options

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("PG", "BORG_"))}
        env["BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK"] = "yes"
        return env

    def fresh(self) -> None:
        """A new, empty repository (the next backup is a first backup)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        pg = self.bench.pg
        options = (f"          options: \"{self.dump_options}\"\n"
                   if self.dump_options is not None else "")
        self.config.write_text(BORGMATIC_CONFIG.format(
            repository=self.repository, work=self.folder / "borgmatic", base=self.folder / "base",
            database=DATABASE, host=pg.host, port=pg.port, user=pg.user, password=pg.password,
            options=options))
        self.config.chmod(0o600)
        self.run("init", "--encryption", "none")

    def run(self, *action: str) -> Timed:
        # --log-file: borgmatic logs to syslog otherwise, and there is no syslog here.
        return run_timed(["borgmatic", "--log-file", str(self.log), "-c", str(self.config),
                          *action], env=self.env(), cwd=self.folder)

    def repository_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.repository.rglob("*") if path.is_file())


def peers(bench: Bench) -> None:
    options = bench.options
    log("7. against borgmatic, and restoring by hand")
    bench.database("big")
    bench.pg.copy_database("big", DATABASE)
    rows = bench.pg.count_rows(DATABASE)
    missing = borg_missing()
    base = bench.work / "peers"
    mine = base / "backupmand"
    borg = Borgmatic(bench, base / "borgmatic", dump_options="--compress=0")
    borg_default = Borgmatic(bench, base / "borgmatic-default", dump_options=None)
    backups = ["backupmand"] + ([] if missing else ["borgmatic", "borgmatic-default"])
    restores = ["backupmand", "by hand"] + ([] if missing else ["borgmatic"])
    backup_times: dict[str, list[float]] = {variant: [] for variant in backups}
    restore_times: dict[str, list[float]] = {variant: [] for variant in restores}
    sizes: dict[str, int] = {}
    restore_phases: list[tuple[float, float, float, float]] = []
    for number in range(options.runs):
        shift = number % len(backups)
        order = [*backups[shift:], *backups[:shift]]
        stored: Path | None = None
        backup_id = ""
        for variant in order:
            if variant == "backupmand":
                timed, events = bench.run_backupmand(
                    "after", mine, db=DATABASE, drives=[bench.local_drive("disk", mine / "drive")])
                backup_id = first(events, "backup.started").fields["backup_id"]
                (stored,) = [path for path in (mine / "drive").rglob("*.zst")
                             if ".globals." not in path.name]
                sizes["backupmand"] = stored.stat().st_size
            else:
                target = borg if variant == "borgmatic" else borg_default
                target.fresh()
                os.sync()
                timed = target.run("create")
                sizes[variant] = target.repository_bytes()
            backup_times[variant].append(timed.seconds)
            log(f"  round {number + 1}: backup {variant} {timed.seconds:.2f} s")
        assert stored is not None
        shift = number % len(restores)
        for variant in [*restores[shift:], *restores[:shift]]:
            os.sync()
            if variant == "backupmand":
                timed = run_timed(bench.backupmand(
                    "--log-level", "debug", "-c", str(mine / "config.yml"), "restore",
                    backup_id, "--to-source", DATABASE, "--db-name", f"{DATABASE}_restored"),
                    env=bench.env("after"), cwd=bench.trees["after"])
                restored = f"{DATABASE}_restored"
                restore_phases.append(_restore_phases(timed))
            elif variant == "by hand":
                restored = f"{DATABASE}_by_hand"
                line = (f"createdb -T template0 {restored} && zstd -dc {shlex.quote(str(stored))} "
                        f"| psql -X -q -v ON_ERROR_STOP=1 -d {restored} > /dev/null")
                timed = run_timed(["bash", "-c", f"set -euo pipefail; {line}"],
                                  env=bench.pg.client_env(), cwd=base)
            else:
                timed = borg.run("restore", "--archive", "latest")
                restored = DATABASE
            got = bench.pg.count_rows(restored)
            if got != rows:
                raise RuntimeError(f"the {variant} restore holds {got} rows, the source {rows}")
            if restored != DATABASE:
                bench.pg.drop_database(restored)
            restore_times[variant].append(timed.seconds)
            log(f"  round {number + 1}: restore {variant} {timed.seconds:.2f} s")
    size = bench.dump_sizes["big"]
    note = missing or ""
    rows_out: list[Row] = []
    if missing:
        rows_out += [Row("7a", "`backupmand run` (local drive) / borgmatic's first backup",
                         None, "", "", "≤ 1.0", None, note=note),
                     Row("7b", "`backupmand restore --to-source` / `borgmatic restore`", None,
                         "", "", "≤ 1.0", None, note=note)]
    else:
        first_backup = ratio_summary(backup_times["backupmand"], backup_times["borgmatic"])
        rows_out.append(Row("7a", "`backupmand run` (local drive) / borgmatic's first backup "
                            "(zstd,3; pg_dump -Fc --compress=0)", first_backup, "{:.3f}", "",
                            "≤ 1.0", first_backup.median <= 1.0))
        rows_out.append(Row("7a*", "the same / borgmatic with its default dump (pg_dump -Fc, "
                            "its own zlib)", ratio_summary(backup_times["backupmand"],
                                                          backup_times["borgmatic-default"]),
                            "{:.3f}", "", "reference", None))
        restore = ratio_summary(restore_times["backupmand"], restore_times["borgmatic"])
        rows_out.append(Row("7b", "`backupmand restore --to-source` / `borgmatic restore`",
                            restore, "{:.3f}", "", "≤ 1.0", restore.median <= 1.0))
    by_hand = ratio_summary(restore_times["backupmand"], restore_times["by hand"])
    rows_out.append(Row("7c", "`backupmand restore --to-source` / `zstd -dc FILE | psql -v "
                        "ON_ERROR_STOP=1`", by_hand, "{:.3f}", "", "≤ 1.10",
                        by_hand.median <= 1.10))
    for row in rows_out:
        bench.report.row(row)
    describe: dict[str, Any] = {
        "backupmand": "`backupmand run`: pg_dump plain, zstd -3, SHA-256, a local drive",
        "borgmatic": "`borgmatic create`: pg_dump -Fc --compress=0 into a named pipe, borg "
                     "create (zstd,3, chunked, deduplicated, no encryption), a new repository",
        "borgmatic-default": "the same with borgmatic's default dump options (pg_dump -Fc "
                             "compresses with zlib itself)",
    }
    restore_describe = {
        "backupmand": f"`backupmand restore ID --to-source {DATABASE} --db-name "
                      f"{DATABASE}_restored`: from the local drive, SHA-256 checked while "
                      "streaming, zstd -d, psql into a new database",
        "by hand": "`createdb` and `zstd -dc FILE | psql -X -q -v ON_ERROR_STOP=1` into a new "
                   "database",
        "borgmatic": f"`borgmatic restore --archive latest`: borg extract --stdout into "
                     f"pg_restore --clean --if-exists --exit-on-error into `{DATABASE}`, then "
                     "ANALYZE",
    }
    bench.report.section(
        "7. Against borgmatic, and restoring by hand",
        f"The database `{DATABASE}`: a copy of the large one ({rows:,} rows, plain dump of "
        f"{size:,} bytes). Each round runs the backups in rotated order (borgmatic into a "
        "fresh repository, `borgmatic init --encryption none` untimed before it, so each is "
        "a first backup), then the restores in rotated order; every restored table is "
        "counted against the source, and the restored copies are dropped (untimed). "
        "borgmatic's single-database restore always goes through pg_restore, so it dumps "
        "in the custom format; `--compress=0` leaves the compression to borg (zstd,3) as "
        "backupmand's own zstd does. Versions: " + ", ".join(
            f"{tool} {version}" for tool, version in _versions().items()) + "."
        + (f" Not measured: {missing}." if missing else ""),
        "",
        *table(["backup", "what runs", "wall min / median / max", "stored", "each round"],
               [[variant, describe[variant], Summary(tuple(backup_times[variant])).text(
                   "{:.2f}", " s"), f"{sizes[variant] / MB:.1f} MB ({size_label(sizes[variant])})",
                 " ".join(f"{t:.2f}" for t in backup_times[variant])] for variant in backups]),
        "",
        *table(["restore", "what runs", "wall min / median / max", "each round"],
               [[variant, restore_describe[variant],
                 Summary(tuple(restore_times[variant])).text("{:.2f}", " s"),
                 " ".join(f"{t:.2f}" for t in restore_times[variant])] for variant in restores]),
        "",
        "Where backupmand's restore goes (median seconds; it runs with `--log-level debug`, "
        "whose `process.start` lines place its tools): *start-up* is the process's start to "
        "its first tool (interpreter, imports, config, catalog, locating the copy); "
        "*checks* from there to the load's psql (is the target there, is it empty, CREATE "
        "DATABASE with the dump's options); *load* the psql that loads the stream, to "
        "`restore.loaded`; *finish* the rest.",
        "",
        *table(["start-up", "checks", "load", "finish"],
               [[f"{statistics.median(p[i] for p in restore_phases):.2f}" for i in range(4)]]),
    )
    bench.pg.drop_database(DATABASE)
    shutil.rmtree(base, ignore_errors=True)


def _versions() -> dict[str, str]:
    import subprocess

    found = {}
    for tool in ("borgmatic", "borg"):
        if shutil.which(tool) is None:
            continue
        result = subprocess.run([tool, "--version"], capture_output=True, text=True,
                                check=False, timeout=60)
        found[tool] = (result.stdout or result.stderr).strip().split()[-1]
    return found


def _restore_phases(timed: Timed) -> tuple[float, float, float, float]:
    """(start-up, checks, load, finish) of a `backupmand restore` run with debug logs."""
    events = parse_log(timed.stderr)
    starts = [event for event in events if event.name == "process.start"]
    load = next(event for event in starts if " -f -" in event.fields.get("command", ""))
    loaded = first(events, "restore.loaded")
    ended = timed.started_at + dt.timedelta(seconds=timed.seconds)
    return ((starts[0].at - timed.started_at).total_seconds(),
            (load.at - starts[0].at).total_seconds(), (loaded.at - load.at).total_seconds(),
            (ended - loaded.at).total_seconds())
