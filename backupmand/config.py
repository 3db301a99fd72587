"""YAML to validated, frozen settings.

Loading happens in three steps, each reporting every problem it finds at once:

1. ``${VAR}`` / ``${VAR:-default}`` expansion in every string value;
2. ``<key>_file`` secrets: the file's stripped content becomes ``<key>`` (relative
   paths are looked up in ``$CREDENTIALS_DIRECTORY``, systemd's credentials);
3. validation against the pydantic models below (unknown keys are errors).

Problems are reported with the path of the key at fault (``data_sources[1].port: ...``,
``drives[0].provider: ...``, never only its parent) and never with the offending
value, so a secret cannot leak through an error message. A validator that checks
several keys together raises KeyProblem to say which key its message is about.

Checks across sections (folders and buckets two parts of the config would share) run
once the settings are valid, and report every overlap with both key paths.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import ConfigError
from .locks import slug

DEFAULT_CONFIG_PATH = Path("/etc/backupmand/config.yml")
DEFAULT_STATE_DIRECTORY = Path("/var/lib/backupmand")

#: Keys whose values are secrets: masked in check-config, never echoed in errors,
#: and accepted as ``<key>_file``.
SECRET_KEYS = frozenset(
    {"password", "access_key", "secret_key", "smtp_password", "token", "api_keys", "url_secret",
     "secret", "urls"}
)
#: Secret keys whose ``_file`` holds one value per line (a list).
LIST_SECRET_KEYS = frozenset({"api_keys", "urls"})

Compression = Literal["zstd", "gzip", "none"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


def _label_ok(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if any(ch in value for ch in "/\\\0\n\r"):
        raise ValueError("must not contain slashes, NUL or line breaks")
    return value


def _identifier_ok(value: str) -> str:
    """A database or user name: passed to the tools as one argument or option-file value."""
    if not value:
        raise ValueError("must not be empty")
    if any(ch in value for ch in "\0\n\r"):
        raise ValueError("must not contain NUL or line breaks")
    return value


class KeyProblem(ValueError):
    """Raised by a validator whose problem is with one key below the model it validates.

    ``key`` is relative to that model (``cron``, ``recipients[0]``, ``[1]`` for a list
    item); the reported path is the model's path joined with it.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


#: The shortest accepted secrets, in bytes: an HMAC key for download URLs, an API key.
MIN_URL_SECRET_BYTES = 32
MIN_API_KEY_BYTES = 16
#: Signed download URLs valid longer than this are warned about (a leaked URL lives on).
LONG_DOWNLOAD_URL_TTL = 7 * 24 * 3600


Label = Annotated[str, Field(min_length=1, max_length=100)]
Port = Annotated[int, Field(ge=1, le=65535)]


# --------------------------------------------------------------------------- catalog


class DatabaseConfig(Model):
    """The catalog: where backupmand records its backups."""

    provider: str = "sqlite"
    db_path: Path = DEFAULT_STATE_DIRECTORY / "backupmand.db"

    @field_validator("provider")
    @classmethod
    def _provider(cls, value: str) -> str:
        if value not in ("sqlite", "memory"):
            raise ValueError(
                f"catalog provider {value!r} is not supported: backupmand keeps its catalog in "
                "'sqlite' (a file) or 'memory'; backups recorded in another database by the Go "
                "backupman are not imported"
            )
        return value


# --------------------------------------------------------------------------- sources


# --------------------------------------------------------------------------- encryption


