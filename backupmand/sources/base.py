"""The data-source contract: every engine's dump, health check, restore and drill.

A source turns its database into a stream of raw (uncompressed) dump bytes. The
pipeline compresses, encrypts, hashes and stores them; the source only has to say
whether the stream it produced is complete, and what it holds. ``dump`` is an async
generator: it raises DumpError *after* its last chunk when the tool failed or the
output is incomplete, and closing it early stops the tool's whole process group.

While it streams, a dump fills in the ``DumpFacts`` it was given: the server and
tool versions, and the exact row count of every table *in the dump* (taken from the
dump's own snapshot or counted in its stream, never an estimate), plus the object
counts. The manifest (SPEC §6.2) and the restore drills (§6.3) are built on them, so
``inventory`` — which a drill runs on the database it restored — must count exactly
the way the dump did: for a faithful dump the two are equal.

One contract test suite (tests/e2e/test_source_contract.py and the restore-fidelity
suite) runs against every engine with its real server.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

from ..config import SourceBase

ConfigT = TypeVar("ConfigT", bound=SourceBase)

#: The keys of ``DumpFacts.objects`` / ``Inventory.objects`` (every engine reports all
#: of them; 0 where the engine has no such thing).
OBJECT_KINDS = ("tables", "views", "sequences", "routines", "triggers", "events",
                "large_objects")


@dataclasses.dataclass
class DumpFacts:
    """What a dump says about itself, filled in by ``Source.dump`` as it runs."""

    #: The database dumped (the configured db_name; the file's name for SQLite).
    database: str | None = None
    server_version: str | None = None
    tool: str | None = None
    tool_version: str | None = None
    #: plain | custom (pg_dump archive) | sqlite (a database file)
    dump_format: str = "plain"
    #: Exact rows per table in the dump: "schema.table" for PostgreSQL, "table" for
    #: MySQL/MariaDB and SQLite.
    tables: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Counts per OBJECT_KINDS key.
    objects: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Inventory:
    """What a database holds, counted the way DumpFacts counts a dump."""

    tables: dict[str, int]
    objects: dict[str, int]
    #: Problems found by an engine's own check (SQLite: integrity_check), empty when none.
    problems: tuple[str, ...] = ()


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
    def dump(self, workdir: Path, facts: DumpFacts) -> AsyncIterator[bytes]:
        """Yield the raw dump; raise DumpError after the last chunk if it is incomplete.

        ``workdir`` is a private folder inside the source's tmp_folder for any scratch
        files the tool needs; the pipeline removes it afterwards. ``facts`` is filled
        in while the dump runs and is complete when the stream ends without error.
        """

    async def dump_globals(self, workdir: Path) -> bytes | None:
        """The server-wide objects the database needs (roles, users, grants, tablespaces)
        as an SQL script that creates only what is missing; None when the engine has
        none or the source's ``globals`` is off. Raises DumpError when it cannot."""
        return None

    @abc.abstractmethod
    async def health(self) -> None:
        """Return when the database answers; raise HealthError with the reason otherwise."""

    @abc.abstractmethod
    async def restore(
        self, chunks: AsyncIterator[bytes], *, database: str | None, force: bool,
        workdir: Path, drop_old: bool = False,
    ) -> str:
        """Load a plain dump (decompressed, decrypted, already verified) into ``database``.

        ``database`` None means the source's own database. A target that already holds
        data is refused unless ``force``; with ``force`` the dump is loaded into a side
        database first and only a complete load replaces the target (the replaced one
        is kept as ``<name>__before_<UTC stamp>`` unless ``drop_old``). Returns a
        description of the target. Raises RestoreError when the load fails; the target
        is then exactly as it was.
        """

    async def restore_globals(self, chunks: AsyncIterator[bytes], *, workdir: Path) -> str:
        """Apply a globals script made by ``dump_globals``, creating only what is missing."""
        from ..errors import RestoreError

        raise RestoreError(f"{self.provider} sources have no globals to restore")

    async def drill(
        self, chunks: AsyncIterator[bytes], *, scratch: str, workdir: Path
    ) -> Inventory:
        """Load the dump, stopping at the first error, into a scratch target named
        ``scratch`` (a database on the source's server, or on ``verify_target``; a
        temporary file under ``workdir`` for SQLite), take its inventory, and drop the
        scratch target — always: also after a failure, a timeout or a cancellation.
        Never reads or changes any other database. RestoreError when the load fails."""
        raise NotImplementedError

    async def drop_stale_scratch(self, prefix: str) -> list[str]:
        """Drop scratch targets whose name starts with ``prefix`` (left by a crash);
        return their names. Sources without a server have none."""
        return []


def before_stamp(now: dt.datetime | None = None) -> str:
    """The UTC stamp of ``<name>__before_<stamp>``, where a forced restore keeps what it
    replaced: ISO 8601 basic format, ``20261201T103000Z``, the same for every engine."""
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")


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
        found = []
        for holder in (self.config, getattr(self.config, "verify_target", None)):
            password = getattr(holder, "password", None)
            if password is not None and password.get_secret_value():
                found.append(password.get_secret_value())
        return tuple(found)

    @property
    def where(self) -> str:
        config = self.config
        return f"{getattr(config, 'host', '?')}:{getattr(config, 'port', '?')}"
