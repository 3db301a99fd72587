"""Backups, drive files and their statuses: data only.

Each record's API object is defined once, here, by a field list (``BACKUP_FIELDS``,
``DRIVE_FILE_FIELDS``): ``to_api`` renders it in Python, the catalog renders the same
object in SQL for ``GET /api/backups`` (catalog.render_sql), and the OpenAPI document
takes its schemas from it (openapi.py). A new field is one entry in a list (and its
catalog column); tests compare the three renderings.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from enum import StrEnum
from typing import Any, Literal


class Status(StrEnum):
    PENDING = "pending"
    FINISHED = "finished"
    FAILED = "failed"


class Verification(StrEnum):
    PASSED = "passed"
    FAILED = "failed"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def to_db_time(moment: dt.datetime) -> str:
    """Sortable UTC text with microseconds: the catalog's storage format."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_db_time(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    # to_db_time's text; fromisoformat reads it (Z included, Python 3.11+) 20 times faster
    # than strptime, which dominated reading a long list of backups.
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


def rfc3339(moment: dt.datetime | None) -> str | None:
    """The API's timestamp format: RFC 3339, UTC, whole seconds, ending in Z."""
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------- field lists

Kind = Literal["text", "integer", "boolean", "time", "status", "json"]


@dataclasses.dataclass(frozen=True)
class ApiField:
    """One field of an API object: its name there, where its value lives, its schema."""

    api: str  # PascalCase, as in the API
    attr: str  # the model's attribute (and, unless ``column`` says otherwise, the column)
    kind: Kind
    nullable: bool
    description: str
    schema: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra JSON Schema
    column: str | None = None

    @property
    def sql_column(self) -> str:
        return self.column or self.attr


def _f(api: str, attr: str, kind: Kind, nullable: bool, description: str, *,
       column: str | None = None, **schema: Any) -> ApiField:
    return ApiField(api, attr, kind, nullable, description, schema, column)


DRIVE_FILE_FIELDS: tuple[ApiField, ...] = (
    _f("Id", "id", "text", False, "Unique id of this drive file record.", format="uuid"),
    _f("BackupId", "backup_id", "text", False, "The parent backup's Id.", format="uuid"),
    _f("Provider", "provider", "text", False, "The storage provider.",
       enum=["local", "s3", "google_drive"]),
    _f("Label", "label", "text", False, "The name of the file on the storage provider."),
    _f("Path", "path", "text", True,
       "Full path / key / identifier on the provider (null until known)."),
    _f("Status", "status", "status", False,
       "finished once the dump and its companions (globals file, manifest) are stored and "
       "verified on this drive."),
    _f("CreatedAt", "created_at", "time", False, "When the record was created."),
    _f("UpdatedAt", "updated_at", "time", True, "Last change."),
    _f("Drive", "drive", "text", False, "The drive's label in the config."),
    _f("Size", "size", "integer", True, "Bytes stored on the drive (null until uploaded).",
       minimum=0),
    _f("Error", "error", "text", True, "Why the upload failed (null otherwise)."),
    _f("Attempts", "attempts", "integer", False, "Upload attempts made so far.", minimum=0),
    _f("FinishedAt", "finished_at", "time", True, "When the upload was verified."),
    _f("ManifestPath", "manifest_path", "text", True,
       "Path / key / id of the backup's manifest on this drive (null until stored)."),
    _f("GlobalsPath", "globals_path", "text", True,
       "Path / key / id of the globals companion file on this drive (null when none)."),
    _f("Missing", "missing", "boolean", False,
       "The stored file was found missing on the drive (retention checks before it deletes "
       "older backups); it is not counted as a copy."),
)