class EncryptionConfig(Model):
    """age public-key encryption (SPEC §6.4): the host needs only the recipients."""

    recipients: tuple[str, ...] = ()
    recipients_file: Path | None = None
    identity_file: Path | None = None

    @model_validator(mode="after")
    def _has_recipients(self) -> EncryptionConfig:
        from .encryption import check_recipient  # late: keeps the age library off --help

        if self.recipients and self.recipients_file is not None:
            raise KeyProblem("recipients_file", "give either recipients or recipients_file, "
                             "not both")
        for index, recipient in enumerate(self.recipients):
            try:
                check_recipient(recipient)
            except ValueError as error:
                raise KeyProblem(f"recipients[{index}]", str(error)) from None
        if self.recipients_file is not None:
            try:
                lines = self.recipient_lines()
            except ValueError as error:
                raise KeyProblem("recipients_file", str(error)) from None
            for number, recipient in enumerate(lines, start=1):
                try:
                    check_recipient(recipient)
                except ValueError as error:
                    raise KeyProblem("recipients_file", f"line {number}: {error}") from None
        if not self.all_recipients():
            raise KeyProblem("recipients", "encryption needs at least one recipient "
                             "(recipients or recipients_file)")
        return self

    def recipient_lines(self) -> list[str]:
        """The recipients of recipients_file (comments and blank lines skipped)."""
        if self.recipients_file is None:
            return []
        try:
            text = self.recipients_file.expanduser().read_text(encoding="utf-8")
        except OSError as error:
            raise ValueError(f"cannot read {self.recipients_file}: "
                             f"{error.strerror or error}") from None
        return [line.strip() for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]

    def all_recipients(self) -> tuple[str, ...]:
        return self.recipients or tuple(self.recipient_lines())


class VerifyTarget(Model):
    """Where a restore drill loads its scratch database instead of the source's server."""

    host: str = "127.0.0.1"
    port: Port | None = None  # None: the source's port
    user: str | None = None  # None: the source's user
    password: SecretStr | None = None


class SourceBase(Model):
    label: Label
    tmp_folder: Path = DEFAULT_STATE_DIRECTORY / "tmp"
    compression: Compression | None = None  # None: the top-level default
    compression_level: int | None = Field(default=None, ge=-7, le=22)
    timeout: float = Field(default=6 * 3600, gt=0, description="seconds a dump may take")
    #: Replaces the top-level ``encryption`` for this source; ``null`` turns it off.
    encryption: EncryptionConfig | None = None
    verify_timeout: float = Field(default=3600, gt=0,
                                  description="seconds a restore drill may take")

    @field_validator("label")
    @classmethod
    def _check_label(cls, value: str) -> str:
        return _label_ok(value)


class ServerSourceBase(SourceBase):
    """A database server reached with a database name and a user."""

    @field_validator("db_name", "user", check_fields=False)
    @classmethod
    def _name(cls, value: str) -> str:
        return _identifier_ok(value)


