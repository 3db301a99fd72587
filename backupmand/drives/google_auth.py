"""Google OAuth2 for the google_drive drive: the files, the refresh, and ``auth-google``.

The client secret file
    Google's "Desktop app" OAuth client JSON, as the Cloud console downloads it:
    ``{"installed": {"client_id": ..., "client_secret": ..., "auth_uri": ...,
    "token_uri": ..., ...}}`` (a ``"web"`` client is accepted too).

The token file (written by ``backupmand auth-google``, mode 0600)::

    {"access_token": "ya29...",
     "refresh_token": "1//...",
     "token_type": "Bearer",
     "expiry": "2025-07-02T11:00:00Z",
     "scopes": ["https://www.googleapis.com/auth/drive.file"],
     "token_uri": "https://oauth2.googleapis.com/token"}

    It is the JSON of Go's ``oauth2.Token`` (what the Go backupman writes:
    ``access_token``, ``token_type``, ``refresh_token``, ``expiry`` in RFC 3339) with
    two extra keys. Read, it also accepts aiogoogle's user credentials (``expires_at``)
    and google-auth's ``authorized_user`` files (``token`` for the access token);
    an expiry without a time zone is UTC; without an expiry the access token is
    refreshed before its first use. When the drive refreshes the access token it
    rewrites the file atomically (temporary file, fsync, rename; mode 0600), keeping
    every key it does not manage.

The refresh
    :class:`GoogleCredentials` hands out the access token, and refreshes it (through
    aiogoogle's ``Oauth2Manager``, whose token endpoint is set to the drive's
    ``token_uri``) once when it has expired — or when the API refused it — however many
    uploads ask at the same time: one ``asyncio.Lock`` serialises the refresh. Before
    refreshing, the token file is read again, in case another process sharing it
    (the CLI next to the daemon, a new ``auth-google``) has put a newer token there.

``authorize()``
    The installed-app loopback flow (RFC 8252) with PKCE (S256) and a ``state`` check:
    it listens on ``127.0.0.1:<free port>`` for the redirect, prints the consent URL
    (and opens a browser), exchanges the code at the token endpoint and writes the
    token file. The scope is ``drive.file``: backupmand sees only the files it created.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import tempfile
import webbrowser
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import structlog
from aiohttp import web

from .. import logs
from ..errors import DriveError
from ..files import fsync_directory

log = structlog.get_logger("backupmand.drives.google")

SCOPE = "https://www.googleapis.com/auth/drive.file"
DEFAULT_AUTH_URI = "https://accounts.google.com/o/oauth2/auth"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL, not a secret)
#: An access token this close to its expiry counts as expired.
EXPIRY_MARGIN = timedelta(seconds=60)
#: Seconds a token endpoint request may take.
TOKEN_TIMEOUT = 30.0


# --------------------------------------------------------------------------- files


@dataclasses.dataclass(frozen=True)
class ClientSecret:
    client_id: str
    client_secret: str
    auth_uri: str = DEFAULT_AUTH_URI
    token_uri: str = DEFAULT_TOKEN_URI


def load_client_secret(path: Path) -> ClientSecret:
    """Read Google's OAuth client JSON (blocking)."""
    try:
        document = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except OSError as error:
        raise DriveError(f"cannot read the client secret file {path}: "
                         f"{error.strerror or error}", retryable=False) from None
    except ValueError:
        raise DriveError(f"the client secret file {path} is not JSON", retryable=False) from None
    section = None
    if isinstance(document, dict):
        section = document.get("installed") or document.get("web") or (
            document if "client_id" in document else None)
    if not isinstance(section, dict) or not section.get("client_id") or not section.get(
            "client_secret"):
        raise DriveError(
            f"the client secret file {path} has no installed.client_id / client_secret: "
            "download the JSON of a 'Desktop app' OAuth client from the Google Cloud console",
            retryable=False)
    logs.register_secrets([str(section["client_secret"])])  # as it is read: never logged
    return ClientSecret(
        client_id=str(section["client_id"]),
        client_secret=str(section["client_secret"]),
        auth_uri=str(section.get("auth_uri") or DEFAULT_AUTH_URI),
        token_uri=str(section.get("token_uri") or DEFAULT_TOKEN_URI),
    )


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 / ISO 8601 time (naive means UTC); None when absent or unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.year <= 1:
        return None  # Go's zero time: no expiry known
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass
class StoredToken:
    """The token file's content; ``document`` keeps every key for the write-back."""

    access_token: str
    refresh_token: str
    expiry: datetime | None
    scopes: tuple[str, ...]
    document: dict[str, Any]

    def expired(self, now: datetime | None = None) -> bool:
        if not self.access_token or self.expiry is None:
            return True
        return (now or datetime.now(UTC)) >= self.expiry - EXPIRY_MARGIN


