"""The Google Drive drive beyond the common contract: tokens, resumes, backoff, auth flow."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from backupmand.drives import build_drive
from backupmand.drives.google_auth import (
    SCOPE,
    StoredToken,
    authorize,
    load_token,
    token_document,
)
from backupmand.drives.google_drive import GoogleDriveFolder, quote_query
from backupmand.errors import DriveError, VerificationError
from backupmand.growing import GrowingFile
from tests.servers.fake_gdrive import FakeGoogleDrive
from tests.servers.throttle import ThrottleProxy

MiB = 1024 * 1024


def make_file(folder: Path, size: int, name: str = "dump.sql.zst") -> tuple[Path, bytes, str]:
    data = os.urandom(size)
    path = folder / name
    path.write_bytes(data)
    return path, data, hashlib.sha256(data).hexdigest()


async def fetch(drive: GoogleDriveFolder, path: str) -> bytes:
    return b"".join([block async for block in drive.download(path)])


class Sleeps:
    """An injected ``sleep`` that records the delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def test_an_expired_token_is_refreshed_once_for_five_concurrent_uploads(
    gdrive_server: FakeGoogleDrive, tmp_path: Path
) -> None:
    config = gdrive_server.drive_config(tmp_path / "creds", expired=True)
    token_file = config.token_file
    before = json.loads(token_file.read_text())
    token_file.chmod(0o644)  # the rewrite must make it private whatever it was
    drive = build_drive(config)
    files = [make_file(tmp_path, 700 * 1024 + index, f"dump-{index}") for index in range(5)]
    try:
        stored = await asyncio.gather(*(
            drive.upload(path, f"main-{index}.sql.zst", size=len(data), sha256=sha256)
            for index, (path, data, sha256) in enumerate(files)))
        assert gdrive_server.refreshes == 1
        for item, (_, data, _) in zip(stored, files, strict=True):
            assert await fetch(drive, item.path) == data  # type: ignore[arg-type]

        after = json.loads(token_file.read_text())
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert after["access_token"] != before["access_token"]
        assert after["refresh_token"] == before["refresh_token"]
        assert after["token_uri"] == before["token_uri"]  # keys it does not manage are kept
        expiry = datetime.fromisoformat(after["expiry"])
        assert expiry > datetime.now(UTC)
        assert not list(token_file.parent.glob(".token.json.*"))  # no temporary file left

        # The server revokes the access token before its expiry: a 401 makes the
        # concurrent requests refresh once more, and only once.
        gdrive_server.expire_access_tokens()
        sizes = await asyncio.gather(*(drive.size(item.path) for item in stored))
        assert sizes == [len(data) for _, data, _ in files]
        assert gdrive_server.refreshes == 2
    finally:
        await drive.aclose()

    # Five requests that need the token at the very same time (uploads first look the
    # folder up, under its own lock): one refresh.
    fresh = build_drive(gdrive_server.drive_config(tmp_path / "creds-2", expired=True))
    try:
        sizes = await asyncio.gather(*(fresh.size(item.path) for item in stored))
        assert sizes == [len(data) for _, data, _ in files]
        assert gdrive_server.refreshes == 3
    finally:
        await fresh.aclose()


async def test_a_dropped_connection_resumes_from_what_drive_holds(
    gdrive_server: FakeGoogleDrive, tmp_path: Path
) -> None:
    sleeps = Sleeps()
    config = gdrive_server.drive_config(tmp_path / "creds", chunk_size=MiB)
    drive = GoogleDriveFolder(config, sleep=sleeps)
    source, data, sha256 = make_file(tmp_path, 3 * MiB + 100)
    # The second chunk's connection is cut after half of it: Drive keeps 512 KiB of it.
    gdrive_server.drop_connection_at = MiB + 1
    try:
        stored = await drive.upload(source, "resumed.sql.zst", size=len(data), sha256=sha256)
        assert gdrive_server.dropped == 1
        assert len(sleeps.delays) == 1
        total = len(data)
        assert gdrive_server.content_ranges == [
            f"bytes 0-{MiB - 1}/{total}",
            f"bytes {MiB}-{2 * MiB - 1}/{total}",  # cut: Drive keeps 512 KiB of it
            f"bytes */{total}",  # what do you hold?
            f"bytes {MiB + MiB // 2}-{2 * MiB + MiB // 2 - 1}/{total}",
            f"bytes {2 * MiB + MiB // 2}-{total - 1}/{total}",
        ]
        assert await fetch(drive, stored.path) == data
        item = gdrive_server.files[stored.path]
        assert item.data == data
        assert item.app_properties == {"sha256": sha256}
    finally:
        await drive.aclose()


