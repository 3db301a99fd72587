"""Who may read what backupmand writes: its owner, and nobody else.

Every command starts with ``umask 077`` (``set_private_umask``), whatever umask it
inherited (``sudo -u backupmand backupmand run`` keeps the caller's 022), so that dumps,
kept dumps, drive copies, the catalog and every key are created 0600 in 0700 folders
even where a library or a tool creates them. Where backupmand creates a file or folder
itself, it asks for that mode explicitly too (``private_directory``,
``create_private_file``): the umask only ever removes permissions.

Existing files and folders keep their modes: an operator's choice (a group that may
read the backups folder) is theirs to make.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_UMASK = 0o077
PRIVATE_DIRECTORY_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def set_private_umask() -> int:
    """Files and folders created from now on are private to this user; the old umask."""
    return os.umask(PRIVATE_UMASK)


def private_directory(path: Path) -> None:
    """``mkdir -p`` in which every folder created is 0700 (pathlib gives parents 0777 & ~umask)."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIRECTORY_MODE)
        except FileExistsError:
            pass  # created meanwhile by another process: fine, it is there
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a folder")


def create_private_file(path: Path) -> int:
    """Create ``path`` (0600) and return a descriptor open for writing.

    Never follows a symbolic link and never opens an existing file (O_EXCL), so a link
    planted at ``path`` cannot redirect the write elsewhere: FileExistsError instead.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(path, flags, PRIVATE_FILE_MODE)


def prepare_catalog(db_path: Path) -> None:
    """Create the catalog's folder (0700) and an empty catalog file (0600) if absent.

    SQLite creates a database's ``-wal`` and ``-shm`` files with the database file's own
    mode, so a catalog created 0600 here keeps its companions private too.
    """
    path = db_path.expanduser()
    private_directory(path.parent)
    try:
        os.close(create_private_file(path))
    except FileExistsError:
        pass  # an existing catalog (or a link to one, which SQLite then opens)


def prepare_state(db_path: Path, state_directory: Path) -> None:
    """The catalog file and the state directory (locks, keys), created private if absent;
    CatalogError when either cannot be."""
    from .errors import CatalogError

    try:
        prepare_catalog(db_path)
        private_directory(state_directory)
    except OSError as error:
        where = error.filename or db_path or state_directory
        raise CatalogError(f"cannot create {where}: {error.strerror or error}") from None