def load_token(path: Path) -> StoredToken:
    """Read a token file (blocking)."""
    try:
        document = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DriveError(f"the token file {path} does not exist: run `backupmand auth-google`",
                         retryable=False) from None
    except OSError as error:
        raise DriveError(f"cannot read the token file {path}: {error.strerror or error}",
                         retryable=False) from None
    except ValueError:
        raise DriveError(f"the token file {path} is not JSON", retryable=False) from None
    if not isinstance(document, dict):
        raise DriveError(f"the token file {path} is not a JSON object", retryable=False)
    access = document.get("access_token") or document.get("token") or ""
    refresh = document.get("refresh_token") or ""
    if not refresh and not access:
        raise DriveError(f"the token file {path} holds no token: run `backupmand auth-google`",
                         retryable=False)
    raw_scopes = document.get("scopes") or document.get("scope") or ()
    scopes = tuple(raw_scopes.split() if isinstance(raw_scopes, str) else map(str, raw_scopes))
    _hide_tokens(path, str(access), str(refresh))
    return StoredToken(
        access_token=str(access),
        refresh_token=str(refresh),
        expiry=parse_time(document.get("expiry")) or parse_time(document.get("expires_at")),
        scopes=scopes,
        document=document,
    )


def token_document(token: StoredToken) -> dict[str, Any]:
    """The file content for ``token``: its original keys, with the managed ones updated."""
    document = dict(token.document)
    document["token" if "token" in document and "access_token" not in document
             else "access_token"] = token.access_token
    if token.refresh_token:
        document["refresh_token"] = token.refresh_token
    document.setdefault("token_type", "Bearer")
    if token.expiry is not None:
        if "expires_at" in document:
            # aiogoogle's own format: naive UTC
            document["expires_at"] = token.expiry.astimezone(UTC).replace(
                tzinfo=None).isoformat(timespec="seconds")
        if "expiry" in document or "expires_at" not in document:
            document["expiry"] = format_time(token.expiry)
    document.pop("expires_in", None)
    if token.scopes:
        document["scopes"] = list(token.scopes)
    return document


def write_private_file(path: Path, content: bytes) -> None:
    """Replace ``path`` atomically with a 0600 file (blocking)."""
    path = Path(path).expanduser()
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_directory(folder)


def _hide_tokens(path: Path, *tokens: str) -> None:
    """Tokens as they are read or obtained become secrets of the whole process (the
    file's previous tokens, replaced or expired, no longer need to be)."""
    logs.register_secrets(tokens, owner=f"google-token:{Path(path).expanduser()}")


def save_token(path: Path, token: StoredToken) -> None:
    """Write the token file atomically, mode 0600 (blocking)."""
    _hide_tokens(path, token.access_token, token.refresh_token)
    document = token_document(token)
    write_private_file(path, (json.dumps(document, indent=2) + "\n").encode("utf-8"))
    token.document = document


# --------------------------------------------------------------------------- refresh


def _token_error(error: BaseException, token_uri: str) -> DriveError:
    """A failed token request as a DriveError, never with a token in the message."""
    from aiogoogle.excs import HTTPError

    if isinstance(error, HTTPError):
        response = error.res
        status = getattr(response, "status_code", 0) or 0
        content = getattr(response, "content", None)
        reason = content.get("error") if isinstance(content, dict) else None
        if status in (400, 401) or reason in ("invalid_grant", "invalid_client",
                                              "unauthorized_client"):
            return DriveError(
                f"the token endpoint refused the refresh token ({reason or status}): "
                "run `backupmand auth-google` again", retryable=False)
        return DriveError(f"token refresh failed: HTTP {status}", retryable=True)
    if isinstance(error, KeyError):
        return DriveError(f"token refresh failed: {token_uri} answered without {error}",
                          retryable=True)
    return DriveError(f"token refresh failed: {type(error).__name__}: {error}", retryable=True)


