"""The S3 drive beyond the common contract: part sizes, parallel parts, part retries,
aborts, memory, listings of 10,000 objects, adoption, addressing, outages."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from backupmand.drives import build_drive
from backupmand.drives.s3 import PART_SIZE_METADATA, S3Bucket
from backupmand.drives.s3_parts import (
    MAX_OBJECT_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    PARTS_PER_STEP,
    part_bounds,
    part_count,
    part_size,
)
from backupmand.errors import DriveError, VerificationError
from backupmand.growing import GrowingFile
from tests.helpers import ROOT
from tests.servers.s3 import S3FaultProxy, S3Server, TcpProxy
from tests.servers.throttle import ThrottleProxy

MiB = 1024 * 1024


def write_random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path`` (1 MiB at a time); their SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as sink:
        remaining = size
        while remaining:
            block = os.urandom(min(MiB, remaining))
            digest.update(block)
            sink.write(block)
            remaining -= len(block)
    return digest.hexdigest()


async def stream_sha256(drive: S3Bucket, path: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    async for block in drive.download(path):
        digest.update(block)
        size += len(block)
    return size, digest.hexdigest()


class Sleeps:
    """An injected ``sleep`` that records the delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def complete_file(tmp_path: Path, size: int, name: str = "dump.sql.zst"
                        ) -> tuple[GrowingFile, str]:
    path = tmp_path / name
    sha256 = await asyncio.to_thread(write_random_file, path, size)
    return GrowingFile.complete_file(path, size, sha256), sha256


# --------------------------------------------------------------------------- part sizes


@pytest.mark.parametrize("first", [MIN_PART_SIZE, 16 * MiB, 64 * MiB, MAX_PART_SIZE])
def test_part_sizes_grow_so_that_five_tebibytes_fit_in_ten_thousand_parts(first: int) -> None:
    assert part_bounds(MAX_PARTS, first)[1] >= MAX_OBJECT_SIZE
    assert part_count(MAX_OBJECT_SIZE, first) <= MAX_PARTS
    previous_end = 0
    previous_size = 0
    for number in range(1, MAX_PARTS + 1):
        start, end = part_bounds(number, first)
        assert start == previous_end, number  # contiguous
        size = end - start
        assert MIN_PART_SIZE <= size <= MAX_PART_SIZE
        assert size >= previous_size  # never shrinks
        previous_end, previous_size = end, size


def test_the_default_part_size_holds_until_the_stream_is_large() -> None:
    first = 16 * MiB
    assert part_size(1, first) == part_size(PARTS_PER_STEP, first) == 16 * MiB
    assert part_size(PARTS_PER_STEP + 1, first) == 32 * MiB
    assert part_bounds(PARTS_PER_STEP + 1, first)[0] == PARTS_PER_STEP * 16 * MiB  # 7.8 GiB
    assert part_count(1, first) == 1
    assert part_count(16 * MiB, first) == 1
    assert part_count(16 * MiB + 1, first) == 2
    assert part_size(MAX_PARTS, MIN_PART_SIZE) == MAX_PART_SIZE


# --------------------------------------------------------------------------- parallel parts


@pytest.mark.parametrize("concurrency", [1, 2, 4])
async def test_parts_go_out_in_parallel_up_to_part_concurrency(
    s3_server: S3Server, s3_bucket: str, s3_fault_proxy: S3FaultProxy, tmp_path: Path,
    concurrency: int,
) -> None:
    """The proxy holds every part request until ``concurrency`` of them are in flight:
    an upload that sent parts one by one would never get there."""
    s3_fault_proxy.hold_parts = concurrency
    config = s3_server.drive_config(s3_bucket, endpoint=s3_fault_proxy.endpoint,
                                    part_size=5 * MiB, part_concurrency=concurrency)
    drive = build_drive(config)
    source, sha256 = await complete_file(tmp_path, 6 * 5 * MiB + 3)
    try:
        stored = await drive.upload_stream(source, "parallel.sql.zst")
        assert s3_fault_proxy.most_in_flight == concurrency
        assert sorted(s3_fault_proxy.part_attempts) == list(range(1, 8))
        assert set(s3_fault_proxy.part_attempts.values()) == {1}
        assert await stream_sha256(drive, stored.path) == (source.size, sha256)  # type: ignore[arg-type]
    finally:
        await drive.aclose()


