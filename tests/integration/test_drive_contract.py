"""One contract, three drives: local, S3 (moto) and Google Drive (the fake).

Every test here runs against each drive built by ``build_drive`` from its config, and
checks the promises of ``backupmand.drives.base``: files and growing stage files
(written by a real writer thread while the drive reads them), small objects,
listings with and without ``{host}``, adoption, sweeps and health.
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
from blockbuster import BlockBuster

from backupmand.config import GoogleDrive, LocalDrive, S3Drive
from backupmand.drives import Drive, build_drive
from backupmand.drives.local import TEMP_PREFIX
from backupmand.errors import DriveError, HealthError, VerificationError
from backupmand.growing import GrowingFile, WriterFailedError
from tests.servers.fake_gdrive import FakeGoogleDrive
from tests.servers.s3 import S3Server, free_port

MiB = 1024 * 1024
AnyDriveConfig = LocalDrive | S3Drive | GoogleDrive


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
    unhealthy: list[tuple[str, AnyDriveConfig]]
    #: make(location, host): a drive of the same kind at ``location`` (may hold {host}).
    make: Callable[[str, str], Drive[Any]]
    #: foreign(path): a file nobody of ours wrote, at ``path`` relative to the root.
    foreign: Callable[[str], Awaitable[None]]
    #: dead_upload(name): what an upload of ``name`` leaves when its process is killed.
    dead_upload: Callable[[str], Awaitable[None]]
    #: The harness drive's own location, for make().
    location: str


class Stage(GrowingFile):
    """A growing stage file whose readers are watched: ``caught_up`` is set when a reader
    waits for bytes the writer has not written yet (it is really following the file)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.caught_up = threading.Event()

    async def available(self, offset: int) -> int:
        if offset >= self.size and not self.complete and self.failed is None:
            self.caught_up.set()
        return await super().available(offset)


class Writer:
    """A real writer thread: appends random bytes to a stage file in 1 MiB writes, with
    ``grew`` after each; it can pause at ``pause_at`` until the readers caught up (or
    the test says go), and end with a true or false ``finish``, or with ``fail``."""

    def __init__(self, folder: Path, size: int, *, pause_at: int | None = None,
                 ending: str = "finish", data: bytes | None = None) -> None:
        self.data = os.urandom(size) if data is None else data
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "stage.sql.zst.partial"
        self.path.write_bytes(b"")
        self.stage = Stage(self.path)
        self.pause_at = pause_at
        self.ending = ending
        self.go = threading.Event()
        self.paused = threading.Event()
        self.thread = threading.Thread(target=self._write, daemon=True)

    def start(self) -> Writer:
        self.thread.start()
        return self

    def _write(self) -> None:
        with open(self.path, "ab") as sink:
            position = 0
            while position < len(self.data):
                if position == self.pause_at:
                    self.paused.set()
                    self.go.wait(60)
                end = min(len(self.data), position + MiB)
                if self.pause_at is not None and position < self.pause_at < end:
                    end = self.pause_at
                sink.write(self.data[position:end])
                sink.flush()
                position = end
                self.stage.grew(position)
        if self.pause_at == len(self.data):
            self.paused.set()
            self.go.wait(60)
        if self.ending == "finish":
            self.stage.finish(len(self.data), self.sha256)
        elif self.ending == "wrong sha256":
            self.stage.finish(len(self.data), hashlib.sha256(b"not the data").hexdigest())
        elif self.ending == "too long":
            self.stage.finish(len(self.data) + 1, self.sha256)
        else:
            self.stage.fail(OSError(28, "No space left on device"))

    async def wait_caught_up(self) -> None:
        assert await asyncio.to_thread(self.stage.caught_up.wait, 60), "no reader followed"

    async def join(self) -> None:
        self.go.set()
        await asyncio.to_thread(self.thread.join, 60)
        assert not self.thread.is_alive()


def make_file(folder: Path, size: int, name: str = "dump.sql.zst") -> tuple[Path, bytes, str]:
    data = os.urandom(size)
    path = folder / name
    path.write_bytes(data)
    return path, data, hashlib.sha256(data).hexdigest()


