"""Figures 6a, 6b, 6c, 2d and 2e: one pass to every drive, over simulated links.

Each remote service sits behind a link of its own (bench/links.py): moto's S3 server and
the Google Drive stand-in, each a process, each behind a throttling proxy. Every
variant of a figure runs once per round, in rotated order; ratios are taken within a
round.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from links import Throttle
from measure import Event, Summary, Timed, first, run_phases, run_timed
from report import MB, MIB, Row, log, ratio_summary, size_label, table

if TYPE_CHECKING:
    from run import Bench

BENCH = Path(__file__).resolve().parent

#: What each variant of figures 6a/6b/2d/2e runs.
VARIANTS = {
    "stream": "`backupmand run` to S3, streamed (this tree)",
    "nostream": "`backupmand run` to S3, `uploads.stream: false` (dump, then upload)",
    "before": "`backupmand run` to S3, the previous release (dump, then upload)",
    "local": "`backupmand run` to a local drive: the dump alone",
    "up-s3": "the same file uploaded to S3 alone (`Drive.upload`)",
    "up-gdrive": "the same file uploaded to Google Drive alone (`Drive.upload`)",
    "three": "`backupmand run` to local, S3 and Google Drive, streamed",
    "three-small": "the same with the small database",
}


class Sample:
    """One run of one variant: its wall time, memory, CPU, and when its uploads ended."""

    def __init__(self, timed: Timed, servers: dict[str, float], events: list[Event] | None,
                 answer: dict[str, Any] | None = None) -> None:
        self.wall = timed.seconds
        self.peak_mb = (timed.peak_rss_kib or 0) * 1024 / MB
        self.cpu = {"backupmand (+ pg_dump)" if events is not None else "upload process":
                    timed.cpu_seconds, **servers}
        self.phases = run_phases(timed, events) if events is not None else None
        self.streamed: list[str] = []
        if events is not None:
            for event in events:
                if event.name == "upload.finished":
                    flag = event.fields.get("streamed")
                    self.streamed.append(f"{event.fields.get('drive')}: "
                                         + ("streamed" if flag == "true" else
                                            "from the stage file" if flag == "false" else "?"))
        self.answer = answer or {}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(4 * MIB):
            digest.update(block)
    return digest.hexdigest()


def reference_dump(bench: Bench, folder: Path, db: str) -> tuple[Path, str]:
    """A backup of ``db`` on a local drive (zstd): the file the upload-alone runs send."""
    shutil.rmtree(folder, ignore_errors=True)
    _, events = bench.run_backupmand("after", folder / "run", db=db,
                                     drives=[bench.local_drive("disk", folder / "drive")])
    dumped = first(events, "dump.finished")
    (stored,) = [path for path in (folder / "drive").rglob("*.zst") if ".globals." not in path.name]
    kept = folder / stored.name
    stored.rename(kept)
    shutil.rmtree(folder / "run", ignore_errors=True)
    shutil.rmtree(folder / "drive", ignore_errors=True)
    assert kept.stat().st_size == int(dumped.fields["size"])
    return kept, dumped.fields["sha256"]


def upload_alone(bench: Bench, folder: Path, drive: dict[str, Any], path: Path,
                 sha256: str) -> tuple[Timed, dict[str, Any]]:
    """bench/upload_alone.py as a process: its wall time, and what it printed."""
    config = bench.config(folder, db="tiny", drives=[drive])
    os.sync()
    timed = run_timed([sys.executable, str(BENCH / "upload_alone.py"), "-c", str(config),
                       "--drive", drive["label"], "--sha256", sha256, str(path)],
                      env=bench.env("after"), cwd=bench.trees["after"], poll_rss=True,
                      capture_stdout=True)
    shutil.rmtree(folder, ignore_errors=True)
    return timed, json.loads(timed.stdout.strip().splitlines()[-1])


def _measured(bench: Bench, run: Callable[[], tuple[Timed, list[Event] | None, dict[str, Any]]]
              ) -> Sample:
    """``run`` with the servers' CPU counted around it; nothing kept on the remotes after."""
    before = bench.servers_cpu()
    timed, events, answer = run()
    after = bench.servers_cpu()
    bench.clear_remote()
    return Sample(timed, {name: after[name] - before[name] for name in after}, events, answer)


def _cells(values: Sequence[float], fmt: str = "{:.2f}", unit: str = " s") -> str:
    return Summary(tuple(values)).text(fmt, unit)


