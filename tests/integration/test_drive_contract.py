"""One contract, three drives: local, S3 (moto) and Google Drive (the fake).

Every test here runs against each drive built by ``build_drive`` from its config, and
checks the promises of ``backupmand.drives.base``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from backupmand.config import GoogleDrive, LocalDrive, S3Drive
from backupmand.drives import Drive, build_drive
from backupmand.drives.local import TEMP_PREFIX
from backupmand.errors import DriveError, HealthError, VerificationError
from tests.servers.fake_gdrive import FakeGoogleDrive
from tests.servers.s3 import S3Server, free_port

MiB = 1024 * 1024


@dataclasses.dataclass
class Harness:
    """A drive under test, and how to look behind its back."""

    kind: str
    drive: Drive[Any]
    #: Names of the files the drive holds (read from the storage itself).
    names: Callable[[], Awaitable[set[str]]]
    #: What an unfinished upload may leave: temporary files, multipart uploads, sessions.
    leftovers: Callable[[], Awaitable[list[str]]]
    #: Configs of drives that must be DOWN, with why.
    unhealthy: list[tuple[str, LocalDrive | S3Drive | GoogleDrive]]


def make_file(folder: Path, size: int, name: str = "dump.sql.zst") -> tuple[Path, bytes, str]:
    data = os.urandom(size)
    path = folder / name
    path.write_bytes(data)
    return path, data, hashlib.sha256(data).hexdigest()


async def fetch(drive: Drive[Any], path: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([block async for block in drive.download(path, start=start, end=end)])


def _local(tmp_path: Path) -> Harness:
    folder = tmp_path / "local-drive"
    drive = build_drive(LocalDrive(provider="local", label="Local Drive", folder=folder))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    async def names() -> set[str]:
        if not folder.exists():
            return set()
        return {item.name for item in folder.iterdir() if not item.name.startswith(TEMP_PREFIX)}

    async def leftovers() -> list[str]:
        return [str(item) for item in await drive.leftovers()]  # type: ignore[attr-defined]

    unhealthy: list[tuple[str, LocalDrive | S3Drive | GoogleDrive]] = [
        ("a file in the folder path",
         LocalDrive(provider="local", label="Bad", folder=blocker / "backups")),
    ]
    return Harness("local", drive, names, leftovers, unhealthy)


def _s3(server: S3Server, bucket: str) -> Harness:
    config = server.drive_config(bucket, prefix="backups")
    drive = build_drive(config)

    async def names() -> set[str]:
        keys = await asyncio.to_thread(server.keys, bucket)
        return {key.removeprefix("backups/") for key in keys}

    async def leftovers() -> list[str]:
        uploads = await asyncio.to_thread(server.multipart_uploads, bucket)
        return [f"multipart upload of {item['Key']}" for item in uploads]

    unhealthy: list[tuple[str, LocalDrive | S3Drive | GoogleDrive]] = [
        ("a bucket that does not exist", server.drive_config("no-such-bucket-here")),
        ("an endpoint nobody listens on",
         server.drive_config(bucket, endpoint=f"http://127.0.0.1:{free_port()}")),
    ]
    return Harness("s3", drive, names, leftovers, unhealthy)


def _gdrive(server: FakeGoogleDrive, tmp_path: Path) -> Harness:
    drive = build_drive(server.drive_config(tmp_path / "gdrive"))
    server.add_file("not-a-folder")

    async def names() -> set[str]:
        return set(server.files_in("backups"))

    async def leftovers() -> list[str]:
        return [f"open upload session {item.id}" for item in server.open_sessions()]

    unhealthy: list[tuple[str, LocalDrive | S3Drive | GoogleDrive]] = [
        ("a file in the folder path",
         server.drive_config(tmp_path / "bad-folder", folder="not-a-folder/backups")),
        ("an API nobody listens on",
         server.drive_config(tmp_path / "bad-api", api_url=f"http://127.0.0.1:{free_port()}/")),
        ("a refresh token the server refuses",
          server.drive_config(tmp_path / "bad-token", expired=True, revoked=True)),
    ]
    return Harness("google_drive", drive, names, leftovers, unhealthy)


@pytest.fixture(params=["local", "s3", "google_drive"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    # Only the servers of the drive under test are started.
    if request.param == "local":
        return _local(tmp_path)
    if request.param == "s3":
        return _s3(request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket"))
    return _gdrive(request.getfixturevalue("gdrive_server"), tmp_path)


@pytest.fixture
async def drive(harness: Harness) -> AsyncIterator[Drive[Any]]:
    try:
        yield harness.drive
    finally:
        await harness.drive.aclose()


async def test_upload_then_download_gives_the_same_bytes(
    harness: Harness, drive: Drive[Any], tmp_path: Path
) -> None:
    source, data, sha256 = make_file(tmp_path, 3 * MiB + 17)
    stored = await drive.upload(source, "main-20250702100000-b4c3f1a0.sql.zst",
                                size=len(data), sha256=sha256)
    assert stored.size == len(data)
    assert stored.path
    assert await fetch(drive, stored.path) == data
    assert "main-20250702100000-b4c3f1a0.sql.zst" in await harness.names()
    assert await harness.leftovers() == []


async def test_an_empty_file_round_trips(drive: Drive[Any], tmp_path: Path) -> None:
    source, _, sha256 = make_file(tmp_path, 0)
    stored = await drive.upload(source, "empty.sql", size=0, sha256=sha256)
    assert await drive.size(stored.path) == 0
    assert await fetch(drive, stored.path) == b""


async def test_ranged_downloads(drive: Drive[Any], tmp_path: Path) -> None:
    source, data, sha256 = make_file(tmp_path, 2 * MiB + 3)
    stored = await drive.upload(source, "ranges.sql.zst", size=len(data), sha256=sha256)
    size = len(data)
    for start, end in [(0, 10), (5, None), (MiB - 1, MiB + 1), (size - 3, size), (size - 3, None),
                       (0, size), (7, 7), (size, None)]:
        expected = data[start:end]
        assert await fetch(drive, stored.path, start, end) == expected, (start, end)


async def test_size_and_delete(drive: Drive[Any], tmp_path: Path, harness: Harness) -> None:
    source, data, sha256 = make_file(tmp_path, 300 * 1024 + 1)
    stored = await drive.upload(source, "sized.sql.zst", size=len(data), sha256=sha256)
    assert await drive.size(stored.path) == len(data)
    await drive.delete(stored.path)
    assert await drive.size(stored.path) is None
    assert "sized.sql.zst" not in await harness.names()
    await drive.delete(stored.path)  # already gone: fine
    with pytest.raises(DriveError):
        await fetch(drive, stored.path)


async def test_health_is_up(drive: Drive[Any], harness: Harness) -> None:
    await drive.health()
    assert await harness.names() == set()  # a health check stores nothing


async def test_health_is_down_when_the_drive_is_unusable(harness: Harness) -> None:
    assert harness.unhealthy
    for why, config in harness.unhealthy:
        broken = build_drive(config)
        try:
            async with asyncio.timeout(20):
                await broken.health()
        except HealthError as error:
            assert str(error)
        else:
            pytest.fail(f"health is UP with {why}")
        finally:
            await broken.aclose()


async def test_names_are_never_overwritten(
    drive: Drive[Any], tmp_path: Path, harness: Harness
) -> None:
    first, data, sha256 = make_file(tmp_path, 100 * 1024, "first")
    second, other, other_sha256 = make_file(tmp_path, 200 * 1024, "second")
    stored = await drive.upload(first, "unique.sql.zst", size=len(data), sha256=sha256)
    with pytest.raises(DriveError) as raised:
        await drive.upload(second, "unique.sql.zst", size=len(other), sha256=other_sha256)
    assert not raised.value.retryable
    assert "already exists" in str(raised.value)
    assert await fetch(drive, stored.path) == data
    assert await drive.size(stored.path) == len(data)
    assert await harness.names() == {"unique.sql.zst"}
    assert await harness.leftovers() == []


async def test_a_cancelled_upload_leaves_nothing_behind(
    drive: Drive[Any], tmp_path: Path, harness: Harness
) -> None:
    """The dump is a pipe that delivers half of its bytes, then stalls: the upload is
    cancelled while it is really under way (a multipart upload, a session, a temporary
    file exist), then the pipe is released."""
    size = 24 * MiB
    data = os.urandom(size)
    pipe = tmp_path / "dump.fifo"
    os.mkfifo(pipe)
    half_taken = threading.Event()
    release = threading.Event()

    def writer() -> None:
        with open(pipe, "wb") as sink:
            sink.write(data[: size // 2])  # returns once the drive has read nearly all of it
            half_taken.set()
            release.wait(timeout=60)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    upload = asyncio.create_task(drive.upload(
        pipe, "interrupted.sql.zst", size=size, sha256=hashlib.sha256(data).hexdigest()))
    try:
        assert await asyncio.to_thread(half_taken.wait, 60)
        assert not upload.done()
        assert await harness.leftovers(), "the upload should be under way"
        upload.cancel()
    finally:
        release.set()
    with pytest.raises(asyncio.CancelledError):
        await upload
    await asyncio.to_thread(thread.join, 60)
    assert await harness.names() == set()
    assert await harness.leftovers() == []


async def test_a_checksum_mismatch_is_detected_and_leaves_nothing(
    drive: Drive[Any], tmp_path: Path, harness: Harness
) -> None:
    source, data, _ = make_file(tmp_path, 600 * 1024)
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(VerificationError):
        await drive.upload(source, "corrupt.sql.zst", size=len(data), sha256=wrong)
    with pytest.raises(VerificationError):
        await drive.upload(source, "short.sql.zst", size=len(data) + 1,
                           sha256=hashlib.sha256(data).hexdigest())
    assert await harness.names() == set()
    assert await harness.leftovers() == []
