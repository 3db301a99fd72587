"""The local drive's copy: made by the kernel, hashed behind as it lands, written back.

The drive contract (test_drive_contract.py) holds for the local folder too; these are
the ways its copy can go that only a local folder has: the same file system
(copy_file_range), another one (sendfile), a folder that fills up.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
from collections import Counter
from pathlib import Path

import pytest

from backupmand import files
from backupmand.config import LocalDrive
from backupmand.drives import local
from backupmand.drives.local import TEMP_PREFIX, LocalFolder
from backupmand.errors import DriveError
from tests.helpers import small_filesystem

MiB = 1024 * 1024


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Small chunks and write-back steps, and a count of the real system calls made."""
    monkeypatch.setattr(local, "COPY_CHUNK", MiB)
    monkeypatch.setattr(files, "SYNC_EVERY", 2 * MiB)
    made: Counter[str] = Counter()
    for name in ("copy_file_range", "sendfile", "fdatasync"):
        real = getattr(os, name)

        def spy(*args: object, _real=real, _name=name) -> object:
            made[_name] += 1
            return _real(*args)

        monkeypatch.setattr(os, name, spy)
    return made


def make_file(folder: Path, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = folder / "dump.sql.zst"
    path.write_bytes(data)
    return path, data


async def upload(source: Path, data: bytes, folder: Path) -> Path:
    drive = LocalFolder(LocalDrive(provider="local", label="disk", folder=folder))
    stored = await drive.upload(source, "copy.sql.zst", size=len(data),
                                sha256=hashlib.sha256(data).hexdigest())
    return Path(stored.path)


async def test_on_the_same_file_system_the_kernel_copies_in_chunks(tmp_path, calls):
    source, data = make_file(tmp_path, 5 * MiB + 12345)
    stored = await upload(source, data, tmp_path / "drive")
    assert stored.read_bytes() == data
    assert calls["copy_file_range"] == 7  # six chunks, then the end
    assert calls["sendfile"] == 0
    assert calls["fdatasync"] >= 1, "written back while copying"
    assert [p.name for p in stored.parent.iterdir()] == ["copy.sql.zst"]


async def test_between_file_systems_sendfile_copies(tmp_path, calls):
    shm = Path("/dev/shm")
    assert os.stat(shm).st_dev != os.stat(tmp_path).st_dev, "needs /dev/shm apart from /tmp"
    folder = shm / f"backupmand-test-{os.getpid()}"
    folder.mkdir()
    try:
        source, data = make_file(folder, 3 * MiB + 1)
        stored = await upload(source, data, tmp_path / "drive")
    finally:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    assert stored.read_bytes() == data
    assert calls["copy_file_range"] == 1, "tried once, refused (EXDEV)"
    assert calls["sendfile"] == 5  # four chunks, then the end


async def test_a_full_drive_fails_the_upload_and_leaves_nothing(tmp_path, calls):
    source, data = make_file(tmp_path, 6 * MiB)
    small = tmp_path / "small"
    with small_filesystem(small) as mounted:
        assert mounted, "mounting a tmpfs needs root (CI runs as root)"
        with pytest.raises(DriveError, match="No space left on device"):
            await upload(source, data, small / "drive")
        assert list((small / "drive").iterdir()) == []
        free = os.statvfs(small)
        assert free.f_bfree == free.f_blocks, "every byte given back"
    assert not any(p.name.startswith(TEMP_PREFIX) for p in tmp_path.rglob("*"))


async def test_from_a_pipe_it_reads_and_writes(tmp_path, calls):
    """What neither copy_file_range nor sendfile takes is copied by read and write."""
    data = os.urandom(3 * MiB + 7)
    pipe = tmp_path / "dump.fifo"
    os.mkfifo(pipe)

    def feed() -> None:
        with open(pipe, "wb") as sink:
            sink.write(data)

    feeding = asyncio.get_running_loop().run_in_executor(None, feed)
    stored = await upload(pipe, data, tmp_path / "drive")
    await feeding
    assert stored.read_bytes() == data
    assert calls["copy_file_range"] == calls["sendfile"] == 1, "each tried once, refused"


async def test_a_write_back_error_fails_the_upload(tmp_path, calls, monkeypatch):
    """An error of a background fdatasync (a full disk) fails the upload, never swallowed."""
    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", full)
    source, data = make_file(tmp_path, 5 * MiB)
    with pytest.raises(DriveError, match="No space left on device"):
        await upload(source, data, tmp_path / "drive")
    assert [p.name for p in (tmp_path / "drive").iterdir()] == []
