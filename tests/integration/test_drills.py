"""Restore drills (SPEC §6.3) with SQLite sources: the outcome recorded, counted, told;
a copy altered, a dump that does not load, rows lost; the API, the CLI and the schedule.
The PostgreSQL and MariaDB drills are in tests/e2e (their scratch databases)."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from backupmand.errors import ConflictError
from backupmand.models import Status
from backupmand.scheduler import Schedule
from tests.helpers import base_config, daemon, make_sqlite, run_cli, write_config


async def backed_up(runtime: Any) -> Any:
    (backup,) = await runtime.start_backups()
    (final,) = await runtime.wait([backup.id])
    assert final.status is Status.FINISHED, final.error
    return final


async def test_a_drill_passes_and_is_recorded_counted_and_told(
    tmp_path, make_settings, open_runtime, webhook_receiver
):
    settings = make_settings(notifiers={"webhook": {"enabled": True, "attempts": 1, "endpoints": [
        {"name": "ops", "url": webhook_receiver.url("/hook"), "only_on_failure": True}]}})
    async with open_runtime(settings) as runtime:
        backup = await backed_up(runtime)
        assert backup.tables == {"items": 100}, "the manifest's facts come from the dump"
        drilled = await runtime.verify(backup.id)
        assert runtime.services.verifications[("app", "passed")] == 1
    assert drilled.verification == "passed" and drilled.verify_error is None
    assert drilled.verified_at is not None and drilled.status is Status.FINISHED
    assert not list((tmp_path / "dumps").glob(".backupmand-verify-*")), "scratch removed"
    assert webhook_receiver.requests == [], "a passed drill is not a failure to report"


async def test_an_altered_copy_fails_the_drill_with_the_checksum(
    tmp_path, make_settings, open_runtime, webhook_receiver
):
    settings = make_settings(notifiers={"webhook": {"enabled": True, "attempts": 1, "endpoints": [
        {"name": "ops", "url": webhook_receiver.url("/hook"), "only_on_failure": True}]}})
    async with open_runtime(settings) as runtime:
        backup = await backed_up(runtime)
        stored = Path(backup.drive_files[0].path)
        data = bytearray(stored.read_bytes())
        data[len(data) // 2] ^= 0x01
        stored.write_bytes(bytes(data))
        drilled = await runtime.verify(backup.id)
        (hook,) = await webhook_receiver.wait_for(1)
    assert drilled.verification == "failed"
    assert "does not match the backup" in drilled.verify_error
    assert drilled.status is Status.FINISHED, "a drill never changes the backup's status"
    body = json.loads(hook.body)
    assert body["Event"] == "verify_failed" and body["Payload"]["Verification"] == "failed"


async def test_rows_lost_or_a_dump_that_does_not_load_fail_the_drill(
    tmp_path, make_settings, open_runtime
):
    settings = make_settings()
    async with open_runtime(settings) as runtime:
        backup = await backed_up(runtime)
        # The dump's facts claim more rows than the file holds (as a dump that lost
        # rows on the way would).
        await runtime.catalog.update_backup(backup.id, tables={"items": 150},
                                            objects={**backup.objects, "views": 2})
        drilled = await runtime.verify(backup.id)
        assert drilled.verification == "failed"
        assert "table items: 100 rows restored, 150 in the dump" in drilled.verify_error
        assert "views: 0 restored, 2 in the dump" in drilled.verify_error
        # A file that is not a database, with a matching size and checksum recorded.
        other = await backed_up(runtime)
        stored = Path(other.drive_files[0].path)
        from backupmand.stream import encode_bytes

        junk = encode_bytes(b"this is not an SQLite database" * 100, "zstd", None, ())
        stored.write_bytes(junk)
        import hashlib

        await runtime.catalog.update_backup(other.id, size=len(junk),
                                            sha256=hashlib.sha256(junk).hexdigest())
        failed = await runtime.verify(other.id)
    assert failed.verification == "failed"
    assert failed.verify_error.startswith("the dump did not restore:"), failed.verify_error


async def test_a_drill_holds_the_sources_lock(tmp_path, make_settings, open_runtime):
    settings = make_settings()
    async with open_runtime(settings) as runtime:
        backup = await backed_up(runtime)
        lock = runtime.locks.source("app")  # a backup of the source in another process
        assert lock.try_acquire()
        try:
            with pytest.raises(ConflictError):
                await runtime.verify(backup.id)
        finally:
            lock.release()
        pending = await runtime.catalog.create_backup(label="app", source_provider="sqlite",
                                                      name="x", compression="zstd")
        with pytest.raises(ConflictError, match="only finished"):
            await runtime.verify(pending.id)


async def test_verify_job_drills_the_latest_of_every_source_and_skips_a_busy_one(
    tmp_path, make_settings, open_runtime
):
    make_sqlite(tmp_path / "other.db")
    settings = make_settings(data_sources=[
        {"provider": "sqlite", "label": "app", "db_path": str(tmp_path / "app.db"),
         "tmp_folder": str(tmp_path / "dumps")},
        {"provider": "sqlite", "label": "other", "db_path": str(tmp_path / "other.db"),
         "tmp_folder": str(tmp_path / "dumps")}])
    make_sqlite(tmp_path / "app.db")
    async with open_runtime(settings) as runtime:
        backups = await runtime.start_backups()
        finals = await runtime.wait([b.id for b in backups])
        newer = await runtime.start_backups(["app"])
        (app_latest,) = await runtime.wait([b.id for b in newer])
        lock = runtime.locks.source("other")
        assert lock.try_acquire()
        try:
            schedule = Schedule(runtime)
            await schedule._verify_tick()
        finally:
            lock.release()
        drilled = {b.id: b for b in await runtime.catalog.list_backups()}
        assert drilled[app_latest.id].verification == "passed", "the latest of app"
        older = next(b for b in finals if b.label == "app")
        assert drilled[older.id].verification is None, "only the latest"
        other = next(b for b in finals if b.label == "other")
        assert drilled[other.id].verification is None, "a busy source waits for the next tick"
        assert runtime.services.verifications == {("app", "passed"): 1}
        metrics = await _metrics(runtime)
        assert re.search(r'backupmand_verifications_total\{label="app",result="passed"\} 1', metrics)
        assert re.search(r'backupmand_last_verified_timestamp_seconds\{label="app"\} \d', metrics)
        assert re.search(r'backupmand_last_verify_failed\{label="app"\} 0', metrics)


async def _metrics(runtime: Any) -> str:
    from backupmand.metrics import render_metrics

    body = await render_metrics(runtime.catalog, next_runs={}, upload_failures={},
                                verifications=runtime.services.verifications)
    return body.decode()


def test_verify_through_the_api_and_the_cli(tmp_path: Path) -> None:
    make_sqlite(tmp_path / "app.db")
    config = write_config(tmp_path / "config.yml", base_config(tmp_path))
    assert run_cli("run", config=config).returncode == 0
    backup = json.loads(run_cli("list", "--json", config=config).stdout)["Results"][0]
    with daemon(config) as server:
        status, body = server.request("POST", f"/api/backups/{backup['Id']}/verify")
        assert status == 202 and body == {"Message": "Verification started"}
        deadline = time.monotonic() + 60
        while True:
            status, current = server.request("GET", f"/api/backups/{backup['Id']}")
            if current["Verification"] is not None:
                break
            assert time.monotonic() < deadline, "the drill never ended"
            time.sleep(0.1)
        assert current["Verification"] == "passed" and current["VerifiedAt"]
        status, _ = server.request("POST", "/api/backups/unknown-id/verify")
        assert status == 404
        status, _ = server.request("POST", f"/api/backups/{backup['Id']}/verify",
                                   {"Drive": "nope"})
        assert status == 400
    result = run_cli("verify", "--label", "app", "--latest", config=config)
    assert result.returncode == 0 and result.stdout.startswith("passed"), result.stderr
    listed = run_cli("list", config=config)
    assert "passed 20" in listed.stdout, listed.stdout
    # A copy made unloadable: the CLI says so and exits 1.
    stored = Path(backup["DriveFiles"][0]["Path"])
    stored.write_bytes(b"\0" + stored.read_bytes()[1:])
    failed = run_cli("verify", backup["Id"], config=config)
    assert failed.returncode == 1 and failed.stdout.startswith("failed")


async def test_a_drill_of_a_source_no_longer_configured_is_an_error_not_a_result(
    tmp_path, make_settings, open_runtime
):
    settings = make_settings()
    async with open_runtime(settings) as runtime:
        backup = await backed_up(runtime)
        runtime.services.sources.pop("app")
        from backupmand.errors import RestoreError

        with pytest.raises(RestoreError, match="no longer configured"):
            await runtime.verify(backup.id)
        assert (await runtime.catalog.get_backup(backup.id)).verification is None


def test_sqlite_facts_are_the_copys_exact_counts(tmp_path: Path) -> None:
    database = tmp_path / "app.db"
    make_sqlite(database, rows=37)
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE other (x)")
        connection.execute("CREATE VIEW v AS SELECT * FROM items")
        connection.execute("CREATE TRIGGER t AFTER INSERT ON other BEGIN SELECT 1; END")
    config = write_config(tmp_path / "config.yml", base_config(tmp_path))
    assert run_cli("run", config=config).returncode == 0
    backup = json.loads(run_cli("list", "--json", config=config).stdout)["Results"][0]
    manifest = json.loads(Path(backup["DriveFiles"][0]["ManifestPath"]).read_text())
    assert manifest["Tables"] == {"items": 37, "other": 0}
    assert manifest["Objects"]["tables"] == 2 and manifest["Objects"]["views"] == 1
    assert manifest["Objects"]["triggers"] == 1
    assert backup["RowCount"] == 37 and backup["TableCount"] == 2


async def test_a_backup_has_priority_over_a_drill_of_its_source(
    tmp_path, make_settings, open_runtime
):
    """A backup asked for while a drill of the same source runs stops the drill (its
    scratch goes, nothing is recorded for it) and starts at once."""
    settings = make_settings()
    async with open_runtime(settings) as runtime:
        backup = await backed_up(runtime)
        source = runtime.services.sources["app"]
        entered, release = asyncio.Event(), asyncio.Event()
        original = source.drill

        async def slow_drill(chunks: Any, *, scratch: str, workdir: Path) -> Any:
            entered.set()
            await release.wait()  # a long load
            return await original(chunks, scratch=scratch, workdir=workdir)

        source.drill = slow_drill  # type: ignore[method-assign]
        await runtime.start_verify(backup.id)
        await asyncio.wait_for(entered.wait(), 30)
        (newer,) = await runtime.start_backups(["app"])
        assert not runtime.drilling(backup.id), "the drill gave way"
        (final,) = await runtime.wait([newer.id])
        assert final.status is Status.FINISHED
        assert (await runtime.catalog.get_backup(backup.id)).verification is None
    assert not list((tmp_path / "dumps").glob(".backupmand-verify-*"))
