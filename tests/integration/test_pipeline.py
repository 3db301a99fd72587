"""The pipeline end to end in-process: SQLite source, local drives, real files."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from backupmand.drives.local import LocalFolder
from backupmand.errors import ConflictError
from backupmand.models import Status
from tests.helpers import make_sqlite


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def decompress(path: Path, target: Path) -> Path:
    subprocess.run(["zstd", "-q", "-d", "-f", str(path), "-o", str(target)], check=True)
    return target


async def test_backup_finishes_and_the_file_restores(tmp_path, make_settings, open_runtime):
    settings = make_settings()
    async with open_runtime(settings) as runtime:
        (backup,) = await runtime.start_backups()
        assert backup.status is Status.PENDING
        (final,) = await runtime.wait([backup.id])
    assert final.status is Status.FINISHED, final.error
    assert final.dump_path is None
    assert not list((tmp_path / "dumps").iterdir()), "the local dump is removed once uploaded"
    (record,) = final.drive_files
    stored = Path(record.path)
    assert stored.parent == tmp_path / "drive"
    assert record.label == stored.name == final.name
    assert stored.name.startswith("app-") and stored.name.endswith(".sqlite.zst")
    assert sha256(stored) == final.sha256 and stored.stat().st_size == final.size
    restored = decompress(stored, tmp_path / "restored.db")
    check = subprocess.run(["sqlite3", str(restored), "PRAGMA integrity_check;"],
                           capture_output=True, text=True, check=True)
    assert check.stdout.strip() == "ok"
    with sqlite3.connect(restored) as connection:
        assert connection.execute("SELECT count(*) FROM items").fetchone()[0] == 100


async def test_gzip_and_none_compression(tmp_path, make_settings, open_runtime):
    settings = make_settings(compression="gzip", data_sources=[
        {"provider": "sqlite", "label": "gz", "db_path": str(tmp_path / "app.db"),
         "tmp_folder": str(tmp_path / "dumps")},
        {"provider": "sqlite", "label": "plain", "db_path": str(tmp_path / "app.db"),
         "tmp_folder": str(tmp_path / "dumps"), "compression": "none"},
    ])
    make_sqlite(tmp_path / "app.db")
    async with open_runtime(settings) as runtime:
        backups = await runtime.start_backups()
        finals = {b.label: b for b in await runtime.wait([b.id for b in backups])}
    assert finals["gz"].name.endswith(".sqlite.gz") and finals["gz"].compression == "gzip"
    assert finals["plain"].name.endswith(".sqlite")
    gz = Path(finals["gz"].drive_files[0].path)
    subprocess.run(["gzip", "-t", str(gz)], check=True)
    plain = Path(finals["plain"].drive_files[0].path)
    assert plain.read_bytes()[:16] == b"SQLite format 3\x00"


async def test_wal_database_under_concurrent_writes_is_a_consistent_snapshot(
    tmp_path, make_settings, open_runtime
):
    database = tmp_path / "bank.db"
    connection = sqlite3.connect(database)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
    connection.executemany("INSERT INTO accounts (balance) VALUES (?)", [(1000,)] * 200)
    connection.execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY, note BLOB)")
    # 20 MB: the backup API copies 100 pages per step, so every copy spans many commits.
    connection.executemany("INSERT INTO ledger (note) VALUES (randomblob(4000))", [()] * 5000)
    connection.commit()
    connection.close()
    total = 200 * 1000
    stop = threading.Event()
    transfers = 0

    def writer(seed: int) -> None:
        nonlocal transfers
        import random

        rng = random.Random(seed)
        db = sqlite3.connect(database, timeout=30)
        while not stop.is_set():
            a, b = rng.randrange(1, 201), rng.randrange(1, 201)
            amount = rng.randrange(1, 50)
            with db:  # one transaction: the total never changes
                db.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, a))
                db.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, b))
                db.execute("INSERT INTO ledger (note) VALUES (randomblob(2000))")
            transfers += 1
        db.close()

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(2)]
    for thread in threads:
        thread.start()
    settings = make_settings(data_sources=[
        {"provider": "sqlite", "label": "bank", "db_path": str(database),
         "tmp_folder": str(tmp_path / "dumps"), "timeout": 30}])  # a livelock fails in 30 s
    try:
        while transfers < 200:  # let the writers get going before the snapshot
            await asyncio.sleep(0.01)
        async with open_runtime(settings) as runtime:
            finals = []
            for _ in range(3):
                (backup,) = await runtime.start_backups()
                finals += await runtime.wait([backup.id])
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert transfers > 200
    counts = set()
    for index, final in enumerate(finals):
        assert final.status is Status.FINISHED, final.error
        restored = decompress(Path(final.drive_files[0].path), tmp_path / f"snap{index}.db")
        check = subprocess.run(["sqlite3", str(restored), "PRAGMA integrity_check;"],
                               capture_output=True, text=True, check=True)
        assert check.stdout.strip() == "ok"
        with sqlite3.connect(restored) as snapshot:
            assert snapshot.execute("SELECT sum(balance) FROM accounts").fetchone()[0] == total
            counts.add(snapshot.execute("SELECT count(*) FROM ledger").fetchone()[0])
    assert len(counts) > 1, "snapshots taken while writers ran should differ"


async def test_failing_source_fails_readably_and_others_still_finish(
    tmp_path, make_settings, open_runtime
):
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not an sqlite database at all" * 100)
    settings = make_settings(data_sources=[
        {"provider": "sqlite", "label": "good", "db_path": str(tmp_path / "app.db"),
         "tmp_folder": str(tmp_path / "dumps")},
        {"provider": "sqlite", "label": "missing", "db_path": str(tmp_path / "nope.db"),
         "tmp_folder": str(tmp_path / "dumps")},
        {"provider": "sqlite", "label": "corrupt", "db_path": str(corrupt),
         "tmp_folder": str(tmp_path / "dumps")},
    ])
    make_sqlite(tmp_path / "app.db")
    async with open_runtime(settings) as runtime:
        backups = await runtime.start_backups()
        finals = {b.label: b for b in await runtime.wait([b.id for b in backups])}
    assert finals["good"].status is Status.FINISHED
    assert finals["missing"].status is Status.FAILED
    assert "does not exist" in finals["missing"].error
    assert finals["corrupt"].status is Status.FAILED
    assert "not a database" in finals["corrupt"].error or "integrity" in finals["corrupt"].error
    for label in ("missing", "corrupt"):
        assert finals[label].drive_files == ()
        assert finals[label].dump_path is None
    drive_files = list((tmp_path / "drive").iterdir())
    assert [p.name for p in drive_files] == [finals["good"].name]
    assert all(p.stat().st_size > 0 for p in drive_files)
    assert not list((tmp_path / "dumps").iterdir()), "no partial file or scratch folder left"


async def test_a_source_never_runs_twice_at_once(tmp_path, make_settings, open_runtime):
    settings = make_settings()
    async with open_runtime(settings) as runtime, open_runtime(settings) as other:
        (first,) = await runtime.start_backups()
        with pytest.raises(ConflictError):
            await runtime.start_backups(["app"])
        with pytest.raises(ConflictError):  # another process-like runtime on the same catalog
            await other.start_backups(["app"])
        await runtime.wait([first.id])
        (second,) = await other.start_backups(["app"])
        (final,) = await other.wait([second.id])
    assert final.status is Status.FINISHED


class GatedFolder(LocalFolder):
    """A local drive whose upload announces its start and waits for a partner's."""

    def __init__(self, config: Any, started: asyncio.Event, partner: asyncio.Event) -> None:
        super().__init__(config)
        self.started = started
        self.partner = partner

    async def upload(self, source: Path, name: str, *, size: int, sha256: str,
                     adopt: bool = False) -> Any:
        self.started.set()
        # Only an upload running at the same time as the partner's can get past this.
        await asyncio.wait_for(self.partner.wait(), 10)
        return await super().upload(source, name, size=size, sha256=sha256, adopt=adopt)