def throttled(bench: Bench) -> None:
    options = bench.options
    log("6a, 6b, 2d, 2e. backups streamed over simulated links")
    bench.database("big")
    bench.database("small")
    link, gdrive, _ = bench.remote()
    base = bench.work / "links"
    reference, reference_sha256 = reference_dump(bench, base / "reference", "big")
    s3 = bench.s3_drive(link.endpoint)
    drive = gdrive.drive("gdrive")
    variants = ["stream", "nostream", "local", "up-s3", "up-gdrive", "three", "three-small"]
    if "before" in bench.trees:
        variants.insert(2, "before")

    def backup(tree: str, db: str, drives: list[dict[str, Any]], **config: Any
               ) -> Callable[[], tuple[Timed, list[Event] | None, dict[str, Any]]]:
        def run() -> tuple[Timed, list[Event] | None, dict[str, Any]]:
            timed, events = bench.run_backupmand(tree, base / "run", db=db, drives=drives,
                                                 **config)
            shutil.rmtree(base / "run", ignore_errors=True)
            return timed, events, {}
        return run

    def alone(target: dict[str, Any]) -> Callable[[], tuple[Timed, list[Event] | None,
                                                             dict[str, Any]]]:
        def run() -> tuple[Timed, list[Event] | None, dict[str, Any]]:
            timed, answer = upload_alone(bench, base / "upload", target, reference,
                                         reference_sha256)
            return timed, None, answer
        return run

    local = bench.local_drive("disk", base / "run" / "drive")
    runs = {
        "stream": backup("after", "big", [s3]),
        "nostream": backup("after", "big", [s3], uploads={"stream": False}),
        "before": backup("before", "big", [s3]),
        "local": backup("after", "big", [local]),
        "up-s3": alone(s3),
        "up-gdrive": alone(drive),
        "three": backup("after", "big", [local, s3, drive]),
        "three-small": backup("after", "small", [local, s3, drive]),
    }
    samples: dict[str, list[Sample]] = {variant: [] for variant in variants}
    for number, order in bench.rounds(variants, options.runs):
        for variant in order:
            sample = _measured(bench, runs[variant])
            samples[variant].append(sample)
            log(f"  round {number + 1}: {variant} {sample.wall:.2f} s, peak {sample.peak_mb:.0f} MB")
    walls = {variant: [sample.wall for sample in samples[variant]] for variant in variants}
    rounds = range(options.runs)
    alone_6a = [max(walls["local"][i], walls["up-s3"][i]) for i in rounds]
    alone_6b = [max(walls["local"][i], walls["up-s3"][i], walls["up-gdrive"][i]) for i in rounds]
    size = bench.dump_sizes["big"]
    compressed = reference.stat().st_size
    ratio_6a = ratio_summary(walls["stream"], alone_6a)
    bench.report.row(Row(
        "6a", f"backup of a {size_label(size)} dump (zstd) to S3 over a {link.describe()} "
        "link / max(dump alone, upload alone)", ratio_6a, "{:.3f}", "", "≤ 1.10",
        ratio_6a.median <= 1.10))
    if "before" in bench.trees:
        ratio = ratio_summary(walls["stream"], walls["before"])
        bench.report.row(Row("6a-prev", f"the same / the previous release (`{options.before}`: "
                             "dump, then upload)", ratio, "{:.3f}", "", "≤ 0.75",
                             ratio.median <= 0.75))
    else:
        bench.report.row(Row("6a-prev", "the same / the previous release (dump, then upload)",
                             None, "", "", "≤ 0.75", None,
                             note="run with --before REV (e.g. 4f8a3e4, the last commit of "
                                  "round one)"))
    bench.report.row(Row("6a*", "the same / `uploads.stream: false` (dump, then upload)",
                         ratio_summary(walls["stream"], walls["nostream"]), "{:.3f}", "",
                         "reference", None))
    ratio_6b = ratio_summary(walls["three"], alone_6b)
    bench.report.row(Row(
        "6b", "backup to local, S3 and Google Drive (each over its own link) / max(dump "
        "alone, slowest upload alone)", ratio_6b, "{:.3f}", "", "≤ 1.15",
        ratio_6b.median <= 1.15))
    peaks = {variant: [sample.peak_mb for sample in samples[variant]]
             for variant in ("three", "three-small")}
    big_peak = Summary(tuple(peaks["three"]))
    bench.report.row(Row("2d", f"peak RSS, 3-drive streamed backup of the {size_label(size)} "
                         "dump", big_peak, "{:.1f}", " MB", "≤ 100 MB", big_peak.median <= 100))
    spread = ratio_summary(peaks["three"], peaks["three-small"])
    bench.report.row(Row("2e", f"peak RSS, 3 drives, {size_label(size)} / "
                         f"{size_label(bench.dump_sizes['small'])}", spread, "{:.3f}", "",
                         "≤ 1.10", spread.median <= 1.10))

    def label(variant: str) -> str:
        return VARIANTS[variant] + (f" (`{options.before}`)" if variant == "before" else "")

    rows = []
    for variant in variants:
        chosen = samples[variant]
        answer = [sample.answer for sample in chosen]
        inner = (_cells([a["seconds"] for a in answer]) if answer and "seconds" in answer[0]
                 else "")
        complete = (_cells([a["complete_seconds"] for a in answer])
                    if answer and answer[0].get("complete_seconds") else "")
        rows.append([label(variant), _cells(walls[variant]), inner, complete,
                     _cells([s.peak_mb for s in chosen], "{:.0f}", " MB"),
                     " ".join(f"{w:.2f}" for w in walls[variant])])
    phase_rows = []
    for variant in variants:
        with_phases = [s.phases for s in samples[variant] if s.phases is not None]
        if with_phases:
            medians = [statistics.median(p[i] for p in with_phases) for i in range(5)]
            phase_rows.append([label(variant)] + [f"{value:.2f}" for value in medians]
                              + ["; ".join(samples[variant][0].streamed)])
    servers = list(samples[variants[0]][0].cpu)[1:]
    cpu_rows = []
    for variant in variants:
        chosen = samples[variant]
        own = statistics.median(next(iter(s.cpu.values())) for s in chosen)
        others = [statistics.median(s.cpu.get(name, 0.0) for s in chosen) for name in servers]
        total = statistics.median(sum(s.cpu.values()) for s in chosen)
        cpu_rows.append([label(variant), f"{own:.1f}", *(f"{v:.1f}" for v in others),
                         f"{total:.1f}", f"{total / statistics.median(walls[variant]):.2f}"])
    ratio_rows = [["6a stream / max(dump alone, upload alone)",
                   " ".join(f"{v:.3f}" for v in ratio_6a.values)],
                  ["6a* stream / `uploads.stream: false`", " ".join(
                      f"{a / b:.3f}" for a, b in zip(walls["stream"], walls["nostream"],
                                                     strict=True))]]
    if "before" in bench.trees:
        ratio_rows.insert(1, ["6a-prev stream / previous release", " ".join(
            f"{a / b:.3f}" for a, b in zip(walls["stream"], walls["before"], strict=True))])
    ratio_rows += [["6b three drives / max(dump alone, slowest upload alone)",
                    " ".join(f"{v:.3f}" for v in ratio_6b.values)],
                   ["2e peak RSS big / small", " ".join(f"{v:.3f}" for v in spread.values)]]
    bench.report.section(
        "6a, 6b, 2d, 2e. Streaming to the drives over simulated links",
        f"PostgreSQL plain dump of {size:,} bytes, zstd ({compressed:,} bytes compressed). "
        f"moto's S3 server and the Google Drive stand-in (tests/servers/fake_gdrive.py) each "
        f"run as a process of their own, each behind a throttling proxy "
        f"(tests/servers/throttle.py) of {link.describe()} in each direction: a link per "
        "service, as an S3 region and Google's servers are different places. *Dump alone* "
        "is the same backup to a local drive; *upload alone* is `bench/upload_alone.py`: "
        "backupmand's own drive (`build_drive` from the same config) storing the file of "
        "one such backup with `Drive.upload`, verification included, in a process of its "
        "own (its wall time, like a backup's, includes the interpreter, the imports and the "
        "client's set-up; the column *upload* is the upload call alone, and *of which S3's "
        "complete* the CompleteMultipartUpload call within it: moto assembles the object "
        "then, in Python, in about a second per 300 MB, and a streamed backup waits for that "
        "too, after its dump). Peak RSS is VmHWM, as in figure 2.",
        "",
        *table(["variant", "wall min / median / max", "upload", "of which S3's complete",
                "peak RSS", "each round"], rows),
        "",
        "Where the time goes (median seconds, from the log lines as in figure 1: *after "
        "the dump* runs from `dump.finished` to the last drive's `upload.finished`, the "
        "tail that streaming is there to shorten; *finish* includes the manifests):",
        "",
        *table(["variant", "start-up", "dump", "after the dump", "finish", "total",
                "each drive's copy"], phase_rows),
        "",
        "CPU seconds per run (median; backupmand's from `wait4`, which includes the pg_dump "
        "it reaped; the servers' from /proc, PostgreSQL's being its finished backends). On "
        "real links moto's, the proxies' and the stand-in's work happens on other machines; "
        "here they share the same 2 cores, and *cores busy* (all of it over the wall time) "
        "near 2 means the run waited for CPU, not for the link.",
        "",
        *table(["variant", "own", *servers, "all", "cores busy"], cpu_rows),
        "",
        *table(["ratio", "each round"], ratio_rows),
    )


