"""Restores: find a backup's file, stream it through verification, decryption and
decompression, and load it into a data source or write it to a file.

Finding it
    A backup id from the catalog; or, with ``--drive``, a backup found by the manifests
    on that drive alone — by id, by file name, or the latest of a label
    (``--label L --latest``) — so that a new machine with only the config file (and the
    identity, when encrypted) restores from the bucket with an empty catalog. Copies:
    the drive named by ``drive``; else the local dump while it is kept; else the first
    finished drive file, local drives first.

Streaming
    The stored bytes are never staged whole: they are hashed as they stream (decoding.
    verified), decrypted (age, with ``--identity`` or ``encryption.identity_file``) and
    decompressed with bounded memory into the load. Verification ends with the stream:
    a source loads into a database it creates (a side database for ``--force``) and
    commits only a complete load, and a file is written under a temporary name and
    renamed only after the last byte checked out — so a copy that turns out altered or
    truncated never replaces anything.

Targets
    - a data source (``to_source``): the backup's engine must be the source's; the
      source's ``restore`` refuses a non-empty target unless ``force``, loads a forced
      restore into a side database and swaps it in only after a complete load (the old
      one kept as ``<name>__before_<UTC stamp>`` unless ``drop_old``), and stops at the
      first error; ``with_globals`` applies the globals companion first (roles, users,
      grants: only what is missing);
    - a file (``to_file``): the plain dump in its own format (SQL, a pg_dump archive, an
      SQLite database), never overwriting an existing file unless ``force``; a folder
      gets the backup's name without its compression and encryption extensions.

Callers (CLI ``restore``, drills) should hold the target source's lock, as for a
backup, so that a restore and a dump of the same source never overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, Any

import structlog

from . import manifest as manifests
from .catalog import Catalog
from .compression import EXTENSIONS
from .config import Settings
from .decoding import explained, identities_for, plain, verified
from .drives import build_drive
from .drives.base import Drive, RemoteFile
from .errors import ConflictError, DriveError, NotFoundError, RestoreError
from .files import fsync_directory, read_file
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
class Origin:
    """Where the backup's stored files are read from."""

    description: str
    open: Callable[[], AsyncIterator[bytes]]
    #: The globals companion's bytes, when there is one there.
    open_globals: Callable[[], AsyncIterator[bytes]] | None = None
    drive: Drive[Any] | None = None

    async def aclose(self) -> None:
        if self.drive is not None:
            with contextlib.suppress(Exception):
                await self.drive.aclose()


@dataclasses.dataclass(frozen=True)
class Request:
    """What to restore and where (the CLI's options)."""

    backup_id: str | None = None
    name: str | None = None  # a dump's (or manifest's) file name on ``drive``
    label: str | None = None  # with latest
    latest: bool = False
    drive: str | None = None
    host: str | None = None  # whose location on the drive (default: this host)
    to_file: Path | None = None
    to_source: str | None = None
    database: str | None = None
    force: bool = False
    drop_old: bool = False
    with_globals: bool = False
    identity: Path | None = None


# --------------------------------------------------------------------------- entry point


async def restore_backup(settings: Settings, catalog: Catalog, backup_id: str | None = None,
                         *, request: Request | None = None, **options: Any) -> str:
    """Restore one backup into a data source or a file; return what was restored where.
    Give a ``Request``, or its fields (``backup_id`` first, the rest by keyword).

    Raises NotFoundError for an unknown backup, ConflictError when the backup has no
    finished dump to restore from, RestoreError for everything else (bad request,
    download failure, checksum mismatch, a missing identity, a refused or failed load).
    """
    if request is None:
        request = Request(backup_id=backup_id, **options)
    _check_request(request)
    backup, origin = await locate(settings, catalog, request)
    try:
        source: Source[Any] | None = None
        if request.to_source is not None:
            source = _target_source(settings, request.to_source, backup)
        identities = await identities_for(settings, backup, identity=request.identity,
                                          source=source.config if source else None)
        what = (f"backup {backup.id} of {backup.label!r} ({rfc3339(backup.created_at)}) "
                f"from {origin.description}")
        if source is not None:
            target = await load_into_source(origin, backup, source, request, identities)
            return f"{what} restored into {target}"
        assert request.to_file is not None
        final, kind = await write_to_file(origin, backup, request.to_file, request.force,
                                          identities)
        return f"{what} written to {final} ({kind})"
    finally:
        await origin.aclose()