class PostgresSource(ServerSourceBase):
    provider: Literal["postgres", "postgresql"]
    host: str = "127.0.0.1"
    port: Port = 5432
    db_name: str
    user: str = "postgres"
    password: SecretStr | None = None
    tls: bool = False
    ssl_mode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = None
    ca_file: Path | None = None
    format: Literal["plain", "custom"] = "plain"
    options: tuple[str, ...] = ()
    #: Store the server-wide objects the database needs (roles, memberships,
    #: tablespaces) in a companion file (SPEC §6.1).
    globals: bool = True
    #: Include the roles' password hashes in the globals file (pg_authid: superuser only).
    role_passwords: bool = False
    verify_target: VerifyTarget | None = None
    #: ``pg_restore -j N`` for custom-format restores (from a staged file).
    restore_jobs: int = Field(default=1, ge=1, le=64)

    @field_validator("options")
    @classmethod
    def _options(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        from .sources.options import check_pg_dump_options  # late: sources import config

        return check_pg_dump_options(value, custom=info.data.get("format") == "custom")


class MysqlSource(ServerSourceBase):
    provider: Literal["mysql", "mariadb"]
    host: str = "127.0.0.1"
    port: Port = 3306
    db_name: str
    user: str = "root"
    password: SecretStr | None = None
    tls: bool = False
    ca_file: Path | None = None
    options: tuple[str, ...] = ()
    #: Store the users and grants the database needs in a companion file (SPEC §6.1).
    globals: bool = True
    verify_target: VerifyTarget | None = None

    @field_validator("options")
    @classmethod
    def _options(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from .sources.options import check_mysqldump_options  # late: sources import config

        return check_mysqldump_options(value)


class SqliteSource(SourceBase):
    provider: Literal["sqlite"]
    db_path: Path


DataSource = Annotated[
    PostgresSource | MysqlSource | SqliteSource, Field(discriminator="provider")
]


# --------------------------------------------------------------------------- drives


class DriveBase(Model):
    label: Label
    attempts: int | None = Field(default=None, ge=1, le=100)

    @field_validator("label")
    @classmethod
    def _check_label(cls, value: str) -> str:
        return _label_ok(value)


def _host_segment_ok(value: str) -> str:
    """``{host}`` in a drive's folder or prefix stands for one whole path segment, once:
    the drives list and match locations segment by segment."""
    if "{host}" not in value:
        return value
    if value.count("{host}") > 1:
        raise ValueError("may contain {host} only once")
    if "{host}" not in value.split("/"):
        raise ValueError("{host} must be a whole path segment (such as backups/{host}/nightly), "
                         f"not part of one: {value!r}")
    return value


class LocalDrive(DriveBase):
    provider: Literal["local"]
    folder: Path

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: Path) -> Path:
        _host_segment_ok(str(value))
        return value


class S3Drive(DriveBase):
    provider: Literal["s3"]
    bucket: str = Field(min_length=3, max_length=63)
    region: str = "us-east-1"
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    endpoint: str = ""
    prefix: str = ""
    force_path_style: bool = False
    # Send a SHA-256 with every part (S3 checks it on arrival) and check the checksum S3
    # reports after the upload; false for S3-compatible services that reject checksums.
    checksums: bool = True
    # Send ``If-None-Match: *`` so that nothing is ever overwritten, even by a concurrent
    # writer; false for S3-compatible services that reject conditional writes.
    conditional_writes: bool = True
    #: Multipart parts in flight at once (SPEC §6.5).
    part_concurrency: int = Field(default=4, ge=1, le=64)
    #: The first part size; grown as a stream grows so that no upload needs more than
    #: 10,000 parts.
    part_size: int = Field(default=16 * 1024 * 1024, ge=5 * 1024 * 1024, le=5 * 1024**3)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _host_segment_ok(value)

    @model_validator(mode="after")
    def _keys_together(self) -> S3Drive:
        if (self.access_key is None) != (self.secret_key is None):
            missing = "secret_key" if self.secret_key is None else "access_key"
            raise KeyProblem(missing, "access_key and secret_key go together (or neither, for "
                             "the default credential chain)")
        return self


class GoogleDrive(DriveBase):
    provider: Literal["google_drive", "gdrive"]
    folder: str = "backups"
    client_secret_file: Path
    token_file: Path
    api_url: str = "https://www.googleapis.com/"
    token_uri: str = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
    chunk_size: int = Field(default=8 * 1024 * 1024, ge=256 * 1024)

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str) -> str:
        return _host_segment_ok(value)

    @field_validator("chunk_size")
    @classmethod
    def _chunk(cls, value: int) -> int:
        if value % (256 * 1024):
            raise ValueError("must be a multiple of 256 KiB (Drive's resumable upload rule)")
        return value


DriveConfig = Annotated[LocalDrive | S3Drive | GoogleDrive, Field(discriminator="provider")]


# --------------------------------------------------------------------------- notifiers


class MailDestination(Model):
    name: str = ""
    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]


class MailNotifier(Model):
    enabled: bool = False
    smtp_host: str = "localhost"
    smtp_port: Port | None = None  # None: 465 for ssl, 587 for tls/starttls, 25 for none
    smtp_user: str = ""
    smtp_password: SecretStr | None = None
    smtp_crypto: Literal["ssl", "tls", "starttls", "none"] = "starttls"
    ca_file: Path | None = None
    sender: str = ""
    destinations: tuple[MailDestination, ...] = ()
    only_on_failure: bool = False
    timeout: float = Field(default=30, gt=0)

    @model_validator(mode="after")
    def _needs_destinations(self) -> MailNotifier:
        if self.enabled and not self.destinations:
            raise KeyProblem("destinations", "mail is enabled but has no destinations")
        return self


class WebhookEndpoint(Model):
    name: str
    url: Annotated[str, Field(pattern=r"^https?://")]
    token: SecretStr | None = None
    secret: SecretStr | None = None
    only_on_failure: bool = False

    @field_validator("secret")
    @classmethod
    def _signing_key(cls, value: SecretStr | None) -> SecretStr | None:
        from .notifiers.webhook import signing_key  # late: notifiers import config

        if value is not None:
            signing_key(value.get_secret_value())
        return value