class GoogleCredentials:
    """The access token of one token file, refreshed once at a time and written back."""

    def __init__(self, client_secret_file: Path, token_file: Path, token_uri: str) -> None:
        self.client_secret_file = client_secret_file
        self.token_file = token_file
        self.token_uri = token_uri
        self.refreshes = 0
        self._lock = asyncio.Lock()
        self._client: ClientSecret | None = None
        self._token: StoredToken | None = None

    def secrets(self) -> tuple[str, ...]:
        found: list[str] = []
        if self._client is not None:
            found.append(self._client.client_secret)
        if self._token is not None:
            found.extend(filter(None, (self._token.access_token, self._token.refresh_token)))
        return tuple(found)

    async def access_token(self, *, rejected: str | None = None) -> str:
        """A valid access token; ``rejected``: one the API just refused (refresh it)."""
        token = self._token
        if token is not None and not token.expired() and token.access_token != rejected:
            return token.access_token
        async with self._lock:
            if self._token is None or self._client is None:
                self._client = await asyncio.to_thread(load_client_secret, self.client_secret_file)
                self._token = await asyncio.to_thread(load_token, self.token_file)
            token = self._token
            if token.expired() or (rejected is not None and token.access_token == rejected):
                # Another process using the same token file (the CLI next to the daemon,
                # or a new `auth-google`) may have refreshed it already.
                with contextlib.suppress(DriveError):
                    on_disk = await asyncio.to_thread(load_token, self.token_file)
                    if on_disk.access_token != token.access_token or (
                            on_disk.refresh_token != token.refresh_token):
                        self._token = token = on_disk
                if token.expired() or (rejected is not None and token.access_token == rejected):
                    await self._refresh(token, self._client)
            return token.access_token

    async def _refresh(self, token: StoredToken, client: ClientSecret) -> None:
        from aiogoogle.auth.creds import ClientCreds, UserCreds
        from aiogoogle.auth.managers import Oauth2Manager
        from aiogoogle.sessions.aiohttp_session import AiohttpSession

        if not token.refresh_token:
            raise DriveError(f"the access token in {self.token_file} expired and the file has no "
                             "refresh token: run `backupmand auth-google`", retryable=False)
        manager = Oauth2Manager(session_factory=partial(  # type: ignore[no-untyped-call]
            AiohttpSession, timeout=aiohttp.ClientTimeout(total=TOKEN_TIMEOUT)))
        # aiogoogle takes the token endpoint from its OpenID configuration, not from the
        # user credentials: point a copy of it at the configured endpoint.
        manager.openid_configs = {**manager.openid_configs, "token_endpoint": self.token_uri}
        user_creds = UserCreds(  # type: ignore[no-untyped-call]
            access_token=token.access_token or None,
            refresh_token=token.refresh_token,
            expires_at=None,  # aiogoogle refreshes only a token it believes expired
            scopes=list(token.scopes) or [SCOPE],
        )
        client_creds = ClientCreds(  # type: ignore[no-untyped-call]
            client_id=client.client_id, client_secret=client.client_secret)
        try:
            _, fresh = await manager.refresh(  # type: ignore[no-untyped-call]
                user_creds, client_creds)
        except Exception as error:
            raise _token_error(error, self.token_uri) from None
        self.refreshes += 1
        token.access_token = str(fresh["access_token"])
        if fresh.get("refresh_token"):
            token.refresh_token = str(fresh["refresh_token"])
        # aiogoogle's expires_at is naive UTC, two minutes early (clock skew).
        token.expiry = parse_time(fresh.get("expires_at")) or (
            datetime.now(UTC) + timedelta(seconds=float(fresh.get("expires_in") or 3600)))
        if fresh.get("scopes"):
            token.scopes = tuple(fresh["scopes"])
        try:
            await asyncio.to_thread(save_token, self.token_file, token)
        except OSError as error:
            # The new access token works; the refresh token is unchanged, so the next
            # process refreshes again. Not a reason to fail an upload.
            log.warning("token_file_not_written", path=str(self.token_file),
                        error=error.strerror or str(error))


# --------------------------------------------------------------------------- authorize


def _pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)  # 86 characters, within RFC 7636's 43..128
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest())
    return verifier, challenge.decode("ascii").rstrip("=")


_DONE_PAGE = ("<!doctype html><title>backupmand</title><p>backupmand is authorized. "
              "You can close this tab.</p>")


