"""The exception tree of backupmand.

    BackupmandError                 every error the package raises on purpose
    ├── ConfigError                 the config file is missing, unreadable or invalid (exit 78)
    ├── CatalogError                the catalog cannot be opened, is damaged, or is locked
    │   └── AlreadyRunningError     another daemon holds the catalog's daemon lock
    ├── InvalidInputError           a request or command names unknown things or bad values (400)
    ├── NotFoundError               no backup or drive file with that id (API 404)
    ├── ConflictError               the backup is in the wrong state for the request (API 409)
    ├── ProcessError                a subprocess failed: exit status, signal, timeout, missing tool
    │   └── DumpError               a dump failed or its output is incomplete
    │       └── EncryptionError     the dump could not be age-encrypted (never stored in plaintext)
    ├── DriveError                  a drive refused an upload, download, delete or health check
    │   └── VerificationError       what the drive holds differs from what was sent
    ├── RestoreError                a restore could not fetch, verify or load a backup
    │   └── DecryptionError         no usable identity, or the age file is truncated or altered
    ├── NotifierError               a notification channel could not deliver (logged, never fatal)
    └── HealthError                 a health check found a component DOWN

Errors are caught at three edges only: the backup run (recorded in the catalog and
logged, the daemon stays up), the API middleware (a JSON error), and the CLI (an
exit code).
"""

from __future__ import annotations


class BackupmandError(Exception):
    """Raised for every failure the package reports on purpose."""


class ConfigError(BackupmandError):
    """Raised when the config file is missing, unreadable or invalid."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "invalid configuration:\n  " + "\n  ".join(problems))


class CatalogError(BackupmandError):
    """Raised when the catalog cannot be opened, is damaged, or is locked."""


class AlreadyRunningError(CatalogError):
    """Raised when another daemon already serves the same catalog."""


class InvalidInputError(BackupmandError, ValueError):
    """Raised when a request or command has bad parameters or names unknown sources."""


class NotFoundError(BackupmandError, LookupError):
    """Raised when no backup or drive file has the requested id."""


class ConflictError(BackupmandError):
    """Raised when a backup is in the wrong state for the request."""


class ProcessError(BackupmandError):
    """Raised when a subprocess fails; the message carries its redacted stderr tail."""


class DumpError(ProcessError):
    """Raised when a dump fails or its output is incomplete."""


class EncryptionError(DumpError):
    """Raised when the stream cannot be age-encrypted: the backup fails, nothing is stored."""


class DriveError(BackupmandError):
    """Raised when a drive refuses an operation."""

    #: False when retrying cannot help (bad credentials, missing bucket, ...).
    retryable: bool = True

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class VerificationError(DriveError):
    """Raised when the stored file's size or checksum differs from the local dump."""


class RestoreError(BackupmandError):
    """Raised when a restore cannot fetch, verify or load a backup."""


class DecryptionError(RestoreError):
    """Raised when a backup cannot be decrypted: the identity file is missing, unsafe or
    does not match, or the age file is not one, is truncated or was altered."""


class NotifierError(BackupmandError):
    """Raised when a notification channel could not deliver; the caller logs it."""


class HealthError(BackupmandError):
    """Raised by a health check that finds its component DOWN."""
