"""A stage file being written by the dump, read by drives while it grows.

(Minimal version: the drives' own streaming readers replace waiting for the end.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path


class GrowingFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._loop = asyncio.get_running_loop()
        self._size = 0
        self._expected: tuple[int, str] | None = None
        self._error: BaseException | None = None
        self._changed = asyncio.Event()

    # writer side (grew may be called from any thread)
    def grew(self, size: int) -> None:
        self._loop.call_soon_threadsafe(self._set, size)

    def _set(self, size: int) -> None:
        self._size = max(self._size, size)
        self._changed.set()

    def moved(self, path: Path) -> None:
        """The writer renamed the file (descriptors already open keep working)."""
        self.path = path

    def finish(self, size: int, sha256: str) -> None:
        self._size = size
        self._expected = (size, sha256)
        self._changed.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._changed.set()

    # reader side
    @property
    def complete(self) -> bool:
        return self._expected is not None

    def expected(self) -> tuple[int, str]:
        assert self._expected is not None, "the file is not complete"
        return self._expected

    async def available(self, offset: int) -> int:
        while True:
            if self._error is not None:
                raise OSError(f"the dump failed: {self._error}")
            if self._size > offset or self._expected is not None:
                return self._size
            self._changed.clear()
            await self._changed.wait()