class WebhookNotifier(Model):
    enabled: bool = False
    endpoints: tuple[WebhookEndpoint, ...] = ()
    timeout: float = Field(default=10, gt=0)
    attempts: int = Field(default=3, ge=1, le=20)
    backoff: float = Field(default=1.0, ge=0, description="seconds before the first retry, "
                           "doubled for each next one (at most 30)")

    @model_validator(mode="after")
    def _needs_endpoints(self) -> WebhookNotifier:
        if self.enabled and not self.endpoints:
            raise KeyProblem("endpoints", "webhook is enabled but has no endpoints")
        return self


HttpUrl = Annotated[str, Field(pattern=r"^https?://")]


class PingNotifier(Model):
    """Dead-man pings (healthchecks.io, Uptime Kuma push).

    ``url`` is pinged for every data source; ``urls`` maps a data source's label to
    its own check URL (one check per source, so that one source's success never hides
    another's failure). A source with neither is not pinged.
    """

    enabled: bool = False
    url: HttpUrl | None = None
    urls: dict[str, HttpUrl] = Field(default_factory=dict)
    start_suffix: str = "/start"
    success_suffix: str = ""
    fail_suffix: str = "/fail"
    send_start: bool = True
    method: Literal["GET", "POST"] = "GET"
    timeout: float = Field(default=10, gt=0)
    attempts: int = Field(default=3, ge=1, le=20)
    backoff: float = Field(default=1.0, ge=0)

    @model_validator(mode="after")
    def _needs_url(self) -> PingNotifier:
        if self.enabled and self.url is None and not self.urls:
            raise KeyProblem("url", "ping is enabled but has neither url nor urls")
        return self


NotifyEvent = Literal["backup_failed", "backup_finished", "verify_failed", "backup_suspect",
                      "schedule_failed"]


class AppriseNotifier(Model):
    """Any channel Apprise knows (Slack, Telegram, ntfy, Matrix, mail, ...): its URLs
    carry their credentials, so they are secrets (``urls_file``: one per line)."""

    enabled: bool = False
    urls: tuple[SecretStr, ...] = ()
    events: tuple[NotifyEvent, ...] = ("backup_failed", "verify_failed", "backup_suspect")
    timeout: float = Field(default=30, gt=0)

    @model_validator(mode="after")
    def _needs_urls(self) -> AppriseNotifier:
        if self.enabled and not self.urls:
            raise KeyProblem("urls", "apprise is enabled but has no urls")
        return self


class NotifiersConfig(Model):
    mail: MailNotifier = MailNotifier()
    webhook: WebhookNotifier = WebhookNotifier()
    ping: PingNotifier = PingNotifier()
    apprise: AppriseNotifier = AppriseNotifier()


# --------------------------------------------------------------------------- the rest


_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?$")


def parse_duration(text: str) -> dt.timedelta:
    """restic's duration for ``keep_within``: ``2d``, ``1y5m7d2h`` (a year is 365 days, a
    month 30); ValueError for anything else."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise ValueError("must be a duration such as 2d, 12h, 3w or 1y6m (y, m, w, d, h)")
    years, months, weeks, days, hours = (int(part or 0) for part in match.groups())
    return dt.timedelta(days=365 * years + 30 * months + 7 * weeks + days, hours=hours)


class RetentionConfig(Model):
    enabled: bool = False
    by: Literal["age", "count", "gfs"] = "age"
    value: int = Field(default=30, ge=1)
    min_keep: int = Field(default=1, ge=0)
    keep_last: int = Field(default=0, ge=0)
    keep_hourly: int = Field(default=0, ge=0)
    keep_daily: int = Field(default=0, ge=0)
    keep_weekly: int = Field(default=0, ge=0)
    keep_monthly: int = Field(default=0, ge=0)
    keep_yearly: int = Field(default=0, ge=0)
    keep_within: str | None = None

    @field_validator("keep_within")
    @classmethod
    def _within(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _gfs_keeps_something(self) -> RetentionConfig:
        rules = (self.keep_last, self.keep_hourly, self.keep_daily, self.keep_weekly,
                 self.keep_monthly, self.keep_yearly)
        if self.by == "gfs" and not any(rules) and self.keep_within is None:
            raise KeyProblem("by", "gfs needs at least one keep_* rule (keep_last, keep_daily, "
                             "..., keep_within)")
        return self

    @property
    def within(self) -> dt.timedelta | None:
        return parse_duration(self.keep_within) if self.keep_within is not None else None


class AnomalyConfig(Model):
    """Suspicious dumps (SPEC §6.3): smaller than (1 - threshold) x the median of the
    label's previous ``history`` finished backups, in size or in total rows."""

    enabled: bool = True
    threshold: float = Field(default=0.5, gt=0, lt=1)
    history: int = Field(default=5, ge=1, le=100)


