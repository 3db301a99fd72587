"""The status page's view and HTML, from facts made by hand: days, staleness, the banner,
escaping. The browser test (tests/e2e/test_status_page.py) covers the daemon end to end."""

from __future__ import annotations

import dataclasses
import datetime as dt
import zoneinfo
from html.parser import HTMLParser
from typing import Any

import pytest

from backupmand.models import Backup, Status
from backupmand.web.render import render_login, render_status
from backupmand.web.view import (
    Day,
    Facts,
    build,
    day_strip,
    human_duration,
    human_size,
    strip_start,
)

UTC = dt.UTC
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
AUCKLAND = zoneinfo.ZoneInfo("Pacific/Auckland")
NOW = dt.datetime(2026, 11, 5, 12, 0, tzinfo=UTC)


def backup(label: str, status: Status, created: dt.datetime, **fields: Any) -> Backup:
    values: dict[str, Any] = {
        "id": f"{label}-{created.isoformat()}", "label": label, "source_provider": "postgres",
        "status": status, "dump_status": status, "name": f"{label}.sql.zst", "dump_path": None,
        "compression": "zstd", "size": 1_234_567, "sha256": "ab" * 32, "error": None,
        "created_at": created, "updated_at": created + dt.timedelta(seconds=65),
        "finished_at": created + dt.timedelta(seconds=65) if status is Status.FINISHED else None,
    }
    values.update(fields)
    return Backup(**values)


def facts(**overrides: Any) -> Facts:
    values: dict[str, Any] = {
        "now": NOW, "zone": BERLIN, "zone_name": "Europe/Berlin", "host": "db1", "version": "1.1.0",
        "sources": [("Main", "postgres")], "drives": [("S3 Drive", "s3")],
        "latest": {}, "last_finished": {}, "last_drilled": {}, "running": {}, "outcomes": [],
        "next_run": NOW + dt.timedelta(hours=15), "interval": 86400.0,
        "drive_health": {"S3 Drive": "UP"}, "source_health": {"Main": "UP"},
        "catalog_health": "UP", "last_uploads": {},
    }
    values.update(overrides)
    return Facts(**values)