async def authorize(
    client_secret_file: Path,
    token_file: Path,
    *,
    open_browser: bool = True,
    token_uri: str | None = None,
    auth_uri: str | None = None,
    print_fn: Callable[[str], object] = print,
    give_up_after: float = 600.0,
    port: int = 0,
) -> None:
    """Run Google's installed-app flow and write ``token_file`` (0600, atomically).

    Listens on 127.0.0.1 (a free port) for the redirect, checks ``state``, uses PKCE
    (S256), asks for the ``drive.file`` scope with offline access. ``token_uri`` and
    ``auth_uri`` override the client secret file's endpoints. ``port``: listen on this
    port instead of a free one (for a browser on another machine reaching it through
    ``ssh -L PORT:127.0.0.1:PORT``). Raises DriveError when the user refuses, the
    exchange fails, or nothing happens within ``give_up_after`` seconds.
    """
    client = await asyncio.to_thread(load_client_secret, client_secret_file)
    token_endpoint = token_uri or client.token_uri
    consent_endpoint = auth_uri or client.auth_uri
    state = secrets.token_urlsafe(32)
    verifier, challenge = _pkce_pair()
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[str] = loop.create_future()

    async def redirected(request: web.Request) -> web.Response:
        query = request.query
        if not secrets.compare_digest(query.get("state", ""), state):
            # Not our request (a stale tab, or a forged one): refuse it and keep waiting.
            return web.Response(status=400, text="Unknown or missing state.")
        if outcome.done():
            return web.Response(status=409, text="This authorization was already used.")
        if query.get("error"):
            outcome.set_exception(DriveError(
                f"authorization refused: {query['error']}", retryable=False))
            return web.Response(status=200, text="Authorization refused.")
        if not query.get("code"):
            return web.Response(status=400, text="No authorization code.")
        outcome.set_result(query["code"])
        return web.Response(status=200, text=_DONE_PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", redirected)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", port)
        try:
            await site.start()
        except OSError as error:
            raise DriveError(f"cannot listen on 127.0.0.1:{port} for Google's redirect: "
                             f"{error.strerror or error}", retryable=False) from None
        port = runner.addresses[0][1]
        redirect_uri = f"http://127.0.0.1:{port}/"
        url = consent_endpoint + ("&" if "?" in consent_endpoint else "?") + urlencode({
            "client_id": client.client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": SCOPE,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "access_type": "offline",
            "prompt": "consent",
        })
        print_fn(f"Open this URL in a browser on this machine to authorize backupmand:\n\n"
                 f"    {url}\n")
        if open_browser:
            await asyncio.to_thread(webbrowser.open, url)
        try:
            async with asyncio.timeout(give_up_after):
                code = await outcome
        except TimeoutError:
            raise DriveError(f"no authorization within {give_up_after:g} s",
                             retryable=False) from None
        token = await _exchange(token_endpoint, client, code, verifier, redirect_uri)
    finally:
        await runner.cleanup()
    await asyncio.to_thread(save_token, token_file, token)
    print_fn(f"Wrote {token_file}.")


async def _exchange(
    token_uri: str, client: ClientSecret, code: str, verifier: str, redirect_uri: str
) -> StoredToken:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "redirect_uri": redirect_uri,
    }
    try:
        async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=TOKEN_TIMEOUT)) as session, \
                session.post(token_uri, data=form, headers={"Accept": "application/json"}
                             ) as response:
            try:
                answer = await response.json(content_type=None)
            except ValueError:
                answer = None
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as error:
        raise DriveError(f"cannot reach the token endpoint {token_uri}: "
                         f"{type(error).__name__}: {error}") from None
    if status != 200 or not isinstance(answer, dict) or not answer.get("access_token"):
        reason = answer.get("error") if isinstance(answer, dict) else None
        raise DriveError(f"the token endpoint refused the authorization code "
                         f"(HTTP {status}{', ' + str(reason) if reason else ''})",
                         retryable=False)
    if not answer.get("refresh_token"):
        raise DriveError("the token endpoint returned no refresh token: remove backupmand's "
                         "access at https://myaccount.google.com/permissions and run "
                         "`backupmand auth-google` again", retryable=False)
    scope = answer.get("scope")
    expires_in = float(answer.get("expires_in") or 3600)
    return StoredToken(
        access_token=str(answer["access_token"]),
        refresh_token=str(answer["refresh_token"]),
        expiry=datetime.now(UTC) + timedelta(seconds=expires_in),
        scopes=tuple(scope.split()) if isinstance(scope, str) and scope else (SCOPE,),
        document={
            "access_token": "",
            "refresh_token": "",
            "token_type": str(answer.get("token_type") or "Bearer"),
            "expiry": "",
            "scopes": [],
            "token_uri": token_uri,
        },
    )
