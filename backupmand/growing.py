"""A stage file that one thread writes while every drive reads it back as it grows.

The pipeline writes the compressed (and encrypted) dump into its stage file once; each
drive follows that file from the page cache instead of receiving the bytes from the
writer. So the dump is read once, no drive can slow the writer down (a drive that
lags only reads further behind), and memory stays bounded whatever the dump's size.

Writer side (any thread; the pipeline's writer thread):
    ``grew(size)`` after each write, once the first ``size`` bytes are in the file (in
    the kernel, not only in a userspace buffer); ``finish(size, sha256)`` when the file
    is whole and its SHA-256 known; ``fail(error)`` when it never will be. The first of
    ``finish`` / ``fail`` settles the file; later calls return False and change nothing.
    ``rename(path)`` moves the file (``.partial`` to its final name) without breaking
    readers that are opening it at that moment.

Reader side (the event loop; the drives):
    ``await available(offset)`` returns how many bytes are there once more than
    ``offset`` are, or once the file is complete (``complete``); ``expected()`` is the
    (size, SHA-256) the writer reported; ``await completed()`` waits for it.
    ``open_reader()`` gives a descriptor for positional reads (pread, copy_file_range),
    ``follow(start)`` and ``blocks(start, end)`` the bytes as async iterators. A writer's
    failure is raised to every reader as :class:`WriterFailedError`; a file that holds
    fewer bytes than the writer reported as :class:`~backupmand.errors.VerificationError`.

Waiting is event-driven: a reader that is ahead of the writer parks a future, and the
writer's next ``grew`` / ``finish`` / ``fail`` resolves it through
``call_soon_threadsafe``. Nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from .errors import DriveError, VerificationError

#: Blocks handed out by ``follow`` / ``blocks``.
BLOCK_SIZE = 1024 * 1024

T = TypeVar("T")


class WriterFailedError(DriveError):
    """Raised to the readers of a growing file whose writer failed (the dump failed:
    there is nothing to store)."""

    def __init__(self, path: Path, cause: BaseException) -> None:
        super().__init__(f"the stage file {path} was not completed: {cause}", retryable=False)
        self.cause = cause


_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class GrowingFile:
    """One stage file, written by one writer and read by any number of drives."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._size = 0
        self._expected: tuple[int, str] | None = None
        self._failure: BaseException | None = None
        self._waiters: list[_Waiter] = []

    @classmethod
    def complete_file(cls, path: Path, size: int, sha256: str) -> GrowingFile:
        """A file that is already whole (a kept dump being uploaded again)."""
        growing = cls(path)
        growing.finish(size, sha256)
        return growing

    def __repr__(self) -> str:
        state = ("failed" if self._failure is not None
                 else "complete" if self._expected is not None else "growing")
        return f"<GrowingFile {self._path} {state} at {self._size} bytes>"

    # ------------------------------------------------------------------ writer side

    def grew(self, size: int) -> None:
        """The file now holds at least ``size`` bytes (thread safe)."""
        with self._lock:
            if self._expected is not None or self._failure is not None:
                raise RuntimeError(f"{self._path} is settled: it cannot grow")
            if size < self._size:
                raise ValueError(f"{self._path} cannot shrink from {self._size} to {size} bytes")
            if size == self._size:
                return
            self._size = size
            waiters = self._take_waiters()
        _wake(waiters)

    def finish(self, size: int, sha256: str) -> bool:
        """The file is whole: ``size`` bytes with this SHA-256 (hex). False if it was
        already settled."""
        with self._lock:
            if self._expected is not None or self._failure is not None:
                return False
            if size < self._size:
                raise ValueError(f"{self._path} cannot shrink from {self._size} to {size} bytes")
            self._size = size
            self._expected = (size, sha256)
            waiters = self._take_waiters()
        _wake(waiters)
        return True

    def fail(self, error: BaseException) -> bool:
        """The file will never be whole: readers get WriterFailedError. False if it was
        already settled."""
        with self._lock:
            if self._expected is not None or self._failure is not None:
                return False
            self._failure = error
            waiters = self._take_waiters()
        _wake(waiters)
        return True

    def rename(self, target: Path) -> None:
        """Rename the file to ``target`` (blocking: call it in a thread). Readers open the
        file under the same lock, so none of them looks for it under the old name after
        it has moved."""
        with self._lock:
            os.rename(self._path, target)
            self._path = target

    def _take_waiters(self) -> list[_Waiter]:
        waiters, self._waiters = self._waiters, []
        return waiters

    # ------------------------------------------------------------------ reader side

    @property
    def path(self) -> Path:
        return self._path

    @property
    def size(self) -> int:
        """Bytes written so far (the whole size once complete)."""
        return self._size

    @property
    def complete(self) -> bool:
        return self._expected is not None

    @property
    def failed(self) -> BaseException | None:
        """The writer's error, once it failed."""
        return self._failure

    def expected(self) -> tuple[int, str]:
        """(size, SHA-256) as the writer reported them; RuntimeError before ``finish``."""
        expected = self._expected
        if expected is None:
            raise RuntimeError(f"{self._path} is not complete yet")
        return expected

    async def available(self, offset: int) -> int:
        """Bytes in the file, once there are more than ``offset`` or the file is complete.
        Raises WriterFailedError when the writer failed."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._failure is not None:
                    raise WriterFailedError(self._path, self._failure)
                if self._size > offset or self._expected is not None:
                    return self._size
                future: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, future))
            await future

    async def completed(self) -> tuple[int, str]:
        """Wait until the file is complete; its (size, SHA-256)."""
        while True:
            await self.available(sys.maxsize)
            if self._expected is not None:
                return self._expected

    def open_reader(self) -> int:
        """A new read-only descriptor of the file (blocking: call it in a thread). Read it
        with positional calls (os.pread, copy_file_range with offsets); close it."""
        with self._lock:
            return os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)

    def follow(self, start: int = 0) -> AsyncIterator[bytes]:
        """The file's bytes from ``start`` to its end, as they arrive."""
        return self.blocks(start)

    async def blocks(
        self, start: int = 0, end: int | None = None, *, block_size: int = BLOCK_SIZE,
        descriptor: int | None = None,
    ) -> AsyncIterator[bytes]:
        """The bytes [start, end) (``end`` None: to the end of the complete file), in
        blocks of at most ``block_size``, each yielded as soon as it is in the file.
        VerificationError when the file ends before ``end``. Read through ``descriptor``
        (from ``open_reader``, left open) when given, else through one of its own."""
        own = descriptor is None
        if descriptor is None:
            descriptor = await asyncio.to_thread(self.open_reader)
        try:
            position = start
            while end is None or position < end:
                limit = await self.available(position)
                if end is not None:
                    limit = min(limit, end)
                if position >= limit:
                    if end is not None and position < end:
                        raise VerificationError(
                            f"{self._path} ends at {limit} bytes, {end} were expected",
                            retryable=False)
                    return
                count = min(block_size, limit - position)
                block = await in_thread(read_exactly, descriptor, position, count, self._path)
                position += count
                yield block
        finally:
            if own:
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(os.close, descriptor)


async def in_thread(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a worker thread. A cancellation waits for it to return
    before it is raised: a thread cannot be stopped, and the descriptors it reads or
    writes must stay open until it is done with them."""
    job = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        while not job.done():
            # Cancelled again meanwhile: still wait (the cancellation is raised below).
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({job})
        if not job.cancelled():
            job.exception()  # seen: the cancellation is what the caller gets
        raise


def read_exactly(descriptor: int, offset: int, count: int, path: Path) -> bytes:
    """``count`` bytes at ``offset`` (blocking); VerificationError when the file holds
    fewer, which means it is shorter than its writer reported."""
    data = os.pread(descriptor, count, offset)
    if len(data) == count:
        return data
    pieces = [data]
    got = len(data)
    while got < count:
        more = os.pread(descriptor, count - got, offset + got)
        if not more:
            raise VerificationError(
                f"{path} holds only {offset + got} bytes, {offset + count} were reported",
                retryable=False)
        pieces.append(more)
        got += len(more)
    return b"".join(pieces)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _wake(waiters: list[_Waiter]) -> None:
    for loop, future in waiters:
        # A closed loop has no readers left to wake.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, future)
