"""backupmand's CLI under a memory tracer (bench only): where the resident memory goes.

    BENCH_TRACE_OUT=report.json python bench/traced.py -c CONFIG run

The same process as ``python -m backupmand`` (it calls ``backupmand.cli.main``), with
``tracemalloc`` started before anything is imported and a thread that reads the
process's resident set from /proc/self/status every 20 ms. Each time it has grown by
more than 2% (at least 1 MiB) since the last record (under tracemalloc: each time
Python's traced memory has), the thread records what the memory is at that moment, so
that the last record describes the peak, give or take 2%:

- ``/proc/self/smaps``, summed: file-backed pages (code and data of the interpreter
  and of every shared library, by file), and anonymous memory (the heap, the malloc
  arenas of the threads, thread stacks);
- tracemalloc's snapshot: Python's allocations by package (the file a block was
  allocated in, folded to its top-level package), by caller (the newest frame outside
  the standard library and the import machinery, with ``BENCH_TRACE_FRAMES`` frames
  kept, default 1) and by line, and the large blocks (256 KiB or more: data in flight)
  with their callers;
- the threads alive.

Anonymous memory that tracemalloc does not see is native: the C libraries' own
allocations (zstd contexts, OpenSSL, the age encryptor), memory glibc keeps in its
arenas after it was freed, and thread stacks. tracemalloc's own bookkeeping is
reported too (it is part of the resident set only under this tracer). Timing under the
tracer means nothing: it makes every allocation slower.
"""

from __future__ import annotations

import os
import tracemalloc

#: BENCH_TRACE_PYTHON=0: only /proc (the resident set as it is without the tracer).
TRACE_PYTHON = os.environ.get("BENCH_TRACE_PYTHON", "1") != "0"
#: BENCH_TRACE_FRAMES=N: keep N frames per allocation (large blocks show their callers).
FRAMES = int(os.environ.get("BENCH_TRACE_FRAMES", "1"))
if TRACE_PYTHON:
    tracemalloc.start(FRAMES)

import atexit  # noqa: E402 - after tracemalloc.start, so that imports are traced too
import collections  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

MIB = 1024 * 1024
LARGE = 256 * 1024
_STATUS = re.compile(r"^(VmRSS|VmHWM|RssAnon|RssFile|RssShmem|Threads):\s+(\d+)", re.M)
_MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$")


def status() -> dict[str, int]:
    with open("/proc/self/status") as handle:
        return {key: int(value) for key, value in _STATUS.findall(handle.read())}


def smaps() -> dict[str, Any]:
    """Resident KiB by kind of mapping, and the largest file-backed ones by file."""
    files: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    anonymous: list[tuple[int, int, str]] = []  # (resident KiB, size KiB, permissions)
    current, size, permissions = "", 0, ""
    with open("/proc/self/smaps") as handle:
        for line in handle:
            mapping = _MAPPING.match(line)
            if mapping and "-" in line.split(" ", 1)[0]:
                current = mapping.group(1).strip()
                low, high = (int(x, 16) for x in line.split(" ", 1)[0].split("-"))
                size, permissions = (high - low) // 1024, line.split()[1]
                continue
            if not line.startswith("Rss:"):
                continue
            kib = int(line.split()[1])
            if current.startswith("/"):
                files[current] += kib
                kinds["file-backed (code, libraries)"] += kib
            elif current == "[heap]":
                kinds["[heap] (main malloc arena)"] += kib
            elif current.startswith("[stack"):
                kinds["[stack] (main thread)"] += kib
            elif current in ("", "[anon]") or current.startswith("[anon:"):
                kinds["anonymous mappings (thread arenas and stacks, large blocks)"] += kib
                if kib:
                    anonymous.append((kib, size, permissions))
            else:
                kinds[current] += kib
    anonymous.sort(reverse=True)
    return {"kinds_kib": dict(kinds.most_common()),
            "files_kib": dict(files.most_common(12)),
            "anonymous_resident_kib_size_kib_permissions": anonymous[:40]}


