"""retention_policy.decide: age, count and restic's GFS, over worked examples and random
histories (irregular times, clocks set back, pins, pending/failed/non-counting backups,
random time zones and DST changes).

The GFS property compares ``decide`` with ``reference_kept`` below, written from
restic's definition ("the newest backup of each of the last N periods that have one";
keep-within relative to the latest backup; the oldest kept as well while a rule has
places left) and this project's additions (creation order by seq, pins, min_keep,
failed and non-counting backups kept until a newer good one is kept), with other
data structures than the implementation: period keys as tuples, groups rather than a
walk, and the effective time as a plain maximum over older backups.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backupmand.config import RetentionConfig
from backupmand.models import Backup, Status
from backupmand.retention_policy import Candidate, Decision, decide

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
#: decide takes microseconds; a busy 2-core machine must not turn that into a flake.
PROPERTY = settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])


def gfs(**rules: int | str | None) -> RetentionConfig:
    return RetentionConfig.model_validate({"enabled": True, "by": "gfs", "min_keep": 0, **rules})


def finished(seq: int, when: dt.datetime, **fields: bool) -> Candidate:
    return Candidate(id=f"b{seq}", seq=seq, created_at=when, status="finished", **fields)


def kept(decisions: dict[str, Decision]) -> set[str]:
    return {backup_id for backup_id, decision in decisions.items() if decision.keep}


def daily(days: int, *, start: dt.datetime, hour: int = 3, zone: dt.tzinfo = BERLIN
          ) -> list[Candidate]:
    """One finished backup a day at ``hour`` local time, oldest first (seq 1...)."""
    local = start.astimezone(zone).replace(hour=hour, minute=0, second=0, microsecond=0)
    return [finished(day + 1, (local + dt.timedelta(days=day)).astimezone(UTC))
            for day in range(days)]


# ---------------------------------------------------------------------------- worked examples


def test_gfs_keeps_the_newest_of_each_day_week_and_month_with_its_reasons() -> None:
    # 2026-09-01 .. 2026-11-30, one backup a day at 03:00 in Berlin (CEST, then CET).
    history = daily(91, start=dt.datetime(2026, 9, 1, 12, tzinfo=UTC))
    now = dt.datetime(2026, 11, 30, 12, tzinfo=UTC)
    decisions = decide(history, gfs(keep_daily=3, keep_weekly=2, keep_monthly=3), now=now,
                       timezone=BERLIN)
    reasons = {bid: d.reasons for bid, d in decisions.items() if d.keep}
    assert reasons == {
        "b91": ("keep_daily 2026-11-30", "keep_weekly 2026-W49", "keep_monthly 2026-11"),
        "b90": ("keep_daily 2026-11-29", "keep_weekly 2026-W48"),
        "b89": ("keep_daily 2026-11-28",),
        "b61": ("keep_monthly 2026-10",),  # 2026-10-31, the newest of October
        "b30": ("keep_monthly 2026-09",),  # 2026-09-30
    }
    assert all(decision.reasons == () for decision in decisions.values() if not decision.keep)


def test_keep_last_min_keep_and_pins_are_reasons_of_their_own() -> None:
    history = daily(6, start=dt.datetime(2026, 11, 1, tzinfo=UTC))
    history[0] = finished(1, history[0].created_at, pinned=True)
    policy = RetentionConfig(enabled=True, by="gfs", keep_last=2, min_keep=3)
    decisions = decide(history, policy, now=history[-1].created_at, timezone=UTC)
    assert decisions["b6"].reasons == ("min_keep", "keep_last")
    assert decisions["b5"].reasons == ("min_keep", "keep_last")
    assert decisions["b4"].reasons == ("min_keep",)
    assert decisions["b1"].reasons == ("pinned",)
    assert not decisions["b2"].keep and not decisions["b3"].keep


def test_weeks_are_iso_weeks_and_hours_local_hours() -> None:
    # 2026-01-01 is a Thursday of ISO week 2026-W01; 2025-12-28 a Sunday of 2025-W52.
    history = [
        finished(1, dt.datetime(2025, 12, 28, 10, tzinfo=UTC)),
        finished(2, dt.datetime(2025, 12, 29, 10, tzinfo=UTC)),  # Monday: 2026-W01
        finished(3, dt.datetime(2026, 1, 1, 10, tzinfo=UTC)),
    ]
    decisions = decide(history, gfs(keep_weekly=5), now=history[-1].created_at, timezone=UTC)
    assert decisions["b3"].reasons == ("keep_weekly 2026-W01",)
    assert decisions["b1"].reasons == ("keep_weekly 2025-W52",)
    assert not decisions["b2"].keep  # same ISO week as b3, and b1 is the oldest

    late = [finished(1, dt.datetime(2026, 11, 30, 13, 30, tzinfo=UTC))]  # 14:30 in Berlin
    assert decide(late, gfs(keep_hourly=1), now=late[0].created_at,
                  timezone=BERLIN)["b1"].reasons == ("keep_hourly 2026-11-30T14",)


def test_periods_are_the_time_zones_days_not_utc_days() -> None:
    # 23:30 and 22:00 UTC on 2026-11-29 are 00:30 and 23:00 in Berlin: two local days.
    history = [finished(1, dt.datetime(2026, 11, 29, 22, tzinfo=UTC)),
               finished(2, dt.datetime(2026, 11, 29, 23, 30, tzinfo=UTC))]
    policy = gfs(keep_daily=1)
    assert kept(decide(history, policy, now=history[1].created_at, timezone=UTC)) == {"b2"}
    in_berlin = decide(history, policy, now=history[1].created_at, timezone=BERLIN)
    assert in_berlin["b2"].reasons == ("keep_daily 2026-11-30",)
    assert not in_berlin["b1"].keep


def test_the_repeated_hour_when_dst_ends_is_one_hourly_period() -> None:
    # 2026-10-25 in Berlin: 02:30 CEST (00:30 UTC) and 02:30 CET (01:30 UTC).
    history = [finished(1, dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
               finished(2, dt.datetime(2026, 10, 25, 1, 30, tzinfo=UTC)),
               finished(3, dt.datetime(2026, 10, 25, 2, 30, tzinfo=UTC))]
    decisions = decide(history, gfs(keep_hourly=2), now=history[-1].created_at, timezone=BERLIN)
    assert decisions["b3"].reasons == ("keep_hourly 2026-10-25T03",)
    assert decisions["b2"].reasons == ("keep_hourly 2026-10-25T02",)
    assert not decisions["b1"].keep


def test_the_oldest_backup_stays_while_a_rule_has_places_left() -> None:
    # restic 0.17: fewer days with a backup than keep_daily asks for -> the oldest stays too.
    history = [finished(1, dt.datetime(2026, 11, 30, 1, tzinfo=UTC)),
               finished(2, dt.datetime(2026, 11, 30, 2, tzinfo=UTC)),
               finished(3, dt.datetime(2026, 11, 30, 3, tzinfo=UTC))]
    decisions = decide(history, gfs(keep_daily=7), now=history[-1].created_at, timezone=UTC)
    assert decisions["b3"].reasons == ("keep_daily 2026-11-30",)
    assert decisions["b1"].reasons == ("keep_daily 2026-11-30 (oldest)",)
    assert not decisions["b2"].keep
    # Once the rule's places are filled, the oldest goes like any other.
    full = decide(history, gfs(keep_daily=1), now=history[-1].created_at, timezone=UTC)
    assert kept(full) == {"b3"}


def test_keep_within_counts_back_from_the_latest_backup_not_from_now() -> None:
    # The backups stopped ten days ago: keep_within 2d still keeps the last two days of them.
    history = [finished(seq, dt.datetime(2026, 11, 1, tzinfo=UTC) + dt.timedelta(hours=12 * seq))
               for seq in range(1, 11)]  # 2026-11-01T12 .. 2026-11-06T00
    now = dt.datetime(2026, 11, 16, tzinfo=UTC)
    decisions = decide(history, gfs(keep_within="2d"), now=now, timezone=UTC)
    assert kept(decisions) == {"b7", "b8", "b9", "b10"}  # after 2026-11-04T00, strictly
    assert decisions["b7"].reasons == ("keep_within",)


def test_keep_within_ignores_a_backup_stamped_in_the_future() -> None:
    # b3's clock was a year ahead: "latest" is b2, as restic takes the latest not in the future.
    now = dt.datetime(2026, 11, 30, 12, tzinfo=UTC)
    history = [finished(1, now - dt.timedelta(days=3)), finished(2, now - dt.timedelta(hours=1)),
               finished(3, now + dt.timedelta(days=365))]
    assert kept(decide(history, gfs(keep_within="1d"), now=now, timezone=UTC)) == {"b2", "b3"}


def test_a_clock_set_back_does_not_make_new_backups_look_old() -> None:
    now = dt.datetime(2026, 11, 30, 12, tzinfo=UTC)
    history = daily(10, start=now - dt.timedelta(days=9), zone=UTC)
    # The clock was set back a year: the three newest backups were stamped in 2025.
    for seq in (11, 12, 13):
        history.append(finished(seq, dt.datetime(2025, 11, 27 + seq - 11, 3, tzinfo=UTC)))
    # age: they are as young as the newest backup made before them, not a year old.
    aged = decide(history, RetentionConfig(enabled=True, by="age", value=5, min_keep=0), now=now,
                  timezone=UTC)
    assert {"b11", "b12", "b13"} <= kept(aged)
    assert not aged["b1"].keep
    # count: by seq, so the newest three are the 2025-stamped ones.
    counted = decide(history, RetentionConfig(enabled=True, by="count", value=3, min_keep=0),
                     now=now, timezone=UTC)
    assert kept(counted) == {"b11", "b12", "b13"}
    # gfs: the newest (by seq) day is 2025-11-29, ranked first although it is the oldest date.
    decisions = decide(history, gfs(keep_daily=2), now=now, timezone=UTC)
    assert kept(decisions) == {"b13", "b12"}
    assert decisions["b13"].reasons == ("keep_daily 2025-11-29",)
    # min_keep: the newest by seq, whatever their stamps.
    guarded = decide(history, RetentionConfig(enabled=True, by="age", value=1, min_keep=2),
                     now=dt.datetime(2027, 1, 1, tzinfo=UTC), timezone=UTC)
    assert kept(guarded) == {"b13", "b12"}


def test_failed_and_non_counting_backups_stay_until_a_newer_good_one_is_kept() -> None:
    base = dt.datetime(2026, 11, 1, 3, tzinfo=UTC)
    history = [
        finished(1, base),
        Candidate("b2", 2, base + dt.timedelta(days=1), "failed"),
        finished(3, base + dt.timedelta(days=2)),
        Candidate("b4", 4, base + dt.timedelta(days=3), "failed"),
        finished(5, base + dt.timedelta(days=4), counts=False),  # suspect
        Candidate("b6", 6, base + dt.timedelta(days=5), "pending"),
    ]
    decisions = decide(history, gfs(keep_daily=1), now=base + dt.timedelta(days=6), timezone=UTC)
    assert decisions["b3"].reasons == ("keep_daily 2026-11-03",)  # the suspect b5 takes no place
    assert decisions["b4"].reasons == ("not_superseded",)
    assert decisions["b5"].reasons == ("not_superseded",)
    assert decisions["b6"].reasons == ("pending",)
    assert not decisions["b1"].keep and not decisions["b2"].keep


def test_non_counting_backups_never_fill_min_keep() -> None:
    base = dt.datetime(2026, 11, 1, tzinfo=UTC)
    history = [finished(1, base), finished(2, base + dt.timedelta(days=1), counts=False),
               finished(3, base + dt.timedelta(days=2))]
    decisions = decide(history, RetentionConfig(enabled=True, by="age", value=1, min_keep=2),
                       now=base + dt.timedelta(days=30), timezone=UTC)
    assert decisions["b3"].reasons == ("min_keep",)
    assert decisions["b1"].reasons == ("min_keep",)
    assert not decisions["b2"].keep  # old, and not counted


@pytest.mark.parametrize("problem, history, now", [
    ("naive created_at", [finished(1, dt.datetime(2026, 1, 1))], dt.datetime(2026, 1, 2, tzinfo=UTC)),
    ("naive now", [finished(1, dt.datetime(2026, 1, 1, tzinfo=UTC))], dt.datetime(2026, 1, 2)),
    ("unknown status", [Candidate("b1", 1, dt.datetime(2026, 1, 1, tzinfo=UTC), "done")],
     dt.datetime(2026, 1, 2, tzinfo=UTC)),
    ("seq twice", [finished(1, dt.datetime(2026, 1, 1, tzinfo=UTC)),
                   Candidate("b2", 1, dt.datetime(2026, 1, 1, tzinfo=UTC), "failed")],
     dt.datetime(2026, 1, 2, tzinfo=UTC)),
    ("id twice", [finished(1, dt.datetime(2026, 1, 1, tzinfo=UTC)),
                  Candidate("b1", 2, dt.datetime(2026, 1, 1, tzinfo=UTC), "failed")],
     dt.datetime(2026, 1, 2, tzinfo=UTC)),
])
def test_input_it_cannot_decide_safely_is_refused(
    problem: str, history: list[Candidate], now: dt.datetime
) -> None:
    with pytest.raises(ValueError, match="retention"):
        decide(history, gfs(keep_last=1), now=now, timezone=UTC)


# ---------------------------------------------------------------------------- random histories

#: Instants just before DST changes (and the southern hemisphere's, and a 30-minute one).
DST_EDGES = [
    dt.datetime(2026, 3, 29, 0, tzinfo=UTC), dt.datetime(2026, 10, 25, 0, tzinfo=UTC),  # EU
    dt.datetime(2026, 3, 8, 6, tzinfo=UTC), dt.datetime(2026, 11, 1, 5, tzinfo=UTC),  # US
    dt.datetime(2026, 4, 4, 14, tzinfo=UTC), dt.datetime(2026, 10, 3, 15, tzinfo=UTC),  # AU
    dt.datetime(2026, 12, 31, 20, tzinfo=UTC),  # a year (and an ISO week) ends
]
ZONES = st.one_of(
    st.sampled_from([UTC, BERLIN, NEW_YORK, ZoneInfo("Australia/Sydney"),
                     ZoneInfo("Australia/Lord_Howe"), ZoneInfo("Asia/Kolkata"),
                     ZoneInfo("Pacific/Chatham"), ZoneInfo("America/Sao_Paulo")]),
    st.timezones(),
)
#: Gaps between backups: minutes to weeks, and now and then a clock set back (negative).
GAPS = st.one_of(
    st.integers(min_value=1, max_value=180).map(lambda m: dt.timedelta(minutes=m)),
    st.integers(min_value=1, max_value=72).map(lambda h: dt.timedelta(hours=h)),
    st.integers(min_value=1, max_value=40).map(lambda d: dt.timedelta(days=d)),
    st.integers(min_value=-400, max_value=-1).map(lambda d: dt.timedelta(days=d)),
    st.integers(min_value=-180, max_value=-1).map(lambda m: dt.timedelta(minutes=m)),
)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Candidate], dt.datetime]:
    start = draw(st.one_of(
        st.sampled_from(DST_EDGES).map(lambda edge: edge - dt.timedelta(hours=6)),
        st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 1, 1),
                     timezones=st.just(UTC)),
    ))
    entries = draw(st.lists(st.tuples(
        GAPS,
        st.sampled_from(["finished"] * 6 + ["failed"] * 2 + ["pending"]),
        st.integers(0, 9).map(lambda n: n == 0),  # pinned, rarely
        st.integers(0, 7).map(lambda n: n != 0),  # counts (1 in 8 does not)
        st.integers(1, 5),  # seq step: the catalog's sequence may have holes
    ), max_size=45))
    history: list[Candidate] = []
    moment, seq = start, 0
    for index, (gap, status, pinned, counts, step) in enumerate(entries):
        moment, seq = moment + gap, seq + step
        history.append(Candidate(f"b{index}", seq, moment, status, pinned, counts))
    # now: after the newest, or before some (the clock is wrong now, or was then).
    stamps = [b.created_at for b in history] or [start]
    now = draw(st.sampled_from([max(stamps) + dt.timedelta(hours=1),
                                max(stamps) + dt.timedelta(days=400), min(stamps),
                                stamps[len(stamps) // 2]]))
    # Shuffled: decide must order by seq itself.
    return draw(st.permutations(history)), now


@st.composite
def gfs_policies(draw: st.DrawFn) -> RetentionConfig:
    rules = {
        "keep_last": draw(st.integers(0, 4)), "keep_hourly": draw(st.integers(0, 6)),
        "keep_daily": draw(st.integers(0, 6)), "keep_weekly": draw(st.integers(0, 4)),
        "keep_monthly": draw(st.integers(0, 4)), "keep_yearly": draw(st.integers(0, 3)),
    }
    within = draw(st.one_of(st.none(), st.sampled_from(["1h", "12h", "2d", "1w", "1m", "1y2m"])))
    if not any(rules.values()) and within is None:
        rules[draw(st.sampled_from(sorted(rules)))] = 1  # the config refuses a gfs without rules
    return RetentionConfig(enabled=True, by="gfs", min_keep=draw(st.integers(0, 3)),
                           keep_within=within, **rules)


simple_policies = st.builds(
    RetentionConfig, enabled=st.just(True), by=st.sampled_from(["age", "count"]),
    value=st.integers(1, 60), min_keep=st.integers(0, 4))


# ---- the reference

LocalKey = Callable[[dt.datetime], tuple[int, ...]]
PERIOD_KEYS: dict[str, LocalKey] = {
    "keep_hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "keep_daily": lambda t: (t.year, t.month, t.day),
    "keep_weekly": lambda t: tuple(t.isocalendar())[:2],
    "keep_monthly": lambda t: (t.year, t.month),
    "keep_yearly": lambda t: (t.year,),
}


def effective_time(backup: Candidate, history: Sequence[Candidate], now: dt.datetime) -> dt.datetime:
    """Its stamp, or the latest stamp not in the future of any older backup."""
    earlier = [c.created_at for c in history if c.seq < backup.seq and c.created_at <= now]
    return max([backup.created_at, *earlier])


def reference_kept(history: Sequence[Candidate], policy: RetentionConfig, now: dt.datetime,
                   zone: dt.tzinfo) -> set[str]:
    good = sorted((b for b in history if b.status == "finished" and b.counts),
                  key=lambda b: b.seq)  # oldest first
    keep = {b.id for b in history if b.pinned or b.status == "pending"}
    if policy.min_keep:
        keep |= {b.id for b in good[-policy.min_keep:]}
    if policy.keep_last:
        keep |= {b.id for b in good[-policy.keep_last:]}
    for rule, key in PERIOD_KEYS.items():
        wanted = getattr(policy, rule)
        if not wanted or not good:
            continue
        groups: dict[tuple[int, ...], list[Candidate]] = defaultdict(list)
        for backup in good:
            groups[key(backup.created_at.astimezone(zone))].append(backup)
        newest_of_each = sorted((max(group, key=lambda b: b.seq) for group in groups.values()),
                                key=lambda b: b.seq, reverse=True)
        keep |= {b.id for b in newest_of_each[:wanted]}
        if len(groups) < wanted:
            keep.add(good[0].id)
    settled = [b for b in history if b.status != "pending"]
    if policy.within is not None:
        past = [b.created_at for b in good if b.created_at <= now]
        for backup in settled:
            if not past or effective_time(backup, history, now) > max(past) - policy.within:
                keep.add(backup.id)
    kept_good = [b.seq for b in good if b.id in keep]
    for backup in settled:
        if backup.status == "failed" or not backup.counts:
            if not any(seq > backup.seq for seq in kept_good):
                keep.add(backup.id)
    return keep


def check_invariants(history: Sequence[Candidate], decisions: dict[str, Decision],
                     policy: RetentionConfig) -> None:
    assert set(decisions) == {b.id for b in history}
    for backup in history:
        decision = decisions[backup.id]
        assert decision.keep == bool(decision.reasons), (backup, decision)
        if backup.pinned:
            assert decision.keep and "pinned" in decision.reasons
        if backup.status == "pending":
            assert decision.keep and "pending" in decision.reasons
    good = sorted((b for b in history if b.status == "finished" and b.counts),
                  key=lambda b: b.seq, reverse=True)
    for backup in good[: policy.min_keep]:
        assert decisions[backup.id].keep and "min_keep" in decisions[backup.id].reasons


@PROPERTY
@given(histories(), gfs_policies(), ZONES)
def test_gfs_keeps_exactly_what_the_reference_keeps(
    drawn: tuple[list[Candidate], dt.datetime], policy: RetentionConfig, zone: dt.tzinfo,
) -> None:
    history, now = drawn
    decisions = decide(history, policy, now=now, timezone=zone)
    check_invariants(history, decisions, policy)
    assert kept(decisions) == reference_kept(history, policy, now, zone)


@PROPERTY
@given(histories(), simple_policies, ZONES)
def test_age_and_count_never_delete_what_they_must_keep(
    drawn: tuple[list[Candidate], dt.datetime], policy: RetentionConfig, zone: dt.tzinfo,
) -> None:
    history, now = drawn
    decisions = decide(history, policy, now=now, timezone=zone)
    check_invariants(history, decisions, policy)
    by_seq = sorted(history, key=lambda b: b.seq)
    if policy.by == "age":
        # A backup that goes by age never leaves an older one (not in the future) behind
        # that only its age could have kept: a set-back clock cannot make new look old.
        for newer_index, newer in enumerate(by_seq):
            if decisions[newer.id].keep:
                continue
            for older in by_seq[:newer_index]:
                if older.created_at <= now and decisions[older.id].reasons:
                    assert set(decisions[older.id].reasons) - {"age"}, older
    else:
        good = [b for b in reversed(by_seq) if b.status == "finished" and b.counts]
        for backup in good[: policy.value]:
            assert "count" in decisions[backup.id].reasons
        for backup in good[policy.value:]:
            assert "count" not in decisions[backup.id].reasons


# ---- age and count keep release 1.0's meaning (first_round_select_expired)


def first_round_select_expired(
    backups: Iterable[Backup], policy: RetentionConfig, now: dt.datetime
) -> list[Backup]:
    """Release 1.0's policy, kept here as the reference that ``age`` and ``count`` must
    still agree with where the clock never went back."""
    by_label: dict[str, list[Backup]] = defaultdict(list)
    for backup in backups:
        by_label[backup.label].append(backup)
    expired: list[Backup] = []
    for items in by_label.values():
        items.sort(key=lambda b: (b.created_at, b.id), reverse=True)
        finished = [b for b in items if b.status is Status.FINISHED]
        protected = {b.id for b in finished[: policy.min_keep]}
        if policy.by == "age":
            cutoff = now - dt.timedelta(days=policy.value)
            candidates = [b for b in items if b.created_at < cutoff]
        else:
            kept = finished[: policy.value]
            oldest_kept = kept[-1].created_at if len(kept) == policy.value else None
            candidates = [b for b in finished[policy.value:]]
            if oldest_kept is not None:
                candidates += [b for b in items
                               if b.status is Status.FAILED and b.created_at < oldest_kept]
        expired.extend(
            b for b in candidates if b.status is not Status.PENDING and b.id not in protected
        )
    expired.sort(key=lambda b: (b.created_at, b.id))
    return expired



@st.composite
def monotone_histories(draw: st.DrawFn) -> list[Candidate]:
    """Today's world: stamps rise with seq, nothing pinned, everything counts."""
    gaps = draw(st.lists(st.integers(1, 72 * 60), max_size=40))
    statuses = draw(st.lists(st.sampled_from(["finished", "failed", "pending"]),
                             min_size=len(gaps), max_size=len(gaps)))
    moment = dt.datetime(2026, 9, 1, tzinfo=UTC)
    history = []
    for index, (gap, status) in enumerate(zip(gaps, statuses, strict=True)):
        moment += dt.timedelta(minutes=gap)
        history.append(Candidate(f"{index:08x}-0000-4000-8000-000000000000", index + 1, moment,
                                 status))
    return history


def as_backup(candidate: Candidate) -> Backup:
    status = Status(candidate.status)
    return Backup(
        id=candidate.id, label="Main", source_provider="sqlite", status=status,
        dump_status=status, name=f"{candidate.id}.sql.zst", dump_path=None, compression="zstd",
        size=1, sha256="0" * 64, error=None, created_at=candidate.created_at, updated_at=None,
        finished_at=None)


@PROPERTY
@given(monotone_histories(), simple_policies)
def test_age_and_count_agree_with_select_expired_on_todays_histories(
    history: list[Candidate], policy: RetentionConfig,
) -> None:
    now = dt.datetime(2026, 10, 15, tzinfo=UTC)
    expired = {b.id for b in first_round_select_expired(map(as_backup, history), policy, now)}
    decisions = decide(history, policy, now=now, timezone=UTC)
    assert {bid for bid, d in decisions.items() if not d.keep} == expired
