"""The manifest: a description of one backup, stored next to its dump on every drive.

``<stem>.manifest.json`` (SPEC §6.2) says what the dump is (engine, versions, format,
compression, encryption recipients), how to check it (size, SHA-256, of the dump and
of its globals companion) and what it holds (exact rows per table, object counts), so
that a new machine with only the config file can find, verify and restore backups
from a drive, and ``catalog rebuild`` can recreate the catalog. It holds no data:
it is stored in plain JSON even when the dump is encrypted, and never names an
identity.

The manifest is built from the catalog's record alone (``build``), so a retried
upload writes exactly the same bytes. ``parse`` trusts nothing: every field is
checked for its type, and the file names must be the names a backupmand dump of
that stem would have.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from typing import Any

from .models import Backup, DriveFile, Status, rfc3339, utcnow
from .version import VERSION

FORMAT = "backupmand-manifest/1"
SUFFIX = ".manifest.json"
#: A dump's stem: ``<label slug>-<UTC yyyymmddHHMMSS>-<id prefix>``.
STEM = re.compile(r"^(?P<stem>[a-z0-9-]+-\d{14}-[0-9a-f]{8})\.")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PROVIDERS = ("postgres", "postgresql", "mysql", "mariadb", "sqlite")
COMPRESSIONS = ("zstd", "gzip", "none")


class ManifestError(ValueError):
    """Raised when a manifest does not parse or does not describe a backupmand dump."""


def stem(name: str) -> str:
    """The stem of a dump's file name (everything up to its extensions)."""
    match = STEM.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not the name of a backupmand dump")
    return match.group("stem")


def manifest_name(dump_name: str) -> str:
    return stem(dump_name) + SUFFIX


def globals_name(dump_name: str, compression_extension: str, encrypted: bool) -> str:
    return f"{stem(dump_name)}.globals.sql{compression_extension}{'.age' if encrypted else ''}"


@dataclasses.dataclass(frozen=True)
class Manifest:
    backup_id: str
    label: str
    host: str
    provider: str
    database: str | None
    server_version: str | None
    tool: str | None
    tool_version: str | None
    dump_format: str | None
    compression: str
    encryption: dict[str, Any] | None
    file: str
    size: int
    sha256: str
    raw_size: int | None
    globals_file: dict[str, Any] | None
    tables: dict[str, int]
    objects: dict[str, int]
    created_at: dt.datetime
    finished_at: dt.datetime
    backupmand_version: str = VERSION

    @property
    def name(self) -> str:
        return manifest_name(self.file)

    @property
    def recipients(self) -> list[str]:
        return list((self.encryption or {}).get("Recipients") or [])

    def to_json(self) -> dict[str, Any]:
        return {
            "Format": FORMAT, "BackupmandVersion": self.backupmand_version,
            "BackupId": self.backup_id, "Label": self.label, "Host": self.host,
            "Provider": self.provider, "Database": self.database,
            "ServerVersion": self.server_version, "Tool": self.tool,
            "ToolVersion": self.tool_version, "DumpFormat": self.dump_format,
            "Compression": self.compression, "Encryption": self.encryption,
            "File": self.file, "Size": self.size, "Sha256": self.sha256,
            "RawSize": self.raw_size, "Globals": self.globals_file,
            "Tables": self.tables, "Objects": self.objects,
            "CreatedAt": rfc3339(self.created_at), "FinishedAt": rfc3339(self.finished_at),
        }

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n").encode()

    def to_backup(self, drive: str, provider: str, *, dump_path: str,
                  manifest_path: str, globals_path: str | None) -> Backup:
        """The catalog record this manifest describes, finished, with one drive file (the
        drive it was read from)."""
        now = utcnow()
        record = DriveFile(
            id=_drive_file_id(self.backup_id, drive), backup_id=self.backup_id, drive=drive,
            provider=provider, label=self.file, path=dump_path, status=Status.FINISHED,
            size=self.size, error=None, attempts=0, created_at=now, updated_at=None,
            finished_at=self.finished_at, manifest_path=manifest_path,
            globals_path=globals_path)
        return Backup(
            id=self.backup_id, label=self.label, source_provider=self.provider,
            status=Status.FINISHED, dump_status=Status.FINISHED, name=self.file,
            dump_path=None, compression=self.compression, size=self.size, sha256=self.sha256,
            error=None, created_at=self.created_at, updated_at=now,
            finished_at=self.finished_at, drive_files=(record,), host=self.host,
            database=self.database, server_version=self.server_version, tool=self.tool,
            tool_version=self.tool_version, dump_format=self.dump_format,
            raw_size=self.raw_size, dumped_at=self.finished_at,
            row_count=sum(self.tables.values()), table_count=len(self.tables),
            objects=self.objects, encryption=self.encryption, globals_file=self.globals_file,
            manifest_name=self.name, tables=self.tables)


def _drive_file_id(backup_id: str, drive: str) -> str:
    """A stable id for a rebuilt drive file, so that rebuilding twice adds nothing."""
    import uuid

    return str(uuid.uuid5(uuid.UUID(backup_id), f"drive:{drive}"))


