"""``backupmand catalog rebuild --drive LABEL``: the catalog recreated from a drive.

The drive's location for one host (``--host``, default this host) is listed once; every
``*.manifest.json`` there is read and checked — it must parse (manifest.parse trusts
nothing), describe a backup of that host, and name a dump that is on the drive with
the size it records (and the globals companion it names, when it names one). Each
good manifest becomes a finished backup with one finished drive file (this drive),
with its original id, sizes and checksums; a backup already in the catalog gains the
drive file when it lacks it, and is otherwise left alone. Rebuilding twice adds
nothing (drive file ids are derived from the backup id and the drive).

Problems are reported, never trusted: a manifest that does not parse or does not
match its file, a manifest whose dump is missing, a dump without a manifest, a file
that is no backupmand file at all, a manifest of another host (``--host`` says which).
SHA-256 is not recomputed here (that would read every dump): restores and drills
check it before anything is loaded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

import structlog

from . import manifest as manifests
from .catalog import Catalog
from .drives.base import Drive, RemoteFile
from .errors import CatalogError, DriveError
from .models import Backup

log = structlog.get_logger("backupmand.rebuild")

#: Manifests read at once (listing 10,000 takes seconds, not minutes).
READ_CONCURRENCY = 32
_OURS = re.compile(r"^[a-z0-9-]+-\d{14}-[0-9a-f]{8}\.")


@dataclasses.dataclass
class Report:
    added: list[Backup] = dataclasses.field(default_factory=list)
    #: Backups already in the catalog that gained this drive's copy.
    completed: list[Backup] = dataclasses.field(default_factory=list)
    present: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)


async def read_manifests(drive: Drive[Any], files: list[RemoteFile], problems: list[str]
                         ) -> list[tuple[RemoteFile, manifests.Manifest]]:
    """Every manifest among ``files``, read concurrently (bounded); problems noted."""
    gate = asyncio.Semaphore(READ_CONCURRENCY)

    async def one(item: RemoteFile) -> tuple[RemoteFile, manifests.Manifest] | None:
        async with gate:
            try:
                data = await drive.read_bytes(item.path)
            except DriveError as error:
                problems.append(f"{item.path}: cannot be read ({error})")
                return None
        try:
            return item, manifests.parse(data, name=item.name)
        except manifests.ManifestError as error:
            problems.append(f"{item.path}: not a valid manifest ({error}); skipped")
            return None

    found = await asyncio.gather(*(one(item) for item in files
                                   if item.name.endswith(manifests.SUFFIX)))
    return [entry for entry in found if entry is not None]


def check_files(manifest: manifests.Manifest, by_name: dict[str, RemoteFile]) -> str | None:
    """Why the files a manifest names do not match what the drive holds (None: they do)."""
    dump = by_name.get(manifest.file)
    if dump is None:
        return f"its dump {manifest.file} is not on the drive"
    if dump.size is not None and dump.size != manifest.size:
        return f"its dump {manifest.file} holds {dump.size} bytes, the manifest says {manifest.size}"
    if manifest.globals_file is not None:
        companion = by_name.get(manifest.globals_file["File"])
        if companion is None:
            return f"its globals file {manifest.globals_file['File']} is not on the drive"
        if companion.size is not None and companion.size != manifest.globals_file["Size"]:
            return f"its globals file {companion.name} has the wrong size"
    return None


async def rebuild(catalog: Catalog, drive: Drive[Any], *, host: str,
                  dry_run: bool = False) -> Report:
    report = Report()
    files = await drive.list_files()
    by_name = {item.name: item for item in files}
    entries = await read_manifests(drive, files, report.problems)
    described: set[str] = set()
    good: list[tuple[RemoteFile, manifests.Manifest]] = []
    for item, manifest in entries:
        described.add(item.name)
        if manifest.host != host:
            report.problems.append(f"{item.path}: a backup of host {manifest.host!r}, not "
                                   f"{host!r} (rebuild with --host {manifest.host}); skipped")
            continue
        problem = check_files(manifest, by_name)
        if problem is not None:
            report.problems.append(f"{item.path}: {problem}; skipped")
            continue
        described.add(manifest.file)
        if manifest.globals_file is not None:
            described.add(manifest.globals_file["File"])
        good.append((item, manifest))
    for item in files:
        if item.name in described:
            continue
        if _OURS.match(item.name):
            report.problems.append(f"{item.path}: a backupmand file without a (valid) manifest; "
                                   "not imported")
        else:
            report.problems.append(f"{item.path}: not a backupmand file; ignored")
    good.sort(key=lambda entry: (entry[1].created_at, entry[1].backup_id))
    for item, manifest in good:
        globals_item = (by_name[manifest.globals_file["File"]]
                        if manifest.globals_file is not None else None)
        backup = manifest.to_backup(drive.label, drive.provider,
                                    dump_path=by_name[manifest.file].path,
                                    manifest_path=item.path,
                                    globals_path=globals_item.path if globals_item else None)
        if await catalog.has_backup(manifest.backup_id):
            current = await catalog.get_backup(manifest.backup_id)
            if current.drive_file(drive.label) is not None:
                report.present += 1
                continue
            report.completed.append(current)
            if not dry_run:
                await _add_drive_file(catalog, backup)
            continue
        report.added.append(backup)
        if not dry_run:
            try:
                await catalog.import_backup(backup)
            except CatalogError as error:
                report.problems.append(f"{item.path}: {error}")
                report.added.pop()
                continue
            log.info("rebuild.added", backup_id=backup.id, label=backup.label,
                     name=backup.name, drive=drive.label)
    return report


async def _add_drive_file(catalog: Catalog, backup: Backup) -> None:
    (record,) = backup.drive_files
    created = await catalog.create_drive_file(backup_id=backup.id, drive=record.drive,
                                              provider=record.provider, label=record.label)
    await catalog.update_drive_file(
        created.id, status=record.status, path=record.path, size=record.size,
        finished_at=record.finished_at, manifest_path=record.manifest_path,
        globals_path=record.globals_path)