class UploadsConfig(Model):
    """How each drive's upload is retried (exponential backoff with equal jitter), and
    how the dump streams to every drive while it runs (SPEC §6.5)."""

    attempts: int = Field(default=5, ge=1, le=100)
    initial_backoff: float = Field(default=2.0, ge=0)
    max_backoff: float = Field(default=60.0, ge=0)
    #: Send the dump to the drives while it runs (false: dump first, then upload). The
    #: drives read the stage file as it grows, so a slow drive never holds the dump or
    #: the other drives up, and no buffer in memory can fill: there is none to size.
    stream: bool = True


class BackupJob(Model):
    enabled: bool = True
    cron: str = "0 3 * * *"
    timezone: str | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        from .schedule import resolve_timezone  # late: keeps APScheduler off the --help path

        resolve_timezone(value)
        return value

    @model_validator(mode="after")
    def _valid(self) -> BackupJob:
        from .schedule import CronError, parse_cron

        try:
            parse_cron(self.cron, self.timezone)
        except CronError as error:
            raise KeyProblem("cron", str(error)) from None
        return self


class VerifyJob(BackupJob):
    """Restore drills of the latest finished backup of every source (SPEC §6.3)."""

    enabled: bool = False
    cron: str = "0 5 * * *"


class HttpConfig(Model):
    app_url: str = "http://localhost:8080"
    listen: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    api_keys: tuple[SecretStr, ...] = ()
    url_secret: SecretStr | None = None
    download_url_ttl: int = Field(default=3600, ge=1)
    backup_job: BackupJob = BackupJob()
    verify_job: VerifyJob = VerifyJob()
    #: Seconds a connection may stay open without a request in progress (before its
    #: first request and between keep-alive requests) before the daemon closes it.
    idle_timeout: float = Field(default=5.0, gt=0, le=3600)
    #: Connections served at once; past it, the longest-open connection without a
    #: request in progress is closed to make room (so idle connections never lock the
    #: operator out).
    max_connections: int = Field(default=512, ge=8, le=65536)

    @field_validator("api_keys")
    @classmethod
    def _long_api_keys(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for index, key in enumerate(value):
            if len(key.get_secret_value().encode("utf-8")) < MIN_API_KEY_BYTES:
                raise KeyProblem(f"[{index}]", f"an API key needs at least {MIN_API_KEY_BYTES} "
                                 "bytes (for example: openssl rand -hex 16)")
        return value

    @field_validator("url_secret")
    @classmethod
    def _long_url_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode("utf-8")) < (
                MIN_URL_SECRET_BYTES):
            raise ValueError(f"needs at least {MIN_URL_SECRET_BYTES} bytes (for example: "
                             "openssl rand -hex 32), or leave it out to have a key generated")
        return value