def build(backup: Backup) -> Manifest:
    """The manifest of a backup whose dump is finished (from its catalog record only)."""
    if backup.size is None or not backup.sha256 or backup.dumped_at is None:
        raise ValueError(f"backup {backup.id} has no finished dump to describe")
    return Manifest(
        backup_id=backup.id, label=backup.label, host=backup.host or "",
        provider=backup.source_provider, database=backup.database,
        server_version=backup.server_version, tool=backup.tool,
        tool_version=backup.tool_version, dump_format=backup.dump_format,
        compression=backup.compression, encryption=backup.encryption, file=backup.name,
        size=backup.size, sha256=backup.sha256, raw_size=backup.raw_size,
        globals_file=backup.globals_file, tables=dict(backup.tables or {}),
        objects=dict(backup.objects or {}), created_at=backup.created_at,
        finished_at=backup.dumped_at)


# ---------------------------------------------------------------------------- parsing


def _need(document: dict[str, Any], key: str, kinds: tuple[type, ...],
          nullable: bool = False) -> Any:
    if key not in document:
        raise ManifestError(f"{key} is missing")
    value = document[key]
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ManifestError(f"{key} has the wrong type")
    return value


def _time(document: dict[str, Any], key: str) -> dt.datetime:
    text = _need(document, key, (str,))
    if not _TIME.match(text):
        raise ManifestError(f"{key} is not an RFC 3339 UTC time")
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def _counts(document: dict[str, Any], key: str) -> dict[str, int]:
    value = _need(document, key, (dict,))
    if not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
               and v >= 0 for k, v in value.items()):
        raise ManifestError(f"{key} must map names to counts")
    return dict(value)


def _file_facts(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != {"File", "Size", "Sha256"}:
        raise ManifestError(f"{key} must be {{File, Size, Sha256}}")
    if not (isinstance(value["File"], str) and isinstance(value["Size"], int)
            and not isinstance(value["Size"], bool) and value["Size"] >= 0
            and isinstance(value["Sha256"], str) and _SHA256.match(value["Sha256"])):
        raise ManifestError(f"{key} has a field of the wrong type")
    return dict(value)


def parse(data: bytes, *, name: str | None = None) -> Manifest:
    """A manifest from its bytes; ManifestError saying what is wrong. With ``name`` (the
    manifest's own file name on the drive) the dump it names must have its stem."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ManifestError(f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ManifestError("not a JSON object")
    if document.get("Format") != FORMAT:
        raise ManifestError(f"Format is not {FORMAT!r}")
    backup_id = _need(document, "BackupId", (str,))
    if not _UUID.match(backup_id):
        raise ManifestError("BackupId is not a UUID")
    provider = _need(document, "Provider", (str,))
    if provider not in PROVIDERS:
        raise ManifestError(f"Provider {provider!r} is unknown")
    compression = _need(document, "Compression", (str,))
    if compression not in COMPRESSIONS:
        raise ManifestError(f"Compression {compression!r} is unknown")
    file = _need(document, "File", (str,))
    try:
        file_stem = stem(file)
    except ValueError:
        raise ManifestError("File is not the name of a backupmand dump") from None
    if "/" in file or not file_stem.endswith(backup_id[:8]):
        raise ManifestError("File does not carry the backup's id")
    if name is not None and name != file_stem + SUFFIX:
        raise ManifestError(f"the manifest {name} describes another file ({file})")
    sha256 = _need(document, "Sha256", (str,))
    if not _SHA256.match(sha256):
        raise ManifestError("Sha256 is not a SHA-256")
    size = _need(document, "Size", (int,))
    if size < 0:
        raise ManifestError("Size is negative")
    encryption = _need(document, "Encryption", (dict,), nullable=True)
    if encryption is not None:
        recipients = encryption.get("Recipients")
        if encryption.get("Scheme") != "age" or not (
                isinstance(recipients, list) and recipients
                and all(isinstance(item, str) for item in recipients)):
            raise ManifestError('Encryption must be {"Scheme": "age", "Recipients": [...]}')
        if not file.endswith(".age"):
            raise ManifestError("an encrypted dump's File must end in .age")
    elif file.endswith(".age"):
        raise ManifestError("File ends in .age but Encryption is null")
    raw_globals = _need(document, "Globals", (dict,), nullable=True)
    globals_file = None if raw_globals is None else _file_facts(raw_globals, "Globals")
    if globals_file is not None and not globals_file["File"].startswith(file_stem + ".globals."):
        raise ManifestError("Globals.File does not belong to this dump")
    label = _need(document, "Label", (str,))
    if not label:
        raise ManifestError("Label is empty")
    return Manifest(
        backup_id=backup_id, label=label, host=_need(document, "Host", (str,)),
        provider=provider, database=_need(document, "Database", (str,), nullable=True),
        server_version=_need(document, "ServerVersion", (str,), nullable=True),
        tool=_need(document, "Tool", (str,), nullable=True),
        tool_version=_need(document, "ToolVersion", (str,), nullable=True),
        dump_format=_need(document, "DumpFormat", (str,), nullable=True),
        compression=compression, encryption=encryption, file=file, size=size,
        sha256=sha256, raw_size=_need(document, "RawSize", (int,), nullable=True),
        globals_file=globals_file, tables=_counts(document, "Tables"),
        objects=_counts(document, "Objects"), created_at=_time(document, "CreatedAt"),
        finished_at=_time(document, "FinishedAt"),
        backupmand_version=str(document.get("BackupmandVersion") or "?"))
