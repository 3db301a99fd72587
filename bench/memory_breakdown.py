"""Where the resident memory of a three-drive backup goes (the section under figure 2d).

Not a figure of its own: one run of each of these, the large database streamed to a
local folder, S3 and Google Drive over the simulated links, as in figure 6b:

- under ``bench/traced.py`` without tracemalloc: /proc/self/smaps at the peak
  (file-backed pages, the main heap, the other anonymous mappings and the largest of
  them), and the threads alive then;
- the same with ``MALLOC_MMAP_THRESHOLD_=131072`` (glibc then serves every block of
  128 KiB or more with its own mmap and gives it back when it is freed, instead of
  raising the threshold and keeping freed blocks in the threads' arenas), with the Drive
  drive's ``chunk_size`` at 1 MiB instead of 8, and with both: how much each cause adds;
- the small database under ``bench/traced.py`` with tracemalloc: Python's own
  allocations by package at their peak, and the large blocks among them;
- ``bench/imports_rss.py``: the resident set after each import a three-drive backup
  needs, before any data moves.
"""

from __future__ import annotations

import json
import shutil
import sys
from typing import TYPE_CHECKING, Any

from measure import run_timed
from report import MB, MIB, log, table

if TYPE_CHECKING:
    from run import Bench

#: glibc's mmap threshold pinned at its default (128 KiB): no dynamic raise.
PINNED_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def _traced(bench: Bench, db: str, drives: list[dict[str, Any]], *, python: bool,
            env: dict[str, str] | None = None) -> tuple[float, dict[str, Any]]:
    """One traced three-drive backup: its VmHWM (MB) and traced.py's report."""
    folder = bench.work / "memory-breakdown"
    report = bench.work / "memory-report.json"
    timed, _ = bench.run_backupmand(
        "after", folder, db=db, drives=drives, launcher="traced.py",
        env={"BENCH_TRACE_OUT": str(report), "BENCH_TRACE_PYTHON": "1" if python else "0",
             **(env or {})})
    shutil.rmtree(folder, ignore_errors=True)
    bench.clear_remote()
    data: dict[str, Any] = json.loads(report.read_text())
    report.unlink()
    return (timed.peak_rss_kib or 0) * 1024 / MB, data


def breakdown(bench: Bench) -> None:
    log("2d. where the memory of a three-drive backup goes")
    bench.database("big")
    bench.database("small")
    link, gdrive, _ = bench.remote()
    folder = bench.work / "memory-breakdown"

    def drives(chunk: int | None = None) -> list[dict[str, Any]]:
        drive = gdrive.drive("gdrive")
        if chunk is not None:
            drive["chunk_size"] = chunk
        return [bench.local_drive("disk", folder / "drive"), bench.s3_drive(link.endpoint),
                drive]

    peak, plain = _traced(bench, "big", drives(), python=False)
    pinned, _ = _traced(bench, "big", drives(), python=False, env=PINNED_THRESHOLD)
    small_chunks, _ = _traced(bench, "big", drives(MIB), python=False)
    both, _ = _traced(bench, "big", drives(MIB), python=False, env=PINNED_THRESHOLD)
    # tracemalloc slows every allocation (imports above all): not worth it in a smoke run.
    python = None if bench.options.smoke else _traced(bench, "small", drives(), python=True,
                                                      env={"BENCH_TRACE_FRAMES": "8"})[1]
    imports = json.loads(run_timed([sys.executable, str(bench.trees["after"] / "bench" /
                                                        "imports_rss.py")],
                                   env=bench.env("after"), cwd=bench.trees["after"],
                                   capture_stdout=True).stdout)
    log(f"  VmHWM {peak:.1f} MB; pinned mmap threshold {pinned:.1f} MB; 1 MiB Drive chunks "
        f"{small_chunks:.1f} MB; both {both:.1f} MB")
    at_peak = plain["peak"]
    kinds = at_peak["smaps"]["kinds_kib"]
    largest = at_peak["smaps"]["anonymous_resident_kib_size_kib_permissions"][:10]
    import_rows = []
    previous = 0.0
    for step, mib in imports:
        import_rows.append([step, f"+{mib - previous:.1f}" if previous else "", f"{mib:.1f}",
                            f"{mib * MIB / MB:.1f}"])
        previous = mib
    bench.report.section(
        "2d. Where the memory of a three-drive backup goes",
        "One run of each, the large database to a local folder, S3 and Google Drive over "
        "the links of figure 6b, under `bench/traced.py` (the CLI with a thread that reads "
        "/proc/self/status every 20 ms and, at each new high, /proc/self/smaps; see its "
        "docstring). VmHWM in MB, as in figure 2:",
        "",
        *table(["run", "VmHWM", "against the first"], [
            ["as configured (8 MiB Drive chunks)", f"{peak:.1f} MB", ""],
            ["`MALLOC_MMAP_THRESHOLD_=131072` (glibc's threshold pinned)", f"{pinned:.1f} MB",
             f"{pinned - peak:+.1f} MB"],
            ["Drive `chunk_size: 1048576`", f"{small_chunks:.1f} MB",
             f"{small_chunks - peak:+.1f} MB"],
            ["both", f"{both:.1f} MB", f"{both - peak:+.1f} MB"]]),
        "",
        "At the peak of the first run (resident KiB by kind of mapping; "
        f"{at_peak['status_kib'].get('Threads', '?')} threads: "
        f"{', '.join(at_peak['threads'])}):",
        "",
        *table(["mapping", "resident"], [[kind, f"{kib / 1024:.1f} MiB"]
                                         for kind, kib in kinds.items() if kib]),
        "",
        "The largest anonymous mappings then (resident / size, MiB): "
        + ", ".join(f"{rss / 1024:.1f}/{size / 1024:.1f}" for rss, size, _ in largest) + ".",
        "",
        *_python_lines(python),
        "What a three-drive backup has imported before any data moves "
        "(`bench/imports_rss.py`, VmRSS after each step):",
        "",
        *table(["step", "MiB added", "MiB", "MB"], import_rows),
    )


def _python_lines(report: dict[str, Any] | None) -> list[str]:
    if report is None:
        return ["Python's own allocations: not traced in a smoke run (tracemalloc makes the "
                "imports take tens of seconds).", ""]
    traced = report["peak"]["python"]
    return [
        "Python's own allocations (tracemalloc, the small database, at their peak: "
        f"{traced['traced_bytes'] / MIB:.1f} MiB; tracemalloc's own "
        f"{report['peak']['tracemalloc_overhead_bytes'] / MIB:.1f} MiB not included), by "
        "where they were made (*by the package* is the newest frame outside the standard "
        "library and the import machinery: who asked for the JSON document or the import):",
        "",
        *table(["allocated in", "MiB", "by the package", "MiB"], [
            [inner, f"{inner_size / MIB:.1f}", outer, f"{outer_size / MIB:.1f}"]
            for (inner, inner_size), (outer, outer_size) in zip(
                list(traced["by_package"].items())[:10],
                list(traced["by_caller"].items())[:10], strict=False)]),
        "",
        "Blocks of 256 KiB or more among them: " + (", ".join(
            f"{block['where'].split(' < ')[0]} ({block['bytes'] / MIB:.1f} MiB in "
            f"{block['blocks']})" for block in traced["large_blocks"][:6]) or "none") + ".",
        "",
    ]