def _write_random(path: Path, size: int) -> str:
    """``size`` random bytes into ``path`` (nothing to compress or deduplicate); SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        left = size
        while left:
            block = os.urandom(min(left, 16 * MIB))
            digest.update(block)
            handle.write(block)
            left -= len(block)
    return digest.hexdigest()


def parallel_parts(bench: Bench) -> None:
    options = bench.options
    rate = options.part_link_rate
    log(f"6c. S3 upload over a link of {rate / 1e6:g} MB/s per connection: 4 parts at once / 1")
    link = Throttle(("127.0.0.1", bench.s3.port), bench.work / "parts-link.log", rate=None,
                    per_connection=rate).start()
    try:
        base = bench.work / "parts"
        base.mkdir(parents=True, exist_ok=True)
        path = base / "upload.bin"
        sha256 = _write_random(path, options.part_upload_bytes)
        variants = ["1", "4"]
        timed_runs: dict[str, list[Timed]] = {variant: [] for variant in variants}
        answers: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
        for number, order in bench.rounds(variants, options.runs):
            for variant in order:
                drive = bench.s3_drive(link.endpoint, part_concurrency=int(variant))
                timed, answer = upload_alone(bench, base / "config", drive, path, sha256)
                bench.clear_remote()
                timed_runs[variant].append(timed)
                answers[variant].append(answer)
                log(f"  round {number + 1}: part_concurrency {variant}: {timed.seconds:.2f} s "
                    f"(complete {answer['complete_seconds']:.2f} s)")
        path.unlink()
    finally:
        link.stop()
    walls = {variant: [timed.seconds for timed in timed_runs[variant]] for variant in variants}
    ratio = ratio_summary(walls["4"], walls["1"])
    bench.report.row(Row("6c", f"S3 upload of {size_label(options.part_upload_bytes)}, "
                         f"{rate / 1e6:g} MB/s per connection: `part_concurrency: 4` / 1",
                         ratio, "{:.3f}", "", "≤ 0.35", ratio.median <= 0.35))
    parts_only = {variant: [a["seconds"] - a["complete_seconds"] for a in answers[variant]]
                  for variant in variants}
    bench.report.row(Row("6c*", "the same, parts only (moto's CompleteMultipartUpload taken "
                         "out)", ratio_summary(parts_only["4"], parts_only["1"]), "{:.3f}",
                         "", "reference", None))
    megabytes = options.part_upload_bytes / MB
    bench.report.section(
        "6c. Parts in parallel",
        f"`bench/upload_alone.py` uploading {options.part_upload_bytes:,} random bytes to moto "
        f"through a proxy that lets each connection carry {rate / 1e6:g} MB/s (no cap on the "
        "total), with `part_concurrency` 1 and 4 (16 MiB parts), in alternating order. "
        "*complete* is the time of CompleteMultipartUpload, timed around the drive's own "
        "call: moto assembles the object then, in Python, which real S3 does in its own "
        "time; it weighs the same in both variants and pulls the ratio towards 1.",
        "",
        *table(["part_concurrency", "wall min / median / max", "upload", "complete",
                "effective rate of the parts", "each round"],
               [[variant, _cells(walls[variant]),
                 _cells([a["seconds"] for a in answers[variant]]),
                 _cells([a["complete_seconds"] for a in answers[variant]]),
                 f"{megabytes / statistics.median(parts_only[variant]):.1f} MB/s",
                 " ".join(f"{w:.2f}" for w in walls[variant])] for variant in variants]),
    )