def _check_request(request: Request) -> None:
    if (request.to_file is None) == (request.to_source is None):
        raise RestoreError("give exactly one target: a file (--to-file) or a data source "
                           "(--to-source)")
    if request.database is not None and request.to_source is None:
        raise RestoreError("a database name (--db-name) goes with --to-source only")
    if (request.drop_old or request.with_globals) and request.to_source is None:
        raise RestoreError("--drop-old and --globals go with --to-source only")
    chosen = [request.backup_id is not None, request.name is not None, request.latest]
    if sum(chosen) != 1:
        raise RestoreError("give a backup: an id, a file name with --drive, or --label L "
                           "--latest")
    if request.latest and not request.label:
        raise RestoreError("--latest needs --label")
    if request.name is not None and request.drive is None:
        raise RestoreError("a file name is looked up on a drive: give --drive")


def _target_source(settings: Settings, label: str, backup: Backup) -> Source[Any]:
    try:
        config = settings.source(label)
    except KeyError:
        raise RestoreError(f"no data source labelled {label!r} in the config") from None
    if engine(config.provider) != engine(backup.source_provider):
        raise RestoreError(
            f"backup {backup.id} is a {engine(backup.source_provider)} dump; data source "
            f"{label!r} is {engine(config.provider)}: it cannot be loaded there")
    return build_source(config)


# --------------------------------------------------------------------------- finding it


async def locate(settings: Settings, catalog: Catalog, request: Request
                 ) -> tuple[Backup, Origin]:
    """The backup and where to read it, from the catalog or from a drive's manifests."""
    if request.backup_id is not None and await catalog.has_backup(request.backup_id):
        backup = await catalog.get_backup(request.backup_id)
        return backup, await _catalog_origin(settings, backup, request.drive)
    if request.latest and request.drive is None:
        assert request.label is not None
        finished = await catalog.list_backups(label=request.label, status=Status.FINISHED,
                                              limit=1)
        if not finished:
            raise NotFoundError(f"the catalog has no finished backup of {request.label!r}")
        return finished[0], await _catalog_origin(settings, finished[0], None)
    if request.drive is None:
        raise NotFoundError(f"no backup with id {request.backup_id} in the catalog (give "
                            "--drive to look for it on a drive)")
    return await _drive_lookup(settings, request)


async def _catalog_origin(settings: Settings, backup: Backup, drive_label: str | None) -> Origin:
    if backup.dump_status != Status.FINISHED or not backup.sha256 or backup.size is None:
        raise ConflictError(
            f"backup {backup.id} has no finished dump (status {backup.status.value}): "
            "there is nothing to restore")
    if backup.compression not in EXTENSIONS:
        raise RestoreError(f"backup {backup.id} uses unknown compression {backup.compression!r}")
    if drive_label is not None:
        drive_config = _drive_config(settings, drive_label)
        record = backup.drive_file(drive_label)
        if record is None or record.status != Status.FINISHED or not record.path:
            state = "no file" if record is None else f"a {record.status.value} file"
            raise ConflictError(f"backup {backup.id} has {state} on drive {drive_label!r}: "
                                "nothing finished to restore from there")
        return _drive_origin(settings, drive_config, drive_label, record.path,
                             record.globals_path, backup.host)
    local = Path(backup.dump_path) if backup.dump_path else None
    if local is not None and await asyncio.to_thread(local.is_file):
        globals_local = (local.parent / backup.globals_file["File"]
                         if backup.globals_file else None)
        return Origin(f"the local dump {local}", lambda: read_file(local),
                      (lambda: read_file(globals_local)) if globals_local else None)
    candidates = [record for record in backup.drive_files
                  if record.status == Status.FINISHED and record.path and not record.missing]
    candidates.sort(key=lambda record: record.provider != "local")  # stable
    for record in candidates:
        try:
            drive_config = settings.drive(record.drive)
        except KeyError:
            log.warning("restore.drive_not_configured", backup_id=backup.id, drive=record.drive)
            continue
        assert record.path is not None
        return _drive_origin(settings, drive_config, record.drive, record.path,
                             record.globals_path, backup.host)
    raise ConflictError(
        f"backup {backup.id} has no finished drive file on a configured drive and no local "
        "dump: there is nothing to restore from")


def _drive_config(settings: Settings, label: str) -> Any:
    try:
        return settings.drive(label)
    except KeyError:
        raise RestoreError(f"no drive labelled {label!r} in the config") from None


def _drive_origin(settings: Settings, config: Any, label: str, path: str,
                  globals_path: str | None, host: str | None) -> Origin:
    drive = build_drive(config, host or settings.host_name)
    return Origin(f"drive {label!r} ({path})", lambda: drive.download(path),
                  (lambda: drive.download(globals_path)) if globals_path else None, drive)


