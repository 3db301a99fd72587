"""The schedule really fires, and a tick never doubles a running source."""

from __future__ import annotations

import time

from structlog.testing import capture_logs

from backupmand.models import Status
from backupmand.scheduler import Schedule
from tests.helpers import daemon


def test_a_six_field_schedule_fires_backups_in_a_running_daemon(make_config):
    config = make_config(http={
        "listen": "127.0.0.1", "port": 8080, "api_keys": ["test-key-0123456789"],
        "backup_job": {"enabled": True, "cron": "*/2 * * * * *", "timezone": "UTC"}})
    with daemon(config) as server:
        deadline = time.monotonic() + 30
        finished: list[dict] = []
        while len(finished) < 2 and time.monotonic() < deadline:
            _, body = server.request("GET", "/api/backups?status=finished")
            finished = body["Results"]
            time.sleep(0.1)
        log = server.log()
    assert len(finished) >= 2, log
    assert "schedule.fired" in log
    seconds = {item["CreatedAt"][17:19] for item in finished}
    assert all(int(s) % 2 == 0 for s in seconds), seconds


async def test_a_tick_while_the_source_runs_is_skipped(make_settings, open_runtime):
    settings = make_settings()
    async with open_runtime(settings) as runtime:
        schedule = Schedule(runtime)
        with capture_logs() as events:
            await schedule._tick()
            await schedule._tick()  # the first tick's backup still holds the source lock
        running = list(runtime._tasks)
        await runtime.wait(running)
        backups = await runtime.catalog.list_backups()
    assert len(backups) == 1 and backups[0].status is Status.FINISHED
    assert [e["event"] for e in events if e["event"].startswith("schedule.")] == [
        "schedule.fired", "schedule.skipped"]


async def test_shutdown_of_the_schedule_leaves_running_backups_alone(make_settings, open_runtime):
    settings = make_settings(http={"api_keys": ["k-0123456789abcdef"], "backup_job": {
        "enabled": True, "cron": "0 3 * * *", "timezone": "UTC"}})
    async with open_runtime(settings) as runtime:
        schedule = Schedule(runtime)
        schedule.start()
        assert schedule.next_run() is not None and schedule.next_run().hour == 3
        await schedule._tick()
        (task,) = runtime._tasks.values()
        schedule.shutdown()
        final = await task
    assert final.status is Status.FINISHED
