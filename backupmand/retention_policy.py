"""Which backups of one label retention keeps, and why: a pure function, no I/O.

``decide`` answers for every backup of a label, for the three policies of
``retention.by``, with the reasons that keep each one (empty: it may go); the same
answer serves a prune and its preview. Whether retention runs at all
(``retention.enabled``) is the caller's business.

Always kept, whatever the policy:

- ``pinned`` backups and ``pending`` ones;
- ``min_keep``: the newest ``min_keep`` finished backups that count.

"Newest" is always the catalog's creation sequence (``seq``), never the wall clock
alone: a clock set back must not make a new backup look old. A backup that does not
count (``counts=False``: its copies are missing, or it is suspect) never fills a
``min_keep`` or ``keep_*`` place.

``age`` (``value`` days): a backup older than ``value`` days goes. Its age is measured
from its *effective* time, the latest of its own ``created_at`` and that of every older
(by seq) backup not in the future: a backup recorded after a clock was set back is
never older than the backups made before it. Reason ``age``.

``count`` (``value`` backups): the newest ``value`` finished backups that count are
kept (``count``); a failed or non-counting backup stays while it is newer than the
oldest of them, or while fewer than ``value`` exist (``not_superseded``).

``gfs``: restic's ``forget`` (``ApplyPolicy``), among the finished backups that
count, walked newest first by seq:

- ``keep_last N``: the newest N;
- ``keep_hourly/daily/weekly/monthly/yearly N``: the newest backup of each of the
  last N periods that have one, periods taken from ``created_at`` in ``timezone``,
  weeks ISO weeks (``keep_weekly 2026-W48``). A period is ranked by its newest
  backup (by seq), so each period is kept at most once even when a clock went back
  and forth. As in restic 0.17, when fewer than N periods have a backup, the oldest
  backup is kept as well (``keep_daily 2026-11-02 (oldest)``): the history stays as
  long as the rule allows;
- ``keep_within D``: every finished or failed backup whose effective time is less
  than D before the latest ``created_at`` not in the future (restic's "relative to
  the latest snapshot"; with none, every one is within);
- a backup may be kept by several rules: it carries every reason.

Failed backups and finished ones that do not count are not ranked by those rules:
each stays until a newer (by seq) finished backup that counts is kept
(``not_superseded``), so that an error, or a suspicious dump, is still there to look
at until a good backup replaces it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Sequence

from .config import RetentionConfig

STATUSES = frozenset({"pending", "finished", "failed"})


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One backup of a label, as retention sees it."""

    id: str
    seq: int  # the catalog's creation sequence: higher is newer
    created_at: dt.datetime  # aware, UTC, as recorded (the wall clock may have been wrong)
    status: str  # "pending" | "finished" | "failed"
    pinned: bool = False
    #: False: a finished backup that must not count toward min_keep or any keep rule
    #: (its copies are missing, or it is suspect).
    counts: bool = True


@dataclasses.dataclass(frozen=True)
class Decision:
    keep: bool
    reasons: tuple[str, ...]  # why it is kept (empty when it goes)


def _hour(moment: dt.datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}"


