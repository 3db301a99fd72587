"""Small helpers for the byte streams the sources dump and restore."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

from .. import process


async def peek(chunks: AsyncIterator[bytes], size: int) -> tuple[bytes, AsyncIterator[bytes]]:
    """The first ``size`` bytes of ``chunks`` (fewer if it is shorter), and the whole stream."""
    buffered: list[bytes] = []
    seen = 0
    iterator = aiter(chunks)
    while seen < size:
        try:
            chunk = await anext(iterator)
        except StopAsyncIteration:
            break
        buffered.append(chunk)
        seen += len(chunk)

    async def replay() -> AsyncIterator[bytes]:
        for chunk in buffered:
            yield chunk
        buffered.clear()
        async for chunk in iterator:
            yield chunk

    return b"".join(buffered)[:size], replay()


async def write_chunks(chunks: AsyncIterator[bytes], path: Path) -> int:
    """Write a stream to a new private (0600) file, fsynced; return its size."""
    descriptor = await asyncio.to_thread(
        os.open, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
    )
    handle = os.fdopen(descriptor, "wb")
    written = 0
    try:
        async for chunk in chunks:
            await asyncio.to_thread(handle.write, chunk)
            written += len(chunk)
        await asyncio.to_thread(handle.flush)
        await asyncio.to_thread(os.fsync, handle.fileno())
    finally:
        await asyncio.to_thread(handle.close)
    return written


def write_private_file(path: Path, text: str) -> None:
    """Create ``path`` readable by its owner only (0600) holding ``text``; never overwrite."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        data = memoryview(text.encode("utf-8"))
        while data:
            data = data[os.write(descriptor, data):]
    finally:
        os.close(descriptor)


async def find_tool(*names: str) -> str:
    """process.find_tool off the event loop (it searches PATH on disk)."""
    return await asyncio.to_thread(process.find_tool, *names)
