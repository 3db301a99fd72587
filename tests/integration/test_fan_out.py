"""One pass to every drive (SPEC §6.5): the dump streams to every drive while it runs.

Correctness, not timing: every copy is the stage file's bytes; a drive that fails
mid-stream finishes from the stage file while the others finish from the stream; a
slow drive never holds up the dump or the other drives (shown by the order of events,
not by a clock); a daemon killed mid-stream leaves nothing pending or half-stored, and
the backup retries to finished.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
from pathlib import Path
from typing import Any

import structlog

from backupmand.drives.base import StoredFile
from backupmand.drives.local import LocalFolder
from backupmand.errors import DriveError
from backupmand.models import Status
from tests.faults.support import make_blob_sqlite, wait_until
from tests.helpers import Daemon, base_config, child_env, free_port, run_cli, write_config
from tests.integration.test_three_drives import as_config


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class BrokenMidStream(LocalFolder):
    """Reads the first blocks of the stage file while it grows, then its link "drops"
    (an upload of the file once it is whole — from the stage file — works)."""

    def __init__(self, config: Any, host: str = "localhost") -> None:
        super().__init__(config, host)
        self.stream_bytes = 0

    async def upload_stream(self, source: Any, name: str, *, adopt: bool = False) -> StoredFile:
        if source.complete:
            return await super().upload_stream(source, name, adopt=adopt)
        async for block in source.follow(0):
            self.stream_bytes += len(block)
            if self.stream_bytes >= 2 * 1024 * 1024:
                raise DriveError("injected: connection reset by peer mid-stream")
        raise DriveError("injected: the stream ended before the failure point")


class Slow(LocalFolder):
    """Starts reading the stream only when ``go`` is set."""

    def __init__(self, config: Any, go: asyncio.Event, host: str = "localhost") -> None:
        super().__init__(config, host)
        self.go = go
        self.started_after_dump: bool | None = None

    async def upload_stream(self, source: Any, name: str, *, adopt: bool = False) -> StoredFile:
        await self.go.wait()
        self.started_after_dump = source.complete
        return await super().upload_stream(source, name, adopt=adopt)


def streamed(captured: list[dict[str, Any]]) -> dict[str, bool]:
    return {entry["drive"]: entry["streamed"] for entry in captured
            if entry["event"] == "upload.finished"}


async def test_every_drive_gets_the_stream_and_holds_the_stage_files_bytes(
    tmp_path: Path, make_settings, open_runtime, s3_server, gdrive_server
) -> None:
    make_blob_sqlite(tmp_path / "big.db", megabytes=24)
    bucket = s3_server.create_bucket()
    settings = make_settings(
        data_sources=[{"provider": "sqlite", "label": "big", "db_path": str(tmp_path / "big.db"),
                       "tmp_folder": str(tmp_path / "dumps")}],
        drives=[{"provider": "local", "label": "disk", "folder": str(tmp_path / "drive")},
                as_config(s3_server.drive_config(bucket, prefix="nightly")),
                as_config(gdrive_server.drive_config(tmp_path / "google"))],
        compression="none")
    async with open_runtime(settings) as runtime:
        stage: dict[str, str] = {}
        original = runtime.services.catalog.update_backup

        async def remember(backup_id: str, **fields: Any) -> Any:
            if fields.get("dump_status") is Status.FINISHED:  # the stage, before it goes
                stage["sha256"] = sha256(Path(fields["dump_path"]))
            return await original(backup_id, **fields)

        runtime.services.catalog.update_backup = remember  # type: ignore[method-assign]
        with structlog.testing.capture_logs(
                processors=[structlog.contextvars.merge_contextvars]) as captured:
            (backup,) = await runtime.start_backups()
            (final,) = await runtime.wait([backup.id])
        drives = runtime.services.drives
        assert final.status is Status.FINISHED, final.error
        assert stage["sha256"] == final.sha256
        assert streamed(captured) == {"disk": True, "S3 Drive": True, "Google Drive": True}
        for record in final.drive_files:
            copy = b"".join([block async for block in drives[record.drive].download(record.path)])
            assert hashlib.sha256(copy).hexdigest() == final.sha256, record.drive
            assert len(copy) == final.size and final.size > 20 * 1024 * 1024
        assert s3_server.multipart_uploads(bucket) == [], "no multipart upload left open"


async def test_a_drive_that_fails_mid_stream_finishes_from_the_stage_file(
    tmp_path: Path, make_settings, open_runtime
) -> None:
    make_blob_sqlite(tmp_path / "big.db", megabytes=12)
    settings = make_settings(
        data_sources=[{"provider": "sqlite", "label": "big", "db_path": str(tmp_path / "big.db"),
                       "tmp_folder": str(tmp_path / "dumps")}],
        drives=[{"provider": "local", "label": "steady", "folder": str(tmp_path / "steady")},
                {"provider": "local", "label": "flaky", "folder": str(tmp_path / "flaky")}],
        compression="none")
    async with open_runtime(settings) as runtime:
        flaky = BrokenMidStream(settings.drive("flaky"))
        runtime.services.drives["flaky"] = flaky
        with structlog.testing.capture_logs(
                processors=[structlog.contextvars.merge_contextvars]) as captured:
            (backup,) = await runtime.start_backups()
            (final,) = await runtime.wait([backup.id])
    assert final.status is Status.FINISHED, final.error
    assert flaky.stream_bytes >= 2 * 1024 * 1024, "it failed after receiving part of the stream"
    assert streamed(captured) == {"steady": True, "flaky": False}
    events = [entry["event"] for entry in captured if entry.get("drive") == "flaky"]
    assert "upload.stream_failed" in events
    records = {record.drive: record for record in final.drive_files}
    assert records["flaky"].attempts == 2, "the stream, then one upload from the stage file"
    for record in records.values():
        assert sha256(Path(record.path)) == final.sha256
    assert runtime.services.upload_attempt_failures["flaky"] == 1
    assert runtime.services.upload_failures["flaky"] == 0


async def test_a_slow_drive_never_holds_up_the_dump_or_the_other_drives(
    tmp_path: Path, make_settings, open_runtime
) -> None:
    make_blob_sqlite(tmp_path / "big.db", megabytes=12)
    settings = make_settings(
        data_sources=[{"provider": "sqlite", "label": "big", "db_path": str(tmp_path / "big.db"),
                       "tmp_folder": str(tmp_path / "dumps")}],
        drives=[{"provider": "local", "label": "fast", "folder": str(tmp_path / "fast")},
                {"provider": "local", "label": "slow", "folder": str(tmp_path / "slow")}])
    async with open_runtime(settings) as runtime:
        go = asyncio.Event()
        slow = Slow(settings.drive("slow"), go)
        runtime.services.drives["slow"] = slow
        order: list[str] = []
        fast_done = asyncio.Event()
        original = runtime.services.catalog.update_drive_file

        async def watch(record_id: str, **fields: Any) -> Any:
            updated = await original(record_id, **fields)
            if fields.get("status") is Status.FINISHED:
                order.append(f"{updated.drive} finished")
                if updated.drive == "fast":
                    fast_done.set()
            return updated

        runtime.services.catalog.update_drive_file = watch  # type: ignore[method-assign]
        runtime.add_progress_listener(lambda _label, step: order.append(step))
        (backup,) = await runtime.start_backups()
        await asyncio.wait_for(fast_done.wait(), 120)
        # The dump ended and the fast drive finished from the stream while the slow one
        # had not read a byte.
        assert order.index("uploading") < order.index("fast finished")
        assert "slow finished" not in order
        go.set()
        (final,) = await runtime.wait([backup.id])
    assert final.status is Status.FINISHED, final.error
    assert slow.started_after_dump is True
    assert order[-2:] == ["slow finished", "finished"]
    for record in final.drive_files:
        assert sha256(Path(record.path)) == final.sha256


def test_kill_9_mid_stream_to_s3_leaves_nothing_half_done_and_retry_finishes(
    tmp_path: Path, s3_process_server
) -> None:
    make_blob_sqlite(tmp_path / "big.db", megabytes=64)
    bucket = s3_process_server.create_bucket()
    document = base_config(tmp_path, data_sources=[
        {"provider": "sqlite", "label": "big", "db_path": str(tmp_path / "big.db"),
         "tmp_folder": str(tmp_path / "dumps")}],
        drives=[as_config(s3_process_server.drive_config(bucket, prefix="x", part_size=5 * 2**20))],
        compression="none")
    port = free_port()
    document["http"].update(port=port, app_url=f"http://127.0.0.1:{port}")
    config = write_config(tmp_path / "config.yml", document)
    env = child_env(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/dev/null",
                    AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    server = Daemon(config, port, env=env)
    try:
        server.wait_ready()
        status, body = server.request("POST", "/api/backups")
        assert status == 200
        backup_id = body["BackupIds"][0]
        # Killed once a multipart upload of the stream is under way.
        wait_until(lambda: s3_process_server.multipart_uploads(bucket), timeout=120)
        server.stop(signal.SIGKILL)
    finally:
        server.stop()
    restarted = Daemon(config, port, env=env, log_path=tmp_path / "second.log")
    try:
        restarted.wait_ready()
        status, body = restarted.request("GET", "/api/backups?status=pending")
        assert status == 200 and body["Results"] == []
        status, record = restarted.request("GET", f"/api/backups/{backup_id}")
        assert record["Status"] == "failed" and record["Error"].startswith("interrupted")
        assert s3_process_server.multipart_uploads(bucket) == [], \
            "recovery aborted the upload the dead process left"
        assert s3_process_server.keys(bucket) == [], "nothing half stored"
    finally:
        restarted.stop()
    retried = run_cli("retry", backup_id, config=config, env=env, timeout=300)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    keys = s3_process_server.keys(bucket)
    assert len(keys) == 2 and any(key.endswith(".manifest.json") for key in keys)
