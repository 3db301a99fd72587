"""Catalog writes under pressure: many at once, a disk that fills up, a catalog that goes
away under the daemon (issue 12)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from backupmand.catalog import Catalog, persistent
from backupmand.errors import CatalogError, ConflictError
from backupmand.models import Status
from backupmand.pipeline import INTERRUPTED
from tests.helpers import base_config, daemon, fill_disk, make_sqlite, small_filesystem, write_config


async def test_concurrent_writes_never_interleave_transactions(tmp_path: Path) -> None:
    """Many coroutines on one connection, each writing several statements, while others
    fail their backups: no "cannot start a transaction within a transaction", and every
    write lands."""
    async with Catalog.open("sqlite", tmp_path / "catalog.db") as catalog:
        made = [await catalog.create_backup(label=f"s{i % 5}", source_provider="sqlite",
                                            name=f"n{i}", compression="zstd")
                for i in range(60)]

        async def settle(index: int) -> None:
            backup = made[index]
            record = await catalog.create_drive_file(backup_id=backup.id, drive="d",
                                                     provider="local", label=backup.name)
            if index % 3 == 0:
                await catalog.fail_backup(backup.id, "stopped")
            else:
                await catalog.update_drive_file(record.id, status=Status.FINISHED, path="/x")
                await catalog.update_backup(backup.id, status=Status.FINISHED)

        await asyncio.gather(*(settle(i) for i in range(len(made))))
        final = {b.id: b for b in await catalog.list_backups()}
    assert all(final[b.id].status is not Status.PENDING for b in made)
    assert sum(final[b.id].status is Status.FAILED for b in made) == 20


async def test_stopping_with_three_backups_in_flight_leaves_none_pending(
    tmp_path, make_settings, open_runtime, slow_db
):
    sources = []
    for index in range(3):
        copy = tmp_path / f"db{index}.db"
        copy.symlink_to(slow_db)
        sources.append({"provider": "sqlite", "label": f"db{index}", "db_path": str(copy),
                        "tmp_folder": str(tmp_path / f"dumps{index}")})
    settings = make_settings(data_sources=sources, dump_concurrency=3)
    async with open_runtime(settings) as runtime:
        dumping: set[str] = set()
        all_dumping = asyncio.Event()

        def progress(label: str, step: str) -> None:
            if step == "dumping":
                dumping.add(label)
                if len(dumping) == 3:
                    all_dumping.set()

        runtime.add_progress_listener(progress)
        backups = await runtime.start_backups()
        await asyncio.wait_for(all_dumping.wait(), 60)
        await runtime.stop(grace=0)
        finals = await runtime.wait([b.id for b in backups])
    assert [b.status for b in finals] == [Status.FAILED] * 3
    assert all(b.error == INTERRUPTED for b in finals)


async def test_a_full_disk_under_the_catalog_delays_the_outcome_and_health_says_down(
    tmp_path, make_settings, open_runtime, slow_db
):
    """The catalog's folder fills up while a backup dumps: its outcome cannot be written,
    the backup is not reported finished or lost, probe() says DOWN; once space is freed
    the outcome is recorded."""
    state = tmp_path / "state"
    with small_filesystem(state, "8m") as mounted:
        assert mounted, "mounting a tmpfs needs root, as CI has"
        settings = make_settings(
            database={"provider": "sqlite", "db_path": str(state / "catalog.db")},
            data_sources=[{"provider": "sqlite", "label": "app", "db_path": str(slow_db),
                           "tmp_folder": str(tmp_path / "dumps")}])
        async with open_runtime(settings) as runtime:
            catalog = runtime.catalog
            retries: list[float] = []
            refilled = asyncio.Event()

            async def sleep(delay: float) -> None:
                retries.append(delay)
                if len(retries) >= 2:
                    refilled.set()
                await asyncio.sleep(0.01)

            catalog.sleep = sleep
            dumping = asyncio.Event()
            runtime.add_progress_listener(
                lambda _label, step: dumping.set() if step == "dumping" else None)
            (backup,) = await runtime.start_backups()
            await asyncio.wait_for(dumping.wait(), 30)
            filler = state / "filler"
            await asyncio.to_thread(fill_disk, filler)
            await asyncio.wait_for(refilled.wait(), 120)
            with pytest.raises(CatalogError, match="cannot be written"):
                await catalog.probe()
            # An API start meets a clear error at once (the source is busy), not a hang.
            with pytest.raises(ConflictError):
                await asyncio.wait_for(runtime.start_backups(), 10)
            assert runtime.in_flight == 1, "the backup waits to record its outcome"
            filler.unlink()
            (final,) = await runtime.wait([backup.id])
            assert final.status is Status.FINISHED, final.error
            await catalog.probe()


async def test_persistent_writes_retry_and_others_fail_at_once(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    async with Catalog.open("sqlite", path) as catalog:
        backup = await catalog.create_backup(label="a", source_provider="sqlite", name="n",
                                             compression="zstd")
        blocker = await asyncio.to_thread(_lock_writer, path)
        try:
            await catalog._db.execute("PRAGMA busy_timeout = 10")
            with pytest.raises(CatalogError, match="cannot be written"):
                await catalog.update_backup(backup.id, error="x")
            attempts: list[float] = []

            async def sleep(delay: float) -> None:
                attempts.append(delay)
                if len(attempts) == 3:
                    blocker.stdin.write(b"go\n")  # type: ignore[union-attr]
                    blocker.stdin.flush()  # type: ignore[union-attr]
                    await asyncio.to_thread(blocker.wait, 30)
                await asyncio.sleep(0)

            catalog.sleep = sleep
            with persistent():
                updated = await catalog.update_backup(backup.id, error="recorded at last")
            assert updated.error == "recorded at last"
            assert attempts[:3] == [0.5, 1.0, 2.0], "backoff between the retries"
            assert catalog.write_problem is None
        finally:
            if blocker.poll() is None:
                blocker.kill()


def _lock_writer(path: Path) -> subprocess.Popen[bytes]:
    """Another process holding the catalog's write lock until it reads a line."""
    script = (
        "import sqlite3, sys\n"
        f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
        "c.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
        "c.execute('ROLLBACK')\n")
    process = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"locked\n"
    return process


