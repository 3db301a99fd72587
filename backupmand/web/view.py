"""What the status page shows, decided from plain facts: no I/O, no HTML.

``gather.gather`` reads the facts (catalog, health, schedule) into a ``Facts``;
``build`` turns them into a ``StatusView`` of display-ready values, which the template
only lays out (and escapes). Everything a reader could misjudge is decided here, where
unit tests can reach it: a day's outcome, what counts as stale, what the banner says.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from ..models import Backup, Status, rfc3339

#: Days in a source's strip of outcomes, today included.
STRIP_DAYS = 30
#: A source is stale when its last finished backup is older than this many schedule
#: intervals (one missed run is a late run; two in a row are a problem).
STALE_INTERVALS = 2

Outcome = Literal["finished", "failed", "suspect", "none"]
ProblemKind = Literal["failed", "stale", "suspect", "drill", "unhealthy", "catalog"]


# ---------------------------------------------------------------------------- formatting


def human_size(size: int) -> str:
    """Bytes in binary units, as ``ls -lh`` and ``du -h`` readers expect (1.2 MiB)."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def human_duration(seconds: float, *, precise: bool = True) -> str:
    """A span in its two largest units (3 h 5 min); tenths of a second below 10 s when
    ``precise`` (a backup's duration), whole seconds otherwise (an age)."""
    seconds = max(seconds, 0.0)
    if seconds < 10 and precise:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, second = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {second} s" if second else f"{minutes} min"
    hours, minute = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minute} min" if minute else f"{hours} h"
    days, hour = divmod(hours, 24)
    return f"{days} d {hour} h" if hour else f"{days} d"


@dataclasses.dataclass(frozen=True)
class Moment:
    """A point in time three ways: for machines, for the reader's wall clock, and
    relative to the page's own time."""

    iso: str  # RFC 3339 UTC, as the API writes it
    local: str  # in the backup job's time zone, with its abbreviation
    relative: str  # "3 h ago", "in 12 h"


def moment(value: dt.datetime, now: dt.datetime, zone: dt.tzinfo) -> Moment:
    delta = (now - value).total_seconds()
    if abs(delta) < 1:
        relative = "just now"
    elif delta > 0:
        relative = f"{human_duration(delta, precise=False)} ago"
    else:
        relative = f"in {human_duration(-delta, precise=False)}"
    return Moment(iso=rfc3339(value) or "", local=value.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z"),
                  relative=relative)


# ---------------------------------------------------------------------------- the strip


@dataclasses.dataclass(frozen=True)
class Day:
    """One day of a source's strip, in the backup job's time zone."""

    date: dt.date
    finished: int = 0  # finished and not suspect
    suspect: int = 0  # finished, flagged suspect
    failed: int = 0

    @property
    def outcome(self) -> Outcome:
        """The day's worst: one failure colours the day, whatever else succeeded."""
        if self.failed:
            return "failed"
        if self.suspect:
            return "suspect"
        if self.finished:
            return "finished"
        return "none"

    @property
    def summary(self) -> str:
        counts = [f"{count} {name}" for name, count in (
            ("finished", self.finished), ("suspect", self.suspect), ("failed", self.failed))
            if count]
        return f"{self.date.isoformat()}: {', '.join(counts) if counts else 'no backup'}"


def day_strip(outcomes: Iterable[tuple[Status, bool, dt.datetime]], zone: dt.tzinfo,
              today: dt.date, days: int = STRIP_DAYS) -> tuple[Day, ...]:
    """The last ``days`` calendar days in ``zone`` up to ``today``, oldest first, each with
    the (status, suspect, created_at) outcomes created on it. Backups still pending
    are left out: they have no outcome yet."""
    first = today - dt.timedelta(days=days - 1)
    counts: dict[dt.date, dict[str, int]] = {}
    for status, suspect, created_at in outcomes:
        day = created_at.astimezone(zone).date()
        if not first <= day <= today or status is Status.PENDING:
            continue
        kind = "failed" if status is Status.FAILED else "suspect" if suspect else "finished"
        bucket = counts.setdefault(day, {})
        bucket[kind] = bucket.get(kind, 0) + 1
    return tuple(Day(first + dt.timedelta(days=offset), **counts.get(first + dt.timedelta(days=offset), {}))
                 for offset in range(days))