async def test_uploads_to_every_drive_overlap_and_are_identical(tmp_path, make_settings, open_runtime):
    settings = make_settings(drives=[
        {"provider": "local", "label": "one", "folder": str(tmp_path / "one")},
        {"provider": "local", "label": "two", "folder": str(tmp_path / "two")},
    ], uploads={"attempts": 1})
    async with open_runtime(settings) as runtime:
        one, two = asyncio.Event(), asyncio.Event()
        drives = runtime.services.drives
        drives["one"] = GatedFolder(settings.drive("one"), one, two)
        drives["two"] = GatedFolder(settings.drive("two"), two, one)
        (backup,) = await runtime.start_backups()
        (final,) = await runtime.wait([backup.id])
    assert final.status is Status.FINISHED, final.error
    first, second = (Path(f.path) for f in final.drive_files)
    assert first.read_bytes() == second.read_bytes()
    assert {f.drive for f in final.drive_files} == {"one", "two"}


async def test_one_failing_drive_fails_the_backup_and_keeps_the_dump(tmp_path, make_settings, open_runtime):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the drive folder should be")
    settings = make_settings(drives=[
        {"provider": "local", "label": "good", "folder": str(tmp_path / "good")},
        {"provider": "local", "label": "bad", "folder": str(blocked / "sub")},
    ])
    async with open_runtime(settings) as runtime:
        (backup,) = await runtime.start_backups()
        (final,) = await runtime.wait([backup.id])
    assert final.status is Status.FAILED
    statuses = {f.drive: f for f in final.drive_files}
    assert statuses["good"].status is Status.FINISHED
    assert statuses["bad"].status is Status.FAILED and statuses["bad"].error
    assert statuses["bad"].attempts == 2
    assert "upload to bad failed" in final.error
    assert final.dump_path and Path(final.dump_path).is_file(), "kept for retry"


