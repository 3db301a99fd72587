"""What the status page reads: a real catalog, health report and schedule (gather)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from zoneinfo import ZoneInfo

from backupmand.models import Backup, Status, utcnow
from backupmand.scheduler import Schedule
from backupmand.web.gather import gather
from backupmand.web.view import build, strip_start
from tests.helpers import API_KEY

ZONE = "Asia/Kolkata"  # UTC+05:30: a day there is not a UTC day


def imported(label: str, status: Status, created: dt.datetime, **fields: Any) -> Backup:
    return Backup(
        id=str(uuid.uuid4()), label=label, source_provider="sqlite", status=status,
        dump_status=status, name=f"{label}-{created:%Y%m%d%H%M%S}.sqlite.zst", dump_path=None,
        compression="zstd", size=4096, sha256="cd" * 32, error=None if status is Status.FINISHED
        else "it broke", created_at=created, updated_at=created,
        finished_at=created + dt.timedelta(seconds=3) if status is Status.FINISHED else None,
        **fields)


async def test_the_facts_of_a_real_catalog_health_report_and_schedule(make_settings, open_runtime):
    settings = make_settings(http={"api_keys": ["status-page-key-0123"], "backup_job": {
        "enabled": True, "cron": "30 4 * * *", "timezone": ZONE}})
    now = utcnow()
    zone = ZoneInfo(ZONE)
    today = now.astimezone(zone).date()
    async with open_runtime(settings) as runtime:
        catalog = runtime.catalog
        too_old = imported("app", Status.FAILED, strip_start(today, zone) - dt.timedelta(hours=1))
        await catalog.import_backup(too_old)
        ten_days = await catalog.import_backup(imported("app", Status.FAILED, now - dt.timedelta(days=10)))
        # Three days back: never the same local day as five minutes ago.
        suspect = await catalog.import_backup(imported(
            "app", Status.FINISHED, now - dt.timedelta(days=3), suspect=True, suspect_reason="small"))
        latest = await catalog.import_backup(imported(
            "app", Status.FINISHED, now - dt.timedelta(minutes=5), verification="passed",
            verified_at=now - dt.timedelta(minutes=1)))
        schedule = Schedule(runtime)
        schedule.start()
        try:
            facts = await gather(runtime, schedule, now=now)
        finally:
            schedule.shutdown()
    assert facts.zone_name == ZONE and facts.sources == [("app", "sqlite")]
    assert facts.drives == [("disk", "local")]
    assert facts.latest["app"].id == latest.id and facts.last_finished["app"].id == latest.id
    assert facts.last_drilled["app"].id == latest.id
    assert facts.next_run is not None and facts.next_run.astimezone(zone).strftime("%H:%M") == "04:30"
    assert facts.interval == 86400
    assert facts.drive_health == {"disk": "UP"} and facts.source_health == {"app": "UP"}
    assert facts.catalog_health == "UP" and facts.last_uploads == {}
    assert sorted(created for _label, _status, _suspect, created in facts.outcomes) == [
        ten_days.created_at, suspect.created_at, latest.created_at]
    days = build(facts).sources[0].days
    marked = {day.date: day.outcome for day in days if day.outcome != "none"}
    assert marked == {
        ten_days.created_at.astimezone(zone).date(): "failed",
        suspect.created_at.astimezone(zone).date(): "suspect",
        latest.created_at.astimezone(zone).date(): "finished",
    }


async def test_a_backup_in_flight_is_shown_with_its_step(make_settings, open_runtime):
    async with open_runtime(make_settings()) as runtime:
        runtime.services.progress("app", "uploading")  # what the pipeline reports as it goes
        during = await gather(runtime, None)
        runtime.services.progress("app", "finished")
        after = await gather(runtime, None)
    assert during.running == {"app": "uploading"} and after.running == {}
    assert build(during).sources[0].running == "uploading"
    assert (during.next_run, during.interval, during.latest) == (None, None, {})


async def test_serving_the_page_makes_no_blocking_call_on_the_event_loop(make_settings, open_runtime):
    """The whole of GET /: session check, catalog, health report, host time zone, HTML."""
    import aiohttp
    from aiohttp import web
    from blockbuster import BlockBuster

    from backupmand.api import create_app
    from backupmand.web import session

    async with open_runtime(make_settings()) as runtime:
        [started] = await runtime.start_backups(None)
        await runtime.wait([started.id])
        url_key = b"v" * 32
        key_id = session.matching_key_id(url_key, API_KEY, [API_KEY])
        assert key_id is not None
        cookie = f"{session.SESSION_COOKIE}={session.issue(url_key, key_id)}"
        runner = web.AppRunner(create_app(runtime, url_key=url_key))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        blockbuster = BlockBuster()
        try:
            async with aiohttp.ClientSession() as client:
                blockbuster.activate()  # any blocking call made on the loop's thread now raises
                async with client.get(f"http://127.0.0.1:{port}/", headers={"Cookie": cookie}) as response:
                    body = await response.text()
                blockbuster.deactivate()
        finally:
            blockbuster.deactivate()
            await runner.cleanup()
    assert response.status == 200, body
    assert 'data-label="app"' in body and "Log out" in body
