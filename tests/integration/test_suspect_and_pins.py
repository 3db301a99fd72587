"""Suspicious dumps (SPEC §6.3) and pinned backups (§6.6), through the real pipeline."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from backupmand.models import Status
from backupmand.retention import plan, prune
from tests.helpers import base_config, daemon, make_sqlite, run_cli, write_config


def resize(path: Path, rows: int) -> None:
    """The source database with ``rows`` rows of incompressible data."""
    with sqlite3.connect(path) as connection:
        connection.execute("DELETE FROM items")
        connection.executemany("INSERT INTO items (name, data) VALUES (?, randomblob(2048))",
                               [(f"item {i}",) for i in range(rows)])
    with sqlite3.connect(path) as connection:
        connection.execute("VACUUM")


async def history(runtime: Any, sizes: list[int], database: Path) -> list[Any]:
    finals = []
    for rows in sizes:
        resize(database, rows)
        (backup,) = await runtime.start_backups()
        finals += await runtime.wait([backup.id])
    return finals


async def test_a_much_smaller_dump_is_flagged_suspect_and_notified(
    tmp_path, make_settings, open_runtime, webhook_receiver
):
    settings = make_settings(notifiers={"webhook": {"enabled": True, "attempts": 1, "endpoints": [
        {"name": "ops", "url": webhook_receiver.url("/hook"), "only_on_failure": True}]}})
    async with open_runtime(settings) as runtime:
        finals = await history(runtime, [500, 510, 490, 505, 500, 50], tmp_path / "app.db")
        requests = await webhook_receiver.wait_for(1)
    *usual, small = finals
    assert all(b.status is Status.FINISHED and not b.suspect for b in usual)
    assert small.status is Status.FINISHED, "a suspect backup stays finished"
    assert small.suspect and "the last 5 had a median of" in small.suspect_reason
    (hook,) = [r for r in requests if r.path == "/hook"]
    body = json.loads(hook.body)
    assert body["Event"] == "backup_suspect" and body["Payload"]["Id"] == small.id
    assert body["Payload"]["Suspect"] is True
    assert hook.headers["X-Backupmand-Event"] == "backup_suspect"


async def test_a_dump_at_80_percent_is_not_suspect(tmp_path, make_settings, open_runtime):
    settings = make_settings()
    async with open_runtime(settings) as runtime:
        finals = await history(runtime, [500, 500, 500, 500, 500, 400], tmp_path / "app.db")
    assert [b.suspect for b in finals] == [False] * 6


async def test_a_suspect_backup_never_counts_toward_min_keep(tmp_path, make_settings, open_runtime):
    settings = make_settings(retention={"enabled": False, "by": "count", "value": 1,
                                        "min_keep": 1})
    async with open_runtime(settings) as runtime:
        finals = await history(runtime, [500, 500, 500, 500, 40], tmp_path / "app.db")
        runtime.services.settings = runtime.settings.model_copy(update={
            "retention": settings.retention.model_copy(update={"enabled": True})})
        verdicts = {v.backup.id: v for v in await plan(runtime.services)}
    suspect = finals[-1]
    assert suspect.suspect
    assert verdicts[suspect.id].decision.keep, "kept (it is the newest), but not as min_keep"
    assert "min_keep" not in verdicts[suspect.id].decision.reasons
    assert "min_keep" in verdicts[finals[-2].id].decision.reasons, \
        "the newest backup that counts is the one min_keep protects"


async def test_pinned_backups_survive_every_prune(tmp_path, make_settings, open_runtime):
    settings = make_settings(retention={"enabled": True, "by": "count", "value": 1,
                                        "min_keep": 1})
    async with open_runtime(settings) as runtime:
        (first,) = await history(runtime, [50], tmp_path / "app.db")
        await runtime.catalog.update_backup(first.id, pinned=True, pin_note="audit 2026")
        finals = await history(runtime, [50, 50, 50], tmp_path / "app.db")
        assert await prune(runtime.services) == []
        left = {b.id: b for b in await runtime.catalog.list_backups()}
    assert set(left) == {first.id, finals[-1].id}
    assert left[first.id].pinned and left[first.id].pin_note == "audit 2026"


def test_pin_unpin_and_preview_through_the_api_and_the_cli(tmp_path: Path) -> None:
    make_sqlite(tmp_path / "app.db")
    config = write_config(tmp_path / "config.yml", base_config(
        tmp_path, retention={"enabled": True, "by": "gfs", "keep_last": 1, "min_keep": 1}))
    for _ in range(3):
        assert run_cli("run", config=config).returncode == 0
    # Retention ran after each: only the newest is left; pin it and make two more.
    listed = json.loads(run_cli("list", "--json", config=config).stdout)["Results"]
    assert len(listed) == 1
    pinned = listed[0]["Id"]
    result = run_cli("pin", pinned, "--note", "keep for the audit", config=config)
    assert result.returncode == 0 and "pinned" in result.stdout
    for _ in range(2):
        assert run_cli("run", config=config).returncode == 0
    with daemon(config) as server:
        status, body = server.request("GET", "/api/retention/preview")
        assert status == 200 and body["Policy"] == "gfs" and body["Delete"] == []
        reasons = {entry["Id"]: entry["Reasons"] for entry in body["Keep"]}
        assert reasons[pinned] == ["pinned"]
        newest = max(body["Keep"], key=lambda entry: entry["Sequence"])
        assert set(newest["Reasons"]) == {"min_keep", "keep_last"}
        status, backup = server.request("DELETE", f"/api/backups/{pinned}/pin")
        assert status == 200 and backup["Pinned"] is False and backup["PinNote"] is None
        status, body = server.request("GET", "/api/retention/preview")
        assert [entry["Id"] for entry in body["Delete"]] == [pinned]
        status, backup = server.request("POST", f"/api/backups/{pinned}/pin",
                                        {"Note": "again"})
        assert status == 200 and backup["Pinned"] is True and backup["PinNote"] == "again"
        status, _ = server.request("POST", f"/api/backups/{pinned}/pin", {"Nope": 1})
        assert status == 400
        status, _ = server.request("POST", "/api/backups/not-a-backup/pin")
        assert status == 404
    dry = run_cli("prune", "--dry-run", config=config)
    assert dry.returncode == 0 and "(pinned)" in dry.stdout and "0 backup(s)" in dry.stdout
    unpinned = run_cli("unpin", pinned, config=config)
    assert unpinned.returncode == 0
    assert run_cli("prune", config=config).returncode == 0
    left = json.loads(run_cli("list", "--json", config=config).stdout)["Results"]
    assert pinned not in {backup["Id"] for backup in left}
