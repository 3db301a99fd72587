"""A stored file back to its plain dump, as a stream: verify → decrypt → decompress.

``verified`` passes a drive's bytes on while it counts and hashes them, and raises
RestoreError after the last one when they are not the recorded file (its size and
SHA-256): a consumer that commits only at the end (a scratch database, a side
database, a temporary file) never commits a wrong file. ``plain`` decrypts (age) and
decompresses (zstd, gzip) with bounded memory whatever the compression ratio: the
decompressor runs in a worker thread reading from a small queue and yields blocks of
at most 1 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import queue
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import DriveError, RestoreError

if TYPE_CHECKING:
    from pathlib import Path

    from .config import Settings, SourceBase
    from .models import Backup

BLOCK = 1024 * 1024
_END = b""


async def verified(chunks: AsyncIterator[bytes], *, size: int, sha256: str,
                   where: str) -> AsyncIterator[bytes]:
    """``chunks`` as they come; RestoreError at the end unless they are ``size`` bytes
    with ``sha256`` (and as soon as there are more than ``size``)."""
    digest = hashlib.sha256()
    seen = 0
    try:
        async for chunk in chunks:
            seen += len(chunk)
            if seen > size:
                raise RestoreError(f"{where} holds more than the {size} bytes recorded for this "
                                   "backup: it is not the file that was backed up")
            await asyncio.to_thread(digest.update, chunk)
            yield chunk
    except DriveError as error:
        raise RestoreError(f"downloading from {where} failed: {error}") from None
    actual = digest.hexdigest()
    if seen != size or actual != sha256:
        raise RestoreError(
            f"{where} does not match the backup: expected {size} bytes with SHA-256 {sha256}, "
            f"got {seen} bytes with {actual}; nothing was restored (try another drive with "
            "--drive)")


async def explained(error: RestoreError, reopen: Callable[[], AsyncIterator[bytes]], *,
                    size: int, sha256: str, where: str) -> RestoreError:
    """A copy that does not decode is usually a copy that is not the backup's file: the
    checksum's verdict when it says so (one more read, on this failure path only), else
    ``error``."""
    try:
        async for _ in verified(reopen(), size=size, sha256=sha256, where=where):
            pass
    except RestoreError as mismatch:
        return mismatch
    return error


class _Feed(io.RawIOBase):
    """A blocking reader (for the decompressor's thread) over chunks the loop puts."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=4)
        self._rest = memoryview(b"")
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            if self._ended:
                return 0
            item = self.queue.get()
            if isinstance(item, BaseException):
                raise item
            if item == _END:
                self._ended = True
                return 0
            self._rest = memoryview(item)
        count = min(len(buffer), len(self._rest))
        buffer[:count] = self._rest[:count]
        self._rest = self._rest[count:]
        return count


class _Stop(Exception):
    """Raised in the decompressor's thread when the consumer went away."""


def _reader(feed: _Feed, compression: str) -> Any:
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(
            feed, read_across_frames=True, closefd=False)  # type: ignore[arg-type]
    if compression == "gzip":
        return gzip.GzipFile(fileobj=io.BufferedReader(feed, BLOCK), mode="rb")
    if compression == "none":
        return io.BufferedReader(feed, BLOCK)
    raise RestoreError(f"unknown compression {compression!r}")


async def decompressed(chunks: AsyncIterator[bytes], compression: str) -> AsyncIterator[bytes]:
    """``chunks`` decompressed, in blocks of at most 1 MiB; RestoreError when they are
    not a valid ``compression`` stream."""
    loop = asyncio.get_running_loop()
    feed = _Feed()
    output: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=4)
    stopping = threading.Event()

    def put(item: bytes | BaseException | None) -> None:
        future = asyncio.run_coroutine_threadsafe(output.put(item), loop)
        while not stopping.is_set():
            try:
                future.result(timeout=0.2)
                return
            except TimeoutError:
                continue
        future.cancel()
        raise _Stop

    def decompress() -> None:
        try:
            reader = _reader(feed, compression)
            try:
                while block := reader.read(BLOCK):
                    put(block)
            finally:
                with contextlib.suppress(Exception):
                    reader.close()
            put(None)
        except _Stop:
            return
        except BaseException as error:  # zstandard.ZstdError, OSError, EOFError, ...
            with contextlib.suppress(_Stop):
                put(RestoreError(f"the backup file cannot be decompressed ({compression}): "
                                 f"{error}") if not isinstance(error, RestoreError) else error)

    async def pump() -> None:
        try:
            async for chunk in chunks:
                if chunk:
                    await asyncio.to_thread(feed.queue.put, chunk)
            await asyncio.to_thread(feed.queue.put, _END)
        except BaseException as error:
            # Unblock the thread with the reason; it passes it on.
            with contextlib.suppress(Exception):
                await asyncio.to_thread(feed.queue.put, error)
            raise

    worker = loop.run_in_executor(None, decompress)
    feeding = asyncio.ensure_future(pump())
    try:
        while True:
            item = await output.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                if feeding.done() and not feeding.cancelled() and feeding.exception():
                    raise feeding.exception()  # type: ignore[misc]
                raise item
            yield item
        await feeding
    finally:
        stopping.set()
        if not feeding.done():
            feeding.cancel()
        with contextlib.suppress(BaseException):
            await feeding
        with contextlib.suppress(queue.Full):
            feed.queue.put_nowait(_Stop())
        while not output.empty():
            output.get_nowait()
        with contextlib.suppress(BaseException):
            await worker
        # A put of the cancelled pump may still wait in its thread: let it through.
        with contextlib.suppress(queue.Empty):
            while True:
                feed.queue.get_nowait()


async def plain(chunks: AsyncIterator[bytes], *, compression: str, encrypted: bool,
                identities: Any = None, recipients: Sequence[str] = ()) -> AsyncIterator[bytes]:
    """A stored file's bytes back to the plain dump: decrypted when ``encrypted`` (with
    ``identities``, from encryption.load_identities), then decompressed."""
    if encrypted:
        if identities is None:
            raise RestoreError(missing_identity(recipients))
        from .encryption import decrypt_stream

        chunks = decrypt_stream(chunks, identities, recipients=recipients)
    async for block in decompressed(chunks, compression):
        yield block


async def identities_for(settings: Settings, backup: Backup, *, source: SourceBase | None,
                         identity: Path | None) -> Any:
    """The age identities that decrypt ``backup`` (read now, never logged), or None when
    it is not encrypted: ``identity`` (--identity), else the source's
    ``encryption.identity_file``, else the top level's. RestoreError in one sentence when
    there is none or it cannot be used (loose permissions included)."""
    if not backup.encrypted:
        return None
    if identity is None:
        for encryption in (settings.encryption_for(source) if source is not None else None,
                           settings.encryption):
            if encryption is not None and encryption.identity_file is not None:
                identity = encryption.identity_file
                break
    if identity is None:
        raise RestoreError(missing_identity(backup.recipients))
    from . import logs
    from .encryption import load_identities

    try:
        identities = await asyncio.to_thread(load_identities, identity.expanduser())
    except (OSError, ValueError) as error:
        raise RestoreError(f"cannot use the identity file {identity}: {error}") from None
    logs.register_secrets(identities.secrets())
    return identities


def missing_identity(recipients: Sequence[str]) -> str:
    whom = ", ".join(recipients) if recipients else "its recipients"
    return (f"this backup is encrypted (age) for {whom}: give the identity that matches one "
            "of them with --identity FILE, or set encryption.identity_file")