async def test_parts_of_a_growing_file_go_out_as_it_grows(
    s3_server: S3Server, s3_bucket: str, s3_fault_proxy: S3FaultProxy, tmp_path: Path
) -> None:
    """Part 1 reaches the service before the writer has written part 3."""
    stage = tmp_path / "stage.partial"
    stage.write_bytes(b"")
    growing = GrowingFile(stage)
    data = os.urandom(3 * 5 * MiB)
    drive = build_drive(s3_server.drive_config(s3_bucket, endpoint=s3_fault_proxy.endpoint,
                                               part_size=5 * MiB))
    try:
        upload = asyncio.create_task(drive.upload_stream(growing, "grows.sql.zst"))
        with open(stage, "ab") as sink:
            sink.write(data[:6 * MiB])
        growing.grew(6 * MiB)
        while 1 not in s3_fault_proxy.part_attempts:
            s3_fault_proxy.part_arrived.clear()
            await s3_fault_proxy.part_arrived.wait()
        assert not growing.complete
        with open(stage, "ab") as sink:
            sink.write(data[6 * MiB:])
        growing.finish(len(data), hashlib.sha256(data).hexdigest())
        stored = await upload
        assert await stream_sha256(drive, stored.path) == (  # type: ignore[arg-type]
            len(data), hashlib.sha256(data).hexdigest())
    finally:
        await drive.aclose()


# --------------------------------------------------------------------------- part retries


@pytest.mark.parametrize("fault", [(503, "SlowDown"), (429, "TooManyRequests"),
                                   (500, "InternalError"), "cut"])
async def test_a_part_that_fails_once_is_retried_alone(
    s3_server: S3Server, s3_bucket: str, s3_fault_proxy: S3FaultProxy, tmp_path: Path,
    fault: tuple[int, str] | str,
) -> None:
    s3_fault_proxy.faults[2] = [fault]
    sleeps = Sleeps()
    drive = S3Bucket(s3_server.drive_config(s3_bucket, endpoint=s3_fault_proxy.endpoint,
                                            part_size=5 * MiB), sleep=sleeps)
    source, sha256 = await complete_file(tmp_path, 4 * 5 * MiB + 1)
    try:
        stored = await drive.upload_stream(source, "retried.sql.zst")
        assert dict(s3_fault_proxy.part_attempts) == {1: 1, 2: 2, 3: 1, 4: 1, 5: 1}
        assert len(sleeps.delays) == 1
        assert drive.backoff_base / 2 <= sleeps.delays[0] <= drive.backoff_base
        assert await stream_sha256(drive, stored.path) == (source.size, sha256)
        assert await asyncio.to_thread(s3_server.multipart_uploads, s3_bucket) == []
    finally:
        await drive.aclose()


async def test_a_part_that_keeps_failing_fails_the_upload_which_is_aborted(
    s3_server: S3Server, s3_bucket: str, s3_fault_proxy: S3FaultProxy, tmp_path: Path
) -> None:
    s3_fault_proxy.faults[3] = [(503, "SlowDown")] * 10
    sleeps = Sleeps()
    drive = S3Bucket(s3_server.drive_config(s3_bucket, endpoint=s3_fault_proxy.endpoint,
                                            part_size=5 * MiB), sleep=sleeps, part_attempts=3)
    source, _ = await complete_file(tmp_path, 4 * 5 * MiB)
    try:
        with pytest.raises(DriveError, match=r"part 3.*SlowDown") as raised:
            await drive.upload_stream(source, "broken.sql.zst")
        assert raised.value.retryable
        assert s3_fault_proxy.part_attempts[3] == 3
        assert len(sleeps.delays) == 2 and sleeps.delays[1] > drive.backoff_base / 2
        assert await asyncio.to_thread(s3_server.multipart_uploads, s3_bucket) == []
        assert await asyncio.to_thread(s3_server.keys, s3_bucket) == []
    finally:
        await drive.aclose()


