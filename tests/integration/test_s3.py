"""The S3 drive beyond the common contract: big multipart uploads, addressing, outages."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from backupmand.drives import build_drive
from backupmand.drives.s3 import MAX_OBJECT_SIZE, MAX_PARTS, MIN_PART_SIZE, S3Bucket, part_size_for
from backupmand.errors import DriveError, VerificationError
from tests.servers.s3 import S3Server, TcpProxy

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


def test_part_sizes_fit_five_tebibytes_in_ten_thousand_parts() -> None:
    assert part_size_for(0) == MIN_PART_SIZE
    assert part_size_for(MIN_PART_SIZE * MAX_PARTS) == MIN_PART_SIZE
    assert part_size_for(MIN_PART_SIZE * MAX_PARTS + 1) == MIN_PART_SIZE + MiB
    for size in (100 * MiB, 80 * 1024 * MiB, MAX_OBJECT_SIZE):
        part = part_size_for(size)
        assert part % MiB == 0
        assert -(-size // part) <= MAX_PARTS


@pytest.mark.slow
async def test_a_large_upload_is_multipart_with_flat_memory(
    s3_process_server: S3Server, tmp_path: Path
) -> None:
    """110 MiB through a moto *process* (moto keeps objects in RAM, so it must not share
    this process's memory accounting): Python allocations stay far below the file size."""
    size = 110 * MiB + 12345
    source = tmp_path / "big.sql.zst"
    sha256 = await asyncio.to_thread(write_random_file, source, size)
    bucket = await asyncio.to_thread(s3_process_server.create_bucket)
    drive = build_drive(s3_process_server.drive_config(bucket, prefix="big"))
    try:
        assert await drive.size("big/nothing-yet") is None  # the client exists before measuring
        tracemalloc.start()
        try:
            stored = await drive.upload(source, "big.sql.zst", size=size, sha256=sha256)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 48 * MiB, f"peak Python allocations {peak / MiB:.1f} MiB"
        assert stored.path == "big/big.sql.zst"
        head = await asyncio.to_thread(
            s3_process_server.client().head_object, Bucket=bucket, Key=stored.path)
        assert head["ContentLength"] == size
        assert head["Metadata"]["sha256"] == sha256
        assert head["ETag"].strip('"').endswith(f"-{-(-size // MIN_PART_SIZE)}")  # multipart
        assert await stream_sha256(drive, stored.path) == (size, sha256)  # type: ignore[arg-type]
        assert await asyncio.to_thread(s3_process_server.multipart_uploads, bucket) == []
    finally:
        await drive.aclose()


async def test_prefix_path_style_and_region(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = await asyncio.to_thread(s3_server.create_bucket, None, "eu-west-3")
    config = s3_server.drive_config(bucket, region="eu-west-3", prefix="/nightly/db/",
                                    force_path_style=True)
    drive = build_drive(config)
    assert isinstance(drive, S3Bucket)
    urls: list[str] = []

    def record(request: Any, **_: Any) -> None:
        urls.append(request.url)

    try:
        client = await drive.client()
        client.meta.events.register("before-send.s3", record)
        source = tmp_path / "dump.sql.gz"
        sha256 = await asyncio.to_thread(write_random_file, source, 9 * MiB)  # two parts
        stored = await drive.upload(source, "dump.sql.gz", size=9 * MiB, sha256=sha256)
        assert stored.path == "nightly/db/dump.sql.gz"
        assert await asyncio.to_thread(s3_server.keys, bucket) == ["nightly/db/dump.sql.gz"]
        assert await drive.size(stored.path) == 9 * MiB
        assert urls, "no request seen"
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
    finally:
        await drive.aclose()


async def test_server_stopped_mid_upload_then_a_retry_finishes(
    s3_server: S3Server, s3_bucket: str, s3_proxy: TcpProxy, tmp_path: Path
) -> None:
    """The service goes away in the middle of a multipart upload: the upload fails
    (retryable), and once the service is back the same upload succeeds, and the
    abandoned multipart upload is aborted."""
    size = 40 * MiB
    source = tmp_path / "dump.sql.zst"
    sha256 = await asyncio.to_thread(write_random_file, source, size)
    drive = S3Bucket(s3_server.drive_config(s3_bucket, endpoint=s3_proxy.endpoint),
                     request_attempts=2)
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