async def write_growing(stage: GrowingFile, data: bytes, steps: list[int], done: int = 0
                        ) -> None:
    """Append the rest of ``data`` (from ``done``) to the stage file, up to each offset
    of ``steps`` then to the end, with ``grew`` after each; then ``finish``."""
    position = done
    for end in [*steps, len(data)]:
        await asyncio.to_thread(_append, stage.path, data[position:end])
        position = end
        stage.grew(end)
    stage.finish(len(data), hashlib.sha256(data).hexdigest())


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as sink:
        sink.write(data)


async def test_a_growing_file_is_sent_before_its_size_is_known(
    gdrive_server: FakeGoogleDrive, tmp_path: Path
) -> None:
    """Chunks go out with ``*`` as the total while the file grows; the last one carries
    the total; the SHA-256, known only then, goes into appProperties afterwards."""
    drive = GoogleDriveFolder(gdrive_server.drive_config(tmp_path / "creds"))
    stage = GrowingFile(tmp_path / "stage.partial")
    stage.path.write_bytes(b"")
    data = os.urandom(5 * 256 * 1024 + 100)
    try:
        upload = asyncio.create_task(drive.upload_stream(stage, "streamed.sql.zst"))
        await asyncio.to_thread(_append, stage.path, data[:3 * 256 * 1024])
        stage.grew(3 * 256 * 1024)
        while gdrive_server.chunks < 2:  # two whole chunks are out before the rest exists
            gdrive_server.chunk_arrived.clear()
            await gdrive_server.chunk_arrived.wait()
        await write_growing(stage, data, [], done=3 * 256 * 1024)
        stored = await upload
        unit, total = 256 * 1024, len(data)
        # The third chunk waits for a byte beyond it (a chunk sent without the total is
        # never the last); by then the file is whole and the total known.
        assert gdrive_server.content_ranges == [
            f"bytes 0-{unit - 1}/*", f"bytes {unit}-{2 * unit - 1}/*",
            f"bytes {2 * unit}-{3 * unit - 1}/{total}", f"bytes {3 * unit}-{4 * unit - 1}/{total}",
            f"bytes {4 * unit}-{5 * unit - 1}/{total}", f"bytes {5 * unit}-{total - 1}/{total}"]
        item = gdrive_server.files[stored.path]
        assert item.data == data
        assert item.app_properties == {"sha256": hashlib.sha256(data).hexdigest()}
        assert ("PATCH", f"/drive/v3/files/{stored.path}") in [
            (method, path.split("?")[0]) for method, path in gdrive_server.requests]
    finally:
        await drive.aclose()