async def test_a_refused_part_is_not_retried(
    s3_server: S3Server, s3_bucket: str, s3_fault_proxy: S3FaultProxy, tmp_path: Path
) -> None:
    s3_fault_proxy.faults[1] = [(403, "AccessDenied")]
    drive = S3Bucket(s3_server.drive_config(s3_bucket, endpoint=s3_fault_proxy.endpoint,
                                            part_size=5 * MiB), sleep=Sleeps())
    source, _ = await complete_file(tmp_path, 2 * 5 * MiB)
    try:
        with pytest.raises(DriveError, match="access denied") as raised:
            await drive.upload_stream(source, "refused.sql.zst")
        assert not raised.value.retryable
        assert s3_fault_proxy.part_attempts[1] == 1
        assert await asyncio.to_thread(s3_server.multipart_uploads, s3_bucket) == []
    finally:
        await drive.aclose()


async def test_a_cancelled_upload_with_parts_in_flight_is_aborted(
    s3_server: S3Server, s3_bucket: str, s3_fault_proxy: S3FaultProxy, tmp_path: Path
) -> None:
    s3_fault_proxy.hold_parts = 100  # parts stay in flight until the proxy stops holding
    drive = build_drive(s3_server.drive_config(s3_bucket, endpoint=s3_fault_proxy.endpoint,
                                               part_size=5 * MiB))
    source, _ = await complete_file(tmp_path, 8 * 5 * MiB)
    try:
        upload = asyncio.create_task(drive.upload_stream(source, "cancelled.sql.zst"))
        while s3_fault_proxy.in_flight < 4:
            s3_fault_proxy.part_arrived.clear()
            await s3_fault_proxy.part_arrived.wait()
        assert len(await asyncio.to_thread(s3_server.multipart_uploads, s3_bucket)) == 1
        upload.cancel()
        with pytest.raises(asyncio.CancelledError):
            await upload
        assert await asyncio.to_thread(s3_server.multipart_uploads, s3_bucket) == []
        assert await asyncio.to_thread(s3_server.keys, s3_bucket) == []
    finally:
        await drive.aclose()


async def test_a_completion_whose_answer_is_lost_is_recognised(
    s3_server: S3Server, s3_bucket: str, s3_fault_proxy: S3FaultProxy, tmp_path: Path
) -> None:
    """CompleteMultipartUpload went through but its answer never came back: the resent
    completion is refused (If-None-Match), and the object, carrying this upload's id,
    is recognised as this upload's own."""
    s3_fault_proxy.lose_completion_answers = 1
    drive = build_drive(s3_server.drive_config(s3_bucket, endpoint=s3_fault_proxy.endpoint,
                                               part_size=5 * MiB))
    source, sha256 = await complete_file(tmp_path, 2 * 5 * MiB + 9)
    try:
        stored = await drive.upload_stream(source, "lost-answer.sql.zst")
        completions = [path for method, path in s3_fault_proxy.requests
                       if method == "POST" and "uploadId=" in path]
        assert len(completions) >= 2
        assert await stream_sha256(drive, stored.path) == (source.size, sha256)  # type: ignore[arg-type]
    finally:
        await drive.aclose()


async def test_without_checksums_parts_carry_content_md5(
    s3_server: S3Server, s3_bucket: str, s3_fault_proxy: S3FaultProxy, tmp_path: Path
) -> None:
    drive = build_drive(s3_server.drive_config(s3_bucket, endpoint=s3_fault_proxy.endpoint,
                                               part_size=5 * MiB, checksums=False))
    source, sha256 = await complete_file(tmp_path, 2 * 5 * MiB + 1)
    data = source.path.read_bytes()
    try:
        stored = await drive.upload_stream(source, "md5.sql.zst")
        for number, headers in s3_fault_proxy.part_headers.items():
            start, end = part_bounds(number, 5 * MiB)
            expected = base64.b64encode(hashlib.md5(data[start:end]).digest()).decode()
            assert headers.get("content-md5") == expected
            assert not any(key.startswith("x-amz-checksum") for key in headers)
        assert await stream_sha256(drive, stored.path) == (source.size, sha256)  # type: ignore[arg-type]
        # Adopting an object that has no SHA-256 of its own: its bytes are read and hashed.
        again = GrowingFile.complete_file(source.path, source.size, sha256)
        assert await drive.upload_stream(again, "md5.sql.zst", adopt=True) == stored
    finally:
        await drive.aclose()