class Settings(Model):
    database: DatabaseConfig = DatabaseConfig()
    data_sources: tuple[DataSource, ...] = Field(min_length=1)
    drives: tuple[DriveConfig, ...] = Field(min_length=1)
    notifiers: NotifiersConfig = NotifiersConfig()
    compression: Compression = "zstd"
    compression_level: int | None = Field(default=None, ge=-7, le=22)
    compression_threads: int = Field(default=0, ge=0, le=64)  # 0: one per core (zstd)
    retention: RetentionConfig = RetentionConfig()
    uploads: UploadsConfig = UploadsConfig()
    http: HttpConfig = HttpConfig()
    state_dir: Path | None = None
    shutdown_grace: float = Field(default=10.0, ge=0)
    dump_concurrency: int = Field(default=1, ge=1, le=16)
    #: This host's name in manifests and in ``{host}`` (default: the machine's hostname).
    host: str | None = None
    encryption: EncryptionConfig | None = None
    anomaly: AnomalyConfig = AnomalyConfig()

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", value):
            raise ValueError("must be a host name: letters, digits, '.', '_' and '-', at most "
                             "63 characters, starting with a letter or digit")
        return value

    @model_validator(mode="after")
    def _ping_labels_known(self) -> Settings:
        known = {source.label for source in self.data_sources}
        unknown = sorted(set(self.notifiers.ping.urls) - known)
        if unknown:
            raise KeyProblem(f"notifiers.ping.urls.{unknown[0]}",
                             f"no data source is labelled {unknown[0]!r}")
        return self

    @model_validator(mode="after")
    def _unique_labels(self) -> Settings:
        for kind, items in (("data_sources", self.data_sources), ("drives", self.drives)):
            seen: dict[str, int] = {}
            for index, item in enumerate(items):
                key = slug(item.label)
                if key in seen:
                    raise KeyProblem(
                        f"{kind}[{index}].label",
                        f"{item.label!r} is used twice (also {kind}[{seen[key]}].label; labels "
                        "are compared ignoring case and punctuation, as they name files)")
                seen[key] = index
        return self

    def warnings(self) -> list[str]:
        """Settings that are valid but probably unwise, each with its key path."""
        found: list[str] = []
        ttl = self.http.download_url_ttl
        if ttl > LONG_DOWNLOAD_URL_TTL:
            found.append(
                f"http.download_url_ttl: {ttl} s is more than 7 days: a signed download URL "
                "that leaks (a chat message, a proxy log) downloads the backup until it expires")
        return found

    # ---- derived values

    @property
    def state_directory(self) -> Path:
        """Where the daemon keeps its locks and the download-URL key."""
        if self.state_dir is not None:
            return self.state_dir
        if self.database.provider == "sqlite":
            return self.database.db_path.parent
        return Path(os.environ.get("STATE_DIRECTORY", str(DEFAULT_STATE_DIRECTORY))).resolve()

    @property
    def host_name(self) -> str:
        """This host's name: ``host``, else the machine's short hostname."""
        if self.host is not None:
            return self.host
        import socket

        name = socket.gethostname().split(".")[0] or "localhost"
        return re.sub(r"[^A-Za-z0-9._-]", "-", name)[:63]

    def encryption_for(self, source: SourceBase) -> EncryptionConfig | None:
        """The source's own ``encryption`` block when it has the key (null: off), else the
        top-level one."""
        if "encryption" in source.model_fields_set:
            return source.encryption
        return self.encryption

    def compression_for(self, source: SourceBase) -> tuple[str, int | None]:
        name = source.compression or self.compression
        level = source.compression_level if source.compression_level is not None else (
            self.compression_level)
        return name, level

    def source(self, label: str) -> PostgresSource | MysqlSource | SqliteSource:
        for item in self.data_sources:
            if item.label == label:
                return item
        raise KeyError(label)

    def drive(self, label: str) -> LocalDrive | S3Drive | GoogleDrive:
        for item in self.drives:
            if item.label == label:
                return item
        raise KeyError(label)

    def secrets(self) -> list[str]:
        """Every secret value in the settings, for log and error redaction."""
        found: list[str] = []

        def walk(value: Any) -> None:
            if isinstance(value, SecretStr):
                secret = value.get_secret_value()
                if secret:
                    found.append(secret)
            elif isinstance(value, BaseModel):
                for name in type(value).model_fields:
                    walk(getattr(value, name))
            elif isinstance(value, (tuple, list)):
                for item in value:
                    walk(item)

        walk(self)
        return found


# --------------------------------------------------------------------------- loading

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^}\\]|\\.)*))?\}")