def test_a_catalog_deleted_under_the_daemon_stops_backups(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yml", base_config(tmp_path))
    with daemon(config) as server:
        (tmp_path / "state" / "catalog.db").unlink()
        status, body = server.request("POST", "/api/backups")
        assert status == 503, body
        assert "catalog" in body["Error"] and "gone" in body["Error"]
        status, health = server.request("GET", "/health", key=None)
        assert status == 503 and health["Details"]["Database"]["Status"] == "DOWN"


async def test_start_refuses_a_replaced_catalog(tmp_path, make_settings, open_runtime):
    settings = make_settings()
    make_sqlite(tmp_path / "app.db")
    async with open_runtime(settings) as runtime:
        path = settings.database.db_path
        replacement = path.with_suffix(".new")
        replacement.write_bytes(path.read_bytes())
        replacement.replace(path)
        with pytest.raises(CatalogError, match="replaced"):
            await runtime.start_backups()
        with pytest.raises((CatalogError, ConflictError)):
            await runtime.catalog.probe()


async def test_a_write_cancelled_at_any_point_leaves_no_transaction_open(tmp_path: Path) -> None:
    """aiosqlite runs BEGIN or COMMIT in its thread whether or not the awaiting task was
    cancelled meanwhile; a write cut there must not leave the one connection inside a
    transaction that refuses every later write (the cancelled backup's failure first)."""
    async with Catalog.open("sqlite", tmp_path / "catalog.db") as catalog:
        made = await catalog.create_backup(label="s", source_provider="sqlite", name="n",
                                           compression="zstd")
        for steps in range(12):  # cancel after 0, 1, 2 ... turns of the loop
            writer = asyncio.ensure_future(catalog.update_backup(made.id, size=steps))
            for _ in range(steps):
                await asyncio.sleep(0)
            writer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await writer
            await catalog.update_backup(made.id, size=1000 + steps)  # raised before the fix
            assert (await catalog.get_backup(made.id)).size == 1000 + steps