def strip_start(today: dt.date, zone: dt.tzinfo, days: int = STRIP_DAYS) -> dt.datetime:
    """A moment no later than the strip's first midnight in ``zone`` (a day early, so that
    a midnight skipped by a DST change cannot cut the first day short)."""
    first = today - dt.timedelta(days=days)
    return dt.datetime.combine(first, dt.time(), tzinfo=zone).astimezone(dt.UTC)


# ---------------------------------------------------------------------------- the facts


@dataclasses.dataclass(frozen=True)
class Facts:
    """Everything the page shows, as read at ``now``."""

    now: dt.datetime
    zone: dt.tzinfo
    zone_name: str
    host: str
    version: str
    sources: Sequence[tuple[str, str]]  # (label, provider), in config order
    drives: Sequence[tuple[str, str]]  # (label, provider), in config order
    latest: Mapping[str, Backup]  # each label's newest backup that is not pending
    last_finished: Mapping[str, Backup]
    last_drilled: Mapping[str, Backup]  # each label's most recently drilled backup
    running: Mapping[str, str]  # label -> step of the backup in flight
    outcomes: Sequence[tuple[str, Status, bool, dt.datetime]]  # (label, status, suspect, created)
    next_run: dt.datetime | None
    interval: float | None  # seconds between scheduled runs (None: not scheduled)
    drive_health: Mapping[str, str]  # drive label -> UP / DOWN
    source_health: Mapping[str, str]  # source label -> UP / DOWN
    catalog_health: str
    last_uploads: Mapping[str, dt.datetime]  # drive label -> last verified upload


# ---------------------------------------------------------------------------- the view


@dataclasses.dataclass(frozen=True)
class Drill:
    result: str  # passed | failed
    at: Moment | None
    error: str | None
    backup_created: Moment  # which backup was drilled


@dataclasses.dataclass(frozen=True)
class SourceView:
    label: str
    provider: str
    health: str  # UP | DOWN | unknown: the health report's connection check
    status: str  # finished | failed | none (no backup has ended yet)
    running: str | None  # the step of a backup in flight
    created: Moment | None
    size_bytes: int | None
    size: str
    duration: str
    error: str | None
    verification: str  # passed | failed | not verified
    verified: Moment | None
    verify_error: str | None
    earlier_drill: Drill | None  # the latest drill, when it was of an older backup
    suspect: bool
    suspect_reason: str | None
    last_finished: Moment | None
    stale: bool
    next_run: Moment | None
    days: tuple[Day, ...]


@dataclasses.dataclass(frozen=True)
class DriveView:
    label: str
    provider: str
    health: str  # UP | DOWN | unknown
    last_upload: Moment | None


@dataclasses.dataclass(frozen=True)
class Problem:
    label: str
    kind: ProblemKind
    text: str


@dataclasses.dataclass(frozen=True)
class StatusView:
    host: str
    version: str
    zone_name: str
    generated: Moment
    interval: str | None
    sources: tuple[SourceView, ...]
    drives: tuple[DriveView, ...]
    problems: tuple[Problem, ...]


