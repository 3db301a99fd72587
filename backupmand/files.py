"""File helpers shared by the pipeline, the drives and the sources; all off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

READ_SIZE = 1024 * 1024


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
