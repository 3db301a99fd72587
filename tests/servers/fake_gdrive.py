"""A fake Google Drive v3 (and OAuth2 endpoints) on a free loopback port, for the tests.

It speaks what backupmand's google_drive drive, aiogoogle and ``auth-google`` use:

- ``POST /token``: the ``refresh_token`` and ``authorization_code`` (with PKCE S256)
  grants; counts refreshes and exchanges.
- ``GET /o/oauth2/auth``: the consent page, which consents at once and redirects to
  the ``redirect_uri`` with ``code`` and ``state`` (as a browser would follow it).
- ``GET /drive/v3/about``; ``GET/POST /drive/v3/files`` (list with ``q`` clauses on
  name / parents / mimeType / trashed, pages with ``pageSize`` and ``pageToken``;
  metadata-only create, e.g. folders); ``GET/PATCH/DELETE /drive/v3/files/{id}``
  (metadata with ``fields``, ``alt=media`` with ``Range``; ``appProperties`` updates).
- ``POST /upload/drive/v3/files``: ``uploadType=multipart`` and ``uploadType=resumable``
  (then ``PUT`` chunks on the session URI with ``Content-Range``, the total or ``*``
  while it is unknown, 308 with ``Range``,
  a final 200 with the file resource, ``bytes */N`` status queries, ``DELETE`` to
  cancel).

Fault knobs: :meth:`FakeGoogleDrive.expire_access_tokens`, ``refuse_refresh``,
``drop_connection_at`` (cut one chunk's connection once the upload reaches an offset),
:meth:`FakeGoogleDrive.throttle` (429 with ``Retry-After``), ``corrupt_md5``,
``chunk_gate`` (hold chunk requests until a test opens it), ``session_origin``
(hand out session URIs on another origin), ``fail_updates`` (500 to metadata
updates), ``max_page_size``. Files are kept in memory.

The ``gdrive_server`` fixture starts one per test in the test's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import itertools
import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web

from backupmand.config import GoogleDrive

FOLDER_MIME = "application/vnd.google-apps.folder"
CHUNK_UNIT = 256 * 1024


@dataclasses.dataclass
class FakeFile:
    id: str
    name: str
    mime_type: str
    parents: list[str]
    data: bytes
    created: int
    app_properties: dict[str, str] = dataclasses.field(default_factory=dict)
    trashed: bool = False
    md5_override: str | None = None
    #: Drive reports no sha256Checksum (files uploaded before Drive computed it).
    no_sha256: bool = False

    def resource(self, fields: str | None) -> dict[str, Any]:
        full: dict[str, Any] = {
            "kind": "drive#file", "id": self.id, "name": self.name, "mimeType": self.mime_type,
            "parents": self.parents, "trashed": self.trashed,
            "appProperties": self.app_properties,
        }
        if self.mime_type != FOLDER_MIME:
            full["size"] = str(len(self.data))
            full["md5Checksum"] = self.md5_override or hashlib.md5(self.data).hexdigest()
            if not self.no_sha256:
                full["sha256Checksum"] = hashlib.sha256(self.data).hexdigest()
        if not fields:
            return {key: full[key] for key in ("kind", "id", "name", "mimeType") if key in full}
        wanted = {part.strip() for part in fields.split(",")}
        return {key: value for key, value in full.items() if key in wanted}


@dataclasses.dataclass
class UploadSession:
    id: str
    metadata: dict[str, Any]
    size: int | None
    fields: str | None
    received: bytearray = dataclasses.field(default_factory=bytearray)
    file_id: str | None = None
    cancelled: bool = False


def _error(status: int, message: str, reason: str = "") -> web.Response:
    return web.json_response({"error": {
        "code": status, "message": message,
        "errors": [{"domain": "global", "reason": reason or "error", "message": message}],
    }}, status=status)


def _literal(text: str) -> tuple[str, str]:
    """Parse a quoted query literal at the start of ``text``: (value, rest)."""
    if not text.startswith("'"):
        raise ValueError(f"expected a quoted string: {text!r}")
    value = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            value.append(text[index + 1])
            index += 2
            continue
        if char == "'":
            return "".join(value), text[index + 1:]
        value.append(char)
        index += 1
    raise ValueError("unterminated string")


def _split_and(query: str) -> list[str]:
    clauses, current, quoted, index = [], [], False, 0
    while index < len(query):
        char = query[index]
        if quoted and char == "\\":
            current.append(query[index:index + 2])
            index += 2
            continue
        if char == "'":
            quoted = not quoted
        if not quoted and query.startswith(" and ", index):
            clauses.append("".join(current).strip())
            current = []
            index += 5
            continue
        current.append(char)
        index += 1
    clauses.append("".join(current).strip())
    return [clause for clause in clauses if clause]


def parse_query(query: str) -> list[tuple[str, str, Any]]:
    """Drive ``q`` clauses joined by ``and``: (field, operator, value)."""
    parsed: list[tuple[str, str, Any]] = []
    for clause in _split_and(query):
        if clause.startswith("'"):
            value, rest = _literal(clause)
            if rest.strip() != "in parents":
                raise ValueError(f"unsupported clause {clause!r}")
            parsed.append(("parents", "in", value))
            continue
        match = re.match(r"(name|mimeType|trashed)\s*(=|!=)\s*(.*)$", clause)
        if not match:
            raise ValueError(f"unsupported clause {clause!r}")
        field, operator, rest = match.groups()
        if field == "trashed":
            if rest not in ("true", "false"):
                raise ValueError(f"bad boolean in {clause!r}")
            parsed.append((field, operator, rest == "true"))
            continue
        value, tail = _literal(rest)
        if tail.strip():
            raise ValueError(f"unexpected text after {clause!r}")
        parsed.append((field, operator, value))
    return parsed


class FakeGoogleDrive:
    client_id = "fake-client-id.apps.googleusercontent.com"
    client_secret = "fake-client-secret"
    user_email = "backup@example.com"

    def __init__(self) -> None:
        self.url = ""
        self.files: dict[str, FakeFile] = {}
        self.sessions: dict[str, UploadSession] = {}
        self.access_tokens: dict[str, float] = {}  # token → expiry (epoch seconds)
        self.refresh_tokens: set[str] = set()
        self.codes: dict[str, dict[str, str]] = {}
        self.requests: list[tuple[str, str]] = []
        self.refreshes = 0
        self.code_exchanges = 0
        self.chunks = 0
        self.list_requests = 0
        #: The largest page files.list answers (Drive's is 1,000).
        self.max_page_size = 1000
        self.content_ranges: list[str] = []  # of every PUT on an upload session
        self.session_authorized: list[bool] = []  # whether it carried a bearer token
        #: The origin of session URIs (default: this server's own URL).
        self.session_origin: str | None = None
        self._created = itertools.count(1)
        # knobs
        self.refuse_refresh = False
        self.deny_consent = False
        self.corrupt_md5 = False
        #: Answer the next N metadata updates (PATCH) with 500.
        self.fail_updates = 0
        self.drop_connection_at: int | None = None
        self.dropped = 0
        self.throttled: int = 0
        self.retry_after: str | None = None
        self.chunk_gate: asyncio.Event | None = None
        self.chunk_arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def token_uri(self) -> str:
        return self.url + "token"

    @property
    def auth_uri(self) -> str:
        return self.url + "o/oauth2/auth"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=1024**3)
        app.router.add_post("/token", self._token)
        app.router.add_get("/o/oauth2/auth", self._consent)
        app.router.add_get("/drive/v3/about", self._about)
        app.router.add_get("/drive/v3/files", self._list)
        app.router.add_post("/drive/v3/files", self._create)
        app.router.add_get("/drive/v3/files/{id}", self._get)
        app.router.add_patch("/drive/v3/files/{id}", self._update)
        app.router.add_delete("/drive/v3/files/{id}", self._delete)
        app.router.add_post("/upload/drive/v3/files", self._upload_start)
        app.router.add_put("/upload/drive/v3/files", self._upload_chunk)
        app.router.add_delete("/upload/drive/v3/files", self._upload_cancel)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ helpers

    def issue_tokens(self, *, expires_in: float = 3600) -> tuple[str, str]:
        access = "ya29.fake-" + secrets.token_urlsafe(16)
        refresh = "1//fake-" + secrets.token_urlsafe(16)
        self.access_tokens[access] = time.time() + expires_in
        self.refresh_tokens.add(refresh)
        return access, refresh

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is refused from now on (401)."""
        for token in self.access_tokens:
            self.access_tokens[token] = 0.0

    def throttle(self, count: int, retry_after: str | None = "1") -> None:
        """Answer the next ``count`` Drive requests with 429 (and ``Retry-After``)."""
        self.throttled = count
        self.retry_after = retry_after

    def write_client_secret(self, path: Path) -> Path:
        path.write_text(json.dumps({"installed": {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "project_id": "backupmand-tests",
            "auth_uri": self.auth_uri,
            "token_uri": self.token_uri,
            "redirect_uris": ["http://localhost"],
        }}))
        return path

    def write_token_file(self, path: Path, *, expired: bool = False,
                         revoked: bool = False) -> Path:
        """A token file as ``auth-google`` writes it; ``expired``: its expiry is past
        (and the server refuses its access token too); ``revoked``: the server refuses
        its refresh token."""
        access, refresh = self.issue_tokens()
        if expired:
            self.access_tokens[access] = 0.0
        if revoked:
            self.refresh_tokens.discard(refresh)
        expiry = time.time() + (-600 if expired else 3600)
        path.write_text(json.dumps({
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expiry": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expiry)),
            "scopes": ["https://www.googleapis.com/auth/drive.file"],
            "token_uri": self.token_uri,
        }))
        path.chmod(0o600)
        return path

    def drive_config(self, directory: Path, *, expired: bool = False, revoked: bool = False,
                     **keys: Any) -> GoogleDrive:
        """A google_drive config using this server, with fresh client secret and token
        files in ``directory``; ``keys`` override config keys."""
        directory.mkdir(parents=True, exist_ok=True)
        values: dict[str, Any] = {
            "provider": "google_drive",
            "label": "Google Drive",
            "folder": "backups",
            "client_secret_file": self.write_client_secret(directory / "client-secret.json"),
            "token_file": self.write_token_file(directory / "token.json", expired=expired,
                                                revoked=revoked),
            "api_url": self.url,
            "token_uri": self.token_uri,
            "chunk_size": CHUNK_UNIT,
        }
        values.update(keys)
        return GoogleDrive.model_validate(values)

    def add_file(self, name: str, parent: str = "root", *, mime_type: str = "text/plain",
                 data: bytes = b"") -> str:
        file_id = uuid.uuid4().hex
        self.files[file_id] = FakeFile(file_id, name, mime_type, [parent], data,
                                       next(self._created))
        return file_id

    def folder_id(self, path: str) -> str | None:
        parent = "root"
        for part in path.strip("/").split("/"):
            found = [item for item in self.files.values() if item.name == part
                     and parent in item.parents and item.mime_type == FOLDER_MIME
                     and not item.trashed]
            if not found:
                return None
            parent = min(found, key=lambda item: item.created).id
        return parent

    def ensure_folder(self, path: str) -> str:
        """The id of the folder at ``path`` (under My Drive), created where missing."""
        parent = "root"
        for part in [part for part in path.split("/") if part]:
            found = [item for item in self.files.values() if item.name == part
                     and parent in item.parents and item.mime_type == FOLDER_MIME
                     and not item.trashed]
            parent = (min(found, key=lambda item: item.created).id if found
                      else self.add_file(part, parent, mime_type=FOLDER_MIME))
        return parent

    def files_in(self, folder_path: str = "backups") -> dict[str, FakeFile]:
        """The (untrashed) files in a folder, by name."""
        folder = self.folder_id(folder_path)
        return {item.name: item for item in self.files.values()
                if folder is not None and folder in item.parents and not item.trashed}

    def open_sessions(self) -> list[UploadSession]:
        return [item for item in self.sessions.values()
                if not item.cancelled and item.file_id is None]

    # ------------------------------------------------------------------ plumbing

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        path = request.path
        if path.startswith(("/drive/", "/upload/")):
            if self.throttled > 0:
                self.throttled -= 1
                response = _error(429, "Rate Limit Exceeded", "rateLimitExceeded")
                if self.retry_after is not None:
                    response.headers["Retry-After"] = self.retry_after
                return response
            # A session URI is its own credential (as with Google's); the rest needs a token.
            if not (path.startswith("/upload/") and "upload_id" in request.query):
                header = request.headers.get("Authorization", "")
                token = header.removeprefix("Bearer ")
                valid_until = self.access_tokens.get(token, 0)
                if not header.startswith("Bearer ") or valid_until < time.time():
                    return _error(401, "Request had invalid authentication credentials.",
                                  "authError")
        result: web.StreamResponse = await handler(request)
        return result

    def _file(self, file_id: str) -> FakeFile | None:
        item = self.files.get(file_id)
        return item

    # ------------------------------------------------------------------ OAuth2

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if (form.get("client_id"), form.get("client_secret")) != (self.client_id,
                                                                 self.client_secret):
            return web.json_response({"error": "invalid_client"}, status=401)
        grant = form.get("grant_type")
        if grant == "refresh_token":
            if self.refuse_refresh or form.get("refresh_token") not in self.refresh_tokens:
                return web.json_response({
                    "error": "invalid_grant",
                    "error_description": "Token has been expired or revoked."}, status=400)
            self.refreshes += 1
            access, _ = self.issue_tokens()
            return web.json_response({
                "access_token": access, "expires_in": 3599, "token_type": "Bearer",
                "scope": "https://www.googleapis.com/auth/drive.file"})
        if grant == "authorization_code":
            grant_info = self.codes.pop(str(form.get("code")), None)
            if grant_info is None or grant_info["redirect_uri"] != form.get("redirect_uri"):
                return web.json_response({"error": "invalid_grant"}, status=400)
            verifier = str(form.get("code_verifier") or "")
            challenge = base64.urlsafe_b64encode(
                hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
            if challenge != grant_info["code_challenge"]:
                return web.json_response({"error": "invalid_grant",
                                          "error_description": "code_verifier mismatch"},
                                         status=400)
            self.code_exchanges += 1
            access, refresh = self.issue_tokens()
            return web.json_response({
                "access_token": access, "refresh_token": refresh, "expires_in": 3599,
                "token_type": "Bearer", "scope": grant_info["scope"]})
        return web.json_response({"error": "unsupported_grant_type"}, status=400)

    async def _consent(self, request: web.Request) -> web.Response:
        query = request.query
        redirect_uri = query.get("redirect_uri", "")
        if (query.get("client_id") != self.client_id or query.get("response_type") != "code"
                or query.get("code_challenge_method") != "S256"
                or not query.get("code_challenge")
                or not redirect_uri.startswith("http://127.0.0.1:")):
            return web.Response(status=400, text="bad authorization request")
        if self.deny_consent:
            params = {"error": "access_denied", "state": query.get("state", "")}
        else:
            code = "4/fake-" + secrets.token_urlsafe(16)
            self.codes[code] = {"redirect_uri": redirect_uri,
                                "code_challenge": query["code_challenge"],
                                "scope": query.get("scope", "")}
            params = {"code": code, "state": query.get("state", ""),
                      "scope": query.get("scope", "")}
        raise web.HTTPFound(redirect_uri + "?" + urlencode(params))

    # ------------------------------------------------------------------ Drive

    async def _about(self, request: web.Request) -> web.Response:
        return web.json_response({"user": {"kind": "drive#user", "displayName": "Backup",
                                           "emailAddress": self.user_email}})

    async def _list(self, request: web.Request) -> web.Response:
        try:
            clauses = parse_query(request.query.get("q", ""))
        except (ValueError, IndexError) as error:
            return _error(400, f"Invalid Value: {error}", "invalid")
        found = []
        for item in self.files.values():
            keep = True
            for field, operator, value in clauses:
                if field == "parents":
                    keep = value in item.parents
                elif field == "name":
                    keep = (item.name == value) == (operator == "=")
                elif field == "mimeType":
                    keep = (item.mime_type == value) == (operator == "=")
                elif field == "trashed":
                    keep = (item.trashed == value) == (operator == "=")
                if not keep:
                    break
            if keep:
                found.append(item)
        if request.query.get("orderBy") == "createdTime":
            found.sort(key=lambda item: item.created)
        self.list_requests += 1
        page_size = min(int(request.query.get("pageSize", "100")), self.max_page_size)
        start = int(request.query.get("pageToken") or 0)
        fields = request.query.get("fields", "")
        match = re.search(r"files\(([^)]*)\)", fields)
        item_fields = match.group(1) if match else "kind,id,name,mimeType"
        answer: dict[str, Any] = {"files": [item.resource(item_fields)
                                            for item in found[start:start + page_size]]}
        if start + page_size < len(found):
            answer["nextPageToken"] = str(start + page_size)
        return web.json_response(answer)

    def _new_file(self, metadata: dict[str, Any], data: bytes) -> FakeFile | web.Response:
        parents = metadata.get("parents") or ["root"]
        for parent in parents:
            if parent != "root" and parent not in self.files:
                return _error(404, f"File not found: {parent}.", "notFound")
        item = FakeFile(
            id=uuid.uuid4().hex, name=str(metadata.get("name") or "Untitled"),
            mime_type=str(metadata.get("mimeType") or "application/octet-stream"),
            parents=list(parents), data=data, created=next(self._created),
            app_properties=dict(metadata.get("appProperties") or {}))
        if self.corrupt_md5 and item.mime_type != FOLDER_MIME:
            item.md5_override = hashlib.md5(data + b"corrupted").hexdigest()
        self.files[item.id] = item
        return item

    async def _create(self, request: web.Request) -> web.Response:
        metadata = await request.json()
        item = self._new_file(metadata, b"")
        if isinstance(item, web.Response):
            return item
        return web.json_response(item.resource(request.query.get("fields")))

    async def _get(self, request: web.Request) -> web.StreamResponse:
        item = self._file(request.match_info["id"])
        if item is None:
            return _error(404, f"File not found: {request.match_info['id']}.", "notFound")
        if request.query.get("alt") != "media":
            return web.json_response(item.resource(request.query.get("fields")))
        data = item.data
        header = request.headers.get("Range")
        if not header:
            return web.Response(body=data, content_type="application/octet-stream")
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", header)
        if not match:
            return _error(400, "bad Range", "badRequest")
        start = int(match.group(1))
        end = min(int(match.group(2)) + 1 if match.group(2) else len(data), len(data))
        if start >= len(data):
            return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
        return web.Response(status=206, body=data[start:end], headers={
            "Content-Range": f"bytes {start}-{end - 1}/{len(data)}",
            "Content-Type": "application/octet-stream"})

    async def _update(self, request: web.Request) -> web.Response:
        if self.fail_updates > 0:
            self.fail_updates -= 1
            return _error(500, "Internal Error", "backendError")
        item = self._file(request.match_info["id"])
        if item is None:
            return _error(404, f"File not found: {request.match_info['id']}.", "notFound")
        metadata = await request.json()
        for key, value in (metadata.get("appProperties") or {}).items():
            if value is None:
                item.app_properties.pop(key, None)
            else:
                item.app_properties[key] = str(value)
        if "name" in metadata:
            item.name = str(metadata["name"])
        return web.json_response(item.resource(request.query.get("fields")))

    async def _delete(self, request: web.Request) -> web.Response:
        if self.files.pop(request.match_info["id"], None) is None:
            return _error(404, f"File not found: {request.match_info['id']}.", "notFound")
        return web.Response(status=204)

    # ------------------------------------------------------------------ uploads

    async def _upload_start(self, request: web.Request) -> web.Response:
        kind = request.query.get("uploadType")
        if kind == "multipart":
            return await self._upload_multipart(request)
        if kind != "resumable":
            return _error(400, f"unsupported uploadType {kind}", "badRequest")
        metadata = await request.json() if request.can_read_body else {}
        declared = request.headers.get("X-Upload-Content-Length")
        session = UploadSession(id=secrets.token_urlsafe(24), metadata=metadata,
                                size=int(declared) if declared else None,
                                fields=request.query.get("fields"))
        for parent in metadata.get("parents") or ():
            if parent != "root" and parent not in self.files:
                return _error(404, f"File not found: {parent}.", "notFound")
        self.sessions[session.id] = session
        location = (f"{self.session_origin or self.url}upload/drive/v3/files"
                    f"?uploadType=resumable&upload_id={session.id}")
        return web.Response(status=200, headers={"Location": location})

    async def _upload_multipart(self, request: web.Request) -> web.Response:
        reader = await request.multipart()
        metadata: dict[str, Any] = {}
        data = b""
        index = 0
        while (part := await reader.next()) is not None:
            body = await part.read()  # type: ignore[union-attr]
            if index == 0:
                metadata = json.loads(body)
            else:
                data = bytes(body)
            index += 1
        item = self._new_file(metadata, data)
        if isinstance(item, web.Response):
            return item
        return web.json_response(item.resource(request.query.get("fields")))

    def _session(self, request: web.Request) -> UploadSession | None:
        session = self.sessions.get(request.query.get("upload_id", ""))
        if session is None or session.cancelled:
            return None
        return session

    def _progress(self, session: UploadSession) -> web.Response:
        if session.file_id is not None:
            item = self.files.get(session.file_id)
            if item is not None:
                return web.json_response(item.resource(session.fields))
        headers = {}
        if session.received:
            headers["Range"] = f"bytes=0-{len(session.received) - 1}"
        return web.Response(status=308, headers=headers)

    def _finish(self, session: UploadSession) -> web.Response:
        item = self._new_file(session.metadata, bytes(session.received))
        if isinstance(item, web.Response):
            return item
        session.file_id = item.id
        return web.json_response(item.resource(session.fields))

    async def _upload_chunk(self, request: web.Request) -> web.Response:
        session = self._session(request)
        if session is None:
            return _error(404, "upload session not found", "notFound")
        header = request.headers.get("Content-Range", "")
        self.content_ranges.append(header)
        self.session_authorized.append("Authorization" in request.headers)
        status_query = re.fullmatch(r"bytes \*/(\d+|\*)", header)
        if status_query:
            await request.read()
            total = status_query.group(1)
            if (total == "0" and session.file_id is None and not session.received
                    and session.size in (None, 0)):
                return self._finish(session)
            if (total != "*" and session.file_id is None
                    and len(session.received) == int(total) and session.size in (None, int(total))):
                # The total announced at last, every byte already held: finalise (as Drive
                # does for an upload of unknown size).
                session.size = int(total)
                return self._finish(session)
            return self._progress(session)
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", header)
        if not match:
            return _error(400, f"bad Content-Range {header!r}", "badRequest")
        start, last = int(match.group(1)), int(match.group(2))
        total = None if match.group(3) == "*" else int(match.group(3))
        if session.size is not None and total is not None and total != session.size:
            return _error(400, "total size differs from the declared one", "badRequest")
        if total is not None and last >= total:
            return _error(400, "the chunk ends past the total size", "badRequest")
        if start != len(session.received):
            return _error(400, f"chunk starts at {start}, {len(session.received)} held",
                          "badRequest")
        length = last - start + 1
        if total is not None:
            session.size = total
        if last + 1 != total and length % CHUNK_UNIT:
            return _error(400, "a chunk must be a multiple of 256 KiB", "badRequest")
        self.chunks += 1
        self.chunk_arrived.set()
        if self.chunk_gate is not None:
            await self.chunk_gate.wait()
        if self.drop_connection_at is not None and start <= self.drop_connection_at < last + 1:
            # Take part of the chunk, keep what a real server would have committed (whole
            # 256 KiB units), then drop the connection without an answer.
            self.drop_connection_at = None
            self.dropped += 1
            taken = await request.content.readexactly(length // 2)
            keep = (len(taken) // CHUNK_UNIT) * CHUNK_UNIT
            session.received += taken[:keep]
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        body = await request.read()
        if len(body) != length:
            return _error(400, "body length differs from Content-Range", "badRequest")
        session.received += body
        if total is not None and len(session.received) == total:
            return self._finish(session)
        return self._progress(session)

    async def _upload_cancel(self, request: web.Request) -> web.Response:
        session = self._session(request)
        if session is None:
            return _error(404, "upload session not found", "notFound")
        session.cancelled = True
        return web.Response(status=499)


@pytest.fixture
async def gdrive_server() -> AsyncIterator[FakeGoogleDrive]:
    server = FakeGoogleDrive()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
