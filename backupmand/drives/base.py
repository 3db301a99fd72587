"""The drive contract: where finished dumps (and their companions) are stored.

Local is the reference implementation; S3 and Google Drive keep the same promises,
and one contract test suite (tests/integration/test_drive_contract.py) runs against
each of them:

- ``upload_stream`` stores a :class:`~backupmand.growing.GrowingFile` under a new name
  while the file is still being written, reading it back from the stage file as it
  grows. The copy is committed (linked, completed, finalised) only once the whole file
  has arrived and what the drive read matches ``expected()`` (size and SHA-256), and
  only after the stored object has been verified (size, and the checksum where the
  provider reports one). A writer that fails, a mismatch, an error or a cancellation
  leaves nothing behind (no temporary file, no unfinished multipart upload, no open
  session). Nothing is ever overwritten.
- ``upload`` does the same from a local file that is already whole.
- ``adopt=True`` (the catalog says an earlier attempt of this very upload may have
  landed before its process died): an object already under ``name`` with the same
  size and SHA-256 is this upload's own and counts as stored. Without it, an existing
  object is always an error ("already exists: not overwritten").
- ``put_bytes`` stores a small object (a manifest) the same way, in one request.
- ``download`` streams a stored file (or a byte range of it) without holding it in
  memory; ``read_bytes`` reads a small one (a manifest) whole, up to a limit.
- ``list_files`` finds the files under the drive's location (for ``catalog rebuild`` and
  ``fleet list``); with ``all_hosts`` under every host's location when the location
  has a ``{host}`` segment.
- ``delete`` removes a stored file; deleting one that is already gone succeeds.
- ``health`` is cheap and has no side effects: it never uploads.
- ``sweep`` removes what uploads of dead processes left behind (temporary files,
  unfinished multipart uploads) for the names it is given.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

from ..config import DriveBase
from ..errors import DriveError
from ..growing import GrowingFile

ConfigT = TypeVar("ConfigT", bound=DriveBase)

#: What ``{host}`` in a drive's folder / prefix is replaced with.
HOST_PLACEHOLDER = "{host}"
#: The largest object ``read_bytes`` reads by default (manifests are a few KiB).
SMALL_LIMIT = 4 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class StoredFile:
    """Where an upload landed: ``path`` is the key / path / file id on the provider."""

    path: str
    size: int


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """A file found by listing a drive."""

    name: str  # the file's name (the last part of its path)
    path: str  # what download / delete / size take
    size: int | None
    #: The ``{host}`` part of the location it was found under (None: no ``{host}``).
    host: str | None = None


def check_name(name: str) -> None:
    """A stored file's name is one path segment, not hidden (the local drive's temporary
    files are): DriveError (not retryable) otherwise."""
    if not name or "/" in name or "\0" in name or name.startswith("."):
        raise DriveError(f"invalid file name {name!r}", retryable=False)


def already_exists(where: str) -> DriveError:
    return DriveError(f"{where} already exists: not overwritten", retryable=False)


class Drive(abc.ABC, Generic[ConfigT]):
    """One configured drive, for one host (``{host}`` in its location)."""

    #: The provider name as the API reports it: local, s3 or google_drive.
    provider: ClassVar[str]

    def __init__(self, config: ConfigT, host: str = "localhost") -> None:
        self.config = config
        self.label = config.label
        self.host = host

    def secrets(self) -> tuple[str, ...]:
        return ()

    async def upload(
        self, source: Path, name: str, *, size: int, sha256: str, adopt: bool = False
    ) -> StoredFile:
        """Store the whole local file ``source`` as ``name``; verify it; raise DriveError
        (or VerificationError when the file does not hold ``size`` bytes with ``sha256``)."""
        return await self.upload_stream(GrowingFile.complete_file(source, size, sha256), name,
                                        adopt=adopt)

    @abc.abstractmethod
    async def upload_stream(
        self, source: GrowingFile, name: str, *, adopt: bool = False
    ) -> StoredFile:
        """Store ``source`` as ``name`` while it grows; commit the copy only once it is
        complete and what was read matches ``source.expected()``; raise DriveError
        (VerificationError on a mismatch, WriterFailedError when the writer failed)."""

    @abc.abstractmethod
    async def put_bytes(self, data: bytes, name: str, *, adopt: bool = False) -> StoredFile:
        """Store a small object (a manifest) as ``name``, verified like any upload."""

    @abc.abstractmethod
    def download(
        self, path: str, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """Stream the stored file's bytes [start, end)."""

    async def read_bytes(self, path: str, *, limit: int = SMALL_LIMIT) -> bytes:
        """A small stored file, whole; DriveError when it is larger than ``limit``."""
        data = bytearray()
        blocks = self.download(path)
        try:
            async for block in blocks:
                data += block
                if len(data) > limit:
                    raise DriveError(f"{path} is larger than {limit} bytes", retryable=False)
        finally:
            await blocks.aclose()  # type: ignore[attr-defined]
        return bytes(data)

    @abc.abstractmethod
    async def list_files(self, *, all_hosts: bool = False) -> list[RemoteFile]:
        """The files under this host's location (every host's with ``all_hosts``)."""

    @abc.abstractmethod
    async def size(self, path: str) -> int | None:
        """The stored file's size, or None when it does not exist."""

    @abc.abstractmethod
    async def delete(self, path: str) -> None:
        """Remove the stored file; succeed if it is already gone."""

    @abc.abstractmethod
    async def health(self) -> None:
        """Return when the drive is usable; raise HealthError with the reason otherwise."""

    async def sweep(self, is_stale: Callable[[str], bool]) -> list[str]:
        """Remove leftovers of dead uploads whose final name ``is_stale``; return them."""
        return []

    async def aclose(self) -> None:
        """Release clients and connections."""