class Document(HTMLParser):
    """Every start tag with its attributes, and the text, of a rendered page."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())

    def attribute_names(self) -> set[str]:
        return {name for _tag, attrs in self.tags for name in attrs}


# ---------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(("size", "text"), [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1_234_567, "1.2 MiB"),
    (5 * 1024**3, "5.0 GiB"), (3 * 1024**5, "3.0 PiB"), (2 * 1024**6, "2048.0 PiB"),
])
def test_sizes_read_like_ls_h(size: int, text: str) -> None:
    assert human_size(size) == text


@pytest.mark.parametrize(("seconds", "precise", "text"), [
    (4.24, True, "4.2 s"), (4.24, False, "4 s"), (65, True, "1 min 5 s"), (120, True, "2 min"),
    (3 * 3600 + 5 * 60 + 7, True, "3 h 5 min"), (2 * 86400 + 4 * 3600, False, "2 d 4 h"),
    (86400, False, "1 d"), (-5, True, "0.0 s"),
])
def test_durations_keep_their_two_largest_units(seconds: float, precise: bool, text: str) -> None:
    assert human_duration(seconds, precise=precise) == text


# ---------------------------------------------------------------------------- the strip


def test_the_strip_counts_days_in_the_jobs_time_zone_across_a_dst_change() -> None:
    """Berlin leaves summer time on 2026-10-25: a backup at 22:30 UTC on the 24th is on
    the 25th there (00:30 CEST), one at 23:30 UTC on the 25th is on the 26th (00:30 CET)."""
    today = NOW.astimezone(BERLIN).date()
    outcomes = [
        (Status.FINISHED, False, dt.datetime(2026, 10, 24, 22, 30, tzinfo=UTC)),
        (Status.FAILED, False, dt.datetime(2026, 10, 25, 23, 30, tzinfo=UTC)),
        (Status.FINISHED, False, dt.datetime(2026, 10, 25, 12, 0, tzinfo=UTC)),
        (Status.FINISHED, True, dt.datetime(2026, 11, 4, 23, 15, tzinfo=UTC)),  # 5 Nov in Berlin
        (Status.PENDING, False, dt.datetime(2026, 11, 1, 8, 0, tzinfo=UTC)),  # no outcome yet
        (Status.FAILED, False, dt.datetime(2026, 10, 6, 21, 59, tzinfo=UTC)),  # 6 Oct: too old
        (Status.FAILED, False, dt.datetime(2026, 10, 6, 22, 0, tzinfo=UTC)),  # 7 Oct 00:00 CEST
    ]
    days = day_strip(outcomes, BERLIN, today)
    assert len(days) == 30
    assert [day.date for day in days] == [today - dt.timedelta(days=29 - n) for n in range(30)]
    assert days[0].date == dt.date(2026, 10, 7) and days[-1].date == dt.date(2026, 11, 5)
    by_date = {day.date: day for day in days}
    assert by_date[dt.date(2026, 10, 25)] == Day(dt.date(2026, 10, 25), finished=2)
    assert by_date[dt.date(2026, 10, 26)] == Day(dt.date(2026, 10, 26), failed=1)
    assert by_date[dt.date(2026, 11, 5)].outcome == "suspect"
    assert by_date[dt.date(2026, 11, 1)].outcome == "none"
    assert by_date[dt.date(2026, 10, 7)].outcome == "failed"
    assert sum(day.outcome != "none" for day in days) == 4


def test_the_same_backups_fall_on_other_days_in_utc() -> None:
    outcomes = [(Status.FINISHED, False, dt.datetime(2026, 10, 24, 22, 30, tzinfo=UTC))]
    assert {d.date for d in day_strip(outcomes, UTC, dt.date(2026, 11, 5)) if d.finished} == {
        dt.date(2026, 10, 24)}
    assert {d.date for d in day_strip(outcomes, AUCKLAND, dt.date(2026, 11, 5)) if d.finished} == {
        dt.date(2026, 10, 25)}


def test_a_day_shows_its_worst_outcome_and_says_what_happened() -> None:
    day = Day(dt.date(2026, 11, 30), finished=3, suspect=1, failed=1)
    assert day.outcome == "failed"
    assert day.summary == "2026-11-30: 3 finished, 1 suspect, 1 failed"
    assert Day(dt.date(2026, 11, 30), finished=1, suspect=1).outcome == "suspect"
    assert Day(dt.date(2026, 11, 30), finished=1).outcome == "finished"
    assert Day(dt.date(2026, 11, 30)).summary == "2026-11-30: no backup"


def test_the_catalog_is_read_from_before_the_strips_first_local_midnight() -> None:
    today = dt.date(2026, 11, 5)
    start = strip_start(today, AUCKLAND)
    first_midnight = dt.datetime(2026, 10, 7, tzinfo=AUCKLAND)
    assert start < first_midnight and first_midnight - start <= dt.timedelta(days=1, hours=1)


# ---------------------------------------------------------------------------- the view


def test_a_finished_and_a_failed_source_with_the_facts_of_their_latest_backups() -> None:
    created = NOW - dt.timedelta(hours=9)
    main = backup("Main", Status.FINISHED, created, verification="passed",
                  verified_at=created + dt.timedelta(minutes=30))
    orders = backup("Orders", Status.FAILED, created, size=None, error="pg_dump exited with 1")
    view = build(facts(
        sources=[("Main", "postgres"), ("Orders", "mysql")],
        latest={"Main": main, "Orders": orders}, last_finished={"Main": main},
        last_drilled={"Main": main}, source_health={"Main": "UP", "Orders": "UP"},
        outcomes=[("Main", Status.FINISHED, False, created), ("Orders", Status.FAILED, False, created)],
        last_uploads={"S3 Drive": created + dt.timedelta(seconds=60)}))
    first, second = view.sources
    assert (first.status, first.size, first.size_bytes, first.duration) == (
        "finished", "1.2 MiB", 1_234_567, "1 min 5 s")
    assert first.verification == "passed" and first.verified is not None
    assert first.verified.iso == "2026-11-05T03:30:00Z"
    assert first.verified.local == "2026-11-05 04:30 CET"
    assert first.created is not None and first.created.relative == "9 h ago"
    assert first.next_run is not None and first.next_run.relative == "in 15 h"
    assert first.next_run.iso == "2026-11-06T03:00:00Z" and first.earlier_drill is None
    assert first.days[-1].outcome == "finished"
    assert (second.status, second.size, second.duration, second.error) == (
        "failed", "—", "—", "pg_dump exited with 1")
    assert second.verification == "not verified" and second.days[-1].outcome == "failed"
    assert [(p.label, p.kind) for p in view.problems] == [("Orders", "failed")]
    assert view.problems[0].text == "the latest backup failed: pg_dump exited with 1"
    assert view.drives[0].last_upload is not None and view.drives[0].health == "UP"
    assert view.interval == "1 d"


def test_stale_after_two_schedule_intervals_without_a_finished_backup() -> None:
    old = backup("Main", Status.FINISHED, NOW - dt.timedelta(days=2, hours=1))
    recent = backup("Main", Status.FINISHED, NOW - dt.timedelta(days=1, hours=23))
    stale = build(facts(latest={"Main": old}, last_finished={"Main": old}))
    assert stale.sources[0].stale
    assert [(p.kind, p.text) for p in stale.problems] == [
        ("stale", "no finished backup for 2 d (the schedule runs every 1 d)")]
    assert not build(facts(latest={"Main": recent}, last_finished={"Main": recent})).problems
    # Without a schedule nothing says how often backups should come.
    assert not build(facts(latest={"Main": old}, last_finished={"Main": old}, interval=None)).problems


def test_stale_text_counts_from_the_finish() -> None:
    old = backup("Main", Status.FINISHED, NOW - dt.timedelta(days=3), finished_at=NOW - dt.timedelta(days=3))
    problems = build(facts(latest={"Main": old}, last_finished={"Main": old})).problems
    assert problems[0].text.startswith("no finished backup for 3 d ")


def test_the_banner_names_suspects_failed_drills_and_unhealthy_parts() -> None:
    earlier = backup("Main", Status.FINISHED, NOW - dt.timedelta(hours=30), verification="failed",
                     verified_at=NOW - dt.timedelta(hours=29),
                     verify_error="public.items: 10 rows, expected 12")
    latest = backup("Main", Status.FINISHED, NOW - dt.timedelta(hours=6), suspect=True,
                    suspect_reason="size 10 B is below half the median 1.2 MiB")
    view = build(facts(latest={"Main": latest}, last_finished={"Main": latest},
                       last_drilled={"Main": earlier}, drive_health={"S3 Drive": "DOWN"},
                       source_health={"Main": "DOWN"}, catalog_health="DOWN"))
    assert [(p.label, p.kind) for p in view.problems] == [
        ("catalog", "catalog"), ("Main", "suspect"), ("Main", "drill"), ("Main", "unhealthy"),
        ("S3 Drive", "unhealthy")]
    assert "size 10 B is below half" in view.problems[1].text
    assert view.problems[2].text == "the latest restore drill failed: public.items: 10 rows, expected 12"
    source = view.sources[0]
    assert source.suspect and source.verification == "not verified"
    assert source.earlier_drill is not None and source.earlier_drill.result == "failed"


def test_a_new_source_without_backups_is_shown_but_not_a_problem() -> None:
    view = build(facts())
    source = view.sources[0]
    assert (source.status, source.created, source.last_finished, source.stale) == ("none", None, None, False)
    assert view.problems == ()
    html = render_status(view, logout_token="t")
    assert "no backup yet" in html and "All sources and drives are fine." in html


# ---------------------------------------------------------------------------- escaping

HOSTILE_LABEL = '<script>alert("label")</script>" onmouseover="alert(1)'
HOSTILE_ERROR = "</p><img src=x onerror=alert(2)><a href='javascript:alert(3)'>x</a> & more"


def test_every_value_is_escaped_in_text_and_in_attributes() -> None:
    created = NOW - dt.timedelta(hours=2)
    hostile = backup(HOSTILE_LABEL, Status.FAILED, created, error=HOSTILE_ERROR,
                     verification="failed", verified_at=created, verify_error=HOSTILE_ERROR)
    view = build(facts(
        host="<b>db1</b>", sources=[(HOSTILE_LABEL, "postgres")],
        drives=[(HOSTILE_LABEL + " drive", "s3")], latest={HOSTILE_LABEL: hostile},
        last_drilled={HOSTILE_LABEL: hostile}, running={HOSTILE_LABEL: "<i>dumping</i>"},
        drive_health={HOSTILE_LABEL + " drive": "UP"}, source_health={HOSTILE_LABEL: "UP"}))
    html = render_status(view, logout_token='"><script>alert(4)</script>')
    document = Document(html)
    tags = [tag for tag, _attrs in document.tags]
    assert "script" not in tags and "img" not in tags and "b" not in tags and "i" not in tags
    assert [attrs.get("href") for tag, attrs in document.tags if tag == "a"] == ["/health", "/metrics"]
    assert not {name for name in document.attribute_names() if name.startswith("on")}
    labels = [attrs["data-label"] for _tag, attrs in document.tags if "data-label" in attrs]
    assert labels == [HOSTILE_LABEL, HOSTILE_LABEL + " drive"]
    token = [attrs["value"] for tag, attrs in document.tags if attrs.get("name") == "form_token"]
    assert token == ['"><script>alert(4)</script>']
    text = document.all_text()
    assert HOSTILE_ERROR in text and HOSTILE_LABEL in text and "<b>db1</b>" in text
    assert "<i>dumping</i>" in text
    assert "&lt;script&gt;" in html and "<script>" not in html


def test_the_login_form_says_nothing_but_what_it_asks_for() -> None:
    document = Document(render_login('x"y', message="<b>Wrong API key.</b>"))
    assert [attrs for tag, attrs in document.tags if tag == "input"][-1]["value"] == 'x"y'
    assert "b" not in [tag for tag, _ in document.tags]
    assert document.all_text() == "Sign in · backupmand backupmand API key Sign in <b>Wrong API key.</b>"
    forms = [attrs for tag, attrs in document.tags if tag == "form"]
    assert forms == [{"method": "post", "action": "/login", "class": "login-form"}]


def test_the_view_is_frozen() -> None:
    view = build(facts())
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.host = "x"  # type: ignore[misc]
