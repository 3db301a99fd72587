"""What a Google Drive resumable session sends: a growing stage file (or a small object)
read chunk by chunk, hashed once on the way.

A chunk is read again after a dropped connection (Drive tells which offset it holds,
and the upload resumes there), so bytes are hashed only the first time they are read;
the MD5 is what Drive reports back (``md5Checksum``), the SHA-256 what the writer did.
"""

from __future__ import annotations

import hashlib
import re

from ..errors import DriveError, VerificationError
from ..growing import GrowingFile, in_thread, read_exactly


class ChunkSource:
    """Reads ``[offset, offset + n)`` of what is being uploaded, hashing fresh bytes."""

    def __init__(self, source: GrowingFile | None = None, descriptor: int | None = None,
                 data: bytes | None = None) -> None:
        if (source is None) == (data is None):
            raise TypeError("give a growing file (with its descriptor) or the data")
        self.source = source
        self.descriptor = descriptor
        self.data = data
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha256 = hashlib.sha256()
        self.hashed = 0  # bytes fed to the digests

    @property
    def name(self) -> str:
        return str(self.source.path) if self.source is not None else "the object"

    @property
    def total(self) -> int | None:
        """The whole size once known (the file is complete)."""
        if self.source is None:
            assert self.data is not None
            return len(self.data)
        return self.source.size if self.source.complete else None

    def expected(self) -> tuple[int, str]:
        if self.source is None:
            assert self.data is not None
            return len(self.data), hashlib.sha256(self.data).hexdigest()
        return self.source.expected()

    async def available(self, offset: int) -> int:
        if self.source is None:
            assert self.data is not None
            return len(self.data)
        return await self.source.available(offset)

    async def read(self, offset: int, length: int) -> bytes:
        if self.source is None:
            assert self.data is not None
            data = self.data[offset:offset + length]
        else:
            assert self.descriptor is not None
            data = await in_thread(read_exactly, self.descriptor, offset, length,
                                   self.source.path)
        end = offset + len(data)
        if offset > self.hashed:
            raise RuntimeError(f"read at {offset} after only {self.hashed} bytes were hashed")
        if end > self.hashed:
            fresh = memoryview(data)[self.hashed - offset:]
            if len(fresh) > 1024 * 1024:
                await in_thread(self._absorb, fresh)
            else:
                self._absorb(fresh)
            self.hashed = end
        return data

    def _absorb(self, fresh: memoryview) -> None:
        self.md5.update(fresh)
        self.sha256.update(fresh)

    def check_complete(self) -> None:
        """Everything was read, and it is what the writer reported."""
        size, sha256 = self.expected()
        if self.hashed != size or self.sha256.hexdigest() != sha256:
            raise VerificationError(
                f"{self.name} does not match what its writer reported: expected {size} bytes "
                f"with SHA-256 {sha256[:12]}…, read {self.hashed} bytes with "
                f"{self.sha256.hexdigest()[:12]}…", retryable=False)


def committed(header: str | None) -> int:
    """Bytes Drive holds, from a 308 answer's ``Range: bytes=0-N`` (none: 0)."""
    if not header:
        return 0
    match = re.fullmatch(r"\s*bytes=0-(\d+)\s*", header)
    if not match:
        raise DriveError(f"unexpected Range header in Drive's answer: {header!r}")
    return int(match.group(1)) + 1
