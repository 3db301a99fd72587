"""Backups made through a real catalog, as the pipeline would record them."""

from __future__ import annotations

import datetime as dt

from backupmand.catalog import Catalog
from backupmand.models import Backup, Status

SHA = "ab" * 32


async def make_backup(
    catalog: Catalog, *, label: str = "Main", status: Status = Status.FINISHED,
    drives: tuple[tuple[str, str], ...] = (("Local Drive", "local"), ("S3 Drive", "s3")),
    failed_drive: str | None = None, drive_error: str = "upload refused: <HTTP 403> & co",
    size: int | None = 1_234_567, seconds: float = 65.0, dump_error: str | None = None,
    created_at: dt.datetime | None = None,
) -> Backup:
    """A backup of ``label`` with one drive file per drive, settled to ``status``.

    ``failed_drive`` names the drive whose upload failed (status FAILED); with
    ``dump_error`` the dump failed and no drive file exists. ``created_at`` is only
    used to compute finished_at (the catalog stamps creation itself): finished_at is
    created_at + ``seconds``.
    """
    name = f"{label.lower()}-20250702100000-0000abcd.sql.zst"
    backup = await catalog.create_backup(
        label=label, source_provider="sqlite", name=name, compression="zstd")
    start = created_at or backup.created_at
    end = start + dt.timedelta(seconds=seconds)
    if status is Status.PENDING:
        return backup
    if dump_error is not None:
        await catalog.update_backup(backup.id, dump_status=Status.FAILED)
        return await catalog.fail_backup(backup.id, dump_error)
    await catalog.update_backup(
        backup.id, dump_status=Status.FINISHED, size=size, sha256=SHA,
        dump_path=f"/var/lib/backupmand/tmp/{name}")
    for drive, provider in drives:
        drive_file = await catalog.create_drive_file(
            backup_id=backup.id, drive=drive, provider=provider, label=name)
        if drive == failed_drive:
            await catalog.update_drive_file(
                drive_file.id, status=Status.FAILED, error=drive_error, attempts=5)
        else:
            await catalog.update_drive_file(
                drive_file.id, status=Status.FINISHED, path=f"backups/{name}", size=size,
                attempts=1, finished_at=end)
    if status is Status.FAILED:
        return await catalog.update_backup(
            backup.id, status=Status.FAILED, error=f"upload to {failed_drive} failed")
    return await catalog.update_backup(
        backup.id, status=Status.FINISHED, dump_path=None, finished_at=end)
