"""Restores: fetch a backup's file, verify it, decompress it, then load it or write it out.

Nothing is loaded before the whole file has been fetched and verified: it is first
downloaded into a private scratch folder (0700) — inside the target source's
``tmp_folder``, or next to ``--to-file`` — while its SHA-256 and size are computed,
and both must equal what the catalog recorded at dump time. A mismatch stops the
restore with nothing loaded. Only then is the file decompressed as a stream (with
bounded memory, whatever the compression ratio) into:

- a data source (``to_source``): the source's own ``restore`` creates the target
  database if needed, refuses a non-empty one unless ``force``, and stops at the
  first error; the backup's engine must be the source's engine;
- or a file (``to_file``): the *uncompressed* dump in its own format — SQL for
  plain PostgreSQL and MySQL dumps, a pg_dump custom-format archive (load it with
  ``pg_restore``) for ``format: custom`` sources, an SQLite database file for SQLite.
  The file is written under a temporary name, fsynced and renamed, so it appears
  whole or not at all; an existing file is never overwritten unless ``force``. When
  ``to_file`` is an existing directory the dump is written inside it, named after
  the backup without its compression extension.

Where the file comes from: the drive named by ``drive`` (its config label); else the
local dump when it is still on disk (DumpPath); else the first finished drive file,
local drives first. The scratch folder is removed whatever happens.

Callers (CLI ``restore``, and anything else) should hold the target source's lock, as
for a backup, so that a restore and a dump of the same source never overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import hashlib
import os
import shutil
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import IO, Any, Protocol

import structlog

from .catalog import Catalog
from .compression import EXTENSIONS
from .config import Settings
from .drives import build_drive
from .drives.base import Drive
from .errors import ConflictError, DriveError, RestoreError
from .files import READ_SIZE, fsync_directory, read_file
from .models import Backup, Status, rfc3339
from .sources import Source, build_source

log = structlog.get_logger("backupmand.restore")

#: Provider spellings of the same engine (config aliases).
ENGINE_ALIASES = {"postgresql": "postgres", "mariadb": "mysql"}
SCRATCH_PREFIX = ".backupmand-restore-"
PG_CUSTOM_MAGIC = b"PGDMP"
SQLITE_MAGIC = b"SQLite format 3\0"


def engine(provider: str) -> str:
    """The engine behind a provider name: postgres, mysql or sqlite."""
    return ENGINE_ALIASES.get(provider, provider)


@dataclasses.dataclass
class _Origin:
    """Where the backup's compressed file is read from."""

    description: str
    open: Callable[[], AsyncIterator[bytes]]
    drive: Drive[Any] | None = None


# --------------------------------------------------------------------------- entry point


async def restore_backup(
    settings: Settings,
    catalog: Catalog,
    backup_id: str,
    *,
    drive: str | None = None,
    to_file: Path | None = None,
    to_source: str | None = None,
    database: str | None = None,
    force: bool = False,
) -> str:
    """Restore one backup into a data source or a file; return what was restored where.

    Raises NotFoundError for an unknown backup id, ConflictError when the backup has
    no finished dump to restore from, RestoreError for everything else (bad request,
    download failure, checksum mismatch, a refused or failed load).
    """
    if (to_file is None) == (to_source is None):
        raise RestoreError("give exactly one target: a file (--to-file) or a data source "
                           "(--to-source)")
    if database is not None and to_source is None:
        raise RestoreError("a database name (--db-name) goes with --to-source only")
    backup = await catalog.get_backup(backup_id)
    if backup.dump_status != Status.FINISHED or not backup.sha256 or backup.size is None:
        raise ConflictError(
            f"backup {backup.id} has no finished dump (status {backup.status.value}): "
            "there is nothing to restore"
        )
    if backup.compression not in EXTENSIONS:
        raise RestoreError(f"backup {backup.id} uses unknown compression {backup.compression!r}")

    # Everything that can be refused is refused before a byte is downloaded.
    source: Source[Any] | None = None
    final: Path | None = None
    if to_source is not None:
        try:
            source_config = settings.source(to_source)
        except KeyError:
            raise RestoreError(f"no data source labelled {to_source!r} in the config") from None
        if engine(source_config.provider) != engine(backup.source_provider):
            raise RestoreError(
                f"backup {backup.id} is a {engine(backup.source_provider)} dump; data source "
                f"{to_source!r} is {engine(source_config.provider)}: it cannot be loaded there"
            )
        source = build_source(source_config)
        scratch_parent = source_config.tmp_folder.expanduser()
    else:
        assert to_file is not None
        final = await asyncio.to_thread(_file_target, to_file, backup, force)
        scratch_parent = final.parent
    origin = await _origin(settings, backup, drive)
    try:
        return await _restore_from(origin, backup, source, final, scratch_parent,
                                   database=database, force=force)
    finally:
        if origin.drive is not None:
            with contextlib.suppress(Exception):
                await origin.drive.aclose()


