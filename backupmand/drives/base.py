"""The drive contract: where finished dumps are stored.

Local is the reference implementation; S3 and Google Drive keep the same promises,
and one contract test suite (tests/integration/test_drive_contract.py) runs against
each of them:

- ``upload`` stores a local file under a new name, never overwriting anything, and
  returns only once the stored object has been verified (size, and the checksum
  where the provider reports one). A failed or interrupted upload leaves nothing
  behind (no temporary file, no dangling multipart upload).
- ``download`` streams a stored file (or a byte range of it) without holding it in
  memory.
- ``delete`` removes a stored file; deleting one that is already gone succeeds.
- ``health`` is cheap and has no side effects: it never uploads.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

from ..config import DriveBase

ConfigT = TypeVar("ConfigT", bound=DriveBase)


@dataclasses.dataclass(frozen=True)
class StoredFile:
    """Where an upload landed: ``path`` is the key / path / file id on the provider."""

    path: str
    size: int


class Drive(abc.ABC, Generic[ConfigT]):
    """One configured drive."""

    #: The provider name as the API reports it: local, s3 or google_drive.
    provider: ClassVar[str]

    def __init__(self, config: ConfigT) -> None:
        self.config = config
        self.label = config.label

    def secrets(self) -> tuple[str, ...]:
        return ()

    @abc.abstractmethod
    async def upload(self, source: Path, name: str, *, size: int, sha256: str) -> StoredFile:
        """Store ``source`` as ``name``; verify it; raise DriveError (or VerificationError)."""

    @abc.abstractmethod
    def download(
        self, path: str, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """Stream the stored file's bytes [start, end)."""

    @abc.abstractmethod
    async def size(self, path: str) -> int | None:
        """The stored file's size, or None when it does not exist."""

    @abc.abstractmethod
    async def delete(self, path: str) -> None:
        """Remove the stored file; succeed if it is already gone."""

    @abc.abstractmethod
    async def health(self) -> None:
        """Return when the drive is usable; raise HealthError with the reason otherwise."""

    async def aclose(self) -> None:
        """Release clients and connections."""