async def fetch(drive: Drive[Any], path: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([block async for block in drive.download(path, start=start, end=end)])


def _local(tmp_path: Path) -> Harness:
    root = tmp_path / "drives"
    folder = root / "local-drive"
    drive = build_drive(LocalDrive(provider="local", label="Local Drive", folder=folder))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    async def names() -> set[str]:
        if not folder.exists():
            return set()
        return {item.name for item in folder.iterdir() if not item.name.startswith(TEMP_PREFIX)}

    async def leftovers() -> list[str]:
        return [str(item) for item in await drive.leftovers()]  # type: ignore[attr-defined]

    def make(location: str, host: str) -> Drive[Any]:
        return build_drive(LocalDrive(provider="local", label="Local", folder=root / location),
                           host)

    async def foreign(path: str) -> None:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"not ours")

    async def dead_upload(name: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{TEMP_PREFIX}{'0' * 32}-{name}").write_bytes(b"half a copy")

    unhealthy: list[tuple[str, AnyDriveConfig]] = [
        ("a file in the folder path",
         LocalDrive(provider="local", label="Bad", folder=blocker / "backups")),
    ]
    return Harness("local", drive, names, leftovers, unhealthy, make, foreign, dead_upload,
                   "local-drive")


def _s3(server: S3Server, bucket: str) -> Harness:
    # 5 MiB parts (S3's smallest), so that a few MiB make a real multipart upload.
    config = server.drive_config(bucket, prefix="backups", part_size=5 * MiB)
    drive = build_drive(config)
    client = server.client()

    async def names() -> set[str]:
        keys = await asyncio.to_thread(server.keys, bucket)
        return {key.removeprefix("backups/") for key in keys if key.startswith("backups/")}

    async def leftovers() -> list[str]:
        uploads = await asyncio.to_thread(server.multipart_uploads, bucket)
        return [f"multipart upload of {item['Key']}" for item in uploads]

    def make(location: str, host: str) -> Drive[Any]:
        return build_drive(server.drive_config(bucket, prefix=location, part_size=5 * MiB), host)

    async def foreign(path: str) -> None:
        await asyncio.to_thread(client.put_object, Bucket=bucket, Key=path, Body=b"not ours")

    async def dead_upload(name: str) -> None:
        await asyncio.to_thread(client.create_multipart_upload, Bucket=bucket,
                                Key=f"backups/{name}")

    unhealthy: list[tuple[str, AnyDriveConfig]] = [
        ("a bucket that does not exist", server.drive_config("no-such-bucket-here")),
        ("an endpoint nobody listens on",
         server.drive_config(bucket, endpoint=f"http://127.0.0.1:{free_port()}")),
    ]
    return Harness("s3", drive, names, leftovers, unhealthy, make, foreign, dead_upload,
                   "backups")


def _gdrive(server: FakeGoogleDrive, tmp_path: Path) -> Harness:
    drive = build_drive(server.drive_config(tmp_path / "gdrive"))
    server.add_file("not-a-folder")
    made = iter(range(1000))

    async def names() -> set[str]:
        return set(server.files_in("backups"))

    async def leftovers() -> list[str]:
        return [f"open upload session {item.id}" for item in server.open_sessions()]

    def make(location: str, host: str) -> Drive[Any]:
        return build_drive(server.drive_config(tmp_path / f"gdrive-{next(made)}",
                                               folder=location), host)

    async def foreign(path: str) -> None:
        folder, _, name = path.rpartition("/")
        server.add_file(name, server.ensure_folder(folder), data=b"not ours")

    async def dead_upload(name: str) -> None:
        return None  # an abandoned session never becomes a file: nothing to sweep

    unhealthy: list[tuple[str, AnyDriveConfig]] = [
        ("a file in the folder path",
         server.drive_config(tmp_path / "bad-folder", folder="not-a-folder/backups")),
        ("an API nobody listens on",
         server.drive_config(tmp_path / "bad-api", api_url=f"http://127.0.0.1:{free_port()}/")),
        ("a refresh token the server refuses",
          server.drive_config(tmp_path / "bad-token", expired=True, revoked=True)),
    ]
    return Harness("google_drive", drive, names, leftovers, unhealthy, make, foreign,
                   dead_upload, "backups")


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


@pytest.fixture
async def drives() -> AsyncIterator[list[Drive[Any]]]:
    """More drives of a test, closed at its end."""
    made: list[Drive[Any]] = []
    try:
        yield made
    finally:
        for item in made:
            await item.aclose()


# --------------------------------------------------------------------------- files


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


async def test_names_are_never_overwritten(
    drive: Drive[Any], tmp_path: Path, harness: Harness
) -> None:
    first, data, sha256 = make_file(tmp_path, 100 * 1024, "first")
    second, other, other_sha256 = make_file(tmp_path, 200 * 1024, "second")
    stored = await drive.upload(first, "unique.sql.zst", size=len(data), sha256=sha256)
    for adopt in (False, True):
        with pytest.raises(DriveError) as raised:
            await drive.upload(second, "unique.sql.zst", size=len(other), sha256=other_sha256,
                               adopt=adopt)
        assert not raised.value.retryable
        assert "already exists" in str(raised.value)
    # Without adopt, not even the same bytes count as this upload's own.
    with pytest.raises(DriveError, match="already exists"):
        await drive.upload(first, "unique.sql.zst", size=len(data), sha256=sha256)
    assert await fetch(drive, stored.path) == data
    assert await drive.size(stored.path) == len(data)
    assert await harness.names() == {"unique.sql.zst"}
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


async def test_a_missing_local_dump_is_a_clear_error(drive: Drive[Any], tmp_path: Path) -> None:
    with pytest.raises(DriveError, match="cannot read") as raised:
        await drive.upload(tmp_path / "gone.sql.zst", "gone.sql.zst", size=10,
                           sha256=hashlib.sha256(b"").hexdigest())
    assert not raised.value.retryable


# --------------------------------------------------------------------------- streams


async def test_a_growing_file_is_stored_while_it_is_written(
    drive: Drive[Any], tmp_path: Path, harness: Harness
) -> None:
    """The writer stops halfway until the drive has caught up with it: the drive was
    really reading the file while it grew, and its copy is the whole file."""
    writer = Writer(tmp_path, 13 * MiB + 12345, pause_at=7 * MiB)
    upload = asyncio.create_task(drive.upload_stream(writer.stage, "grown.sql.zst"))
    writer.start()
    try:
        await writer.wait_caught_up()
        assert await asyncio.to_thread(writer.paused.wait, 60)
        assert not upload.done()
        assert not writer.stage.complete
    finally:
        await writer.join()
    stored = await upload
    assert stored.size == len(writer.data)
    assert await fetch(drive, stored.path) == writer.data
    assert await harness.names() == {"grown.sql.zst"}
    assert await harness.leftovers() == []


async def test_a_stream_complete_before_the_upload_starts(
    drive: Drive[Any], tmp_path: Path, harness: Harness
) -> None:
    writer = Writer(tmp_path, 2 * MiB + 1).start()
    await writer.join()
    stored = await drive.upload_stream(writer.stage, "early.sql.zst")
    assert await fetch(drive, stored.path) == writer.data
    assert await harness.leftovers() == []


async def test_a_writer_that_fails_leaves_nothing(
    drive: Drive[Any], tmp_path: Path, harness: Harness
) -> None:
    writer = Writer(tmp_path, 12 * MiB, pause_at=12 * MiB, ending="fail")
    upload = asyncio.create_task(drive.upload_stream(writer.stage, "failed.sql.zst"))
    writer.start()
    await writer.wait_caught_up()
    assert await harness.leftovers(), "the upload should be under way"
    await writer.join()
    with pytest.raises(WriterFailedError) as raised:
        await upload
    assert not raised.value.retryable
    assert "No space left on device" in str(raised.value)
    assert await harness.names() == set()
    assert await harness.leftovers() == []


async def test_a_cancelled_stream_leaves_nothing_behind(
    drive: Drive[Any], tmp_path: Path, harness: Harness
) -> None:
    """Cancelled while it is really under way: a temporary file, a multipart upload or a
    session exists, and the writer is still writing."""
    writer = Writer(tmp_path, 24 * MiB, pause_at=12 * MiB)
    upload = asyncio.create_task(drive.upload_stream(writer.stage, "interrupted.sql.zst"))
    writer.start()
    try:
        await writer.wait_caught_up()
        assert not upload.done()
        assert await harness.leftovers(), "the upload should be under way"
        upload.cancel()
        with pytest.raises(asyncio.CancelledError):
            await upload
    finally:
        await writer.join()
    assert await harness.names() == set()
    assert await harness.leftovers() == []


@pytest.mark.parametrize("ending", ["wrong sha256", "too long"])
async def test_a_stream_that_ends_unlike_its_bytes_is_not_committed(
    drive: Drive[Any], tmp_path: Path, harness: Harness, ending: str
) -> None:
    writer = Writer(tmp_path, 11 * MiB + 7, pause_at=6 * MiB, ending=ending)
    upload = asyncio.create_task(drive.upload_stream(writer.stage, "mismatch.sql.zst"))
    writer.start()
    await writer.wait_caught_up()
    await writer.join()
    with pytest.raises(VerificationError) as raised:
        await upload
    assert not raised.value.retryable
    assert await harness.names() == set()
    assert await harness.leftovers() == []


async def test_adopt_takes_an_earlier_copy_of_the_same_bytes_only(
    harness: Harness, drive: Drive[Any], drives: list[Drive[Any]], tmp_path: Path
) -> None:
    """An earlier process stored the file and died before recording it: a new drive
    (a new process) adopts it with ``adopt`` only, and only if the bytes are the same."""
    writer = Writer(tmp_path, 12 * MiB + 3).start()  # several parts on S3
    first = await drive.upload_stream(writer.stage, "landed.sql.zst")
    await writer.join()
    later = harness.make(harness.location, "localhost")
    drives.append(later)
    with pytest.raises(DriveError, match="already exists"):
        await later.upload_stream(GrowingFile.complete_file(writer.path, len(writer.data),
                                                            writer.sha256), "landed.sql.zst")
    adopted = await later.upload_stream(
        GrowingFile.complete_file(writer.path, len(writer.data), writer.sha256),
        "landed.sql.zst", adopt=True)
    assert adopted == first
    # Other bytes of the same size under that name are someone else's.
    other = tmp_path / "other.sql.zst"
    other_data = bytearray(writer.data)
    other_data[MiB] ^= 0xFF
    other.write_bytes(bytes(other_data))
    with pytest.raises(DriveError, match="already exists"):
        await later.upload_stream(GrowingFile.complete_file(
            other, len(other_data), hashlib.sha256(other_data).hexdigest()), "landed.sql.zst",
            adopt=True)
    assert await fetch(drive, first.path) == writer.data
    assert await harness.names() == {"landed.sql.zst"}
    assert await harness.leftovers() == []


async def test_adopt_waits_for_the_stream_to_end(
    harness: Harness, drive: Drive[Any], tmp_path: Path
) -> None:
    writer = Writer(tmp_path, 3 * MiB, pause_at=MiB).start()
    await writer.join()
    first = await drive.upload_stream(writer.stage, "again.sql.zst")
    again = Writer(tmp_path / "again", len(writer.data), pause_at=MiB, data=writer.data)
    adopting = asyncio.create_task(drive.upload_stream(again.stage, "again.sql.zst", adopt=True))
    again.start()
    await again.wait_caught_up()  # it waits for the end: the SHA-256 is known only then
    assert not adopting.done()
    await again.join()
    assert await adopting == first
    assert await harness.leftovers() == []


# --------------------------------------------------------------------------- small objects


async def test_put_bytes_and_read_bytes(drive: Drive[Any], harness: Harness) -> None:
    manifest = b'{"Format": "backupmand-manifest/1", "Size": 123}\n'
    stored = await drive.put_bytes(manifest, "main.manifest.json")
    assert stored.size == len(manifest)
    assert await drive.read_bytes(stored.path) == manifest
    with pytest.raises(DriveError, match="larger than 10 bytes"):
        await drive.read_bytes(stored.path, limit=10)
    with pytest.raises(DriveError, match="already exists"):
        await drive.put_bytes(manifest, "main.manifest.json")
    assert await drive.put_bytes(manifest, "main.manifest.json", adopt=True) == stored
    with pytest.raises(DriveError, match="already exists"):
        await drive.put_bytes(manifest + b" ", "main.manifest.json", adopt=True)
    empty = await drive.put_bytes(b"", "empty.json")
    assert await drive.read_bytes(empty.path) == b""
    assert await harness.names() == {"main.manifest.json", "empty.json"}
    assert await harness.leftovers() == []


# --------------------------------------------------------------------------- listings


async def test_list_files_of_this_host_and_of_every_host(
    harness: Harness, drives: list[Drive[Any]]
) -> None:
    db1 = harness.make("fleet/{host}/nightly", "db1")
    db2 = harness.make("fleet/{host}/nightly", "db2")
    plain = harness.make("plain", "db1")
    drives += [db1, db2, plain]
    one = await db1.put_bytes(b"one", "a.manifest.json")
    await db1.put_bytes(b"one one", "a.sql.zst")
    two = await db2.put_bytes(b"two", "b.manifest.json")
    await plain.put_bytes(b"plain", "c.sql.zst")
    await harness.foreign("fleet/stray.txt")  # not in any host's folder
    await harness.foreign("fleet/db3/other/x.sql.zst")  # not in <host>/nightly
    await harness.foreign("fleet/db1/nightly/deeper/y.sql.zst")  # below a host's folder

    mine = await db1.list_files()
    assert sorted((item.name, item.size, item.host) for item in mine) == [
        ("a.manifest.json", 3, "db1"), ("a.sql.zst", 7, "db1")]
    assert {item.path for item in mine if item.name == "a.manifest.json"} == {one.path}
    every = await db1.list_files(all_hosts=True)
    assert sorted((item.host, item.name) for item in every) == [
        ("db1", "a.manifest.json"), ("db1", "a.sql.zst"), ("db2", "b.manifest.json")]
    theirs = next(item for item in every if item.host == "db2")
    assert theirs.path == two.path
    assert await db1.read_bytes(theirs.path) == b"two"  # another host's file, read from here

    listed = await plain.list_files(all_hosts=True)
    assert [(item.name, item.size, item.host) for item in listed] == [("c.sql.zst", 5, None)]
    nowhere = harness.make("nothing-here/{host}", "db1")
    drives.append(nowhere)
    assert await nowhere.list_files() == []
    assert await nowhere.list_files(all_hosts=True) == []


# --------------------------------------------------------------------------- sweep


async def test_sweep_removes_what_dead_uploads_left_and_nothing_else(
    harness: Harness, drive: Drive[Any], tmp_path: Path
) -> None:
    await harness.dead_upload("main-20250702100000-b4c3f1a0.sql.zst")
    await harness.dead_upload("other-20250702100000-c4c3f1a0.sql.zst")
    dead = await harness.leftovers()
    # An upload running in this process, whose name is stale too, is left alone.
    writer = Writer(tmp_path, 12 * MiB, pause_at=11 * MiB)
    running = asyncio.create_task(drive.upload_stream(
        writer.stage, "main-20250702110000-d4c3f1a0.sql.zst"))
    writer.start()
    try:
        await writer.wait_caught_up()
        swept = await drive.sweep(lambda name: name.startswith("main-"))
    finally:
        await writer.join()
    await running
    if harness.kind == "google_drive":
        assert swept == [] and dead == []  # sessions of dead processes expire on their own
    else:
        assert len(swept) == 1 and "main-20250702100000-b4c3f1a0" in swept[0]
        left = await harness.leftovers()
        assert len(left) == 1 and "other-20250702100000-c4c3f1a0" in left[0]
    assert await harness.names() == {"main-20250702110000-d4c3f1a0.sql.zst"}


# --------------------------------------------------------------------------- health


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


async def test_no_blocking_call_on_the_event_loop(
    harness: Harness, drive: Drive[Any], tmp_path: Path
) -> None:
    """Streams, small objects, listings, adoption and sweeps make no blocking call on
    the loop's thread (file reads, copies and hashes run in worker threads)."""
    await drive.health()  # clients created (botocore reads its models from disk once)
    await drive.list_files()
    writer = Writer(tmp_path, 12 * MiB + 5, pause_at=6 * MiB)
    blockbuster = BlockBuster()
    blockbuster.activate()  # any blocking call made on the loop's thread now raises
    try:
        upload = asyncio.create_task(drive.upload_stream(writer.stage, "watched.sql.zst"))
        writer.start()
        await writer.wait_caught_up()
        writer.go.set()
        stored = await upload
        await drive.upload_stream(writer.stage, "watched.sql.zst", adopt=True)
        manifest = await drive.put_bytes(b"{}", "watched.manifest.json")
        assert await drive.read_bytes(manifest.path) == b"{}"
        assert {item.name for item in await drive.list_files()} == {
            "watched.sql.zst", "watched.manifest.json"}
        assert await drive.size(stored.path) == len(writer.data)
        await drive.sweep(lambda name: True)
        await drive.delete(manifest.path)
    finally:
        blockbuster.deactivate()
        await writer.join()
