"""The data-source contract: every engine's dump, health check and restore.

A source turns its database into a stream of raw (uncompressed) dump bytes. The
pipeline compresses, hashes and stores them; the source only has to say whether the
stream it produced is complete. ``dump`` is an async generator: it raises DumpError
*after* its last chunk when the tool failed or the output is incomplete, and
closing it early stops the tool's whole process group.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

from ..config import SourceBase

ConfigT = TypeVar("ConfigT", bound=SourceBase)


class Source(abc.ABC, Generic[ConfigT]):
    """One configured data source."""

    #: The `provider` value in the config.
    provider: ClassVar[str]

    def __init__(self, config: ConfigT) -> None:
        self.config = config
        self.label = config.label

    @property
    def extension(self) -> str:
        """The uncompressed dump's file extension, e.g. ``.sql``."""
        return ".sql"

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in argv, logs or recorded errors."""
        return ()

    @abc.abstractmethod
    def dump(self, workdir: Path) -> AsyncIterator[bytes]:
        """Yield the raw dump; raise DumpError after the last chunk if it is incomplete.

        ``workdir`` is a private folder inside the source's tmp_folder for any scratch
        files the tool needs; the pipeline removes it afterwards.
        """

    @abc.abstractmethod
    async def health(self) -> None:
        """Return when the database answers; raise HealthError with the reason otherwise."""

    @abc.abstractmethod
    async def restore(
        self, chunks: AsyncIterator[bytes], *, database: str | None, force: bool, workdir: Path
    ) -> str:
        """Load a plain dump (decompressed, already verified) into ``database``.

        ``database`` None means the source's own database. A target that already holds
        data is refused unless ``force``. Returns a description of the target. Raises
        RestoreError when the load fails; it never returns after a partial load.
        """


class TailCheck:
    """Keeps the last bytes of a stream to check a dump's end-of-dump trailer."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.tail = b""

    def feed(self, chunk: bytes) -> bytes:
        self.tail = (self.tail + chunk[-self.size:])[-self.size:]
        return chunk

    def contains(self, marker: bytes) -> bool:
        return marker in self.tail


class ServerSource(Source[ConfigT]):
    """A source reached over the network with a host, a port and an optional password."""

    def secrets(self) -> tuple[str, ...]:
        password = getattr(self.config, "password", None)
        return (password.get_secret_value(),) if password and password.get_secret_value() else ()

    @property
    def where(self) -> str:
        config = self.config
        return f"{getattr(config, 'host', '?')}:{getattr(config, 'port', '?')}"
