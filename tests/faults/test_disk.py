"""Dumps that cannot complete: too slow, disk full, file size limit, nowhere to write.

Each one fails with a reason an operator can act on, and leaves nothing behind: no
.partial file, no scratch folder, no dump tool still running.
"""

from __future__ import annotations

import os
import re
import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backupmand.models import Status
from tests.faults.support import dump_processes, make_blob_sqlite
from tests.helpers import base_config, child_env, small_filesystem, write_config


def one_source(tmp_path: Path, database: Path, tmp_folder: Path, **extra: object) -> dict:
    return {"data_sources": [{"provider": "sqlite", "label": "app", "db_path": str(database),
                              "tmp_folder": str(tmp_folder), **extra}]}


def assert_nothing_left(tmp_folder: Path, *paths: Path) -> None:
    assert not tmp_folder.exists() or list(tmp_folder.iterdir()) == []
    for path in paths:
        assert dump_processes(str(path)) == []


async def test_a_dump_over_its_timeout_fails_timed_out(
    tmp_path, make_settings, open_runtime, slow_db
):
    dumps = tmp_path / "dumps"
    settings = make_settings(**one_source(tmp_path, slow_db, dumps, timeout=1))
    started = time.monotonic()
    async with open_runtime(settings) as runtime:
        (backup,) = await runtime.start_backups()
        (final,) = await runtime.wait([backup.id])
    assert time.monotonic() - started < 15, "stopped at its deadline, not when done"
    assert final.status is Status.FAILED
    assert "timed out after 1 s" in final.error, final.error
    assert final.dump_path is None and final.drive_files == ()
    assert_nothing_left(dumps, tmp_path, slow_db)
    drive = tmp_path / "drive"  # the stream to it started with the dump: nothing stayed
    assert not drive.exists() or list(drive.iterdir()) == []


@pytest.mark.parametrize(("megabytes", "compression", "who"), [
    (6, "zstd", "the dump tool's own copy does not fit"),
    # Uncompressed, the copy goes out in 1 MiB blocks (a multi-threaded zstd would hold
    # it back until the end): the second block no longer fits beside the copy.
    (2.5, "none", "the copy fits, the dump written beside it does not"),
])
async def test_a_full_disk_fails_the_dump(
    tmp_path, make_settings, open_runtime, megabytes, compression, who
):
    database = make_blob_sqlite(tmp_path / "app.db", megabytes)
    small = tmp_path / "small"
    with small_filesystem(small) as mounted:
        if not mounted:  # no mount here (an unprivileged container): a file size limit instead
            code, output = run_with_file_size_limit(tmp_path, database, small, 1024 * 1024)
            assert code == 1 and re.search("file size limit", output, re.I), output
            assert_nothing_left(small, tmp_path)
            return
        settings = make_settings(**one_source(tmp_path, database, small, compression=compression))
        async with open_runtime(settings) as runtime:
            (backup,) = await runtime.start_backups()
            (final,) = await runtime.wait([backup.id])
        assert final.status is Status.FAILED
        assert re.search(r"disk (is )?full", final.error), (who, final.error)
        assert final.dump_path is None
        assert_nothing_left(small, tmp_path)
        free = os.statvfs(small)
        assert free.f_bfree == free.f_blocks, "every byte given back"


def run_with_file_size_limit(
    tmp_path: Path, database: Path, tmp_folder: Path, limit: int
) -> tuple[int, str]:
    """`backupmand run` in a child process whose files may not grow past ``limit``."""
    config = write_config(tmp_path / "limited.yml",
                          base_config(tmp_path, **one_source(tmp_path, database, tmp_folder)))

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(
        [sys.executable, "-m", "backupmand", "-c", str(config), "run"],
        capture_output=True, text=True, env=child_env(), timeout=120, check=False,
        preexec_fn=limit_file_size,
    )
    return result.returncode, result.stdout + result.stderr


def test_a_file_size_limit_fails_the_dump(tmp_path: Path) -> None:
    database = make_blob_sqlite(tmp_path / "app.db", 2)
    dumps = tmp_path / "dumps"
    code, output = run_with_file_size_limit(tmp_path, database, dumps, 1024 * 1024)
    assert code == 1, output
    assert re.search("file size limit", output, re.I), output
    assert_nothing_left(dumps, tmp_path)
    with sqlite3.connect(tmp_path / "state" / "catalog.db") as connection:
        (status, error), = connection.execute("SELECT status, error FROM backups").fetchall()
    assert status == "failed" and "file size limit" in error.lower(), error


@pytest.mark.parametrize(("where", "reason"), [
    ("under a regular file", "cannot write {folder}: Not a directory"),
    ("a regular file itself", "the tmp folder {folder} is not a directory"),
])
async def test_an_unusable_tmp_folder_fails_with_a_clear_reason(
    tmp_path, make_settings, open_runtime, where, reason
):
    # Root ignores permission bits: a regular file in the way is what stops root.
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    folder = blocker / "dumps" if where == "under a regular file" else blocker
    settings = make_settings(**one_source(tmp_path, tmp_path / "app.db", folder))
    async with open_runtime(settings) as runtime:
        (backup,) = await runtime.start_backups()
        (final,) = await runtime.wait([backup.id])
    assert final.status is Status.FAILED
    assert final.error == reason.format(folder=folder)
    assert blocker.read_text() == "not a folder", "left as it was"
    assert list(tmp_path.glob("**/*.partial")) == []