async def test_asking_again_right_after_the_outcome_is_recorded_is_not_a_conflict(
    tmp_path, make_settings, open_runtime, monkeypatch
):
    """Between the recorded outcome and the lock's release the dump file is removed; a
    client that read "finished" and starts the source again must not get a 409."""
    import backupmand.pipeline as pipeline

    removing = asyncio.Event()
    proceed = threading.Event()
    original = pipeline.remove_dump_file
    loop = asyncio.get_running_loop()

    def slow_remove(path: Path) -> None:
        loop.call_soon_threadsafe(removing.set)
        proceed.wait(10)
        original(path)

    monkeypatch.setattr(pipeline, "remove_dump_file", slow_remove)
    settings = make_settings()
    async with open_runtime(settings) as runtime:
        (first,) = await runtime.start_backups()
        await removing.wait()
        assert (await runtime.catalog.get_backup(first.id)).status is Status.FINISHED
        loop.call_later(0.05, proceed.set)
        (second,) = await runtime.start_backups(["app"])
        finals = await runtime.wait([first.id, second.id])
    assert [b.status for b in finals] == [Status.FINISHED, Status.FINISHED]


async def _blocks(count: int, size: int = 1024 * 1024):
    for index in range(count):
        yield bytes([index % 251]) * size


@pytest.fixture
def fsynced(monkeypatch) -> list[str]:
    """The paths of the files os.fsync is called on (the real fsync still runs)."""
    import os

    paths: list[str] = []
    real = os.fsync

    def spy(descriptor: int) -> None:
        paths.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real(descriptor)

    monkeypatch.setattr(os, "fsync", spy)
    return paths


async def test_only_what_is_kept_is_made_durable(tmp_path, make_settings, open_runtime, fsynced):
    """Each drive's copy is fsynced; the local dump, a stage removed at the end, is not.
    A failed backup's dump, kept for retry, is."""
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the drive folder should be")
    settings = make_settings(drives=[
        {"provider": "local", "label": "good", "folder": str(tmp_path / "good")},
        {"provider": "local", "label": "bad", "folder": str(tmp_path / "bad")},
    ], uploads={"attempts": 1})
    async with open_runtime(settings) as runtime:
        (backup,) = await runtime.start_backups()
        (finished,) = await runtime.wait([backup.id])
        assert finished.status is Status.FINISHED, finished.error
        for record in finished.drive_files:  # fsynced under its temporary name
            folder = Path(record.path).parent
            assert any(Path(path).parent == folder and path.endswith(f"-{finished.name}")
                       for path in fsynced), (record.drive, fsynced)
        dumps = settings.source("app").tmp_folder
        assert not any(Path(path).parent == dumps for path in fsynced), fsynced

        (tmp_path / "bad").rename(tmp_path / "bad-gone")
        (tmp_path / "bad").write_text("a file where the drive folder should be")
        fsynced.clear()
        (backup,) = await runtime.start_backups()
        (failed,) = await runtime.wait([backup.id])
    assert failed.status is Status.FAILED
    assert failed.dump_path and Path(failed.dump_path).is_file()
    assert failed.dump_path in fsynced, fsynced


async def test_a_dump_left_by_a_dead_process_is_made_durable_when_recovered(
    tmp_path, make_settings, open_runtime, fsynced
):
    """A backup that died during its uploads keeps its dump for retry: recovery fsyncs it."""
    settings = make_settings()
    async with open_runtime(settings, recover=False) as runtime:
        catalog = runtime.catalog
        backup = await catalog.create_backup(label="app", source_provider="sqlite",
                                             name="app-dead.sqlite.zst", compression="zstd")
        dump = tmp_path / "dumps" / backup.name
        dump.parent.mkdir(parents=True, exist_ok=True)
        dump.write_bytes(b"a dump whose uploads never ended")
        await catalog.update_backup(backup.id, dump_status=Status.FINISHED,
                                    dump_path=str(dump), size=32, sha256="ab" * 32)
        fsynced.clear()
        await runtime.recover()
        recovered = await catalog.get_backup(backup.id)
    assert recovered.status is Status.FAILED and recovered.dump_path == str(dump)
    assert str(dump) in fsynced, fsynced