# --------------------------------------------------------------------------- memory


@pytest.mark.slow
async def test_memory_stays_flat_while_a_large_growing_file_uploads(
    s3_process_server: S3Server, tmp_path: Path
) -> None:
    """300 MiB through a moto *process*, uploaded by a process of its own while a writer
    thread writes the file: its resident memory grows by far less than the parts in
    flight (4 parts of 16 MiB = 64 MiB, had they been held in memory)."""
    size = 300 * MiB
    bucket = await asyncio.to_thread(s3_process_server.create_bucket)
    probe = Path(__file__).with_name("s3_memory_probe.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, str(probe), s3_process_server.endpoint, bucket,
                         str(size), str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    growth = figures["peak"] - figures["before"]
    assert growth < 48 * MiB, f"resident memory grew by {growth / MiB:.1f} MiB"
    assert figures["size"] == size
    client = s3_process_server.client()
    head = await asyncio.to_thread(client.head_object, Bucket=bucket, Key=figures["path"])
    assert head["ContentLength"] == size
    assert head["ETag"].strip('"').endswith(f"-{-(-size // (16 * MiB))}")  # multipart
    assert head["Metadata"][PART_SIZE_METADATA] == str(16 * MiB)
    drive = build_drive(s3_process_server.drive_config(bucket))
    try:
        assert await stream_sha256(drive, figures["path"]) == (size, figures["sha256"])  # type: ignore[arg-type]
    finally:
        await drive.aclose()


# --------------------------------------------------------------------------- listings


async def test_listings_page_through_ten_thousand_objects(
    s3_server: S3Server, s3_bucket: str
) -> None:
    per_host = 3500
    keys = [f"fleet/db{host}/nightly/main-{index:05d}.sql.zst"
            for host in range(3) for index in range(per_host)]
    await asyncio.to_thread(s3_server.seed, s3_bucket, keys, b"0123456789")
    drive = build_drive(s3_server.drive_config(s3_bucket, prefix="fleet/{host}/nightly"), "db1")
    assert isinstance(drive, S3Bucket)
    requests: list[str] = []

    def record(request: Any, **_: Any) -> None:
        requests.append(f"{request.method} {request.url}")

    try:
        client = await drive.client()
        client.meta.events.register("before-send.s3", record)
        every = await drive.list_files(all_hosts=True)
        assert len(every) == 3 * per_host
        assert {item.host for item in every} == {"db0", "db1", "db2"}
        assert all(item.size == 10 for item in every)
        assert len(requests) == -(-3 * per_host // 1000)  # pages of 1,000, nothing per object
        requests.clear()
        mine = await drive.list_files()
        assert len(mine) == per_host and {item.host for item in mine} == {"db1"}
        assert mine[0].name == "main-00000.sql.zst"
        assert mine[0].path == "fleet/db1/nightly/main-00000.sql.zst"
        assert len(requests) == 4
    finally:
        await drive.aclose()


# --------------------------------------------------------------------------- adoption


async def test_adopting_a_multipart_object_uploaded_with_another_part_size(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """The object's part layout is in its metadata: its composite checksum is computed
    again from the stage file, whatever part size the drive has now."""
    source, sha256 = await complete_file(tmp_path, 3 * 6 * MiB + 5)
    earlier = build_drive(s3_server.drive_config(s3_bucket, part_size=6 * MiB))
    now = build_drive(s3_server.drive_config(s3_bucket, part_size=5 * MiB))
    try:
        stored = await earlier.upload_stream(source, "crash-window.sql.zst")
        adopted = await now.upload_stream(
            GrowingFile.complete_file(source.path, source.size, sha256), "crash-window.sql.zst",
            adopt=True)
        assert adopted == stored
    finally:
        await earlier.aclose()
        await now.aclose()


async def test_adopting_an_object_without_a_sha256_reads_its_bytes(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    source, sha256 = await complete_file(tmp_path, 300 * 1024)
    data = source.path.read_bytes()
    client = s3_server.client()
    await asyncio.to_thread(client.put_object, Bucket=s3_bucket, Key="plain.sql.zst", Body=data)
    await asyncio.to_thread(client.put_object, Bucket=s3_bucket, Key="other.sql.zst",
                            Body=bytes(reversed(data)))
    drive = build_drive(s3_server.drive_config(s3_bucket, checksums=False))
    try:
        stored = await drive.upload_stream(source, "plain.sql.zst", adopt=True)
        assert stored.path == "plain.sql.zst"
        with pytest.raises(DriveError, match="already exists"):
            await drive.upload_stream(GrowingFile.complete_file(source.path, source.size, sha256),
                                      "other.sql.zst", adopt=True)
    finally:
        await drive.aclose()


# --------------------------------------------------------------------------- sweep


async def test_sweep_touches_only_this_hosts_prefix(s3_server: S3Server, s3_bucket: str) -> None:
    client = s3_server.client()
    for key in ("fleet/db1/main-1.sql.zst", "fleet/db2/main-2.sql.zst",
                "fleet/db1/deeper/main-3.sql.zst"):
        await asyncio.to_thread(client.create_multipart_upload, Bucket=s3_bucket, Key=key)
    drive = build_drive(s3_server.drive_config(s3_bucket, prefix="fleet/{host}"), "db1")
    try:
        swept = await drive.sweep(lambda name: True)
        assert len(swept) == 1 and swept[0].startswith("fleet/db1/main-1.sql.zst")
        left = sorted(item["Key"] for item in
                      await asyncio.to_thread(s3_server.multipart_uploads, s3_bucket))
        assert left == ["fleet/db1/deeper/main-3.sql.zst", "fleet/db2/main-2.sql.zst"]
    finally:
        await drive.aclose()


# --------------------------------------------------------------------------- addressing, outages


async def test_prefix_path_style_and_region(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = await asyncio.to_thread(s3_server.create_bucket, None, "eu-west-3")
    config = s3_server.drive_config(bucket, region="eu-west-3", prefix="/nightly/db/",
                                    force_path_style=True, part_size=5 * MiB)
    drive = build_drive(config)
    assert isinstance(drive, S3Bucket)
    urls: list[str] = []

    def record(request: Any, **_: Any) -> None:
        urls.append(request.url)

    try:
        for kind in ("main", "transfer"):
            client = await drive.client(kind)
            client.meta.events.register("before-send.s3", record)
        source = tmp_path / "dump.sql.gz"
        sha256 = await asyncio.to_thread(write_random_file, source, 9 * MiB)  # two parts
        stored = await drive.upload(source, "dump.sql.gz", size=9 * MiB, sha256=sha256)
        assert stored.path == "nightly/db/dump.sql.gz"
        assert await asyncio.to_thread(s3_server.keys, bucket) == ["nightly/db/dump.sql.gz"]
        assert await drive.size(stored.path) == 9 * MiB
        assert any("partNumber=2" in url for url in urls)
        for url in urls:
            assert url.startswith(f"{s3_server.endpoint}/{bucket}/nightly/db/dump.sql.gz"), url
    finally:
        await drive.aclose()


async def test_a_multipart_upload_of_a_changed_file_is_aborted(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    source = tmp_path / "dump.sql.zst"
    await asyncio.to_thread(write_random_file, source, 20 * MiB)
    drive = build_drive(s3_server.drive_config(s3_bucket))
    try:
        with pytest.raises(VerificationError) as raised:
            await drive.upload(source, "changed.sql.zst", size=20 * MiB,
                               sha256=hashlib.sha256(b"other content").hexdigest())
        assert not raised.value.retryable
        assert await asyncio.to_thread(s3_server.multipart_uploads, s3_bucket) == []
        assert await asyncio.to_thread(s3_server.keys, s3_bucket) == []
    finally:
        await drive.aclose()


async def test_a_missing_bucket_is_not_retryable(s3_server: S3Server, tmp_path: Path) -> None:
    source = tmp_path / "dump.sql"
    sha256 = await asyncio.to_thread(write_random_file, source, 1000)
    drive = build_drive(s3_server.drive_config("bucket-that-was-never-made"))
    try:
        with pytest.raises(DriveError) as raised:
            await drive.upload(source, "dump.sql", size=1000, sha256=sha256)
        assert not raised.value.retryable
        assert "does not exist" in str(raised.value)
        with pytest.raises(DriveError, match="does not exist"):
            await drive.list_files()
    finally:
        await drive.aclose()


async def test_server_stopped_mid_upload_then_a_retry_finishes(
    s3_server: S3Server, s3_bucket: str, s3_proxy: TcpProxy, tmp_path: Path
) -> None:
    """The service goes away in the middle of a multipart upload: the upload fails
    (retryable) after its part retries, and once the service is back the same upload
    succeeds, and the abandoned multipart upload is aborted."""
    size = 40 * MiB
    source = tmp_path / "dump.sql.zst"
    sha256 = await asyncio.to_thread(write_random_file, source, size)
    drive = S3Bucket(s3_server.drive_config(s3_bucket, endpoint=s3_proxy.endpoint),
                     request_attempts=2, part_attempts=2, sleep=Sleeps())
    try:
        s3_proxy.stop_after(20 * MiB)
        with pytest.raises(DriveError) as raised:
            await drive.upload(source, "dump.sql.zst", size=size, sha256=sha256)
        assert raised.value.retryable
        assert s3_proxy.stopped.is_set()
        # The abort could not reach the service either: the upload is still there.
        assert len(await asyncio.to_thread(s3_server.multipart_uploads, s3_bucket)) == 1
        assert await asyncio.to_thread(s3_server.keys, s3_bucket) == []

        s3_proxy.start()
        stored = await drive.upload(source, "dump.sql.zst", size=size, sha256=sha256)
        assert await stream_sha256(drive, stored.path) == (size, sha256)
        assert await asyncio.to_thread(s3_server.multipart_uploads, s3_bucket) == []
    finally:
        await drive.aclose()


async def test_parts_cut_by_the_link_are_sent_again(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """A throttled link (8 MB/s, 4 MB/s per connection) that drops every connection
    once, halfway through the upload: the parts under way are sent again."""
    host, _, port = s3_server.endpoint.removeprefix("http://").rpartition(":")
    async with ThrottleProxy((host, int(port)), rate=8e6, per_connection=4e6) as link:
        sleeps = Sleeps()
        drive = S3Bucket(s3_server.drive_config(s3_bucket, endpoint=link.endpoint,
                                                part_size=5 * MiB), sleep=sleeps)
        source, sha256 = await complete_file(tmp_path, 4 * 5 * MiB)
        try:
            link.cut_after(10 * MiB)
            started = asyncio.get_running_loop().time()
            stored = await drive.upload_stream(source, "cut.sql.zst")
            elapsed = asyncio.get_running_loop().time() - started
            assert link.cut_done.is_set() and link.cuts == 1
            assert sleeps.delays, "parts were retried"
            assert link.most_open >= 2
            assert link.bytes_up > source.size  # some parts went twice
            assert elapsed >= 20 * MiB / 8e6 * 0.9  # the link's rate held
            assert await stream_sha256(drive, stored.path) == (source.size, sha256)
        finally:
            await drive.aclose()


async def test_recovery_aborts_the_multipart_uploads_of_a_killed_process(
    s3_server: S3Server, s3_bucket: str, make_settings: Any, open_runtime: Any
) -> None:
    """kill -9 mid-upload leaves an unfinished multipart upload, which nothing could
    abort: the next start sweeps it (for the sources it is free to run), and only it."""
    client = s3_server.client()
    for key in ("backups/app-20250702100000-b4c3f1a0.sqlite.zst",  # the source "app"
                "backups/other-20250702100000-b4c3f1a0.sqlite.zst"):  # nobody's here
        await asyncio.to_thread(client.create_multipart_upload, Bucket=s3_bucket, Key=key)
    drive = {"provider": "s3", "label": "S3", "bucket": s3_bucket, "prefix": "backups",
             "endpoint": s3_server.endpoint, "access_key": s3_server.access_key,
             "secret_key": s3_server.secret_key, "force_path_style": True}
    async with open_runtime(make_settings(drives=[drive])):
        left = await asyncio.to_thread(s3_server.multipart_uploads, s3_bucket)
    assert [item["Key"] for item in left] == ["backups/other-20250702100000-b4c3f1a0.sqlite.zst"]
