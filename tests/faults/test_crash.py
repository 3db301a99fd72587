"""kill -9 of a real `backupmand serve` at random points: nothing lost, nothing stuck.

Each restart must find a catalog that tells the truth (no pending record, integrity
ok, every finished backup byte for byte on every drive), tmp folders and drives
without debris, no dump tool left running by the dead daemon, and every failed
backup retryable to finished.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.faults.support import (
    catalog_integrity,
    check_finished_backup,
    dump_processes,
    leftovers,
    make_blob_sqlite,
    wait_until,
)
from tests.helpers import base_config, daemon, run_cli, stored_names, write_config

SEED = 20261128
ITERATIONS = 22
#: A backup of the three sources below takes about a second here: delays in this
#: range land before the dump, in a dump, between uploads and after the end.
DELAYS = (0.0, 1.3)
SOURCES = 3


def crash_config(tmp_path: Path) -> tuple[Path, dict[str, Path], list[Path]]:
    sources = []
    for index in range(SOURCES):
        database = make_blob_sqlite(tmp_path / f"db{index}.db", megabytes=10)
        sources.append({"provider": "sqlite", "label": f"db{index}", "db_path": str(database),
                        "tmp_folder": str(tmp_path / "dumps")})
    drives = {"one": tmp_path / "one", "two": tmp_path / "two"}
    config = write_config(tmp_path / "config.yml", base_config(
        tmp_path, data_sources=sources,
        drives=[{"provider": "local", "label": label, "folder": str(folder)}
                for label, folder in drives.items()],
        shutdown_grace=1,
    ))
    return config, drives, [tmp_path / "dumps"]


def check_after_recovery(
    server: Any, catalog: Path, drives: dict[str, Path], tmp_folders: list[Path],
    hashed: set[str] | None = None,
) -> list[dict[str, Any]]:
    """The invariants a restarted daemon guarantees; returns every backup.

    Files are hashed once (``hashed`` remembers which); later checks compare sizes.
    """
    status, body = server.request("GET", "/api/backups?status=pending")
    assert status == 200 and body["Results"] == [], body
    assert catalog_integrity(catalog) == "ok"
    assert leftovers(tmp_folders, drives.values()) == []
    status, body = server.request("GET", "/api/backups")
    assert status == 200
    backups: list[dict[str, Any]] = body["Results"]
    for backup in backups:
        if backup["Status"] == "finished":
            check_finished_backup(backup, drives, hash_files=hashed is None or backup["Id"] not in hashed)
            if hashed is not None:
                hashed.add(backup["Id"])
        else:
            assert backup["Status"] == "failed", backup
            assert backup["Error"], backup
            if backup["DumpPath"] is not None:  # kept for retry: must be whole
                assert Path(backup["DumpPath"]).stat().st_size == backup["Size"]
    return backups


def phase_of(backup: dict[str, Any]) -> str:
    """Where the kill caught a backup, as its record tells."""
    if backup["Status"] == "finished":
        return "finished"
    if backup["DumpPath"] is None:
        return "in the dump"
    done = sum(f["Status"] == "finished" for f in backup["DriveFiles"])
    return "in the uploads" if done == 0 else "between uploads"


def test_kill_9_at_random_points(tmp_path: Path) -> None:
    config, drives, tmp_folders = crash_config(tmp_path)
    catalog = tmp_path / "state" / "catalog.db"
    rng = random.Random(SEED)
    seen: set[str] = set()
    hashed: set[str] = set()
    phases: Counter[str] = Counter()
    for _ in range(ITERATIONS):
        with daemon(config) as server:
            for backup in check_after_recovery(server, catalog, drives, tmp_folders, hashed):
                if backup["Id"] not in seen:
                    seen.add(backup["Id"])
                    phases[phase_of(backup)] += 1
            status, body = server.request("POST", "/api/backups")
            assert status == 200, body
            assert len(body["BackupIds"]) == SOURCES
            time.sleep(rng.uniform(*DELAYS))  # the fault: a kill at a random point
            server.process.kill()
            server.process.wait()
        # The dead daemon's dump tools die with it: nothing keeps loading the database
        # or writing into a tmp folder that the next start cleans up.
        wait_until(lambda: not dump_processes(str(tmp_path)), timeout=5)

    with daemon(config) as server:
        backups = check_after_recovery(server, catalog, drives, tmp_folders, hashed)
        for backup in backups:
            if backup["Id"] not in seen:
                phases[phase_of(backup)] += 1
        assert len(backups) == ITERATIONS * SOURCES
        # The kills landed in different phases (the seed is fixed, the timing is not).
        assert phases["in the dump"] > 0, phases
        assert phases["in the uploads"] + phases["between uploads"] > 0, phases

        failed = [b for b in backups if b["Status"] == "failed"]
        by_label: dict[str, list[str]] = {}
        for backup in failed:
            by_label.setdefault(backup["Label"], []).append(backup["Id"])
        # Two retries through the CLI beside the daemon, the rest through the API,
        # one backup per source at a time (a source never runs twice at once).
        for identifier in [ids.pop() for ids in list(by_label.values())[:2] if ids]:
            result = run_cli("retry", identifier, config=config)
            assert result.returncode == 0, result.stdout + result.stderr
        while any(by_label.values()):
            batch = [ids.pop() for ids in by_label.values() if ids]
            for identifier in batch:
                status, body = server.request("POST", f"/api/backups/{identifier}/retry")
                assert status == 200, body
            for identifier in batch:
                final = server.wait_backup(identifier)
                assert final["Status"] == "finished", (final["Error"], final)
        backups = check_after_recovery(server, catalog, drives, tmp_folders, hashed)
        assert [b for b in backups if b["Status"] != "finished"] == []
        # Every retried dump went back to the drive as one file; no orphan copies.
        for label, folder in drives.items():
            stored = sorted(p.name for p in folder.iterdir())
            assert stored == stored_names(*(b["Name"] for b in backups)), label
        assert list(tmp_folders[0].iterdir()) == []
    with sqlite3.connect(catalog) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_kill_9_in_a_long_dump_kills_the_dump_tool(tmp_path: Path, slow_db: Path) -> None:
    config = write_config(tmp_path / "config.yml", base_config(tmp_path, data_sources=[
        {"provider": "sqlite", "label": "slow", "db_path": str(slow_db),
         "tmp_folder": str(tmp_path / "dumps")}]))
    with daemon(config) as server:
        status, body = server.request("POST", "/api/backups")
        assert status == 200, body
        (identifier,) = body["BackupIds"]
        wait_until(lambda: dump_processes(str(tmp_path)))  # the integrity check of the copy
        server.process.kill()
        server.process.wait()
    # Without the daemon the check would go on for seconds, orphaned.
    wait_until(lambda: not dump_processes(str(tmp_path)) and not dump_processes(str(slow_db)),
               timeout=2)
    with daemon(config) as server:
        status, backup = server.request("GET", f"/api/backups/{identifier}")
        assert status == 200
        assert backup["Status"] == "failed" and "interrupted" in backup["Error"], backup
        assert leftovers([tmp_path / "dumps"], [tmp_path / "drive"]) == []
        assert list((tmp_path / "dumps").iterdir()) == []