@functools.cache
def _package(filename: str) -> str:
    """A source file folded to what a reader knows it as (a package, or the stdlib)."""
    parts = Path(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            return parts[parts.index(marker) + 1].split(".")[0]
    if "backupmand" in parts:
        index = len(parts) - 1 - parts[::-1].index("backupmand")
        inner = parts[index + 1:]
        return "backupmand/" + (inner[0] if len(inner) > 1 else inner[0].removesuffix(".py"))
    if filename.startswith("<"):
        return filename
    return "stdlib:" + Path(filename).stem


def _caller(traceback: tracemalloc.Traceback) -> str:
    """The newest frame's package outside the standard library and the import machinery
    (who parsed that JSON document, whose import made those code objects)."""
    for frame in reversed(traceback):
        package = _package(frame.filename)
        if not package.startswith(("stdlib:", "<")):
            return package
    return _package(traceback[-1].filename)


def python_memory(snapshot: tracemalloc.Snapshot) -> dict[str, Any]:
    packages: collections.Counter[str] = collections.Counter()
    callers: collections.Counter[str] = collections.Counter()
    large: collections.Counter[str] = collections.Counter()
    large_count: collections.Counter[str] = collections.Counter()
    for trace in snapshot.traces:
        frame = trace.traceback[-1]  # a Traceback runs from the oldest frame to the newest
        packages[_package(frame.filename)] += trace.size
        callers[_caller(trace.traceback)] += trace.size
        if trace.size >= LARGE:
            where = " < ".join(f"{_package(caller.filename)}:{caller.lineno}"
                               for caller in reversed(trace.traceback))
            large[where] += trace.size
            large_count[where] += 1
    lines = snapshot.statistics("lineno")[:15]
    return {
        "traced_bytes": sum(packages.values()),
        "by_package": dict(packages.most_common(20)),
        "by_caller": dict(callers.most_common(20)),
        "top_lines": [{"where": f"{_package(stat.traceback[0].filename)}:"
                                f"{stat.traceback[0].lineno}", "bytes": stat.size,
                       "blocks": stat.count} for stat in lines],
        "large_blocks": [{"where": where, "bytes": size, "blocks": large_count[where]}
                         for where, size in large.most_common(12)],
    }


class Sampler(threading.Thread):
    def __init__(self, output: Path) -> None:
        super().__init__(name="bench-memory-sampler", daemon=True)
        self.output = output
        self.stopping = threading.Event()
        self.samples: list[tuple[float, int]] = []
        self.peak: dict[str, Any] = {}
        self.started = time.monotonic()

    def run(self) -> None:
        recorded = 0
        while not self.stopping.wait(0.02):
            now = status()
            self.samples.append((round(time.monotonic() - self.started, 3), now["VmRSS"]))
            # Under tracemalloc, Python's own peak (a snapshot's objects are gone again
            # once it is summarised, so they never trigger the next one); else the
            # resident set's (reading /proc allocates next to nothing).
            level = tracemalloc.get_traced_memory()[0] // 1024 if TRACE_PYTHON else now["VmRSS"]
            # 2% more than the last record (at least 1 MiB): few records while the
            # imports grow the process steadily, and the last one within 2% of the peak.
            if level > recorded + max(1024, recorded // 50):
                self.record(now)
                recorded = level

    def record(self, now: dict[str, int]) -> None:
        self.peak = {
            "at_seconds": round(time.monotonic() - self.started, 3),
            "status_kib": now,
            "smaps": smaps(),
            "threads": sorted(thread.name for thread in threading.enumerate()),
        }
        if TRACE_PYTHON:
            snapshot = tracemalloc.take_snapshot()
            self.peak["python"] = python_memory(snapshot)
            self.peak["tracemalloc_overhead_bytes"] = tracemalloc.get_tracemalloc_memory()
            del snapshot

    def finish(self) -> None:
        self.stopping.set()
        self.join()
        final = status()
        report = {"peak": self.peak, "final_status_kib": final,
                  "rss_timeline_kib": self.samples[::5]}
        self.output.write_text(json.dumps(report, indent=1))


def main() -> int:
    sampler = Sampler(Path(os.environ["BENCH_TRACE_OUT"]))
    sampler.start()
    atexit.register(sampler.finish)
    from backupmand.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
