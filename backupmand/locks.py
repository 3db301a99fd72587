"""Locks shared by every backupmand process that uses one catalog.

A per-source lock makes sure a source never runs twice at once, whether the
backup comes from the schedule, the API or a CLI `run` in another process. The
daemon lock keeps a second daemon off the same catalog. Both are ``flock`` locks
on files under ``<state directory>/locks``: the kernel releases them when their
holder dies, which is also how crash recovery tells a dead backup from a live one.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

from .errors import AlreadyRunningError
from .permissions import private_directory


def slug(label: str) -> str:
    """A label as a file-name fragment: lower case, [a-z0-9-] only."""
    text = re.sub(r"[^a-z0-9]+", "-", label.casefold()).strip("-")
    return text or "source"


class FileLock:
    """A non-blocking exclusive flock on one file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return False
        private_directory(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"


class Locks:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def source(self, label: str) -> FileLock:
        return FileLock(self.directory / f"source-{slug(label)}.lock")

    def daemon(self) -> FileLock:
        lock = FileLock(self.directory / "daemon.lock")
        if not lock.try_acquire():
            raise AlreadyRunningError(
                f"another backupmand daemon (pid {lock.holder()}) already serves this catalog; "
                f"stop it first (lock {lock.path})"
            )
        return lock
