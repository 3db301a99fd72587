"""Test helpers: stand-ins for the backup pipeline (dump -> compress + hash -> drive ->
catalog) so restores can be tested on real backups without the pipeline module."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from backupmand.catalog import Catalog
from backupmand.compression import EXTENSIONS, compressor
from backupmand.config import LocalDrive, Settings
from backupmand.drives.local import LocalFolder
from backupmand.errors import DumpError, HealthError
from backupmand.models import Backup, Status, utcnow
from backupmand.sources.base import DumpFacts, Source


def make_settings(sources: list[dict[str, Any]], drives: list[dict[str, Any]]) -> Settings:
    return Settings.model_validate({
        "database": {"provider": "memory"},
        "data_sources": sources,
        "drives": drives,
    })


async def dump_bytes(source: Source[Any], workdir: Path) -> bytes:
    """The whole raw dump of ``source`` (test dumps are small)."""
    workdir.mkdir(parents=True, exist_ok=True)
    parts = [chunk async for chunk in source.dump(workdir, DumpFacts())]
    return b"".join(parts)


async def store_backup(
    catalog: Catalog, settings: Settings, *, label: str, provider: str, extension: str,
    data: bytes, drive_label: str, staging: Path, compression: str = "zstd",
    keep_local: bool = False,
) -> Backup:
    """Record a finished backup of ``data``: compressed, hashed, uploaded to a local drive.

    The compressed dump is written in ``staging``; with ``keep_local`` it stays there
    (DumpPath set), as after a failed upload.
    """
    stamp = utcnow().strftime("%Y%m%d%H%M%S")
    backup_id = str(uuid.uuid4())
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
    name = f"{safe}-{stamp}-{backup_id[:8]}{extension}{EXTENSIONS[compression]}"
    backup = await catalog.create_backup(label=label, source_provider=provider, name=name,
                                         compression=compression, backup_id=backup_id)
    engine = compressor(compression)
    payload = engine.compress(data) + engine.flush()
    staging.mkdir(parents=True, exist_ok=True)
    local = staging / name
    local.write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    await catalog.update_backup(backup.id, dump_status=Status.FINISHED, dump_path=str(local),
                                size=len(payload), sha256=digest)
    drive_config = settings.drive(drive_label)
    assert isinstance(drive_config, LocalDrive)
    drive_file = await catalog.create_drive_file(backup_id=backup.id, drive=drive_label,
                                                 provider="local", label=name)
    stored = await LocalFolder(drive_config).upload(local, name, size=len(payload), sha256=digest)
    await catalog.update_drive_file(drive_file.id, status=Status.FINISHED, path=stored.path,
                                    size=stored.size, finished_at=utcnow())
    if not keep_local:
        local.unlink()
        await catalog.update_backup(backup.id, status=Status.FINISHED, dump_path=None,
                                    finished_at=utcnow())
    else:
        await catalog.update_backup(backup.id, status=Status.FINISHED, finished_at=utcnow())
    return await catalog.get_backup(backup.id)


def proc_cmdlines() -> list[tuple[int, bytes]]:
    """Every process's argv as raw bytes (NUL-separated), as ps would show it."""
    found: list[tuple[int, bytes]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                found.append((int(entry), handle.read()))
        except OSError:
            continue
    return found


def pids_running(name: str, needle: bytes = b"") -> list[int]:
    """Processes whose argv[0] ends with ``name`` and whose argv contains ``needle``."""
    pids = []
    for pid, cmdline in proc_cmdlines():
        argv0 = cmdline.split(b"\0", 1)[0]
        if argv0.endswith(name.encode()) and needle in cmdline:
            pids.append(pid)
    return pids


async def assert_killed_midway(source: Source[Any], tool: str, marker: bytes, workdir: Path,
                               *, secret: str, most: int) -> None:
    """Kill the dump tool (``tool`` with ``marker`` in its argv) at the first chunk: the
    dump fails naming the signal after some but not all of its ``most`` bytes, and the
    error never shows ``secret``."""
    received = 0
    with pytest.raises(DumpError, match=f"{tool} was killed by SIGKILL") as caught:
        async for chunk in source.dump(workdir, DumpFacts()):
            if received == 0:
                for pid in pids_running(tool, marker):
                    os.killpg(pid, signal.SIGKILL)
            received += len(chunk)
    assert 0 < received < most
    assert secret not in str(caught.value)


async def assert_refused(source: Source[Any], pattern: str, workdir: Path,
                         *, secret: str | None = None) -> None:
    """Both the dump and the health check fail with ``pattern``, never showing ``secret``."""
    with pytest.raises(DumpError, match=pattern) as caught:
        await dump_bytes(source, workdir)
    with pytest.raises(HealthError, match=pattern) as health:
        await source.health()
    if secret is not None:
        assert secret not in str(caught.value)
        assert secret not in str(health.value)


AWKWARD_PASSWORD = "p@ss:w/rd?#'\"\\ with spaces "
