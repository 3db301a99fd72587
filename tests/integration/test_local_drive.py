"""The local drive's copy: made by the kernel, hashed as it lands, written back.

The drive contract (test_drive_contract.py) holds for the local folder too; these are
the ways its copy can go that only a local folder has: the same file system
(copy_file_range), another one (sendfile), a folder that fills up, file modes under
a lax umask, a folder that disappears under the daemon.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
from collections import Counter
from pathlib import Path

import pytest

from backupmand import files
from backupmand.config import LocalDrive
from backupmand.drives import local
from backupmand.drives.local import TEMP_PREFIX, LocalFolder
from backupmand.errors import DriveError, HealthError
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
    return await upload_to(drive, source, data, "copy.sql.zst")


async def upload_to(drive: LocalFolder, source: Path, data: bytes, name: str) -> Path:
    stored = await drive.upload(source, name, size=len(data),
                                sha256=hashlib.sha256(data).hexdigest())
    return Path(stored.path)


async def test_on_the_same_file_system_the_kernel_copies_in_chunks(tmp_path, calls):
    source, data = make_file(tmp_path, 5 * MiB + 12345)
    stored = await upload(source, data, tmp_path / "drive")
    assert stored.read_bytes() == data
    assert calls["copy_file_range"] == 6  # six chunks: the size is known, no probe for the end
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
    assert calls["sendfile"] == 4  # four chunks


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


async def test_a_write_back_error_fails_the_upload(tmp_path, calls, monkeypatch):
    """An error of a background fdatasync (a full disk) fails the upload, never swallowed."""
    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", full)
    source, data = make_file(tmp_path, 5 * MiB)
    with pytest.raises(DriveError, match="No space left on device"):
        await upload(source, data, tmp_path / "drive")
    assert [p.name for p in (tmp_path / "drive").iterdir()] == []


async def test_files_are_0600_and_new_folders_0700_whatever_the_umask(tmp_path, calls):
    previous = os.umask(0o022)
    try:
        source, data = make_file(tmp_path, 2 * MiB)
        stored = await upload(source, data, tmp_path / "new" / "drive")
        drive = LocalFolder(LocalDrive(provider="local", label="disk",
                                       folder=tmp_path / "other" / "drive"))
        manifest = Path((await drive.put_bytes(b"{}", "x.manifest.json")).path)
    finally:
        os.umask(previous)
    for path in (stored, manifest):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for folder in (tmp_path / "new", tmp_path / "new" / "drive", tmp_path / "other",
                   tmp_path / "other" / "drive"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


async def test_a_folder_deleted_under_the_daemon_is_down_and_not_created_again(tmp_path):
    folder = tmp_path / "mnt" / "backups"
    drive = LocalFolder(LocalDrive(provider="local", label="disk", folder=folder))
    await drive.health()  # never created: UP, created at the first upload
    assert not folder.exists()
    source, data = make_file(tmp_path, 1000)
    await upload_to(drive, source, data, "one.sql.zst")
    await drive.health()

    shutil.rmtree(folder)  # deleted (or a disk unmounted) under the running daemon
    with pytest.raises(HealthError, match="disappeared"):
        await drive.health()
    with pytest.raises(DriveError, match="disappeared") as raised:
        await upload_to(drive, source, data, "two.sql.zst")
    assert raised.value.retryable  # once it is back (remounted), a retry works
    assert not folder.exists(), "not created again"

    folder.mkdir()
    await drive.health()
    await upload_to(drive, source, data, "two.sql.zst")


async def test_listings_show_stored_files_only(tmp_path):
    folder = tmp_path / "drive"
    drive = LocalFolder(LocalDrive(provider="local", label="disk", folder=folder))
    await drive.put_bytes(b"abc", "a.manifest.json")
    (folder / f"{TEMP_PREFIX}{'1' * 32}-b.sql.zst").write_bytes(b"half")  # an upload under way
    (folder / ".hidden").write_bytes(b"x")
    (folder / "sub").mkdir()
    (folder / "link.sql.zst").symlink_to(folder / "a.manifest.json")
    listed = await drive.list_files()
    assert [(item.name, item.size) for item in listed] == [("a.manifest.json", 3)]
    with pytest.raises(DriveError, match="is not a file of drive"):
        await drive.read_bytes(str(tmp_path / "elsewhere.json"))
    with pytest.raises(DriveError, match="is not a file of drive"):
        await drive.delete(str(folder / f"{TEMP_PREFIX}{'1' * 32}-b.sql.zst"))