def _expand(value: str, path: str, problems: list[str], env: Mapping[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and (default is None or env[name] != ""):
            return env[name]
        if default is not None:
            return default
        problems.append(f"{path}: environment variable {name} is not set")
        return ""

    return _VAR.sub(substitute, value)


def _path_str(parts: tuple[Any, ...] | list[Any]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text or "(top level)"


def _read_secret_file(raw: str, path: str, problems: list[str], env: Mapping[str, str]) -> str | None:
    file_path = Path(raw).expanduser()
    if not file_path.is_absolute() and env.get("CREDENTIALS_DIRECTORY"):
        file_path = Path(env["CREDENTIALS_DIRECTORY"]) / file_path
    try:
        return file_path.read_text(encoding="utf-8").strip()
    except OSError as error:
        problems.append(f"{path}: cannot read {file_path}: {error.strerror or error}")
        return None


def _prepare(node: Any, parts: list[Any], problems: list[str], env: Mapping[str, str]) -> Any:
    """Expand variables and resolve ``<key>_file`` secrets, recursively."""
    path = _path_str(parts)
    if isinstance(node, str):
        return _expand(node, path, problems, env)
    if isinstance(node, list):
        return [_prepare(item, [*parts, index], problems, env) for index, item in enumerate(node)]
    if not isinstance(node, dict):
        return node
    result: dict[Any, Any] = {}
    for key, value in node.items():
        result[key] = _prepare(value, [*parts, key], problems, env)
    for key in list(result):
        if not (isinstance(key, str) and key.endswith("_file")):
            continue
        base = key[: -len("_file")]
        if base not in SECRET_KEYS or (parts[:1] == ["drives"] and key == "token_file"):
            continue  # client_secret_file, ca_file, google_drive's token_file: real paths
        key_path = _path_str([*parts, key])
        raw = result.pop(key)
        if base in result:
            problems.append(f"{key_path}: give either {base} or {key}, not both")
            continue
        if not isinstance(raw, str) or not raw:
            problems.append(f"{key_path}: must be a file path")
            continue
        content = _read_secret_file(raw, key_path, problems, env)
        if content is None:
            continue
        if base in LIST_SECRET_KEYS:
            result[base] = [line.strip() for line in content.splitlines() if line.strip()]
        else:
            result[base] = content
    return result


def _describe(error: Any) -> str:
    location = _location(error["loc"])
    message = error["msg"]
    kind = error["type"]
    cause = (error.get("ctx") or {}).get("error")
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "required key is missing"
    elif kind == "union_tag_invalid":
        expected = error.get("ctx", {}).get("expected_tags", "")
        location.append("provider")
        message = f"unknown provider (expected one of {expected})"
    elif kind == "union_tag_not_found":
        location.append("provider")
        message = "required key is missing"
    elif message.startswith("Value error, "):
        message = message[len("Value error, "):]
    path = _path_str(location)
    if isinstance(cause, KeyProblem):
        path = cause.key if path == "(top level)" else (
            path + cause.key if cause.key.startswith("[") else f"{path}.{cause.key}")
    return f"{path}: {message}"


_UNION_TAGS = frozenset({
    "postgres", "postgresql", "mysql", "mariadb", "sqlite", "local", "s3", "google_drive", "gdrive",
})


def _location(parts: tuple[Any, ...]) -> list[Any]:
    """The key path of an error, without pydantic's own steps: the tag of a tagged union
    (right after a list index) and the names of validator functions."""
    location: list[Any] = []
    for index, part in enumerate(parts):
        if isinstance(part, str) and part.startswith("function-"):
            continue
        if (isinstance(part, str) and part in _UNION_TAGS and index > 0
                and isinstance(parts[index - 1], int)):
            continue
        location.append(part)
    return location


# ---------------------------------------------------------------------------- shared places


def _contains(outer: Path, inner: Path) -> bool:
    return outer == inner or outer in inner.parents


def _local_folder(raw: Path | str, host: str) -> Path:
    """A folder as backupmand will use it: ``{host}`` filled in, ``~`` expanded, resolved."""
    return Path(str(raw).replace("{host}", host)).expanduser().resolve()


def _relation(first: Path, second: Path) -> str:
    if first == second:
        return "is the same folder as"
    return "is inside" if _contains(second, first) else "contains"


def _s3_place(drive: S3Drive, host: str) -> tuple[str, str, tuple[str, ...]]:
    """(endpoint, bucket, prefix segments) naming where a drive's objects go."""
    endpoint = drive.endpoint.strip().rstrip("/").lower()
    for scheme in ("https://", "http://"):
        endpoint = endpoint.removeprefix(scheme)
    prefix = drive.prefix.replace("{host}", host).strip("/")
    return endpoint or "s3.amazonaws.com", drive.bucket, tuple(p for p in prefix.split("/") if p)


def shared_places(settings: Settings) -> list[str]:
    """Every pair of config entries that would write into the same place, with both key paths.

    A source's ``tmp_folder`` overlapping a local drive's ``folder`` turns "remove the
    local dump" into "remove the drive's copy"; two drives in one place are recorded as
    two copies when there is one.
    """
    host = settings.host_name
    problems: list[str] = []
    local = [(index, _local_folder(drive.folder, host)) for index, drive in
             enumerate(settings.drives) if isinstance(drive, LocalDrive)]
    for index, source in enumerate(settings.data_sources):
        tmp_folder = _local_folder(source.tmp_folder, host)
        for drive_index, folder in local:
            if _contains(tmp_folder, folder) or _contains(folder, tmp_folder):
                problems.append(
                    f"data_sources[{index}].tmp_folder: {tmp_folder} {_relation(tmp_folder, folder)} "
                    f"drives[{drive_index}].folder ({folder}): removing a dump once it is "
                    "uploaded would remove the drive's copy; give them separate folders")
    for position, (first_index, first) in enumerate(local):
        for second_index, second in local[position + 1:]:
            if _contains(first, second) or _contains(second, first):
                problems.append(
                    f"drives[{second_index}].folder: {second} {_relation(second, first)} "
                    f"drives[{first_index}].folder: the two drives would share files and count "
                    "one copy as two; give each drive a folder of its own")
    buckets = [(index, _s3_place(drive, host)) for index, drive in enumerate(settings.drives)
               if isinstance(drive, S3Drive)]
    for position, (first_index, (endpoint, bucket, first_prefix)) in enumerate(buckets):
        for second_index, (other_endpoint, other_bucket, second_prefix) in buckets[position + 1:]:
            shorter = min(len(first_prefix), len(second_prefix))
            if (endpoint, bucket) == (other_endpoint, other_bucket) and (
                    first_prefix[:shorter] == second_prefix[:shorter]):
                problems.append(
                    f"drives[{second_index}].prefix: bucket {bucket!r} at {endpoint} with prefix "
                    f"{'/'.join(second_prefix) or '(none)'!r} overlaps "
                    f"drives[{first_index}].prefix ({'/'.join(first_prefix) or '(none)'!r}): the "
                    "two drives would share objects and count one copy as two; give each drive "
                    "a prefix of its own")
    return problems


def parse_settings(
    text: str, *, source: str | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Parse and validate a config document; raise ConfigError listing every problem."""
    environment = os.environ if env is None else env
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise ConfigError([f"{where}{problem}"], source) from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(["(top level): must be a mapping of keys"], source)
    problems: list[str] = []
    prepared = _prepare(document, [], problems, environment)
    try:
        settings = Settings.model_validate(prepared)
    except ValidationError as error:
        errors = error.errors(include_input=False)
        # "at least 1 item" under a list whose items are themselves invalid says nothing new.
        located = [tuple(item["loc"]) for item in errors]
        problems.extend(
            _describe(item) for item in errors
            if not (item["type"] == "too_short" and any(
                len(other) > len(item["loc"]) and other[:len(item["loc"])] == tuple(item["loc"])
                for other in located))
        )
        settings = None
    if settings is not None and not problems:
        problems.extend(shared_places(settings))
    if problems:
        raise ConfigError(sorted(dict.fromkeys(problems)), source)
    assert settings is not None
    return settings


def config_path(explicit: str | None, env: Mapping[str, str] | None = None) -> Path:
    """``--config``, else ``$BACKUPMAND_CONFIG``, else /etc/backupmand/config.yml, else ./config.yml."""
    environment = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if environment.get("BACKUPMAND_CONFIG"):
        return Path(environment["BACKUPMAND_CONFIG"])
    if DEFAULT_CONFIG_PATH.exists():
        return DEFAULT_CONFIG_PATH
    return Path("config.yml")


def load_settings(explicit: str | None = None) -> Settings:
    path = config_path(explicit)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"cannot read the config file: {error.strerror or error}"], str(path)) from None
    return parse_settings(text, source=str(path))


def masked(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, every secret replaced by '********'."""
    def convert(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return "********"
        if isinstance(value, BaseModel):
            return {name: convert(getattr(value, name)) for name in type(value).model_fields}
        if isinstance(value, (tuple, list)):
            return [convert(item) for item in value]
        if isinstance(value, Path):
            return str(value)
        return value

    return convert(settings)  # type: ignore[no-any-return]
