"""File helpers shared by the pipeline, the drives and the sources; all off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

READ_SIZE = 1024 * 1024
SYNC_EVERY = 32 * 1024 * 1024


async def read_file(path: Path, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
    """A file (or its byte range [start, end)) as an async stream of 1 MiB blocks."""
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        if start:
            await asyncio.to_thread(handle.seek, start)
        remaining = None if end is None else end - start
        while remaining is None or remaining > 0:
            size = READ_SIZE if remaining is None else min(READ_SIZE, remaining)
            block = await asyncio.to_thread(handle.read, size)
            if not block:
                break
            if remaining is not None:
                remaining -= len(block)
            yield block
    finally:
        await asyncio.to_thread(handle.close)


def fsync_directory(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_file(path: Path) -> None:
    """Make a file's contents (and its name) durable."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
    fsync_directory(path.parent)


def sha256_file(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a file (blocking: call it in a thread)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while block := handle.read(READ_SIZE):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class Writeback:
    """Writes a file back to disk while it is being written, so that the final fsync
    has little left to wait for (the kernel starts on its own only at 10% of RAM).

    ``advance(n)`` after each write starts an fdatasync in a thread of its own every
    SYNC_EVERY bytes (one at a time); ``finish()`` waits for it and fsyncs. Every
    outcome is checked: a write error is never lost. Blocking: use it from a worker
    thread, as a context manager, and close the file only after leaving it.
    """

    def __init__(self, descriptor: int) -> None:
        self._descriptor = descriptor
        self._every = SYNC_EVERY
        self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fdatasync")
        self._flushing: Future[None] | None = None
        self._synced = 0

    def advance(self, written: int) -> None:
        """The file now holds ``written`` bytes."""
        if written - self._synced >= self._every and (
                self._flushing is None or self._flushing.done()):
            if self._flushing is not None:
                self._flushing.result()
            self._synced = written
            self._flushing = self._flusher.submit(os.fdatasync, self._descriptor)

    def finish(self) -> None:
        """Everything written so far is on disk, or OSError."""
        if self._flushing is not None:
            self._flushing.result()
        os.fsync(self._descriptor)

    def __enter__(self) -> Writeback:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._flusher.shutdown()  # no fdatasync outlives the descriptor