async def _restore_from(
    origin: _Origin, backup: Backup, source: Source[Any] | None, final: Path | None,
    scratch_parent: Path, *, database: str | None, force: bool,
) -> str:
    scratch = await asyncio.to_thread(_make_scratch, scratch_parent)
    try:
        downloaded = scratch / "download"
        await _fetch_verified(origin, backup, downloaded)
        log.info("restore.verified", backup_id=backup.id, label=backup.label,
                 origin=origin.description, size=backup.size)
        what = (f"backup {backup.id} of {backup.label!r} ({rfc3339(backup.created_at)}) "
                f"from {origin.description}")
        blocks = _plain_blocks(downloaded, backup.compression)
        try:
            if source is not None:
                workdir = scratch / "work"
                await asyncio.to_thread(workdir.mkdir, mode=0o700)
                target = await source.restore(blocks, database=database, force=force,
                                              workdir=workdir)
                log.info("restore.loaded", backup_id=backup.id, label=backup.label,
                         target=target)
                return f"{what} restored into {target}"
            assert final is not None
            kind = await _write_file(blocks, scratch, final, force)
            log.info("restore.written", backup_id=backup.id, label=backup.label,
                     path=str(final))
            return f"{what} written to {final} ({kind})"
        finally:
            await blocks.aclose()  # a loader that stopped early leaves no open file behind
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)


# --------------------------------------------------------------------------- choosing the file


async def _origin(settings: Settings, backup: Backup, drive_label: str | None) -> _Origin:
    if drive_label is not None:
        try:
            drive_config = settings.drive(drive_label)
        except KeyError:
            raise RestoreError(f"no drive labelled {drive_label!r} in the config") from None
        drive_file = backup.drive_file(drive_label)
        if drive_file is None or drive_file.status != Status.FINISHED or not drive_file.path:
            state = "no file" if drive_file is None else f"a {drive_file.status.value} file"
            raise ConflictError(f"backup {backup.id} has {state} on drive {drive_label!r}: "
                                "nothing finished to restore from there")
        return _drive_origin(drive_config, drive_label, drive_file.path)

    local = Path(backup.dump_path) if backup.dump_path else None
    if local is not None and await asyncio.to_thread(local.is_file):
        return _Origin(f"the local dump {local}", lambda: read_file(local))

    candidates = [
        drive_file for drive_file in backup.drive_files
        if drive_file.status == Status.FINISHED and drive_file.path
    ]
    candidates.sort(key=lambda drive_file: drive_file.provider != "local")  # stable
    for drive_file in candidates:
        try:
            drive_config = settings.drive(drive_file.drive)
        except KeyError:
            log.warning("restore.drive_not_configured", backup_id=backup.id,
                        drive=drive_file.drive)
            continue
        assert drive_file.path is not None
        return _drive_origin(drive_config, drive_file.drive, drive_file.path)
    raise ConflictError(
        f"backup {backup.id} has no finished drive file on a configured drive and no local "
        "dump: there is nothing to restore from"
    )


def _drive_origin(config: Any, label: str, path: str) -> _Origin:
    drive = build_drive(config)
    return _Origin(f"drive {label!r} ({path})", lambda: drive.download(path), drive)


# --------------------------------------------------------------------------- fetching


async def _fetch_verified(origin: _Origin, backup: Backup, path: Path) -> None:
    """Copy the file to ``path`` computing size and SHA-256; RestoreError on any mismatch."""
    assert backup.size is not None and backup.sha256 is not None
    digest = hashlib.sha256()
    size = 0
    handle = await asyncio.to_thread(_open_private, path)
    try:
        try:
            async for block in origin.open():
                size += len(block)
                if size > backup.size:
                    raise RestoreError(
                        f"{origin.description} holds more than the {backup.size} bytes recorded "
                        "for this backup: it is not the file that was backed up; nothing was "
                        "restored"
                    )
                await asyncio.to_thread(_hash_and_write, handle, digest, block)
            await asyncio.to_thread(_flush, handle)
        except DriveError as error:
            raise RestoreError(f"downloading from {origin.description} failed: {error}") from None
        except OSError as error:
            raise RestoreError(f"reading {origin.description} into {path.parent} failed: "
                               f"{error.strerror or error}") from None
    finally:
        await asyncio.to_thread(handle.close)
    actual = digest.hexdigest()
    if size != backup.size or actual != backup.sha256:
        raise RestoreError(
            f"{origin.description} does not match the backup: expected {backup.size} bytes "
            f"with SHA-256 {backup.sha256}, got {size} bytes with {actual}; nothing was "
            "restored (try another drive with --drive)"
        )


