"""Figures 8 and 9: what encryption and row counting cost a backup, each against the same
backup without it, side by side in the same rounds.

- 8: ``backupmand run`` (zstd, local drive) of the large database with age encryption
  (one X25519 recipient) and without.
- 9: the same backup with row counting and without, for a PostgreSQL plain dump, a
  PostgreSQL custom-format dump and a MariaDB dump. The reference without counting is
  ``bench/uncounted.py``: the CLI with the counters replaced by ones that count
  nothing (see its docstring: for MariaDB that takes the whole stream filter away, so
  the figure is an upper bound of counting's cost). Each run's ``dump.finished`` line
  is checked: rows counted with counting, none without.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from measure import Summary, first
from report import Row, log, ratio_summary, size_label, table
from servers import Mariadb

if TYPE_CHECKING:
    from run import Bench

AGE_HEADER = b"age-encryption.org/v1\n"
MARIADB_DATABASE = "bench_counting"


def _stored(folder: Path) -> Path:
    (path,) = [path for path in folder.rglob("*") if path.is_file()
               and ".globals." not in path.name and not path.name.endswith(".json")]
    return path


def encryption(bench: Bench) -> None:
    import pyrage

    log("8. `backupmand run` with age encryption / without")
    bench.database("big")
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    folder = bench.work / "encryption"
    variants = ["without", "age"]
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    sizes: dict[str, int] = {}
    for number, order in bench.rounds(variants, bench.options.runs):
        for variant in order:
            top: dict[str, Any] = ({"encryption": {"recipients": [recipient]}}
                                   if variant == "age" else {})
            timed, _ = bench.run_backupmand("after", folder, db="big", **top)
            stored = _stored(folder / "drive")
            with open(stored, "rb") as handle:
                encrypted = handle.read(len(AGE_HEADER)) == AGE_HEADER
            if encrypted != (variant == "age"):
                raise RuntimeError(f"{stored} is {'' if encrypted else 'not '}encrypted")
            sizes[variant] = stored.stat().st_size
            shutil.rmtree(folder, ignore_errors=True)
            times[variant].append(timed.seconds)
            log(f"  round {number + 1}: {variant} {timed.seconds:.2f} s")
    ratio = ratio_summary(times["age"], times["without"])
    bench.report.row(Row("8", "`backupmand run` with age encryption / without", ratio,
                         "{:.3f}", "", "≤ 1.10", ratio.median <= 1.10))
    bench.report.section(
        "8. Encryption",
        f"`backupmand run` of the large database ({bench.dump_sizes['big']:,} bytes of plain "
        "dump; zstd; one local drive) with `encryption: {recipients: [age1…]}` (one X25519 "
        "recipient) and without, alternating. The encrypted copy is checked to begin with "
        "the age header, the other not to.",
        "",
        *table(["variant", "wall min / median / max", "stored", "each round"],
               [[variant, Summary(tuple(times[variant])).text("{:.2f}", " s"),
                 f"{sizes[variant]:,} bytes", " ".join(f"{t:.2f}" for t in times[variant])]
                for variant in variants]),
        "",
        "Ratio each round: " + " ".join(f"{v:.3f}" for v in ratio.values) + ".",
    )


def _mariadb(bench: Bench) -> tuple[Mariadb, int]:
    if bench.mariadb is None:
        log("starting MariaDB and filling it")
        bench.mariadb = Mariadb(bench.work / "mariadb")
        bench.mariadb.start()
        rows = bench.mariadb.make_database(MARIADB_DATABASE, bench.options.mariadb_bytes)
        bench.mariadb_rows = rows
    return bench.mariadb, bench.mariadb_rows


def counting(bench: Bench) -> None:
    log("9. the cost of counting rows: the backup with counting / without")
    bench.database("big")
    server, mariadb_rows = _mariadb(bench)
    folder = bench.work / "counting"
    mariadb_source = {"provider": "mariadb", "label": "mariadb", "host": server.host,
                      "port": server.port, "db_name": MARIADB_DATABASE, "user": server.user,
                      "password": server.password}
    engines: dict[str, tuple[str, dict[str, Any]]] = {
        "PostgreSQL plain": ("big", {}),
        "PostgreSQL custom": ("big", {"format": "custom"}),
        "MariaDB": ("big", mariadb_source),
    }
    variants = [f"{engine}:{kind}" for engine in engines for kind in ("counted", "uncounted")]
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    counted_rows: dict[str, int] = {}
    raw: dict[str, int] = {}
    for number, order in bench.rounds(variants, bench.options.runs):
        for variant in order:
            engine, _, kind = variant.partition(":")
            db, source = engines[engine]
            timed, events = bench.run_backupmand(
                "after", folder, db=db, source=source,
                launcher="uncounted.py" if kind == "uncounted" else None)
            dumped = first(events, "dump.finished")
            rows = int(dumped.fields.get("rows", "0"))
            if (rows > 0) != (kind == "counted"):
                raise RuntimeError(f"{variant}: dump.finished says rows={rows}")
            if kind == "counted":
                counted_rows[engine] = rows
            raw[engine] = int(dumped.fields["raw_bytes"])
            shutil.rmtree(folder, ignore_errors=True)
            times[variant].append(timed.seconds)
            log(f"  round {number + 1}: {variant} {timed.seconds:.2f} s")
    keys = {"PostgreSQL plain": "9a", "PostgreSQL custom": "9b", "MariaDB": "9c"}
    ratios = {}
    for engine, key in keys.items():
        ratio = ratio_summary(times[f"{engine}:counted"], times[f"{engine}:uncounted"])
        ratios[engine] = ratio
        bench.report.row(Row(key, f"`backupmand run` with row counting / without, {engine} "
                             f"({size_label(raw[engine])} dump)", ratio, "{:.3f}", "",
                             "≤ 1.10", ratio.median <= 1.10))
    expected = {"PostgreSQL plain": bench.pg.count_rows("big"),
                "PostgreSQL custom": bench.pg.count_rows("big"), "MariaDB": mariadb_rows}
    bench.report.section(
        "9. The cost of counting rows",
        "`backupmand run` (zstd, one local drive) with counting (`python -m backupmand`) "
        "and without (`bench/uncounted.py`, the same CLI with the counters replaced; see "
        "the top of bench/costs.py), alternating, for the large PostgreSQL database as a "
        "plain and as a custom-format dump, and for a MariaDB table of string-heavy rows "
        "(quotes, backslashes, `),(`, emoji, binary: the hardest case for the MariaDB "
        "counter). For MariaDB the reference also skips what else DumpStream does, so its "
        "ratio is an upper bound.",
        "",
        *table(["engine", "dump bytes", "rows counted (expected)", "with counting",
                "without", "ratio each round"],
               [[engine, f"{raw[engine]:,}", f"{counted_rows[engine]:,} "
                 f"({expected[engine]:,})",
                 Summary(tuple(times[f"{engine}:counted"])).text("{:.2f}", " s"),
                 Summary(tuple(times[f"{engine}:uncounted"])).text("{:.2f}", " s"),
                 " ".join(f"{v:.3f}" for v in ratios[engine].values)] for engine in engines]),
    )
