"""How a stream of unknown size becomes S3 multipart parts, and how a part is sent.

Sizes
    S3 allows 10,000 parts per upload, each at least 5 MiB (but the last) and at most
    5 GiB, for objects of at most 5 TiB; parts may differ in size. The size of a
    stream is known only at its end, so the part size grows with the part number:
    ``first`` for parts 1 to 500, twice that for 501 to 1000, and so on (at most 5 GiB).
    With the smallest ``first`` (5 MiB) 10,000 parts hold far more than 5 TiB; with the
    default 16 MiB, dumps up to 7.8 GiB never see a part larger than 16 MiB. The rule
    is a pure function of the part number, ``first`` and PARTS_PER_STEP, which the
    upload stores in the object's metadata, so that its part layout can be computed
    again later (to recognise the object by its composite checksum).

Bodies
    A part's body is never held in memory: :class:`PartBody` is what botocore sends,
    and aiohttp reads it block by block from the stage file as it writes the request
    (an async iterator). Its SHA-256 (and MD5, when the service gets no checksums)
    comes from a hashing pass over the same range just before, which also feeds the
    whole file's SHA-256, part after part, in order.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

from ..growing import BLOCK_SIZE, GrowingFile, in_thread, read_exactly

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_PARTS = 10_000
MAX_OBJECT_SIZE = 5 * 1024**4
#: Parts of one size before the size doubles.
PARTS_PER_STEP = 500


def part_size(number: int, first: int, per_step: int = PARTS_PER_STEP) -> int:
    """The size of part ``number`` (1-based) of an upload whose first part is ``first``."""
    return min(MAX_PART_SIZE, first << ((number - 1) // per_step))


def part_bounds(number: int, first: int, per_step: int = PARTS_PER_STEP) -> tuple[int, int]:
    """The byte range [start, end) of part ``number`` in the stream."""
    steps, rest = divmod(number - 1, per_step)
    start = sum(per_step * min(MAX_PART_SIZE, first << step) for step in range(steps))
    start += rest * part_size(number, first, per_step)
    return start, start + part_size(number, first, per_step)


def part_count(size: int, first: int, per_step: int = PARTS_PER_STEP) -> int:
    """How many parts a stream of ``size`` bytes (> 0) is cut into."""
    number = 1
    while part_bounds(number, first, per_step)[1] < size:
        number += 1
    return number


class PartDigests:
    """The hashes of the parts read so far, and of the whole stream (fed in order)."""

    def __init__(self, *, md5: bool) -> None:
        self.whole = hashlib.sha256()
        self.hashed = 0
        self.md5 = md5

    def hash_part(self, descriptor: int, start: int, end: int, path: Any) -> tuple[bytes, bytes | None]:
        """The SHA-256 (and MD5) of [start, end) of the file (blocking); the next range of
        the whole stream's SHA-256."""
        if start != self.hashed:
            raise RuntimeError(f"parts must be hashed in order: {start} after {self.hashed}")
        sha256 = hashlib.sha256()
        md5 = hashlib.md5(usedforsecurity=False) if self.md5 else None
        position = start
        while position < end:
            block = read_exactly(descriptor, position, min(BLOCK_SIZE, end - position), path)
            self.whole.update(block)
            sha256.update(block)
            if md5 is not None:
                md5.update(block)
            position += len(block)
        self.hashed = end
        return sha256.digest(), md5.digest() if md5 is not None else None


async def composite_sha256(
    descriptor: int, size: int, first: int, per_step: int, path: Any
) -> tuple[str, str]:
    """The file's SHA-256 (hex), and the composite checksum S3 reports for a multipart
    object of this layout: base64 of the SHA-256 of the parts' SHA-256 digests. One
    worker-thread job per part, so that a cancellation waits for one part at most."""
    digests = PartDigests(md5=False)
    part_digests = []
    number = 1
    while True:
        start, end = part_bounds(number, first, per_step)
        end = min(end, size)
        part_digests.append((await in_thread(digests.hash_part, descriptor, start, end, path))[0])
        if end >= size:
            break
        number += 1
    composite = base64.b64encode(hashlib.sha256(b"".join(part_digests)).digest()).decode("ascii")
    return digests.whole.hexdigest(), composite


class PartBody:
    """One part's bytes [start, end) of the stage file, as the body of a request.

    aiohttp sends it as an async iterator (blocks read in worker threads); ``read``,
    ``seek`` and ``tell`` are there for botocore, which accepts a body with ``read``
    and rewinds it before a resend. ``error`` keeps what went wrong while reading (the
    file is shorter than reported), which no retry can mend.
    """

    def __init__(self, source: GrowingFile, descriptor: int, start: int, end: int) -> None:
        self.source = source
        self.descriptor = descriptor
        self.start = start
        self.end = end
        self.position = start
        self.error: BaseException | None = None

    def __len__(self) -> int:
        return self.end - self.start

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._blocks()

    async def _blocks(self) -> AsyncIterator[bytes]:
        # A descriptor of its own: aiohttp may still be finishing a request it has given
        # up on (a task it cancelled) when the upload closes the shared one.
        descriptor = os.dup(self.descriptor)
        try:
            async for block in self.source.blocks(self.start, self.end, descriptor=descriptor):
                yield block
        except Exception as error:
            self.error = error
            raise
        finally:
            os.close(descriptor)

    def read(self, count: int = -1) -> bytes:
        """Blocking: only for a caller outside the event loop."""
        remaining = self.end - self.position
        count = remaining if count is None or count < 0 else min(count, remaining)
        data = os.pread(self.descriptor, count, self.position) if count else b""
        self.position += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: self.start, os.SEEK_CUR: self.position, os.SEEK_END: self.end}[whence]
        self.position = min(max(self.start, base + offset), self.end)
        return self.position - self.start

    def tell(self) -> int:
        return self.position - self.start
