"""The drive contract: where finished dumps (and their companions) are stored.

Local is the reference implementation; S3 and Google Drive keep the same promises,
and one contract test suite (tests/integration/test_drive_contract.py) runs against
each of them:

- ``upload`` stores a local file under a new name, never overwriting anything, and
  returns only once the stored object has been verified (size, and the checksum
  where the provider reports one). A failed or interrupted upload leaves nothing
  behind (no temporary file, no dangling multipart upload).
- ``upload_stream`` does the same from a stream whose size and SHA-256 are known only
  when it ends (``expected()``, callable once the stream is exhausted): the copy is
  committed (linked, completed, finalised) only when what arrived matches them.
- ``adopt=True`` (the catalog says an earlier attempt of this very upload may have
  landed before its process died): an object already under ``name`` with the same
  size and SHA-256 is this upload's own and counts as stored. Without it, an existing
  object is always an error ("already exists: not overwritten").
- ``download`` streams a stored file (or a byte range of it) without holding it in
  memory; ``read_bytes`` reads a small one (a manifest) whole, up to a limit.
- ``list_files`` finds the files under the drive's location (for ``catalog rebuild`` and
  ``fleet list``); with ``all_hosts`` under every host's location when the location
  has a ``{host}`` part.
- ``delete`` removes a stored file; deleting one that is already gone succeeds.
- ``health`` is cheap and has no side effects: it never uploads.
- ``sweep`` removes what uploads of dead processes left behind (temporary files,
  unfinished multipart uploads) for the names it is given.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO, ClassVar, Generic, TypeVar

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


async def open_for_upload(source: Path) -> BinaryIO:
    """The local dump opened for reading, off the event loop; DriveError if it cannot be."""
    try:
        return await asyncio.to_thread(open, source, "rb")
    except OSError as error:
        raise DriveError(f"cannot read {source}: {error.strerror or error}") from None


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

    @abc.abstractmethod
    async def upload(
        self, source: Path, name: str, *, size: int, sha256: str, adopt: bool = False
    ) -> StoredFile:
        """Store ``source`` as ``name``; verify it; raise DriveError (or VerificationError)."""

    async def upload_stream(
        self, source: GrowingFile, name: str, *, adopt: bool = False,
    ) -> StoredFile:
        """Store the stage file ``source`` as ``name`` while it grows; once it is complete,
        ``source.expected()`` gives its (size, SHA-256): commit the copy only if it
        matches; raise DriveError otherwise. (Default: wait for the end, then upload.)"""
        offset = 0
        while not source.complete:
            offset = await source.available(offset)
        size, sha256 = source.expected()
        return await self.upload(source.path, name, size=size, sha256=sha256, adopt=adopt)

    async def put_bytes(self, data: bytes, name: str, *, adopt: bool = False) -> StoredFile:
        """Store a small object (a manifest) as ``name``, verified like any upload."""
        import hashlib
        import tempfile

        digest = hashlib.sha256(data).hexdigest()
        folder = await asyncio.to_thread(tempfile.mkdtemp, prefix="backupmand-put-")
        path = Path(folder) / name
        try:
            await asyncio.to_thread(path.write_bytes, data)
            return await self.upload(path, name, size=len(data), sha256=digest, adopt=adopt)
        finally:
            import shutil

            await asyncio.to_thread(shutil.rmtree, folder, True)

    @abc.abstractmethod
    def download(
        self, path: str, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """Stream the stored file's bytes [start, end)."""

    async def read_bytes(self, path: str, *, limit: int = SMALL_LIMIT) -> bytes:
        """A small stored file, whole; DriveError when it is larger than ``limit``."""
        data = bytearray()
        async for block in self.download(path):
            data += block
            if len(data) > limit:
                raise DriveError(f"{path} is larger than {limit} bytes", retryable=False)
        return bytes(data)

    async def list_files(self, *, all_hosts: bool = False) -> list[RemoteFile]:
        """The files under this host's location (every host's with ``all_hosts``)."""
        raise NotImplementedError

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