def _day(moment: dt.datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"


def _week(moment: dt.datetime) -> str:
    year, week, _weekday = moment.isocalendar()
    return f"{year:04d}-W{week:02d}"


def _month(moment: dt.datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


def _year(moment: dt.datetime) -> str:
    return f"{moment.year:04d}"


#: The calendar rules: (config key, how a local time names its period).
CALENDAR_RULES: tuple[tuple[str, Callable[[dt.datetime], str]], ...] = (
    ("keep_hourly", _hour),
    ("keep_daily", _day),
    ("keep_weekly", _week),
    ("keep_monthly", _month),
    ("keep_yearly", _year),
)


def decide(
    backups: Sequence[Candidate], policy: RetentionConfig, *, now: dt.datetime,
    timezone: dt.tzinfo,
) -> dict[str, Decision]:
    """Every backup's id -> whether it is kept and why. ``backups`` are one label's.

    ValueError for input that cannot be decided safely: a naive time, an unknown
    status, an id or a seq given twice.
    """
    _check(backups, now)
    newest_first = sorted(backups, key=lambda backup: backup.seq, reverse=True)
    reasons: dict[str, list[str]] = {backup.id: [] for backup in newest_first}
    counting = [b for b in newest_first if b.status == "finished" and b.counts]

    for backup in newest_first:
        if backup.pinned:
            reasons[backup.id].append("pinned")
        if backup.status == "pending":
            reasons[backup.id].append("pending")
    for backup in counting[: policy.min_keep]:
        reasons[backup.id].append("min_keep")

    settled = [b for b in newest_first if b.status != "pending"]
    if policy.by == "age":
        cutoff = now - dt.timedelta(days=policy.value)
        effective = effective_times(newest_first, now)
        for backup in settled:
            if effective[backup.id] >= cutoff:
                reasons[backup.id].append("age")
    elif policy.by == "count":
        kept = counting[: policy.value]
        for backup in kept:
            reasons[backup.id].append("count")
        oldest_kept_seq = kept[-1].seq if len(kept) == policy.value else None
        for backup in _unranked(settled):
            if oldest_kept_seq is None or backup.seq > oldest_kept_seq:
                reasons[backup.id].append("not_superseded")
    else:
        _apply_gfs(newest_first, counting, policy, reasons, now=now, timezone=timezone)
        kept_counting = [b.seq for b in counting if reasons[b.id]]
        newest_kept = max(kept_counting, default=None)
        for backup in _unranked(settled):
            if newest_kept is None or backup.seq > newest_kept:
                reasons[backup.id].append("not_superseded")

    return {
        backup.id: Decision(keep=bool(reasons[backup.id]), reasons=tuple(reasons[backup.id]))
        for backup in backups
    }


def effective_times(backups: Iterable[Candidate], now: dt.datetime) -> dict[str, dt.datetime]:
    """Each backup's time for age rules: its ``created_at``, or later when an older (by
    seq) backup not in the future was recorded later (the clock went back since).

    A backup stamped in the future (the clock was ahead) does not push later ones
    forward: one wrong stamp must not keep every later backup young for years.
    """
    effective: dict[str, dt.datetime] = {}
    latest_past: dt.datetime | None = None
    for backup in sorted(backups, key=lambda b: b.seq):
        effective[backup.id] = (
            backup.created_at if latest_past is None else max(backup.created_at, latest_past))
        if backup.created_at <= now and (latest_past is None or backup.created_at > latest_past):
            latest_past = backup.created_at
    return effective


def _unranked(backups: Iterable[Candidate]) -> list[Candidate]:
    """Settled backups that no keep rule ranks: failed ones and non-counting finished ones."""
    return [b for b in backups if b.status == "failed" or not b.counts]


def _apply_gfs(
    newest_first: Sequence[Candidate], counting: Sequence[Candidate], policy: RetentionConfig,
    reasons: dict[str, list[str]], *, now: dt.datetime, timezone: dt.tzinfo,
) -> None:
    for backup in counting[: policy.keep_last]:
        reasons[backup.id].append("keep_last")

    for key, period_of in CALENDAR_RULES:
        wanted: int = getattr(policy, key)
        if wanted <= 0 or not counting:
            continue
        seen: set[str] = set()
        for backup in counting:
            if len(seen) == wanted:
                break
            period = period_of(backup.created_at.astimezone(timezone))
            if period not in seen:
                seen.add(period)
                reasons[backup.id].append(f"{key} {period}")
        oldest = counting[-1]
        oldest_period = period_of(oldest.created_at.astimezone(timezone))
        if len(seen) < wanted and f"{key} {oldest_period}" not in reasons[oldest.id]:
            reasons[oldest.id].append(f"{key} {oldest_period} (oldest)")

    within = policy.within
    if within is not None:
        latest = max((b.created_at for b in counting if b.created_at <= now), default=None)
        effective = effective_times(newest_first, now)
        for backup in newest_first:
            if backup.status == "pending":
                continue
            if latest is None or effective[backup.id] > latest - within:
                reasons[backup.id].append("keep_within")


def _check(backups: Sequence[Candidate], now: dt.datetime) -> None:
    if now.utcoffset() is None:
        raise ValueError("retention: now must be an aware datetime")
    ids: set[str] = set()
    seqs: set[int] = set()
    for backup in backups:
        if backup.created_at.utcoffset() is None:
            raise ValueError(f"retention: backup {backup.id} has a naive created_at")
        if backup.status not in STATUSES:
            raise ValueError(f"retention: backup {backup.id} has an unknown status "
                             f"{backup.status!r}")
        if backup.id in ids:
            raise ValueError(f"retention: backup {backup.id} is given twice")
        if backup.seq in seqs:
            raise ValueError(f"retention: two backups share seq {backup.seq}")
        ids.add(backup.id)
        seqs.add(backup.seq)
