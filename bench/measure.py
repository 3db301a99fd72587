"""Measuring helpers: summaries, timed processes, peak RSS, backupmand's log lines."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import re
import shlex
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Summary:
    """min / median / max of a list of samples."""

    values: tuple[float, ...]

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def text(self, fmt: str = "{:.2f}", unit: str = "") -> str:
        return " / ".join(fmt.format(v) for v in (self.min, self.median, self.max)) + unit


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p99 of 500 samples is the 495th smallest)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclasses.dataclass
class Timed:
    started_at: dt.datetime  # wall clock, to place the process's log lines
    seconds: float
    returncode: int
    peak_rss_kib: int | None  # VmHWM of the process itself, polled
    rusage_maxrss_kib: int | None  # wait4()'s ru_maxrss: the process *or* a reaped descendant
    stderr: str
    #: CPU seconds (user + system) of the process and the children it reaped (pg_dump).
    cpu_seconds: float = 0.0
    stdout: str = ""


def run_timed(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              cwd: Path | None = None, poll_rss: bool = False, timeout: float = 3600,
              check: bool = True, capture_stdout: bool = False) -> Timed:
    """Start ``argv`` and wait for it; wall time from just before the fork to the reap.

    With ``poll_rss``, a thread reads ``VmHWM`` (the kernel's high-water mark of the
    process's resident set, all its threads included, its children excluded) from
    /proc/<pid>/status every 5 ms until the process is gone; the last value read is the
    peak. ``wait4`` reports ru_maxrss too, but that one is the largest of the process
    and the descendants it reaped (pg_dump), so it is only an upper bound.
    """
    with tempfile.TemporaryFile() as stderr, tempfile.TemporaryFile() as stdout:
        started_at = dt.datetime.now(dt.UTC)
        started = time.perf_counter()
        process = subprocess.Popen(list(argv), env=dict(env) if env is not None else None,
                                   cwd=cwd, stderr=stderr,
                                   stdout=stdout if capture_stdout else subprocess.DEVNULL)
        peak: list[int] = []
        poller: threading.Thread | None = None
        if poll_rss:
            poller = threading.Thread(target=_poll_hwm, args=(process.pid, peak), daemon=True)
            poller.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if poller is not None:
            poller.join()
        stderr.seek(0)
        text = stderr.read().decode("utf-8", "replace")
        stdout.seek(0)
        output = stdout.read().decode("utf-8", "replace")
    if check and process.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {process.returncode}:\n{text[-4000:]}")
    return Timed(started_at, seconds, process.returncode, max(peak) if peak else None,
                 usage.ru_maxrss if poll_rss else None, text,
                 cpu_seconds=usage.ru_utime + usage.ru_stime, stdout=output)


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU seconds of process ``pid``, all its threads; with ``children``,
    also those of the children it has reaped (a PostgreSQL server's finished backends)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    # Counting from the state (field 3 of proc(5)): utime, stime, cutime, cstime are
    # fields 14 to 17.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS


_HWM = re.compile(rb"^VmHWM:\s+(\d+) kB", re.M)


def _poll_hwm(pid: int, peak: list[int]) -> None:
    path = f"/proc/{pid}/status"
    while True:
        try:
            with open(path, "rb") as handle:
                found = _HWM.search(handle.read())
        except (FileNotFoundError, ProcessLookupError):
            return
        if found is None:  # a zombie: its memory is gone, its peak was read before
            return
        peak.append(int(found.group(1)))
        time.sleep(0.005)


# ---------------------------------------------------------------------------- log lines

_LINE = re.compile(r"^<\d>(\S+) (\S+)(.*)$")
_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


@dataclasses.dataclass(frozen=True)
class Event:
    at: dt.datetime
    name: str
    fields: dict[str, str]


def parse_log(text: str) -> list[Event]:
    """backupmand's non-journald lines: ``<N>ISO-timestamp event key=value ...``."""
    events = []
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        try:
            at = dt.datetime.fromisoformat(match.group(1).replace("Z", "+00:00"))
        except ValueError:
            continue
        fields = {key: value.strip('"') for key, value in _PAIR.findall(match.group(3))}
        events.append(Event(at, match.group(2), fields))
    return events


def first(events: Sequence[Event], name: str) -> Event:
    for event in events:
        if event.name == name:
            return event
    raise LookupError(f"no {name} event in the log")


def run_phases(timed: Timed, events: Sequence[Event]) -> tuple[float, ...]:
    """(start-up, dump, upload, finish, total) seconds of one `backupmand run`: process
    start to ``backup.started``, ``dump.started`` to ``dump.finished``, from there to the
    last ``upload.finished``, and from there to the process's end."""
    started = first(events, "backup.started").at
    dumped = first(events, "dump.finished")
    uploaded = max(e.at for e in events if e.name == "upload.finished")
    ended = timed.started_at + dt.timedelta(seconds=timed.seconds)
    return ((started - timed.started_at).total_seconds(),
            (dumped.at - first(events, "dump.started").at).total_seconds(),
            (uploaded - dumped.at).total_seconds(), (ended - uploaded).total_seconds(),
            timed.seconds)
