"""``backupmand fleet list --drive LABEL``: every host's backups on a shared drive.

The view of a fleet from the bucket alone, no central server: the drive is listed once
under every host's location (``{host}`` in its folder / prefix) — or, without
``{host}``, the one shared location — and the manifests are read concurrently
(bounded), so 10,000 of them take seconds. A backup counts for a host when its
manifest parses and its dump is there with the recorded size (a manifest is written
only after its dump was stored and verified). Newest first; per host and label, the
age of the latest one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from . import manifest as manifests
from .drives.base import Drive
from .models import rfc3339, utcnow
from .rebuild import check_files, read_manifests


@dataclasses.dataclass(frozen=True)
class Entry:
    host: str
    manifest: manifests.Manifest
    path: str


@dataclasses.dataclass
class Fleet:
    entries: list[Entry]
    problems: list[str]

    def latest(self) -> dict[tuple[str, str], Entry]:
        newest: dict[tuple[str, str], Entry] = {}
        for entry in self.entries:  # newest first
            newest.setdefault((entry.host, entry.manifest.label), entry)
        return newest

    def to_json(self, now: dt.datetime | None = None) -> dict[str, Any]:
        moment = now or utcnow()
        return {
            "Backups": [{
                "Host": entry.host, "Label": entry.manifest.label,
                "BackupId": entry.manifest.backup_id, "Provider": entry.manifest.provider,
                "Database": entry.manifest.database, "File": entry.manifest.file,
                "Path": entry.path, "Size": entry.manifest.size,
                "Sha256": entry.manifest.sha256,
                "Encrypted": entry.manifest.encryption is not None,
                "CreatedAt": rfc3339(entry.manifest.created_at),
                "FinishedAt": rfc3339(entry.manifest.finished_at),
            } for entry in self.entries],
            "Latest": [{
                "Host": host, "Label": label, "BackupId": entry.manifest.backup_id,
                "FinishedAt": rfc3339(entry.manifest.finished_at),
                "AgeSeconds": max(0, int((moment - entry.manifest.finished_at).total_seconds())),
            } for (host, label), entry in sorted(self.latest().items())],
            "Problems": self.problems,
        }


async def survey(drive: Drive[Any]) -> Fleet:
    files = await drive.list_files(all_hosts=True)
    problems: list[str] = []
    by_location: dict[str | None, dict[str, Any]] = {}
    for item in files:
        by_location.setdefault(item.host, {})[item.name] = item
    entries = []
    for item, manifest in await read_manifests(drive, files, problems):
        problem = check_files(manifest, by_location.get(item.host, {}))
        if problem is not None:
            problems.append(f"{item.path}: {problem}")
            continue
        entries.append(Entry(host=manifest.host, manifest=manifest,
                             path=by_location[item.host][manifest.file].path))
    entries.sort(key=lambda entry: (entry.manifest.finished_at, entry.manifest.backup_id),
                 reverse=True)
    return Fleet(entries, problems)