BACKUP_FIELDS: tuple[ApiField, ...] = (
    _f("Id", "id", "text", False, "Unique id (UUID).", format="uuid"),
    _f("Status", "status", "status", False,
       "finished only when the dump succeeded and every drive file is finished; failed when "
       "the dump or any drive file failed; pending while work is in flight."),
    _f("Label", "label", "text", False, "The data source's label from the config."),
    _f("DumpPath", "dump_path", "text", True,
       "Local path of the dump while it is kept (null once removed)."),
    _f("CreatedAt", "created_at", "time", False, "When the backup was created."),
    _f("UpdatedAt", "updated_at", "time", True, "Last change (null until the first change)."),
    # DriveFiles sits here in every rendering (see Backup.to_api and catalog.render_sql).
    _f("Provider", "source_provider", "text", False, "The data source's provider.",
       enum=["postgres", "postgresql", "mysql", "mariadb", "sqlite"]),
    _f("Name", "name", "text", False, "The dump's file name, also its name on every drive."),
    _f("Size", "size", "integer", True,
       "Size of the stored (compressed, encrypted) dump in bytes (null until dumped).",
       minimum=0),
    _f("Sha256", "sha256", "text", True, "SHA-256 of the stored dump (null until dumped).",
       pattern="^[0-9a-f]{64}$"),
    _f("Compression", "compression", "text", False, "The dump's compression.",
       enum=["zstd", "gzip", "none"]),
    _f("Error", "error", "text", True, "Why the backup failed (null otherwise)."),
    _f("FinishedAt", "finished_at", "time", True, "When the backup finished."),
    _f("Sequence", "seq", "integer", False,
       "The catalog's creation order (higher is newer; never the wall clock alone).",
       minimum=1),
    _f("Host", "host", "text", True, "The host that made the backup."),
    _f("Database", "database", "text", True, "The database dumped (the file for SQLite)."),
    _f("ServerVersion", "server_version", "text", True, "The database server's version."),
    _f("Tool", "tool", "text", True, "The dump tool (pg_dump, mariadb-dump, sqlite3)."),
    _f("ToolVersion", "tool_version", "text", True, "The dump tool's version."),
    _f("DumpFormat", "dump_format", "text", True, "plain, custom or sqlite."),
    _f("RawSize", "raw_size", "integer", True, "Bytes the dump tool produced.", minimum=0),
    _f("DumpedAt", "dumped_at", "time", True,
       "When the dump ended (the manifest's FinishedAt); the backup finishes once every "
       "drive holds a verified copy."),
    _f("RowCount", "row_count", "integer", True,
       "Rows in the dump, all tables together (exact).", minimum=0),
    _f("TableCount", "table_count", "integer", True, "Tables in the dump.", minimum=0),
    _f("Objects", "objects", "json", True,
       "Objects in the dump by kind (tables, views, sequences, routines, triggers, events, "
       "large_objects).", column="objects_json"),
    _f("Encryption", "encryption", "json", True,
       'How the stored files are encrypted: {"Scheme": "age", "Recipients": [...]} (null: '
       "not encrypted).", column="encryption_json"),
    _f("Globals", "globals_file", "json", True,
       'The companion file of server-wide objects: {"File", "Size", "Sha256"} (null: none).',
       column="globals_json"),
    _f("Manifest", "manifest_name", "text", True,
       "The name of the manifest stored next to the dump on every drive."),
    _f("Verification", "verification", "text", True,
       "The latest restore drill's outcome: passed, failed, or null (never drilled).",
       enum=["passed", "failed", None]),
    _f("VerifiedAt", "verified_at", "time", True, "When the latest drill ended."),
    _f("VerifyError", "verify_error", "text", True, "Which check the latest drill failed."),
    _f("Suspect", "suspect", "boolean", False,
       "Much smaller than the label's recent backups (in size or rows); it stays finished."),
    _f("SuspectReason", "suspect_reason", "text", True, "Why it was flagged suspect."),
    _f("Pinned", "pinned", "boolean", False, "Never deleted by retention or prune."),
    _f("PinNote", "pin_note", "text", True, "Why it is pinned."),
)


def api_value(field: ApiField, value: Any) -> Any:
    """A model attribute's value as the API shows it."""
    if value is None:
        return None
    if field.kind == "time":
        return rfc3339(value)
    if field.kind == "status":
        return value.value
    return value


# ---------------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True, slots=True)
class DriveFile:
    id: str
    backup_id: str
    drive: str  # the drive's config label
    provider: str  # local | s3 | google_drive
    label: str  # the file's name on the provider
    path: str | None
    status: Status
    size: int | None
    error: str | None
    attempts: int
    created_at: dt.datetime
    updated_at: dt.datetime | None
    finished_at: dt.datetime | None
    manifest_path: str | None = None
    globals_path: str | None = None
    missing: bool = False

    def to_api(self) -> dict[str, Any]:
        return {field.api: api_value(field, getattr(self, field.attr))
                for field in DRIVE_FILE_FIELDS}


@dataclasses.dataclass(frozen=True, slots=True)
class Backup:
    id: str
    label: str  # the data source's label
    source_provider: str
    status: Status
    dump_status: Status  # the dump step alone: a retry re-runs it only when it failed
    name: str  # the dump's file name, also its name on every drive
    dump_path: str | None
    compression: str
    size: int | None
    sha256: str | None
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime | None
    finished_at: dt.datetime | None
    drive_files: tuple[DriveFile, ...] = ()
    seq: int = 0
    host: str | None = None
    database: str | None = None
    server_version: str | None = None
    tool: str | None = None
    tool_version: str | None = None
    dump_format: str | None = None
    raw_size: int | None = None
    dumped_at: dt.datetime | None = None
    row_count: int | None = None
    table_count: int | None = None
    objects: dict[str, int] | None = None
    encryption: dict[str, Any] | None = None
    globals_file: dict[str, Any] | None = None
    manifest_name: str | None = None
    verification: str | None = None
    verified_at: dt.datetime | None = None
    verify_error: str | None = None
    suspect: bool = False
    suspect_reason: str | None = None
    pinned: bool = False
    pin_note: str | None = None
    #: Exact rows per table in the dump (in the manifest and the catalog, not in the
    #: API object: it can be long).
    tables: dict[str, int] | None = None

    def to_api(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for field in BACKUP_FIELDS:
            body[field.api] = api_value(field, getattr(self, field.attr))
            if field.api == "UpdatedAt":
                body["DriveFiles"] = [drive_file.to_api() for drive_file in self.drive_files]
        return body

    def drive_file(self, drive_label: str) -> DriveFile | None:
        for drive_file in self.drive_files:
            if drive_file.drive == drive_label:
                return drive_file
        return None

    @property
    def encrypted(self) -> bool:
        return self.encryption is not None

    @property
    def recipients(self) -> list[str]:
        return list((self.encryption or {}).get("Recipients") or [])


def dumps_json(value: Any) -> str | None:
    """A JSON column's text (None stays NULL)."""
    return None if value is None else json.dumps(value, separators=(",", ":"))


def loads_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)
