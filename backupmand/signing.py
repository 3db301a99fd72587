"""Signed, expiring download URLs (HMAC-SHA256).

The key is ``http.url_secret`` when configured, otherwise a random key generated at
first start and kept (mode 0600) in the state directory, so URLs survive restarts.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from urllib.parse import quote

from .config import Settings

KEY_FILE = "url-signing.key"


def load_key(settings: Settings) -> bytes:
    if settings.http.url_secret is not None:
        return settings.http.url_secret.get_secret_value().encode()
    if settings.database.provider == "memory":
        return secrets.token_bytes(32)  # nothing persists: neither do the URLs
    path = settings.state_directory / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    key = secrets.token_bytes(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key.hex())
        handle.flush()
        os.fsync(handle.fileno())
    Path(temporary).replace(path)
    return key


def signature(key: bytes, identifier: str, expires: int) -> str:
    message = f"download:{identifier}:{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_url(key: bytes, base_url: str, identifier: str, ttl: int) -> str:
    expires = int(time.time()) + ttl
    token = signature(key, identifier, expires)
    return (f"{base_url.rstrip('/')}/api/backups/{quote(identifier)}/download"
            f"?expires={expires}&signature={token}")


def verify(key: bytes, identifier: str, expires: str, token: str) -> bool:
    try:
        moment = int(expires)
    except ValueError:
        return False
    if moment < time.time():
        return False
    return hmac.compare_digest(signature(key, identifier, moment), token)
