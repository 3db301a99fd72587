"""A clock set back, and scheduled ticks that cannot start (issue 12)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sqlite3
import time
from pathlib import Path

from tests.helpers import (
    Daemon,
    base_config,
    child_env,
    fill_disk,
    free_port,
    run_cli,
    small_filesystem,
    write_config,
)


def test_a_clock_set_back_never_makes_retention_delete_the_newest_backup(tmp_path: Path) -> None:
    """Three backups, then one made while the clock is two days behind (libfaketime
    fakes the clock of the backupmand process only): by count, the one to go is the
    oldest, never the newest whose recorded time looks oldest."""
    assert shutil.which("faketime"), "faketime (libfaketime) is installed by .ci/run"
    config = write_config(tmp_path / "config.yml", base_config(
        tmp_path, retention={"enabled": True, "by": "count", "value": 3, "min_keep": 1}))
    for _ in range(3):
        assert run_cli("run", config=config).returncode == 0
    env = child_env(FAKETIME="-2d", LD_PRELOAD=_libfaketime(), FAKETIME_DONT_RESET="1")
    late = run_cli("run", config=config, env=env)
    assert late.returncode == 0, late.stderr
    with sqlite3.connect(tmp_path / "state" / "catalog.db") as catalog:
        rows = catalog.execute("SELECT id, seq, created_at FROM backups ORDER BY seq").fetchall()
    assert len(rows) == 3, "retention kept three"
    newest = rows[-1]
    assert newest[2] < rows[0][2], "the newest backup's recorded time is the oldest"
    made = re.search(r"^finished\s+app\s+(\S+)", late.stdout, re.M)
    assert made and newest[0] == made.group(1), "the backup the late run made is still there"
    assert [row[1] for row in rows] == [2, 3, 4], "the first one (seq 1) went"


def _libfaketime() -> str:
    for candidate in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                      "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"):
        if os.path.exists(candidate):
            return candidate
    raise AssertionError("libfaketime.so.1 not found (Debian package faketime)")


async def test_a_tick_that_cannot_start_is_an_error_a_metric_and_a_notification(
    tmp_path: Path, webhook_receiver
) -> None:
    state = tmp_path / "state"
    with small_filesystem(state, "4m") as mounted:
        assert mounted, "mounting a tmpfs needs root, as CI has"
        document = base_config(tmp_path, notifiers={"webhook": {
            "enabled": True, "attempts": 1, "endpoints": [
                {"name": "ops", "url": webhook_receiver.url("/hook")}]}})
        document["http"]["backup_job"] = {"enabled": True, "cron": "* * * * * *"}
        port = free_port()
        document["http"].update(port=port, app_url=f"http://127.0.0.1:{port}")
        config = write_config(tmp_path / "config.yml", document)
        server = Daemon(config, port)
        try:
            await asyncio.to_thread(server.wait_ready)
            # Let one scheduled backup through, then fill the catalog's disk.
            await _wait_for_backups(server, 1)
            filler = state / "filler"
            await asyncio.to_thread(fill_disk, filler)
            failure = await _wait_for_event(webhook_receiver, "schedule_failed")
            body = json.loads(failure.body)
            assert body["Payload"]["Schedule"] == "backup_job"
            assert "catalog" in body["Payload"]["Error"]
            status, metrics = await asyncio.to_thread(server.request, "GET", "/metrics", key=None)
            text = metrics.decode() if isinstance(metrics, bytes) else str(metrics)
            match = re.search(r'backupmand_schedule_failures_total\{schedule="backup_job"\} (\S+)',
                              text)
            assert status == 200 and match and float(match.group(1)) >= 1, text
            log = server.log()
            assert re.search(r"^<3>.*schedule\.failed.*schedule=backup_job", log, re.M), log
            # Space again: the next tick tries again and works.
            filler.unlink()
            before = len(await _backups(server))
            await _wait_for_backups(server, before + 1)
        finally:
            await asyncio.to_thread(server.stop)


async def _backups(server: Daemon) -> list[dict]:
    status, body = await asyncio.to_thread(server.request, "GET", "/api/backups?status=finished")
    return body["Results"] if status == 200 else []


async def _wait_for_backups(server: Daemon, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(await _backups(server)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} finished backups"
        await asyncio.sleep(0.2)


async def _wait_for_event(receiver, event: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    seen = 0
    while True:
        requests = await asyncio.wait_for(receiver.wait_for(seen + 1),
                                          max(0.1, deadline - time.monotonic()))
        for request in requests[seen:]:
            if request.headers.get("X-Backupmand-Event") == event:
                return request
        seen = len(requests)
