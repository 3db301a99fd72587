"""Cron expressions keep crontab's meaning on top of APScheduler."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from backupmand.schedule import CronError, next_fire_times, parse_cron

UTC = ZoneInfo("UTC")
START = dt.datetime(2025, 7, 2, 12, 0, 5, tzinfo=UTC)  # a Wednesday


def fires(expression: str, count: int = 5, zone: str = "UTC") -> list[dt.datetime]:
    return next_fire_times(parse_cron(expression, zone), count, START)


@pytest.mark.parametrize("expression", ["0 3 * * 0", "0 3 * * 7", "0 3 * * sun", "0 3 * * SUN"])
def test_day_zero_and_seven_are_sunday(expression):
    times = fires(expression, 3)
    assert all(t.weekday() == 6 and t.hour == 3 for t in times)
    assert times[0].date() == dt.date(2025, 7, 6)


def test_weekday_ranges_and_steps_use_crontab_numbers():
    assert {t.weekday() for t in fires("0 0 * * 1-5", 10)} == {0, 1, 2, 3, 4}
    assert {t.weekday() for t in fires("0 0 * * 5-7", 9)} == {4, 5, 6}
    assert {t.weekday() for t in fires("0 0 * * */2", 12)} == {6, 1, 3, 5}  # sun tue thu sat
    assert {t.weekday() for t in fires("0 0 * * mon,wed", 6)} == {0, 2}


def test_six_fields_put_seconds_first():
    times = fires("*/10 * * * * *", 3)
    assert [t.second for t in times] == [10, 20, 30]
    assert times[0] - START == dt.timedelta(seconds=5)


def test_day_of_month_or_day_of_week_when_both_are_set():
    times = fires("0 0 1 * mon", 8)
    assert all(t.day == 1 or t.weekday() == 0 for t in times)
    assert any(t.day == 1 and t.weekday() != 0 for t in times)
    assert any(t.weekday() == 0 and t.day != 1 for t in times)


def test_macros_and_time_zones():
    (daily,) = fires("@daily", 1, "Europe/Paris")
    assert daily.astimezone(ZoneInfo("Europe/Paris")).hour == 0
    assert fires("@hourly", 2)[1] - fires("@hourly", 2)[0] == dt.timedelta(hours=1)


@pytest.mark.parametrize("expression", ["* * * *", "0 3 * * 8", "61 * * * *", "0 3 * * 5-2",
                                        "a b c d e", "1 2 3 4 5 6 7"])
def test_bad_expressions_say_why(expression):
    with pytest.raises(CronError):
        parse_cron(expression, "UTC")


def test_unknown_time_zone():
    with pytest.raises(CronError, match="unknown time zone"):
        parse_cron("0 3 * * *", "Mars/Olympus")
