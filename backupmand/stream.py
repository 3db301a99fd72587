"""One read of a dump: compressed, encrypted, hashed and written to the stage file that
every drive reads while it grows.

    dump tool stdout ──► compress ──► encrypt (age) ──► SHA-256 ──► <name>.partial
                                                                       │ (GrowingFile)
                                                  drive 1 ◄── read back as it grows
                                                  drive 2 ◄──┘ …

The transforms run in a worker thread (zstandard, zlib and the age encryption release
the GIL, or run in a process of their own), fed 1 MiB blocks gathered from the pipe
while the event loop goes on buffering it, so the dump tool, the compressor and the
uploads run side by side. The stage file is written once; drives read it back from the
page cache, each at its own pace, so a slow drive never slows the dump and memory stays
bounded whatever the dump's size.

The stage file is not fsynced while it is written: each drive's copy is made durable
and verified against this module's SHA-256, and the stage is removed once every copy
is; it is fsynced only when a failed backup keeps it for ``retry``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

from . import compression as codecs
from .errors import DumpError

BLOCK_SIZE = 1024 * 1024


class _Transform(Protocol):
    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class Chain:
    """compress → encrypt, one incremental object (blocking: call it from one thread)."""

    def __init__(self, compression: str, level: int | None, threads: int,
                 recipients: Sequence[str] = ()) -> None:
        self._compressor: _Transform = codecs.compressor(compression, level, threads)
        self._encryptor: Any = None
        if recipients:
            from .encryption import Encryptor

            try:
                self._encryptor = Encryptor(list(recipients))
            except Exception as error:
                raise DumpError(f"encryption cannot be applied: {error}") from None

    def feed(self, block: bytes | None) -> bytes:
        """The output for ``block``, or the last output when ``block`` is None."""
        output = self._compressor.compress(block) if block is not None else (
            self._compressor.flush())
        if self._encryptor is not None:
            try:
                output = self._encryptor.encrypt(output) if block is not None else (
                    self._encryptor.encrypt(output) + self._encryptor.flush())
            except Exception as error:
                raise DumpError(f"encryption failed: {error}") from None
        return output

    def close(self) -> None:
        """Release what the encryptor holds (threads, a process) when abandoned midway."""
        if self._encryptor is not None:
            with contextlib.suppress(Exception):
                self._encryptor.close()


@dataclasses.dataclass(frozen=True)
class Written:
    size: int  # bytes written (compressed, encrypted)
    sha256: str  # of the bytes written
    raw: int  # bytes read from the dump tool


class _Growth(Protocol):
    def grew(self, size: int) -> None: ...


async def write_stage(
    chunks: AsyncIterator[bytes], handle: IO[bytes], chain: Chain,
    growing: _Growth | None = None,
) -> Written:
    """Run ``chunks`` through ``chain`` into ``handle`` (open, written, flushed, not
    closed), telling ``growing`` after each write. DumpError when nothing came."""
    digest = hashlib.sha256()
    written = 0
    raw = 0

    def absorb(block: bytes | None) -> None:
        nonlocal written
        output = chain.feed(block)
        if output:
            digest.update(output)
            handle.write(output)
            written += len(output)
        if block is None or output:
            handle.flush()  # readers of the growing file see what the counter says
            if growing is not None:
                growing.grew(written)

    try:
        pending = bytearray()
        try:
            async for chunk in chunks:
                raw += len(chunk)
                if not pending and len(chunk) >= BLOCK_SIZE:
                    await asyncio.to_thread(absorb, chunk)  # already a block: no copy
                    continue
                pending += chunk
                if len(pending) >= BLOCK_SIZE:
                    block = bytes(pending)
                    pending.clear()
                    await asyncio.to_thread(absorb, block)
        finally:
            with contextlib.suppress(Exception):
                await chunks.aclose()  # type: ignore[attr-defined]
        if pending:
            await asyncio.to_thread(absorb, bytes(pending))
        if raw == 0:
            raise DumpError("the dump tool produced no output")
        await asyncio.to_thread(absorb, None)
    except BaseException:
        await asyncio.to_thread(chain.close)
        raise
    return Written(written, digest.hexdigest(), raw)


def encode_bytes(data: bytes, compression: str, level: int | None,
                 recipients: Sequence[str]) -> bytes:
    """A small payload (a globals script) through the same chain (blocking)."""
    chain = Chain(compression, level, 1, recipients)
    try:
        return chain.feed(data) + chain.feed(None)
    finally:
        chain.close()


def describe_os_error(error: OSError, path: Path) -> str:
    import errno

    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full while writing {path}: {error.strerror}"
    if error.errno == errno.EFBIG:
        return f"file size limit reached while writing {path}: {error.strerror}"
    return f"cannot write {error.filename or path}: {error.strerror or error}"

