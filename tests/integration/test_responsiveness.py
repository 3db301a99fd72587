"""The event loop stays free while a large backup runs."""

from __future__ import annotations

import sqlite3
import statistics
import time
import urllib.request
from pathlib import Path

import pytest
from blockbuster import BlockBuster

from backupmand.models import Status
from tests.helpers import daemon


def big_sqlite(path: Path, megabytes: int) -> None:
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
    connection.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO blobs (data) SELECT randomblob(1048576) FROM n", (megabytes,))
    connection.commit()
    connection.close()


@pytest.fixture(scope="module")
def big_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.db"
    big_sqlite(path, 210)
    return path


def test_ping_stays_fast_while_a_200_mb_database_is_backed_up(big_database, make_config, tmp_path):
    assert big_database.stat().st_size >= 200 * 1024 * 1024
    config = make_config(data_sources=[{"provider": "sqlite", "label": "big",
                                        "db_path": str(big_database),
                                        "tmp_folder": str(tmp_path / "dumps")}])
    with daemon(config) as server:
        _, body = server.request("POST", "/api/backups")
        (backup_id,) = body["BackupIds"]
        latencies = []
        status = "pending"
        while status == "pending":
            started = time.perf_counter()
            with urllib.request.urlopen(server.url + "/ping", timeout=10) as response:
                response.read()
            latencies.append(time.perf_counter() - started)
            if len(latencies) % 20 == 0:
                status = server.request("GET", f"/api/backups/{backup_id}")[1]["Status"]
    assert status == "finished"
    assert len(latencies) >= 50, "the backup should take long enough to measure"
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    assert p99 < 0.100, f"p99 {p99 * 1000:.1f} ms, median {statistics.median(latencies) * 1000:.1f} ms"


async def test_no_blocking_call_on_the_event_loop_during_a_backup(
    big_database, make_settings, open_runtime, tmp_path
):
    settings = make_settings(data_sources=[{"provider": "sqlite", "label": "big",
                                            "db_path": str(big_database),
                                            "tmp_folder": str(tmp_path / "dumps")}],
                             drives=[{"provider": "local", "label": "a", "folder": str(tmp_path / "a")},
                                     {"provider": "local", "label": "b", "folder": str(tmp_path / "b")}])
    async with open_runtime(settings) as runtime:
        blockbuster = BlockBuster()
        blockbuster.activate()  # any blocking call made on the loop's thread now raises
        try:
            (backup,) = await runtime.start_backups()
            (final,) = await runtime.wait([backup.id])
        finally:
            blockbuster.deactivate()
    assert final.status is Status.FINISHED, final.error
