"""A folder on this host (or a mounted one): the reference drive.

Writes are atomic and never overwrite: the copy goes to a hidden temporary name,
is fsynced, then hard-linked to its final name (link fails if the name exists),
and the directory is fsynced.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from ..config import LocalDrive
from ..errors import DriveError, HealthError, VerificationError
from ..files import READ_SIZE, fsync_directory, read_file, remove_quietly, sha256_file
from .base import Drive, StoredFile

TEMP_PREFIX = ".backupmand-upload-"


class LocalFolder(Drive[LocalDrive]):
    provider = "local"

    def __init__(self, config: LocalDrive) -> None:
        super().__init__(config)
        self.folder = config.folder.expanduser().resolve()

    def _resolve(self, path: str) -> Path:
        resolved = Path(path).resolve()
        if resolved.parent != self.folder:
            raise DriveError(f"{path} is not a file of drive {self.label!r}", retryable=False)
        return resolved

    async def upload(self, source: Path, name: str, *, size: int, sha256: str) -> StoredFile:
        if "/" in name or name.startswith("."):
            raise DriveError(f"invalid file name {name!r}", retryable=False)
        # The copy runs in a thread, which a cancellation cannot stop: on cancellation,
        # tell it to stop, wait until it has removed its temporary file, and remove the
        # final file if the copy had already finished.
        stop = threading.Event()
        copy = asyncio.ensure_future(
            asyncio.to_thread(self._copy, source, name, size, sha256, stop))
        try:
            return await asyncio.shield(copy)
        except asyncio.CancelledError:
            stop.set()
            with contextlib.suppress(Exception):
                stored = await copy
                await asyncio.to_thread(remove_quietly, Path(stored.path))
            raise

    def _copy(
        self, source: Path, name: str, size: int, sha256: str, stop: threading.Event
    ) -> StoredFile:
        folder = self.folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DriveError(f"cannot create {folder}: {error.strerror}") from None
        final = folder / name
        temporary = folder / f"{TEMP_PREFIX}{uuid.uuid4().hex}-{name}"
        try:
            digest = hashlib.sha256()
            written = 0
            with open(source, "rb") as reader, open(temporary, "xb") as writer:
                while block := reader.read(READ_SIZE):
                    if stop.is_set():
                        raise DriveError(f"upload to {final} interrupted")
                    digest.update(block)
                    writer.write(block)
                    written += len(block)
                writer.flush()
                os.fsync(writer.fileno())
            if written != size or digest.hexdigest() != sha256:
                raise VerificationError(
                    f"{source} changed: expected {size} bytes with SHA-256 {sha256[:12]}…, "
                    f"read {written} bytes with {digest.hexdigest()[:12]}…",
                    retryable=False,
                )
            if stop.is_set():
                raise DriveError(f"upload to {final} interrupted")
            try:
                os.link(temporary, final)
            except FileExistsError:
                # An earlier attempt may have landed before its process died: the same
                # bytes under the same name are that upload, not a collision.
                if sha256_file(final) == (size, sha256):
                    return StoredFile(path=str(final), size=size)
                raise DriveError(
                    f"{final} already exists: not overwritten", retryable=False) from None
            stored = final.stat().st_size
            if stored != size:
                raise VerificationError(f"{final} holds {stored} bytes, expected {size}")
        except OSError as error:
            raise DriveError(f"writing {final} failed: {error.strerror or error}") from None
        finally:
            remove_quietly(temporary)
        fsync_directory(folder)
        return StoredFile(path=str(final), size=size)

    async def download(
        self, path: str, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        resolved = self._resolve(path)
        try:
            async for block in read_file(resolved, start, end):
                yield block
        except FileNotFoundError:
            raise DriveError(f"{resolved} does not exist", retryable=False) from None

    async def size(self, path: str) -> int | None:
        try:
            return (await asyncio.to_thread(self._resolve(path).stat)).st_size
        except FileNotFoundError:
            return None

    async def delete(self, path: str) -> None:
        resolved = self._resolve(path)
        try:
            await asyncio.to_thread(remove_quietly, resolved)
            await asyncio.to_thread(fsync_directory, resolved.parent)
        except OSError as error:
            raise DriveError(f"deleting {resolved} failed: {error.strerror or error}") from None

    async def health(self) -> None:
        folder = self.folder
        probe = folder
        while not probe.exists():
            probe = probe.parent  # the folder is created at the first upload
        if not probe.is_dir():
            raise HealthError(f"{probe} is not a directory")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise HealthError(f"{probe} is not writable")

    async def leftovers(self) -> list[Path]:
        """Temporary files left by a process that died mid-upload."""
        with contextlib.suppress(FileNotFoundError):
            return sorted(self.folder.glob(f"{TEMP_PREFIX}*"))
        return []