def _open_private(path: Path) -> IO[bytes]:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    return os.fdopen(descriptor, "wb")


def _hash_and_write(handle: IO[bytes], digest: Any, block: bytes) -> None:
    digest.update(block)
    handle.write(block)


def _flush(handle: IO[bytes]) -> None:
    handle.flush()
    os.fsync(handle.fileno())


# --------------------------------------------------------------------------- decompressing


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...

    def close(self) -> None: ...


def _reader(path: Path, compression: str) -> tuple[IO[bytes], _Readable]:
    """(raw file, reader of the decompressed bytes) — readers bound each read's output."""
    raw = open(path, "rb")  # closed by _plain_blocks
    try:
        if compression == "zstd":
            import zstandard

            reader: _Readable = zstandard.ZstdDecompressor().stream_reader(
                raw, read_across_frames=True, closefd=False
            )
        elif compression == "gzip":
            reader = gzip.GzipFile(fileobj=raw, mode="rb")  # every member of a pigz file
        else:
            reader = raw
    except BaseException:
        raw.close()
        raise
    return raw, reader


async def _plain_blocks(path: Path, compression: str) -> AsyncGenerator[bytes, None]:
    """The verified file, decompressed, in blocks of at most 1 MiB."""
    raw, reader = await asyncio.to_thread(_reader, path, compression)
    try:
        while True:
            try:
                block = await asyncio.to_thread(reader.read, READ_SIZE)
            except (OSError, EOFError, ValueError) as error:
                raise RestoreError(f"the backup file cannot be decompressed ({compression}): "
                                   f"{error}") from None
            except Exception as error:  # zstandard.ZstdError
                if type(error).__name__ != "ZstdError":
                    raise
                raise RestoreError(f"the backup file cannot be decompressed ({compression}): "
                                   f"{error}") from None
            if not block:
                break
            yield block
    finally:
        await asyncio.to_thread(_close, reader, raw)


def _close(reader: _Readable, raw: IO[bytes]) -> None:
    with contextlib.suppress(Exception):
        reader.close()
    raw.close()


# --------------------------------------------------------------------------- files


def _make_scratch(parent: Path) -> Path:
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=parent))
    except OSError as error:
        raise RestoreError(f"cannot create a scratch folder in {parent}: "
                           f"{error.strerror or error}") from None


def _file_target(to_file: Path, backup: Backup, force: bool) -> Path:
    """The absolute path the plain dump goes to; refused early when it exists."""
    target = to_file.expanduser().absolute()
    if target.is_dir():
        name = backup.name
        suffix = EXTENSIONS.get(backup.compression, "")
        if suffix and name.endswith(suffix):
            name = name[: -len(suffix)]
        target = target / name
    if target.exists() and not force:
        raise RestoreError(f"{target} already exists: not overwritten (use --force)")
    if target.is_dir():
        raise RestoreError(f"{target} is a directory")
    if not target.parent.is_dir():
        raise RestoreError(f"{target.parent} is not a directory")
    return target


async def _write_file(blocks: AsyncIterator[bytes], scratch: Path, final: Path,
                      force: bool) -> str:
    """Write ``blocks`` to ``final`` atomically; return what kind of dump it is."""
    temporary = scratch / "plain"
    handle = await asyncio.to_thread(_open_private, temporary)
    head = b""
    try:
        async for block in blocks:
            if len(head) < 16:
                head += block[: 16 - len(head)]
            await asyncio.to_thread(handle.write, block)
        await asyncio.to_thread(_flush, handle)
    except OSError as error:
        raise RestoreError(f"writing {final} failed: {error.strerror or error}") from None
    finally:
        await asyncio.to_thread(handle.close)
    try:
        await asyncio.to_thread(_publish, temporary, final, force)
    except FileExistsError:
        raise RestoreError(f"{final} already exists: not overwritten (use --force)") from None
    except OSError as error:
        raise RestoreError(f"writing {final} failed: {error.strerror or error}") from None
    if head.startswith(PG_CUSTOM_MAGIC):
        return "a pg_dump custom-format archive: load it with pg_restore"
    if head.startswith(SQLITE_MAGIC):
        return "an SQLite database file"
    return "a plain SQL dump"


def _publish(temporary: Path, final: Path, force: bool) -> None:
    if force:
        os.replace(temporary, final)
    else:
        os.link(temporary, final)  # fails if the name exists: never overwrites
        temporary.unlink()
    fsync_directory(final.parent)