async def _drive_lookup(settings: Settings, request: Request) -> tuple[Backup, Origin]:
    """A backup found by the manifests on ``request.drive`` alone (no catalog record)."""
    assert request.drive is not None
    config = _drive_config(settings, request.drive)
    host = request.host or settings.host_name
    wanted = request.name
    if wanted is not None and not wanted.endswith(manifests.SUFFIX):
        try:
            wanted = manifests.manifest_name(wanted)
        except ValueError:
            raise RestoreError(f"{request.name!r} is not a backupmand file name") from None
    drive = build_drive(config, host)
    try:
        files = await drive.list_files()
        by_name = {item.name: item for item in files}
        found: list[tuple[manifests.Manifest, RemoteFile]] = []
        if wanted is not None:
            if wanted not in by_name:
                raise NotFoundError(f"drive {request.drive!r} holds no manifest {wanted} "
                                    f"(for host {host})")
            found.append(await _read_manifest(drive, by_name[wanted]))
        else:
            for item in files:
                if not item.name.endswith(manifests.SUFFIX):
                    continue
                try:
                    entry = await _read_manifest(drive, item)
                except RestoreError as error:
                    log.warning("restore.manifest_skipped", path=item.path, error=str(error))
                    continue
                if request.backup_id is not None and entry[0].backup_id == request.backup_id:
                    found = [entry]
                    break
                if request.label is not None and entry[0].label == request.label:
                    found.append(entry)
            if request.backup_id is not None and not found:
                raise NotFoundError(f"no backup with id {request.backup_id} in the catalog or "
                                    f"on drive {request.drive!r} (host {host})")
            if not found:
                raise NotFoundError(f"drive {request.drive!r} holds no backup of "
                                    f"{request.label!r} (host {host})")
            found.sort(key=lambda entry: (entry[0].created_at, entry[0].finished_at))
            found = found[-1:]
        manifest, item = found[0]
        dump = by_name.get(manifest.file)
        if dump is None:
            raise RestoreError(f"the manifest {item.name} names {manifest.file}, which is not "
                               f"on drive {request.drive!r}")
        globals_item = by_name.get(manifest.globals_file["File"]) if manifest.globals_file else None
        backup = manifest.to_backup(request.drive, drive.provider, dump_path=dump.path,
                                    manifest_path=item.path,
                                    globals_path=globals_item.path if globals_item else None)
    except BaseException:
        with contextlib.suppress(Exception):
            await drive.aclose()
        raise
    globals_path = globals_item.path if globals_item else None
    return backup, Origin(f"drive {request.drive!r} ({dump.path}, from its manifest)",
                          lambda: drive.download(dump.path),
                          (lambda: drive.download(globals_path)) if globals_path else None, drive)


async def _read_manifest(drive: Drive[Any], item: RemoteFile
                         ) -> tuple[manifests.Manifest, RemoteFile]:
    try:
        data = await drive.read_bytes(item.path)
    except DriveError as error:
        raise RestoreError(f"reading {item.path} failed: {error}") from None
    try:
        return manifests.parse(data, name=item.name), item
    except manifests.ManifestError as error:
        raise RestoreError(f"{item.path} is not a valid manifest: {error}") from None


# --------------------------------------------------------------------------- loading


def _stream(origin: Origin, backup: Backup, identities: Any) -> AsyncIterator[bytes]:
    assert backup.size is not None and backup.sha256 is not None
    return plain(verified(origin.open(), size=backup.size, sha256=backup.sha256,
                          where=origin.description),
                 compression=backup.compression, encrypted=backup.encrypted,
                 identities=identities, recipients=backup.recipients)


async def _explained(error: RestoreError, origin: Origin, backup: Backup) -> RestoreError:
    assert backup.size is not None and backup.sha256 is not None
    return await explained(error, origin.open, size=backup.size, sha256=backup.sha256,
                           where=origin.description)


async def load_into_source(origin: Origin, backup: Backup, source: Source[Any],
                           request: Request, identities: Any) -> str:
    scratch = await asyncio.to_thread(_make_scratch, source.config.tmp_folder.expanduser())
    try:
        if request.with_globals:
            await _restore_globals(origin, backup, source, scratch, identities)
        workdir = scratch / "work"
        await asyncio.to_thread(workdir.mkdir, mode=0o700)
        blocks = _stream(origin, backup, identities)
        try:
            target = await source.restore(blocks, database=request.database,
                                          force=request.force, workdir=workdir,
                                          drop_old=request.drop_old)
        except RestoreError as error:
            raise await _explained(error, origin, backup) from None
        finally:
            await blocks.aclose()  # type: ignore[attr-defined]
        log.info("restore.loaded", backup_id=backup.id, label=backup.label, target=target,
                 origin=origin.description)
        return target
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)