async def test_a_stream_resumes_after_the_link_drops_mid_chunk(
    gdrive_server: FakeGoogleDrive, tmp_path: Path
) -> None:
    """A link in front of Drive (the throttle proxy) is cut halfway through a chunk of a
    file that is still growing: the drive asks the session what it holds (``*/*``: the
    total is not known yet) and resumes there, re-reading the stage file."""
    host, port = "127.0.0.1", int(gdrive_server.url.rstrip("/").rpartition(":")[2])
    async with ThrottleProxy((host, port), rate=20e6) as link:
        gdrive_server.session_origin = link.endpoint + "/"
        sleeps = Sleeps()
        config = gdrive_server.drive_config(tmp_path / "creds", chunk_size=MiB,
                                            api_url=link.endpoint + "/")
        drive = GoogleDriveFolder(config, sleep=sleeps)
        stage = GrowingFile(tmp_path / "stage.partial")
        stage.path.write_bytes(b"")
        data = os.urandom(4 * MiB + 12345)
        try:
            link.cut_after(MiB + MiB // 2)  # in the second chunk
            upload = asyncio.create_task(drive.upload_stream(stage, "resumed.sql.zst"))
            await asyncio.to_thread(_append, stage.path, data[:3 * MiB])
            stage.grew(3 * MiB)
            await link.cut_done.wait()
            while gdrive_server.chunks < 3:  # the first, the cut one, the one sent again
                gdrive_server.chunk_arrived.clear()
                await gdrive_server.chunk_arrived.wait()
            assert not stage.complete
            await write_growing(stage, data, [], done=3 * MiB)
            stored = await upload
            assert link.cuts == 1
            assert len(sleeps.delays) == 1
            assert "bytes */*" in gdrive_server.content_ranges  # what do you hold?
            resumed_at = gdrive_server.content_ranges.index("bytes */*") + 1
            assert gdrive_server.content_ranges[resumed_at].startswith(f"bytes {MiB}-")
            assert gdrive_server.files[stored.path].data == data
            assert gdrive_server.open_sessions() == []
        finally:
            await drive.aclose()


async def test_listings_page_through_a_full_folder(
    gdrive_server: FakeGoogleDrive, tmp_path: Path
) -> None:
    gdrive_server.max_page_size = 100
    folder = gdrive_server.ensure_folder("backups")
    for index in range(250):
        gdrive_server.add_file(f"main-{index:03d}.sql.zst", folder, data=b"x" * index)
    gdrive_server.add_file("sub", folder, mime_type="application/vnd.google-apps.folder")
    drive = build_drive(gdrive_server.drive_config(tmp_path / "creds"))
    try:
        listed = await drive.list_files()
        assert sorted(item.name for item in listed) == [f"main-{i:03d}.sql.zst" for i in range(250)]
        assert {item.size for item in listed} == set(range(250))
        assert gdrive_server.list_requests == 1 + 3  # the folder, then three pages
    finally:
        await drive.aclose()


async def test_adopt_recognises_an_earlier_copy_without_appproperties(
    gdrive_server: FakeGoogleDrive, tmp_path: Path
) -> None:
    """Died between the last chunk and recording the SHA-256: Drive's own sha256Checksum
    tells; a file from before Drive computed one is compared by MD5 with the stage file."""
    source, data, sha256 = make_file(tmp_path, 700 * 1024)
    folder = gdrive_server.ensure_folder("backups")
    by_sha = gdrive_server.add_file("a.sql.zst", folder, data=data)
    by_md5 = gdrive_server.add_file("b.sql.zst", folder, data=data)
    gdrive_server.files[by_md5].no_sha256 = True
    other = gdrive_server.add_file("c.sql.zst", folder, data=bytes(reversed(data)))
    gdrive_server.files[other].no_sha256 = True
    drive = build_drive(gdrive_server.drive_config(tmp_path / "creds"))
    try:
        for name, expected in (("a.sql.zst", by_sha), ("b.sql.zst", by_md5)):
            stored = await drive.upload(source, name, size=len(data), sha256=sha256, adopt=True)
            assert stored.path == expected
        with pytest.raises(DriveError, match="already exists"):
            await drive.upload(source, "c.sql.zst", size=len(data), sha256=sha256, adopt=True)
        assert len(gdrive_server.files_in("backups")) == 3
    finally:
        await drive.aclose()


async def test_a_sha256_that_cannot_be_recorded_fails_the_upload_and_leaves_nothing(
    gdrive_server: FakeGoogleDrive, tmp_path: Path
) -> None:
    gdrive_server.fail_updates = 100
    drive = GoogleDriveFolder(gdrive_server.drive_config(tmp_path / "creds"), sleep=Sleeps())
    stage = GrowingFile(tmp_path / "stage.partial")
    stage.path.write_bytes(b"")
    data = os.urandom(300 * 1024)
    try:
        upload = asyncio.create_task(drive.upload_stream(stage, "unrecorded.sql.zst"))
        await asyncio.to_thread(_append, stage.path, data[:256 * 1024 + 1])
        stage.grew(256 * 1024 + 1)
        await gdrive_server.chunk_arrived.wait()  # started before the SHA-256 was known
        await write_growing(stage, data, [], done=256 * 1024 + 1)
        with pytest.raises(DriveError, match="recording the SHA-256") as raised:
            await upload
        assert raised.value.retryable
        assert gdrive_server.files_in("backups") == {}
    finally:
        await drive.aclose()


async def test_429_is_retried_honouring_retry_after(
    gdrive_server: FakeGoogleDrive, tmp_path: Path
) -> None:
    sleeps = Sleeps()
    drive = GoogleDriveFolder(gdrive_server.drive_config(tmp_path / "creds"), sleep=sleeps,
                              backoff_base=0.5)
    source, data, sha256 = make_file(tmp_path, 600 * 1024)
    try:
        gdrive_server.throttle(3, retry_after="7")
        stored = await drive.upload(source, "throttled.sql.zst", size=len(data), sha256=sha256)
        assert sleeps.delays == [7, 7, 7]
        assert await fetch(drive, stored.path) == data

        # Without Retry-After: exponential backoff from backoff_base, with jitter.
        sleeps.delays.clear()
        gdrive_server.throttle(3, retry_after=None)
        assert await drive.size(stored.path) == len(data)
        assert len(sleeps.delays) == 3
        for attempt, delay in enumerate(sleeps.delays):
            assert 0.5 * 2**attempt / 2 <= delay <= 0.5 * 2**attempt

        # Bounded: after request_attempts, the error is reported (retryable).
        sleeps.delays.clear()
        gdrive_server.throttle(100, retry_after="1")
        with pytest.raises(DriveError) as raised:
            await drive.size(stored.path)
        assert raised.value.retryable
        assert len(sleeps.delays) == drive.request_attempts - 1

        # A Retry-After longer than max_retry_after fails at once instead of sleeping.
        sleeps.delays.clear()
        gdrive_server.throttle(1, retry_after="3600")
        with pytest.raises(DriveError, match="retry after 3600"):
            await drive.size(stored.path)
        assert sleeps.delays == []
    finally:
        await drive.aclose()


async def test_a_real_wait_for_retry_after(gdrive_server: FakeGoogleDrive, tmp_path: Path) -> None:
    """With the default sleep, the drive really waits (Retry-After: 1)."""
    drive = build_drive(gdrive_server.drive_config(tmp_path / "creds"))
    try:
        await drive.health()
        gdrive_server.throttle(1, retry_after="1")
        loop = asyncio.get_running_loop()
        started = loop.time()
        await drive.health()
        assert loop.time() - started >= 0.95
    finally:
        await drive.aclose()


async def test_an_md5_mismatch_is_a_verification_error(
    gdrive_server: FakeGoogleDrive, tmp_path: Path
) -> None:
    drive = build_drive(gdrive_server.drive_config(tmp_path / "creds"))
    source, data, sha256 = make_file(tmp_path, 300 * 1024)
    gdrive_server.corrupt_md5 = True
    try:
        with pytest.raises(VerificationError, match="MD5"):
            await drive.upload(source, "bad.sql.zst", size=len(data), sha256=sha256)
        assert gdrive_server.files_in("backups") == {}  # the bad copy was deleted
    finally:
        await drive.aclose()


async def test_a_refused_refresh_token_is_not_retryable(
    gdrive_server: FakeGoogleDrive, tmp_path: Path
) -> None:
    drive = build_drive(gdrive_server.drive_config(tmp_path / "creds", expired=True,
                                                   revoked=True))
    source, data, sha256 = make_file(tmp_path, 1000)
    try:
        with pytest.raises(DriveError, match="auth-google") as raised:
            await drive.upload(source, "x.sql", size=len(data), sha256=sha256)
        assert not raised.value.retryable
    finally:
        await drive.aclose()


async def test_folder_names_are_quoted_in_queries(
    gdrive_server: FakeGoogleDrive, tmp_path: Path
) -> None:
    assert quote_query("it's a \\ test") == "'it\\'s a \\\\ test'"
    folder = "it's a \\ test/and ' more"
    drive = build_drive(gdrive_server.drive_config(tmp_path / "creds", folder=folder))
    source, data, sha256 = make_file(tmp_path, 1000)
    try:
        await drive.health()  # the folder does not exist yet: still UP, nothing created
        assert gdrive_server.folder_id(folder) is None
        first = await drive.upload(source, "a'b\\c.sql", size=len(data), sha256=sha256)
        second = await drive.upload(source, "d.sql", size=len(data), sha256=sha256)
        assert set(gdrive_server.files_in(folder)) == {"a'b\\c.sql", "d.sql"}
        assert gdrive_server.files[first.path].parents == gdrive_server.files[second.path].parents
        folders = [item for item in gdrive_server.files.values()
                   if item.mime_type == "application/vnd.google-apps.folder"]
        assert sorted(item.name for item in folders) == ["and ' more", "it's a \\ test"]
        with pytest.raises(DriveError, match="already exists"):
            await drive.upload(source, "a'b\\c.sql", size=len(data), sha256=sha256)
    finally:
        await drive.aclose()


async def test_a_vanished_folder_is_created_again(
    gdrive_server: FakeGoogleDrive, tmp_path: Path
) -> None:
    drive = build_drive(gdrive_server.drive_config(tmp_path / "creds"))
    source, data, sha256 = make_file(tmp_path, 1000)
    try:
        await drive.upload(source, "one.sql", size=len(data), sha256=sha256)
        folder = gdrive_server.folder_id("backups")
        assert folder is not None
        del gdrive_server.files[folder]  # someone deleted the folder
        with pytest.raises(DriveError, match="no longer exists") as raised:
            await drive.upload(source, "two.sql", size=len(data), sha256=sha256)
        assert raised.value.retryable
        await drive.upload(source, "two.sql", size=len(data), sha256=sha256)  # the retry
        assert set(gdrive_server.files_in("backups")) == {"two.sql"}
        assert gdrive_server.folder_id("backups") != folder
    finally:
        await drive.aclose()


async def test_the_token_goes_only_to_the_api_origin(
    gdrive_server: FakeGoogleDrive, tmp_path: Path
) -> None:
    drive = build_drive(gdrive_server.drive_config(tmp_path / "creds"))
    source, data, sha256 = make_file(tmp_path, 600 * 1024)
    try:
        await drive.upload(source, "same-origin.sql", size=len(data), sha256=sha256)
        assert gdrive_server.session_authorized == [True] * 3
        gdrive_server.session_authorized.clear()
        # The same server under another name: another origin.
        gdrive_server.session_origin = gdrive_server.url.replace("127.0.0.1", "localhost")
        stored = await drive.upload(source, "other-origin.sql", size=len(data), sha256=sha256)
        assert gdrive_server.session_authorized == [False] * 3
        assert await fetch(drive, stored.path) == data  # type: ignore[arg-type]
    finally:
        await drive.aclose()


async def test_the_folder_is_created_once_for_concurrent_uploads(
    gdrive_server: FakeGoogleDrive, tmp_path: Path
) -> None:
    drive = build_drive(gdrive_server.drive_config(tmp_path / "creds", folder="a/b"))
    files = [make_file(tmp_path, 1000 + index, f"f{index}") for index in range(4)]
    try:
        await asyncio.gather(*(drive.upload(path, path.name, size=len(data), sha256=sha256)
                               for path, data, sha256 in files))
        creates = [path for method, path in gdrive_server.requests
                   if method == "POST" and path.startswith("/drive/v3/files")]
        assert len(creates) == 2
        assert set(gdrive_server.files_in("a/b")) == {"f0", "f1", "f2", "f3"}
    finally:
        await drive.aclose()


# --------------------------------------------------------------------------- token files


def test_token_files_of_other_tools_are_read(tmp_path: Path) -> None:
    go_token = tmp_path / "go.json"  # Go's oauth2.Token, as the Go backupman writes it
    go_token.write_text(json.dumps({
        "access_token": "a", "token_type": "Bearer", "refresh_token": "r",
        "expiry": "2030-07-02T12:00:00.123456789+02:00"}))
    token = load_token(go_token)
    assert (token.access_token, token.refresh_token) == ("a", "r")
    assert token.expiry == datetime(2030, 7, 2, 10, 0, 0, 123456, tzinfo=UTC)
    assert not token.expired()

    google_auth = tmp_path / "authorized_user.json"  # google-auth's authorized_user
    google_auth.write_text(json.dumps({
        "token": "a2", "refresh_token": "r2", "client_id": "c", "client_secret": "s",
        "scopes": [SCOPE], "expiry": "2020-01-01T00:00:00"}))
    token = load_token(google_auth)
    assert token.access_token == "a2"
    assert token.expired()
    token.access_token = "fresh"
    token.expiry = datetime(2031, 1, 1, tzinfo=UTC)
    document = token_document(token)
    assert document["token"] == "fresh" and "access_token" not in document
    assert document["client_id"] == "c"
    assert document["expiry"] == "2031-01-01T00:00:00Z"

    aiogoogle = tmp_path / "aiogoogle.json"  # aiogoogle's user credentials
    aiogoogle.write_text(json.dumps({
        "access_token": "a3", "refresh_token": "r3", "expires_at": "2030-01-01T00:00:00",
        "scopes": [SCOPE]}))
    token = load_token(aiogoogle)
    assert token.expiry == datetime(2030, 1, 1, tzinfo=UTC)
    document = token_document(StoredToken(
        "n", "r3", datetime(2031, 1, 1, tzinfo=UTC), (SCOPE,), token.document))
    assert document["expires_at"] == "2031-01-01T00:00:00"

    for bad, message in (("{", "not JSON"), ("[]", "not a JSON object"), ("{}", "no token")):
        broken = tmp_path / "broken.json"
        broken.write_text(bad)
        with pytest.raises(DriveError, match=message):
            load_token(broken)
    with pytest.raises(DriveError, match="auth-google"):
        load_token(tmp_path / "missing.json")


# --------------------------------------------------------------------------- auth-google


class Browser:
    """Plays the user's browser: takes the URL ``authorize`` prints, and follows it."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.url: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def print(self, text: str) -> None:
        self.lines.append(text)
        match = re.search(r"https?://\S+", text)
        if match and not self.url.done():
            self.url.set_result(match.group(0))

    async def open(self, url: str) -> tuple[int, str, str]:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status, str(response.url), await response.text()


async def test_auth_google_writes_a_working_token_file(
    gdrive_server: FakeGoogleDrive, tmp_path: Path
) -> None:
    client_secret = gdrive_server.write_client_secret(tmp_path / "client-secret.json")
    token_file = tmp_path / "state" / "google-token.json"
    browser = Browser()
    flow = asyncio.create_task(authorize(client_secret, token_file, open_browser=False,
                                         print_fn=browser.print))
    url = await asyncio.wait_for(browser.url, 10)
    query = {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
    assert url.startswith(gdrive_server.auth_uri)
    assert query["code_challenge_method"] == "S256"
    assert query["access_type"] == "offline"
    assert "redirect_uri" in query and "state" in query

    # A redirect with the wrong state is refused, and the flow keeps waiting.
    redirect = query["redirect_uri"]
    status, _, _ = await browser.open(f"{redirect}?code=forged&state=wrong")
    assert status == 400
    assert not flow.done()

    status, landed, page = await browser.open(url)
    assert status == 200, page
    assert landed.startswith(redirect)
    await asyncio.wait_for(flow, 10)
    assert gdrive_server.code_exchanges == 1

    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    document: dict[str, Any] = json.loads(token_file.read_text())
    assert set(document) >= {"access_token", "refresh_token", "token_type", "expiry", "scopes",
                             "token_uri"}
    assert document["scopes"] == [SCOPE]
    assert document["token_uri"] == gdrive_server.token_uri
    assert any(str(token_file) in line for line in browser.lines)

    # The drive works with it, without a refresh.
    drive = build_drive(gdrive_server.drive_config(tmp_path / "other").model_copy(
        update={"token_file": token_file, "client_secret_file": client_secret}))
    try:
        await drive.health()
        assert gdrive_server.refreshes == 0
    finally:
        await drive.aclose()


async def test_auth_google_reports_a_refusal(
    gdrive_server: FakeGoogleDrive, tmp_path: Path
) -> None:
    client_secret = gdrive_server.write_client_secret(tmp_path / "client-secret.json")
    token_file = tmp_path / "google-token.json"
    gdrive_server.deny_consent = True
    browser = Browser()
    flow = asyncio.create_task(authorize(
        client_secret, token_file, open_browser=False, print_fn=browser.print,
        token_uri=gdrive_server.token_uri, auth_uri=gdrive_server.auth_uri))
    await browser.open(await asyncio.wait_for(browser.url, 10))
    with pytest.raises(DriveError, match="access_denied"):
        await asyncio.wait_for(flow, 10)
    assert not token_file.exists()


async def test_the_fake_server_takes_multipart_uploads(gdrive_server: FakeGoogleDrive) -> None:
    """aiogoogle's own uploads use uploadType=multipart: the fake speaks it too."""
    access, _ = gdrive_server.issue_tokens()
    with aiohttp.MultipartWriter("related") as body:
        body.append_json({"name": "note.txt", "parents": ["root"]})
        body.append(b"hello", {"Content-Type": "text/plain"})
    async with aiohttp.ClientSession() as session, session.post(
            gdrive_server.url + "upload/drive/v3/files?uploadType=multipart&fields=id,size",
            data=body, headers={"Authorization": f"Bearer {access}"}) as response:
        answer = await response.json()
    assert response.status == 200
    assert answer["size"] == "5"
    assert gdrive_server.files[answer["id"]].data == b"hello"
