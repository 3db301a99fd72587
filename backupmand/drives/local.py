"""A folder on this host (or a mounted one): the reference drive.

Writes are atomic and never overwrite: the copy goes to a hidden temporary name
(``.backupmand-upload-<32 hex>-<name>``, mode 0600), follows the stage file as it grows,
is fsynced, then hard-linked to its final name (link fails if the name exists), and the
directory is fsynced. Folders the drive creates are 0700, whatever the umask.

The copy is made by the kernel (copy_file_range; sendfile where the folder is on
another file system; pread / pwrite where neither works), from positional offsets of
the stage file, as far as the writer has got, at most COPY_CHUNK per step (one short
job in a worker thread, so a cancellation waits for one step at most). Each step reads
back what landed in the copy and hashes it, so what is verified is the copy itself,
not only its source; the copy is written back to disk as it goes (files.Writeback).

A folder that was there (seen by a health check or an upload) and is gone is DOWN and
is not created again: it is an unmounted disk or a deleted folder, and recreating it
would hide that. A folder never seen is created at the first upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import os
import stat
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

from ..config import LocalDrive
from ..errors import DriveError, HealthError, VerificationError
from ..files import READ_SIZE, Writeback, fsync_directory, read_file, remove_quietly, sha256_file
from ..growing import GrowingFile, in_thread
from .base import HOST_PLACEHOLDER, Drive, RemoteFile, StoredFile, already_exists, check_name
from .locations import is_host_segment

TEMP_PREFIX = ".backupmand-upload-"
#: The temporary name: TEMP_PREFIX, 32 hex digits, "-", the final name.
_TEMP_NAME_START = len(TEMP_PREFIX) + 33
COPY_CHUNK = 64 * 1024 * 1024
FILE_MODE = 0o600
FOLDER_MODE = 0o700
#: What copy_file_range and sendfile answer for "not between these two files".
_REFUSED = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}


def temporary_name(name: str) -> str:
    return f"{TEMP_PREFIX}{uuid.uuid4().hex}-{name}"


def final_name_of(temporary: str) -> str | None:
    """The final name a temporary file was for (None: not one of ours)."""
    if not temporary.startswith(TEMP_PREFIX) or len(temporary) <= _TEMP_NAME_START:
        return None
    return temporary[_TEMP_NAME_START:]


def _create_private(path: Path) -> int:
    """A new file open for reading and writing, 0600 whatever the umask, never through a
    symlink."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         FILE_MODE)
    try:
        os.fchmod(descriptor, FILE_MODE)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _same_bytes(path: Path, size: int, sha256: str) -> bool:
    """Whether ``path`` is a regular file holding exactly these bytes (blocking)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode) or path.stat().st_size != size:
            return False
        return sha256_file(path) == (size, sha256)
    except FileNotFoundError:
        return False


class _Copy:
    """One upload's copy of a stage file into a temporary file (blocking methods, each
    called in a worker thread, one at a time)."""

    def __init__(self, source: GrowingFile, temporary: Path) -> None:
        self.source = source
        self.temporary = temporary
        self.written = 0
        self.digest = hashlib.sha256()
        self.reader: int | None = None
        self.writer: int | None = None
        self.writeback: Writeback | None = None
        self.ways = ["copy_file_range", "sendfile", "pread"]
        if not hasattr(os, "copy_file_range"):
            self.ways.pop(0)

    def open(self) -> None:
        try:
            self.reader = self.source.open_reader()
        except OSError as error:
            raise DriveError(f"cannot read {self.source.path}: {error.strerror or error}",
                             retryable=False) from None
        self.writer = _create_private(self.temporary)
        self.writeback = Writeback(self.writer)

    def copy_until(self, end: int) -> int:
        """Copy [written, end) (at most COPY_CHUNK of it) and hash what landed."""
        assert self.writer is not None and self.writeback is not None
        start = self.written
        count = min(COPY_CHUNK, end - start)
        done = 0
        while done < count:
            copied = self._copy(start + done, count - done)
            if copied == 0:
                raise VerificationError(
                    f"{self.source.path} holds only {start + done} bytes, "
                    f"{start + count} were reported", retryable=False)
            done += copied
        self._hash_landed(start, count)
        self.written = start + count
        self.writeback.advance(self.written)
        return self.written

    def _copy(self, offset: int, count: int) -> int:
        assert self.reader is not None and self.writer is not None
        while self.ways[0] != "pread":
            try:
                if self.ways[0] == "sendfile":
                    os.lseek(self.writer, offset, os.SEEK_SET)  # sendfile writes at the position
                    return os.sendfile(self.writer, self.reader, offset, count)
                return os.copy_file_range(self.reader, self.writer, count, offset, offset)
            except OSError as error:
                if error.errno not in _REFUSED:
                    raise
                self.ways.pop(0)
        block = os.pread(self.reader, min(count, READ_SIZE), offset)
        view = memoryview(block)
        while view:
            written = os.pwrite(self.writer, view, offset)
            view = view[written:]
            offset += written
        return len(block)

    def _hash_landed(self, start: int, count: int) -> None:
        assert self.writer is not None
        position, end = start, start + count
        while position < end:
            block = os.pread(self.writer, min(READ_SIZE, end - position), position)
            if not block:
                raise OSError(errno.EIO, f"{self.temporary} is shorter than written")
            self.digest.update(block)
            position += len(block)

    def commit(self, final: Path) -> bool:
        """Make the copy durable and link it to ``final``; False when ``final`` exists."""
        assert self.writeback is not None
        self.writeback.finish()
        try:
            os.link(self.temporary, final)
        except FileExistsError:
            return False
        remove_quietly(self.temporary)
        fsync_directory(final.parent)
        return True

    def close(self) -> None:
        """Release everything and remove the temporary file (whatever happened)."""
        if self.writeback is not None:
            self.writeback.__exit__(None, None, None)
        for descriptor in (self.reader, self.writer):
            if descriptor is not None:
                with contextlib.suppress(OSError):
                    os.close(descriptor)
        self.reader = self.writer = None
        remove_quietly(self.temporary)


class LocalFolder(Drive[LocalDrive]):
    provider = "local"

    def __init__(self, config: LocalDrive, host: str = "localhost") -> None:
        super().__init__(config, host)
        template = Path(config.folder).expanduser()
        self.folder = Path(str(template).replace(HOST_PLACEHOLDER, host)).resolve()
        parts = template.parts
        if HOST_PLACEHOLDER in parts:
            index = parts.index(HOST_PLACEHOLDER)
            #: Every host's folder is <hosts_root>/<host>/<after...>.
            self.hosts_root: Path | None = Path(*parts[:index]).resolve()
            self.after_host: tuple[str, ...] = parts[index + 1:]
        else:
            self.hosts_root, self.after_host = None, ()
        #: Whether the folder has been seen to exist (then it is never created again).
        self._folder_seen = False
        #: Temporary files of uploads running in this process (sweep leaves them alone).
        self._active: set[Path] = set()
        self._cleanups: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ paths

    def _host_of_folder(self, folder: Path) -> str | None:
        """The host whose folder ``folder`` is ("" for this drive's folder without
        ``{host}``), or None when it is no host's folder of this drive."""
        if folder == self.folder:
            return self.host if self.hosts_root is not None else ""
        if self.hosts_root is None:
            return None
        try:
            parts = folder.relative_to(self.hosts_root).parts
        except ValueError:
            return None
        if len(parts) != 1 + len(self.after_host) or parts[1:] != self.after_host:
            return None
        return parts[0] if is_host_segment(parts[0]) else None

    def _resolve(self, path: str, *, own: bool = False) -> Path:
        """A stored file's path: in this host's folder, or (reading, ``own`` False) in
        any host's folder of this drive."""
        resolved = Path(path).resolve()
        allowed = (resolved.parent == self.folder if own
                   else self._host_of_folder(resolved.parent) is not None)
        if not allowed or resolved.name.startswith("."):
            raise DriveError(f"{path} is not a file of drive {self.label!r}", retryable=False)
        return resolved

    def _prepare_folder(self) -> None:
        """Make sure the folder exists (blocking): created (0700 at every level made) when
        it never existed; an error when it existed and is gone."""
        folder = self.folder
        if folder.is_dir():
            self._folder_seen = True
            return
        if folder.exists():
            raise DriveError(f"{folder} is not a directory", retryable=False)
        if self._folder_seen:
            raise DriveError(f"{folder} has disappeared since it was last seen: not created "
                             "again (remount or restore it)")
        missing = []
        probe = folder
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        try:
            for level in reversed(missing):
                with contextlib.suppress(FileExistsError):
                    level.mkdir(mode=FOLDER_MODE)
                    level.chmod(FOLDER_MODE)
        except OSError as error:
            raise DriveError(f"cannot create {folder}: {error.strerror or error}") from None
        self._folder_seen = True

    # ------------------------------------------------------------------ upload

    async def upload_stream(
        self, source: GrowingFile, name: str, *, adopt: bool = False
    ) -> StoredFile:
        check_name(name)
        final = self.folder / name
        await asyncio.to_thread(self._prepare_folder)
        if await asyncio.to_thread(os.path.lexists, final):
            return await self._existing(source, final, adopt)
        copy = _Copy(source, self.folder / temporary_name(name))
        self._active.add(copy.temporary)
        try:
            await in_thread(copy.open)
            position = 0
            while True:
                available = await source.available(position)
                if position < available:
                    position = await in_thread(copy.copy_until, available)
                elif source.complete:
                    break
            size, sha256 = source.expected()
            if (copy.written, copy.digest.hexdigest()) != (size, sha256):
                raise VerificationError(
                    f"the copy of {source.path} does not match it: expected {size} bytes with "
                    f"SHA-256 {sha256[:12]}…, copied {copy.written} bytes with "
                    f"{copy.digest.hexdigest()[:12]}…", retryable=False)
            if not await in_thread(copy.commit, final):
                return await self._existing(source, final, adopt)
        except OSError as error:
            raise DriveError(f"writing {final} failed: {error.strerror or error}") from None
        finally:
            await self._shielded(asyncio.to_thread(copy.close))
            self._active.discard(copy.temporary)
        return StoredFile(path=str(final), size=size)

    async def _existing(self, source: GrowingFile, final: Path, adopt: bool) -> StoredFile:
        """``final`` is already there: this upload's own only with ``adopt`` and the same
        bytes (the catalog says an earlier attempt may have landed)."""
        if not adopt:
            raise already_exists(str(final))
        size, sha256 = await source.completed()
        if await asyncio.to_thread(_same_bytes, final, size, sha256):
            return StoredFile(path=str(final), size=size)
        raise already_exists(str(final))

    async def put_bytes(self, data: bytes, name: str, *, adopt: bool = False) -> StoredFile:
        check_name(name)
        final = self.folder / name
        sha256 = hashlib.sha256(data).hexdigest()
        try:
            stored = await in_thread(self._write_small, data, sha256, final, adopt)
        except OSError as error:
            raise DriveError(f"writing {final} failed: {error.strerror or error}") from None
        if stored is None:
            raise already_exists(str(final))
        return stored

    def _write_small(self, data: bytes, sha256: str, final: Path, adopt: bool) -> StoredFile | None:
        self._prepare_folder()
        stored = StoredFile(path=str(final), size=len(data))
        if os.path.lexists(final):
            return stored if adopt and _same_bytes(final, len(data), sha256) else None
        temporary = self.folder / temporary_name(final.name)
        try:
            descriptor = _create_private(temporary)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(descriptor, view):]
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            if sha256_file(temporary) != (len(data), sha256):
                raise VerificationError(f"the copy of {final.name} in {temporary} differs from "
                                        "what was written", retryable=True)
            try:
                os.link(temporary, final)
            except FileExistsError:
                return stored if adopt and _same_bytes(final, len(data), sha256) else None
        finally:
            remove_quietly(temporary)
        fsync_directory(final.parent)
        return stored

    async def _shielded(self, work: Coroutine[Any, Any, None]) -> None:
        """Clean-up that runs to its end even if the calling task is cancelled meanwhile
        (``aclose`` waits for it)."""
        task = asyncio.ensure_future(work)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        await asyncio.shield(task)

    async def aclose(self) -> None:
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)

    # ------------------------------------------------------------------ the rest

    async def download(
        self, path: str, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        resolved = await asyncio.to_thread(self._resolve, path)
        try:
            async for block in read_file(resolved, start, end):
                yield block
        except FileNotFoundError:
            raise DriveError(f"{resolved} does not exist", retryable=False) from None

    async def size(self, path: str) -> int | None:
        resolved = await asyncio.to_thread(self._resolve, path)
        try:
            return (await asyncio.to_thread(resolved.stat)).st_size
        except FileNotFoundError:
            return None

    async def delete(self, path: str) -> None:
        resolved = await asyncio.to_thread(functools.partial(self._resolve, path, own=True))
        try:
            await asyncio.to_thread(remove_quietly, resolved)
            await asyncio.to_thread(fsync_directory, resolved.parent)
        except OSError as error:
            raise DriveError(f"deleting {resolved} failed: {error.strerror or error}") from None

    async def list_files(self, *, all_hosts: bool = False) -> list[RemoteFile]:
        try:
            return await asyncio.to_thread(self._list, all_hosts)
        except OSError as error:
            raise DriveError(f"listing {self.folder} failed: {error.strerror or error}") from None

    def _list(self, all_hosts: bool) -> list[RemoteFile]:
        if self.hosts_root is None:
            return _files_in(self.folder, None)
        if not all_hosts:
            return _files_in(self.folder, self.host)
        found: list[RemoteFile] = []
        try:
            hosts = sorted(entry.name for entry in os.scandir(self.hosts_root)
                           if entry.is_dir() and is_host_segment(entry.name))
        except FileNotFoundError:
            return []
        for host in hosts:
            found += _files_in(self.hosts_root.joinpath(host, *self.after_host), host)
        return found

    async def health(self) -> None:
        await asyncio.to_thread(self._check_health)

    def _check_health(self) -> None:
        folder = self.folder
        if folder.exists():
            if not folder.is_dir():
                raise HealthError(f"{folder} is not a directory")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise HealthError(f"{folder} is not writable")
            self._folder_seen = True
            return
        if self._folder_seen:
            raise HealthError(f"{folder} has disappeared since it was last seen "
                              "(an unmounted disk or a deleted folder?)")
        probe = folder
        while not probe.exists():
            probe = probe.parent  # a folder never seen is created at the first upload
        if not probe.is_dir():
            raise HealthError(f"{probe} is not a directory")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise HealthError(f"{probe} is not writable")

    async def sweep(self, is_stale: Callable[[str], bool]) -> list[str]:
        """Temporary files of uploads that died with their process, for stale names."""
        candidates = await asyncio.to_thread(self._temporary_files)
        stale = [path for path in candidates if path not in self._active
                 and is_stale(final_name_of(path.name) or "")]
        for path in stale:
            await asyncio.to_thread(remove_quietly, path)
        return [str(path) for path in stale]

    def _temporary_files(self) -> list[Path]:
        try:
            return sorted(Path(entry.path) for entry in os.scandir(self.folder)
                          if final_name_of(entry.name) is not None)
        except (FileNotFoundError, NotADirectoryError):
            return []

    async def leftovers(self) -> list[Path]:
        """Temporary files in the folder (a test's look behind the drive's back)."""
        return await asyncio.to_thread(self._temporary_files)


def _files_in(folder: Path, host: str | None) -> list[RemoteFile]:
    """The stored files of one folder (blocking): visible regular files."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
            continue
        found.append(RemoteFile(name=entry.name, path=entry.path,
                                size=entry.stat(follow_symlinks=False).st_size, host=host))
    return sorted(found, key=lambda item: item.name)


__all__ = ["TEMP_PREFIX", "LocalFolder"]