def _source(facts: Facts, label: str, provider: str) -> SourceView:
    def at(value: dt.datetime | None) -> Moment | None:
        return moment(value, facts.now, facts.zone) if value is not None else None

    latest = facts.latest.get(label)
    finished = facts.last_finished.get(label)
    drilled = facts.last_drilled.get(label)
    earlier = None
    if drilled is not None and drilled.verification and (latest is None or drilled.id != latest.id):
        earlier = Drill(result=drilled.verification, at=at(drilled.verified_at),
                        error=drilled.verify_error,
                        backup_created=moment(drilled.created_at, facts.now, facts.zone))
    duration = "—"
    if latest is not None and latest.status is Status.FINISHED and latest.finished_at:
        duration = human_duration((latest.finished_at - latest.created_at).total_seconds())
    today = facts.now.astimezone(facts.zone).date()
    outcomes = [(status, suspect, created) for owner, status, suspect, created in facts.outcomes
                if owner == label]
    return SourceView(
        label=label, provider=provider, health=facts.source_health.get(label, "unknown"),
        status=latest.status.value if latest is not None else "none",
        running=facts.running.get(label),
        created=at(latest.created_at) if latest is not None else None,
        size_bytes=latest.size if latest is not None else None,
        size=human_size(latest.size) if latest is not None and latest.size is not None else "—",
        duration=duration,
        error=latest.error if latest is not None else None,
        verification=(latest.verification if latest is not None and latest.verification
                      else "not verified"),
        verified=at(latest.verified_at) if latest is not None else None,
        verify_error=latest.verify_error if latest is not None else None,
        earlier_drill=earlier,
        suspect=latest.suspect if latest is not None else False,
        suspect_reason=latest.suspect_reason if latest is not None else None,
        last_finished=at(_finished_at(finished)) if finished is not None else None,
        stale=_stale(facts, finished),
        next_run=at(facts.next_run),
        days=day_strip(outcomes, facts.zone, today),
    )


def _finished_at(backup: Backup) -> dt.datetime:
    return backup.finished_at or backup.created_at


def _stale(facts: Facts, finished: Backup | None) -> bool:
    """No finished backup for more than STALE_INTERVALS schedule intervals. A source that
    never finished one is judged once its first backup has ended (failed): a new source
    without any backup yet is not stale, only new."""
    if facts.interval is None:
        return False
    if finished is None:
        return False
    age = (facts.now - _finished_at(finished)).total_seconds()
    return age > STALE_INTERVALS * facts.interval


def _problems(facts: Facts, sources: Sequence[SourceView]) -> list[Problem]:
    problems: list[Problem] = []
    if facts.catalog_health != "UP":
        problems.append(Problem("catalog", "catalog", "the catalog does not answer"))
    for source in sources:
        label = source.label
        if source.status == "failed":
            problems.append(Problem(label, "failed", f"the latest backup failed: {source.error}"
                                    if source.error else "the latest backup failed"))
        finished = facts.last_finished.get(label)
        if source.stale and finished is not None:
            age = (facts.now - _finished_at(finished)).total_seconds()
            problems.append(Problem(
                label, "stale", f"no finished backup for {human_duration(age, precise=False)} "
                f"(the schedule runs every {human_duration(facts.interval or 0, precise=False)})"))
        if finished is not None and finished.suspect:
            problems.append(Problem(
                label, "suspect", f"the latest finished backup is suspect: {finished.suspect_reason}"
                if finished.suspect_reason else "the latest finished backup is suspect"))
        drilled = facts.last_drilled.get(label)
        if drilled is not None and drilled.verification == "failed":
            problems.append(Problem(
                label, "drill", f"the latest restore drill failed: {drilled.verify_error}"
                if drilled.verify_error else "the latest restore drill failed"))
        if source.health != "UP":
            problems.append(Problem(label, "unhealthy", "the health check cannot reach it "
                                    "(the daemon's log line health.down says why)"))
    for label, _provider in facts.drives:
        if facts.drive_health.get(label, "unknown") != "UP":
            problems.append(Problem(label, "unhealthy", "the drive's health check fails "
                                    "(the daemon's log line health.down says why)"))
    return problems


def build(facts: Facts) -> StatusView:
    sources = tuple(_source(facts, label, provider) for label, provider in facts.sources)
    drives = tuple(
        DriveView(label=label, provider=provider, health=facts.drive_health.get(label, "unknown"),
                  last_upload=(moment(facts.last_uploads[label], facts.now, facts.zone)
                               if label in facts.last_uploads else None))
        for label, provider in facts.drives)
    return StatusView(
        host=facts.host, version=facts.version, zone_name=facts.zone_name,
        generated=moment(facts.now, facts.now, facts.zone),
        interval=human_duration(facts.interval, precise=False) if facts.interval else None,
        sources=sources, drives=drives, problems=tuple(_problems(facts, sources)))