async def _restore_globals(origin: Origin, backup: Backup, source: Source[Any], scratch: Path,
                           identities: Any) -> None:
    facts = backup.globals_file
    if facts is None or origin.open_globals is None:
        raise RestoreError(f"backup {backup.id} has no globals companion file "
                           + ("" if facts is None else f"on {origin.description}"))
    chunks = plain(verified(origin.open_globals(), size=facts["Size"], sha256=facts["Sha256"],
                            where=f"{origin.description}, globals"),
                   compression=backup.compression, encrypted=backup.encrypted,
                   identities=identities, recipients=backup.recipients)
    # A globals script is small: checked whole before a statement of it runs.
    script = b"".join([chunk async for chunk in chunks])
    workdir = scratch / "globals"
    await asyncio.to_thread(workdir.mkdir, mode=0o700)

    async def whole() -> AsyncIterator[bytes]:
        yield script

    applied = await source.restore_globals(whole(), workdir=workdir)
    log.info("restore.globals_applied", backup_id=backup.id, target=applied)


# --------------------------------------------------------------------------- files


def _make_scratch(parent: Path) -> Path:
    try:
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=parent))
    except OSError as error:
        raise RestoreError(f"cannot create a scratch folder in {parent}: "
                           f"{error.strerror or error}") from None


def plain_name(backup: Backup) -> str:
    """The backup's file name without its encryption and compression extensions."""
    name = backup.name.removesuffix(".age") if backup.encrypted else backup.name
    suffix = EXTENSIONS.get(backup.compression, "")
    return name[: -len(suffix)] if suffix and name.endswith(suffix) else name


def _file_target(to_file: Path, backup: Backup, force: bool) -> Path:
    """The absolute path the plain dump goes to; refused early when it exists."""
    target = to_file.expanduser().absolute()
    if target.is_dir():
        target = target / plain_name(backup)
    if target.exists() and not force:
        raise RestoreError(f"{target} already exists: not overwritten (use --force)")
    if target.is_dir():
        raise RestoreError(f"{target} is a directory")
    if not target.parent.is_dir():
        raise RestoreError(f"{target.parent} is not a directory")
    return target


async def write_to_file(origin: Origin, backup: Backup, to_file: Path, force: bool,
                        identities: Any) -> tuple[Path, str]:
    """Write the plain dump to ``to_file`` atomically; return it and what kind it is."""
    final = await asyncio.to_thread(_file_target, to_file, backup, force)
    scratch = await asyncio.to_thread(_make_scratch, final.parent)
    try:
        temporary = scratch / "plain"
        handle = await asyncio.to_thread(_open_private, temporary)
        head = b""
        blocks = _stream(origin, backup, identities)
        try:
            async for block in blocks:
                if len(head) < 16:
                    head += block[: 16 - len(head)]
                await asyncio.to_thread(handle.write, block)
            await asyncio.to_thread(_flush, handle)
        except OSError as error:
            raise RestoreError(f"writing {final} failed: {error.strerror or error}") from None
        except RestoreError as error:
            raise await _explained(error, origin, backup) from None
        finally:
            await blocks.aclose()  # type: ignore[attr-defined]
            await asyncio.to_thread(handle.close)
        try:
            await asyncio.to_thread(_publish, temporary, final, force)
        except FileExistsError:
            raise RestoreError(f"{final} already exists: not overwritten (use --force)") from None
        except OSError as error:
            raise RestoreError(f"writing {final} failed: {error.strerror or error}") from None
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)
    log.info("restore.written", backup_id=backup.id, label=backup.label, path=str(final))
    if head.startswith(PG_CUSTOM_MAGIC):
        return final, "a pg_dump custom-format archive: load it with pg_restore"
    if head.startswith(SQLITE_MAGIC):
        return final, "an SQLite database file"
    return final, "a plain SQL dump"


def _open_private(path: Path) -> IO[bytes]:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    return os.fdopen(descriptor, "wb")


def _flush(handle: IO[bytes]) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _publish(temporary: Path, final: Path, force: bool) -> None:
    if force:
        os.replace(temporary, final)
    else:
        os.link(temporary, final)  # fails if the name exists: never overwrites
        temporary.unlink()
    fsync_directory(final.parent)
