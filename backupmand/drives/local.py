"""A folder on this host (or a mounted one): the reference drive.

Writes are atomic and never overwrite: the copy goes to a hidden temporary name,
is fsynced, then hard-linked to its final name (link fails if the name exists),
and the directory is fsynced.

The copy is made by the kernel (copy_file_range; sendfile where the folder is on
another file system), 64 MiB at a time, written back to disk as it goes
(files.Writeback). A second thread hashes what has landed in the copy, chunk by
chunk behind it, so what is verified is the copy itself, not only its source.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import queue
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..config import LocalDrive
from ..errors import DriveError, HealthError, VerificationError
from ..files import READ_SIZE, Writeback, fsync_directory, read_file, remove_quietly, sha256_file
from .base import Drive, StoredFile

TEMP_PREFIX = ".backupmand-upload-"
COPY_CHUNK = 64 * 1024 * 1024
#: What copy_file_range and sendfile answer for "not between these two files".
_REFUSED = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}


def _copy_and_hash(
    source: int, target: int, target_path: Path, stop: threading.Event
) -> tuple[int, str]:
    """Copy ``source`` into ``target`` (both at their current positions) and make it
    durable; return the size and SHA-256 of what landed in ``target``. When ``stop``
    is set, it stops within a chunk and returns what it has, not made durable."""
    landed: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    copy = _kernel_copy(source, target)

    def hash_behind() -> str:
        digest = hashlib.sha256()
        position = 0
        with open(target_path, "rb") as copied:
            while (end := landed.get()) is not None:
                while position < end and not stop.is_set():
                    block = copied.read(min(READ_SIZE, end - position))
                    if not block:
                        raise OSError(errno.EIO, f"{target_path} is shorter than written")
                    digest.update(block)
                    position += len(block)
        return digest.hexdigest()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256") as hasher:
        hashing = hasher.submit(hash_behind)
        written = 0
        try:
            with Writeback(target) as writeback:
                while not stop.is_set() and (count := copy(COPY_CHUNK)):
                    written += count
                    landed.put(written)
                    writeback.advance(written)
                if not stop.is_set():
                    writeback.finish()
        finally:
            landed.put(None)
        return written, hashing.result()


def _kernel_copy(source: int, target: int) -> Callable[[int], int]:
    """A function copying up to n bytes from ``source`` to ``target``, returning how many
    it copied (0 at the end): copy_file_range; sendfile between file systems, where the
    kernel refuses copy_file_range; read and write from what neither takes (a pipe)."""
    ways = ["copy_file_range", "sendfile", "read"]
    if not hasattr(os, "copy_file_range"):
        ways.pop(0)

    def copy(count: int) -> int:
        while ways[0] != "read":
            try:
                if ways[0] == "sendfile":
                    return os.sendfile(target, source, None, count)
                return os.copy_file_range(source, target, count)
            except OSError as error:
                if error.errno not in _REFUSED:
                    raise
                ways.pop(0)
        block = os.read(source, min(count, READ_SIZE))
        rest = memoryview(block)
        while rest:
            rest = rest[os.write(target, rest):]
        return len(block)

    return copy


class LocalFolder(Drive[LocalDrive]):
    provider = "local"

    def __init__(self, config: LocalDrive, host: str = "localhost") -> None:
        super().__init__(config, host)
        self.folder = Path(str(config.folder).replace("{host}", host)).expanduser().resolve()

    def _resolve(self, path: str) -> Path:
        resolved = Path(path).resolve()
        if resolved.parent != self.folder:
            raise DriveError(f"{path} is not a file of drive {self.label!r}", retryable=False)
        return resolved

    async def upload(
        self, source: Path, name: str, *, size: int, sha256: str, adopt: bool = False
    ) -> StoredFile:
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
            with open(source, "rb") as reader, open(temporary, "xb") as writer:
                written, digest = _copy_and_hash(reader.fileno(), writer.fileno(), temporary,
                                                 stop)
            if stop.is_set():
                raise DriveError(f"upload to {final} interrupted")
            if written != size or digest != sha256:
                raise VerificationError(
                    f"the copy of {source} does not match it: expected {size} bytes with "
                    f"SHA-256 {sha256[:12]}…, copied {written} bytes with {digest[:12]}… "
                    "(the local dump changed since it was written?)",
                    retryable=False,
                )
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

    async def sweep(self, is_stale: Callable[[str], bool]) -> list[str]:
        """Temporary files of uploads whose process died (``<prefix><32 hex>-<name>``)."""
        def remove() -> list[str]:
            removed: list[str] = []
            if not self.folder.is_dir():
                return removed
            for entry in self.folder.glob(f"{TEMP_PREFIX}*"):
                if is_stale(entry.name[len(TEMP_PREFIX) + 33:]):
                    remove_quietly(entry)
                    removed.append(str(entry))
            return removed

        return await asyncio.to_thread(remove)

    async def leftovers(self) -> list[Path]:
        """Temporary files left by a process that died mid-upload."""
        with contextlib.suppress(FileNotFoundError):
            return sorted(self.folder.glob(f"{TEMP_PREFIX}*"))
        return []
