"""Signed, expiring download URLs (HMAC-SHA256).

The key is ``http.url_secret`` when configured (at least 32 bytes), otherwise a random
key generated at first start and kept in the state directory, so URLs survive
restarts. The key file is written through a temporary file created with
``O_EXCL|O_NOFOLLOW`` (a link planted at its name is never followed, and never
written through), and read with ``O_NOFOLLOW``: a key file that is a link, or that
other users could read or replace, is not trusted and is replaced by a new key.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
import time
from pathlib import Path
from urllib.parse import quote

import structlog

from .config import Settings
from .errors import CatalogError
from .permissions import create_private_file, private_directory

log = structlog.get_logger("backupmand.signing")

KEY_FILE = "url-signing.key"
#: Digits an ``expires`` may have: seconds since 1970 need 10 until the year 2286.
_EXPIRES_DIGITS = 12


def load_key(settings: Settings) -> bytes:
    if settings.http.url_secret is not None:
        return settings.http.url_secret.get_secret_value().encode()
    if settings.database.provider == "memory":
        return secrets.token_bytes(32)  # nothing persists: neither do the URLs
    path = settings.state_directory / KEY_FILE
    key = _read_key(path)
    if key is not None:
        return key
    key = secrets.token_bytes(32)
    try:
        _write_key(path, key)
    except OSError as error:
        raise CatalogError(f"cannot write the URL-signing key {path}: "
                           f"{error.strerror or error}") from None
    return key


def _write_key(path: Path, key: bytes) -> None:
    private_directory(path.parent)
    temporary = path.with_suffix(".tmp")
    try:
        descriptor = create_private_file(temporary)
    except FileExistsError:
        # Left by a process that died while writing, or planted: remove the name itself
        # (unlink never follows a link) and create it afresh, still exclusively.
        temporary.unlink()
        descriptor = create_private_file(temporary)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(key.hex())
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def _read_key(path: Path) -> bytes | None:
    """The stored key; None when there is none or it must not be trusted."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as error:
        log.warning("signing.key_replaced", path=str(path),
                    reason=f"cannot open it without following links: {error.strerror}")
        return None
    with os.fdopen(descriptor) as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or (
                info.st_mode & 0o077):
            log.warning("signing.key_replaced", path=str(path),
                        reason="not a private file of this user (mode "
                               f"{stat.S_IMODE(info.st_mode):04o}): others may know the key; "
                               "URLs signed with it stop working")
            return None
        try:
            return bytes.fromhex(handle.read().strip())
        except ValueError:
            log.warning("signing.key_replaced", path=str(path), reason="not a hex key")
            return None


def signature(key: bytes, identifier: str, expires: int) -> str:
    message = f"download:{identifier}:{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_url(key: bytes, base_url: str, identifier: str, ttl: int) -> str:
    expires = int(time.time()) + ttl
    token = signature(key, identifier, expires)
    return (f"{base_url.rstrip('/')}/api/backups/{quote(identifier)}/download"
            f"?expires={expires}&signature={token}")


def verify(key: bytes, identifier: str, expires: str, token: str) -> bool:
    """True for a signature made with ``key`` that has not expired; False for anything
    else, however malformed (non-ASCII signatures, huge numbers, lone surrogates)."""
    if not (expires.isascii() and expires.isdigit()) or len(expires) > _EXPIRES_DIGITS:
        return False
    moment = int(expires)
    if moment < time.time():
        return False
    try:
        expected = signature(key, identifier, moment).encode("ascii")
        given = token.encode("utf-8", "surrogateescape")
    except UnicodeError:
        return False
    return hmac.compare_digest(expected, given)
