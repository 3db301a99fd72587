"""Crontab expressions to APScheduler triggers, with crontab's own meaning.

APScheduler numbers days of the week from 0 = Monday, and ANDs day-of-month with
day-of-week. Crontab users mean 0 (and 7) = Sunday, and vixie cron ORs the two day
fields when both are restricted. This module translates, so ``0 3 * * 0`` fires on
Sundays and ``0 0 1 * mon`` fires on the first of the month *and* on Mondays.

A sixth leading field means seconds. ``@yearly``, ``@monthly``, ``@weekly``,
``@daily`` (``@midnight``) and ``@hourly`` are accepted.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


class CronError(ValueError):
    """Raised when a cron expression or time zone is not valid."""


def _day_number(token: str) -> int:
    lowered = token.lower()
    if lowered in _DAY_NAMES:
        return _DAY_NAMES.index(lowered)
    if not lowered.isdigit() or not 0 <= int(lowered) <= 7:
        raise CronError(f"day of week {token!r} is not 0-7 or a day name")
    return int(lowered) % 7


def _expand_day_of_week(field: str) -> list[str]:
    """The crontab day-of-week field as explicit day names (0 and 7 are Sunday)."""
    days: set[int] = set()
    for part in field.split(","):
        if not part:
            raise CronError("empty item in the day-of-week field")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"bad step {step_text!r} in the day-of-week field")
            step = int(step_text)
        if base == "*":
            start, end = 0, 6
        elif "-" in base:
            first, _, last = base.partition("-")
            start = _day_number(first)
            end = 7 if last.lower() in ("7", "sun") and start > 0 else _day_number(last)
            if end < start:
                raise CronError(f"day-of-week range {base!r} runs backwards")
        else:
            start = _day_number(base)
            end = start if not step_text else 6
        days.update(day % 7 for day in range(start, end + 1, step))
    return [_DAY_NAMES[day] for day in sorted(days)]


def parse_cron(expression: str, timezone: str | None = None) -> Any:
    """Build an APScheduler trigger; raise CronError with a readable reason."""
    from apscheduler.triggers.combining import OrTrigger
    from apscheduler.triggers.cron import CronTrigger

    zone = resolve_timezone(timezone)
    text = _MACROS.get(expression.strip().lower(), expression.strip())
    fields = text.split()
    if len(fields) == 5:
        second, (minute, hour, day, month, day_of_week) = "0", fields
    elif len(fields) == 6:
        second, minute, hour, day, month, day_of_week = fields
    else:
        raise CronError(
            f"cron expression {expression!r} has {len(fields)} fields; expected 5 "
            "(minute hour day month day-of-week) or 6 (seconds first)"
        )
    days = ",".join(_expand_day_of_week(day_of_week))

    def build(day_field: str, dow_field: str) -> CronTrigger:
        try:
            return CronTrigger(second=second, minute=minute, hour=hour, day=day_field,
                               month=month, day_of_week=dow_field, timezone=zone)
        except ValueError as error:
            raise CronError(f"cron expression {expression!r}: {error}") from None

    day_restricted = day not in ("*", "?")
    dow_restricted = day_of_week not in ("*", "?")
    if day_restricted and dow_restricted:
        return OrTrigger([build(day, "*"), build("*", days)])
    return build(day if day != "?" else "*", days if dow_restricted else "*")


def resolve_timezone(name: str | None) -> dt.tzinfo:
    """A zoneinfo zone by name, or the host's local zone when none is given."""
    import zoneinfo

    if not name:
        from tzlocal import get_localzone

        return get_localzone()
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone {name!r}") from None


def next_fire_times(trigger: Any, count: int, now: dt.datetime | None = None) -> list[dt.datetime]:
    current = now or dt.datetime.now(dt.UTC)
    times: list[dt.datetime] = []
    previous: dt.datetime | None = None
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, current)
        if fire is None:
            break
        times.append(fire)
        previous = fire
        current = fire + dt.timedelta(microseconds=1)
    return times
