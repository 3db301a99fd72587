"""A folder in Google Drive (API v3): aiogoogle builds the requests, aiohttp sends them.

Requests
    The Drive v3 discovery document ships with backupmand (``backupmand/data``); its
    ``rootUrl`` is replaced by ``api_url``, and aiogoogle's ``GoogleAPI`` builds the
    files.list / create / get / delete and about.get requests from it. They are sent on
    the drive's own aiohttp session, with the access token of
    :class:`~backupmand.drives.google_auth.GoogleCredentials` (refreshed once when
    expired or refused, written back to the token file).

Retries
    429, 5xx (and Drive's 403 rate-limit reasons) are retried with exponential backoff
    (``backoff_base`` · 2ⁿ, jittered, at most ``max_backoff``), honouring
    ``Retry-After``, for at most ``request_attempts`` attempts. A ``Retry-After``
    longer than ``max_retry_after`` fails the request (retryable) instead of sleeping.

Folder
    ``folder`` is a path under My Drive ("backups", or "servers/db1"); each level is
    found (the oldest folder of that name) or created, once, under a lock, and cached.
    Names in queries are quoted (``\\`` and ``'`` escaped). Health checks look the folder
    up without creating it, and fail when a level is a file rather than a folder.

Uploads
    Drive's resumable protocol: a session is started with the metadata (name, parent
    folder, the SHA-256 in ``appProperties``), then the file is sent in ``chunk_size``
    chunks with ``Content-Range``; a 308 answer's ``Range`` tells what Drive holds.
    After a dropped connection, a timeout, a 429 or a 5xx, the drive asks for the
    session's status (``Content-Range: bytes */size``) and resumes from the committed
    offset. The MD5 and SHA-256 are computed while reading; the last chunk is sent
    only when the file read has the expected size and SHA-256, and Drive's reported
    ``size`` and ``md5Checksum`` (and ``sha256Checksum`` when it reports one) must
    match, else the stored file is deleted and VerificationError raised. A failed or
    cancelled upload asks the session's status once more: a file Drive finished
    anyway is deleted, an unfinished session is cancelled (``DELETE`` on the session
    URI). All best effort: an abandoned session never becomes a file and expires.

    Drive allows several files with one name: before uploading, the folder is
    searched for the name and an existing file is an error (not atomic: two
    processes uploading the same name at the same instant could both succeed).

Paths
    A stored file's path is its Drive file id.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import json
import os
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from importlib import resources
from typing import Any

import aiohttp
import structlog
from multidict import CIMultiDictProxy
from yarl import URL

from ..config import GoogleDrive
from ..errors import DriveError, HealthError, VerificationError
from ..growing import GrowingFile, in_thread
from .base import Drive, RemoteFile, StoredFile, already_exists, check_name
from .google_auth import GoogleCredentials
from .google_upload import ChunkSource, committed
from .locations import Location, is_host_segment

log = structlog.get_logger("backupmand.drives.google")

FOLDER_MIME = "application/vnd.google-apps.folder"
DOWNLOAD_BLOCK = 1024 * 1024
#: files.list page size (Drive's largest).
LIST_PAGE_SIZE = 1000
FILE_FIELDS = "id,name,size,md5Checksum,sha256Checksum,trashed"
_FILE_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
_RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})


@functools.cache
def _discovery_document() -> dict[str, Any]:
    """The shipped Drive v3 discovery document (blocking, read once)."""
    text = resources.files("backupmand").joinpath("data/drive.v3.json").read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def quote_query(value: str) -> str:
    """A string literal for a Drive query: ``'...'`` with ``\\`` and ``'`` escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _Transient(Exception):
    """A failure worth retrying: no answer, 429, 5xx, or a rate-limit 403."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(headers: CIMultiDictProxy[str] | None) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def _error_detail(answer: Any) -> tuple[str, str]:
    """(reason, message) of a Google JSON error body."""
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        error = answer["error"]
        reasons = [item.get("reason", "") for item in error.get("errors") or ()
                   if isinstance(item, dict)]
        return (reasons[0] if reasons else str(error.get("status") or ""),
                str(error.get("message") or ""))
    return "", ""


class GoogleDriveFolder(Drive[GoogleDrive]):
    provider = "google_drive"

    health_timeout: float = 10.0
    connect_timeout: float = 10.0
    read_timeout: float = 120.0

    def __init__(
        self,
        config: GoogleDrive,
        host: str = "localhost",
        *,
        request_attempts: int = 6,
        backoff_base: float = 1.0,
        max_backoff: float = 32.0,
        max_retry_after: float = 120.0,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        super().__init__(config, host)
        self.request_attempts = request_attempts
        self.backoff_base = backoff_base
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.sleep = sleep
        self.credentials = GoogleCredentials(
            config.client_secret_file, config.token_file, config.token_uri)
        self.api_url = config.api_url if config.api_url.endswith("/") else config.api_url + "/"
        self._api: Any = None
        self._http: aiohttp.ClientSession | None = None
        self._folder_id: str | None = None
        self._folder_lock = asyncio.Lock()
        self._cleanups: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ plumbing

    def secrets(self) -> tuple[str, ...]:
        return self.credentials.secrets()

    @property
    def folder_parts(self) -> list[str]:
        folder = self.config.folder.replace("{host}", self.host)
        return [part for part in folder.split("/") if part]

    async def _drive_api(self) -> Any:
        if self._api is None:
            from aiogoogle.resource import GoogleAPI

            document = copy.deepcopy(await asyncio.to_thread(_discovery_document))
            document["rootUrl"] = self.api_url
            document["baseUrl"] = self.api_url + document["servicePath"]
            self._api = GoogleAPI(document)  # type: ignore[no-untyped-call]
        return self._api

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.connect_timeout, sock_read=self.read_timeout))
            # aiohttp silently resends an idempotent request (PUT included) once when its
            # connection drops. For a chunk of a resumable upload that is wrong: Drive may
            # have kept part of the chunk, and the protocol is to ask it what it holds and
            # resume from there, which _send_chunks does. The drive retries on its own.
            if hasattr(self._http, "_retry_connection"):
                self._http._retry_connection = False
        return self._http

    async def aclose(self) -> None:
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def _shielded(self, work: Coroutine[Any, Any, None]) -> None:
        """Run clean-up work to its end even if the calling task is cancelled meanwhile."""
        task = asyncio.ensure_future(work)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        await asyncio.shield(task)

    async def _backoff(self, failures: int, retry_after: float | None, doing: str) -> None:
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                raise DriveError(f"{doing}: Google Drive asks to retry after {retry_after:g} s")
            delay = retry_after
        else:
            delay = min(self.max_backoff, self.backoff_base * 2 ** (failures - 1))
            delay *= 0.5 + random.random() / 2  # noqa: S311 (jitter, not cryptography)
        await self.sleep(delay)

    async def _send(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
    ) -> aiohttp.ClientResponse:
        """One authorised request; refreshes and retries once on 401.

        Raises _Transient when retrying may help. Returns the response (read and
        released unless ``stream``)."""
        session = self._session()
        # The access token goes only to the configured API (a session URI comes from a
        # Location header: it is trusted with the token only on the same origin).
        authorised = URL(url, encoded=True).origin() == URL(self.api_url).origin()
        token = await self.credentials.access_token() if authorised else ""
        for attempt in (1, 2):
            all_headers = dict(headers or {})
            if authorised:
                all_headers["Authorization"] = f"Bearer {token}"
            try:
                response = await session.request(
                    method, URL(url, encoded=True), json=json_body, data=data,
                    headers=all_headers)
                if not stream or response.status >= 300:
                    await response.read()
                    response.release()
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                raise _Transient(f"{type(error).__name__}: {error}".rstrip(": ")) from None
            if response.status == 401 and attempt == 1 and authorised:
                token = await self.credentials.access_token(rejected=token)
                continue
            break
        status = response.status
        if status == 429 or status >= 500:
            raise _Transient(f"HTTP {status}", _retry_after(response.headers))
        if status == 403:  # (a body of an error answer is always read)
            reason, _ = _error_detail(await self._json(response))
            if reason in _RATE_LIMIT_REASONS:
                raise _Transient(f"HTTP 403 {reason}", _retry_after(response.headers))
        return response

    @staticmethod
    async def _json(response: aiohttp.ClientResponse) -> Any:
        try:
            return await response.json(content_type=None)
        except (ValueError, aiohttp.ClientError):
            return None

    async def _call(
        self,
        request: Any,
        doing: str,
        *,
        allow: tuple[int, ...] = (),
        attempts: int | None = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
    ) -> aiohttp.ClientResponse:
        """Send an aiogoogle request with retries; statuses in ``allow`` are returned too."""
        attempts = attempts or self.request_attempts
        failures = 0
        while True:
            try:
                response = await self._send(request.method, request.url, json_body=request.json,
                                            headers=headers, stream=stream)
            except _Transient as problem:
                failures += 1
                if failures >= attempts:
                    raise DriveError(f"{doing} failed: {problem}", retryable=True) from None
                await self._backoff(failures, problem.retry_after, doing)
                continue
            if response.status < 300 or response.status in allow:
                return response
            raise await self._failure(response, doing)

    async def _failure(self, response: aiohttp.ClientResponse, doing: str) -> DriveError:
        reason, message = _error_detail(await self._json(response))
        status = response.status
        detail = f"HTTP {status}" + (f" {reason}" if reason else "") + (
            f": {message}" if message else "")
        if status == 401:
            detail += " (the access token was refused after a refresh)"
        elif status == 403 and reason in ("insufficientPermissions", "forbidden", ""):
            detail += " (the token's scope or the folder's sharing does not allow this)"
        response.release()
        return DriveError(f"{doing} failed: {detail}", retryable=status in (408, 409, 423))

    async def _files_named(
        self, parent: str, name: str, *, folders_only: bool,
        fields: str = "files(id,name,mimeType)",
    ) -> list[dict[str, Any]]:
        clauses = [f"name = {quote_query(name)}", f"{quote_query(parent)} in parents",
                   "trashed = false"]
        if folders_only:
            clauses.append(f"mimeType = {quote_query(FOLDER_MIME)}")
        api = await self._drive_api()
        request = api.files.list(
            q=" and ".join(clauses), fields=fields, orderBy="createdTime",
            pageSize=100, spaces="drive", supportsAllDrives="true",
            includeItemsFromAllDrives="true")
        response = await self._call(request, f"looking for {name!r} in Google Drive")
        answer = await self._json(response)
        files = answer.get("files") if isinstance(answer, dict) else None
        return [item for item in files or () if isinstance(item, dict)]

    # ------------------------------------------------------------------ folder

    def _check_folder_path(self) -> None:
        parts = self.folder_parts
        if not parts or any(part in (".", "..") for part in parts):
            raise DriveError(f"invalid folder {self.config.folder!r}: give a folder path under "
                             "My Drive such as 'backups'", retryable=False)

    async def folder_id(self) -> str:
        """The configured folder's id: found or created once, then cached."""
        if self._folder_id is not None:
            return self._folder_id
        self._check_folder_path()
        async with self._folder_lock:
            if self._folder_id is None:
                parent = "root"
                for part in self.folder_parts:
                    found = await self._files_named(parent, part, folders_only=True)
                    parent = found[0]["id"] if found else await self._create_folder(parent, part)
                self._folder_id = parent
            return self._folder_id

    async def _create_folder(self, parent: str, name: str) -> str:
        api = await self._drive_api()
        request = api.files.create(
            json={"name": name, "mimeType": FOLDER_MIME, "parents": [parent]},
            fields="id", supportsAllDrives="true")
        response = await self._call(request, f"creating the Google Drive folder {name!r}")
        answer = await self._json(response)
        if not isinstance(answer, dict) or not answer.get("id"):
            raise DriveError(f"creating the Google Drive folder {name!r}: no id in the answer")
        log.info("google_drive_folder_created", drive=self.label, folder=name)
        return str(answer["id"])

    async def _check_folder(self) -> None:
        """Walk the folder path without creating anything (health)."""
        self._check_folder_path()
        if self._folder_id is not None:
            return
        parent = "root"
        path = ""
        for part in self.folder_parts:
            path = f"{path}/{part}" if path else part
            found = await self._files_named(parent, part, folders_only=False)
            folders = [item for item in found if item.get("mimeType") == FOLDER_MIME]
            if folders:
                parent = folders[0]["id"]
                continue
            if found:
                raise HealthError(f"Google Drive: {path} is a file, not a folder")
            return  # created at the first upload

    # ------------------------------------------------------------------ upload

    async def upload_stream(
        self, source: GrowingFile, name: str, *, adopt: bool = False
    ) -> StoredFile:
        check_name(name)
        try:
            descriptor = await in_thread(source.open_reader)
        except OSError as error:
            raise DriveError(f"cannot read {source.path}: {error.strerror or error}",
                             retryable=False) from None
        try:
            return await self._upload(ChunkSource(source, descriptor), name, adopt)
        finally:
            await self._shielded(in_thread(os.close, descriptor))

    async def put_bytes(self, data: bytes, name: str, *, adopt: bool = False) -> StoredFile:
        check_name(name)
        return await self._upload(ChunkSource(data=data), name, adopt)

    async def _upload(self, source: ChunkSource, name: str, adopt: bool) -> StoredFile:
        """One resumable session: started once the name is free, fed chunk by chunk as the
        file grows, verified, and given the SHA-256 in ``appProperties``."""
        where = f"Google Drive {self.config.folder.strip('/')}/{name}"
        folder = await self.folder_id()
        existing = await self._files_named(folder, name, folders_only=False,
                                           fields=f"files({FILE_FIELDS},mimeType,appProperties)")
        if existing:
            return await self._existing(existing, source, where, adopt)
        known = source.total is not None  # complete already: its SHA-256 goes in at the start
        session_uri = await self._start_session(
            name, folder, source.expected() if known else None, where)
        try:
            resource = await self._send_chunks(session_uri, source, where)
        except BaseException:
            await self._shielded(self._abandon(session_uri, source.total))
            raise
        file_id = str(resource.get("id") or "")
        if not _FILE_ID.match(file_id):
            raise DriveError(f"uploading {where}: Google Drive answered without a file id")
        size, sha256 = source.expected()
        try:
            problems = []
            stored_size = resource.get("size")
            if stored_size is None or int(stored_size) != size:
                problems.append(f"holds {stored_size} bytes, expected {size}")
            md5 = source.md5.hexdigest()
            if resource.get("md5Checksum") != md5:
                problems.append(f"reports MD5 {resource.get('md5Checksum')}, expected {md5}")
            if resource.get("sha256Checksum") and resource["sha256Checksum"] != sha256:
                problems.append(f"reports SHA-256 {resource['sha256Checksum']}, expected {sha256}")
            if problems:
                raise VerificationError(f"{where} " + "; ".join(problems))
            if not known:
                await self._set_sha256(file_id, sha256, where)
        except BaseException:
            await self._shielded(self._delete_quietly(file_id))
            raise
        return StoredFile(path=file_id, size=size)

    async def _existing(
        self, existing: list[dict[str, Any]], source: ChunkSource, where: str, adopt: bool
    ) -> StoredFile:
        """Files named so are already in the folder: one is this upload's own only with
        ``adopt`` and the same size and SHA-256 (``appProperties`` or Drive's
        ``sha256Checksum``; for a file with neither, its MD5 against the stage file's)."""
        if not adopt:
            raise already_exists(where)
        if source.source is not None:
            await source.source.completed()
        size, sha256 = source.expected()
        md5: str | None = None
        for item in existing:
            if item.get("mimeType") == FOLDER_MIME or str(item.get("size")) != str(size):
                continue
            recorded = [value for value in (
                (item.get("appProperties") or {}).get("sha256"), item.get("sha256Checksum"))
                if value]
            if recorded:
                if all(value == sha256 for value in recorded):
                    return StoredFile(path=str(item["id"]), size=size)
                continue
            if md5 is None:
                while source.hashed < size:  # hashes the whole stage file once
                    await source.read(source.hashed, min(DOWNLOAD_BLOCK, size - source.hashed))
                source.check_complete()
                md5 = source.md5.hexdigest()
            if item.get("md5Checksum") == md5:
                return StoredFile(path=str(item["id"]), size=size)
        raise already_exists(where)

    async def _set_sha256(self, file_id: str, sha256: str, where: str) -> None:
        api = await self._drive_api()
        request = api.files.update(fileId=file_id, json={"appProperties": {"sha256": sha256}},
                                   fields="id,appProperties", supportsAllDrives="true")
        response = await self._call(request, f"recording the SHA-256 of {where}")
        answer = await self._json(response)
        properties = answer.get("appProperties") if isinstance(answer, dict) else None
        if not isinstance(properties, dict) or properties.get("sha256") != sha256:
            raise DriveError(f"recording the SHA-256 of {where}: Google Drive did not keep it")

    async def _start_session(
        self, name: str, folder: str, expected: tuple[int, str] | None, where: str
    ) -> str:
        url = (f"{self.api_url}upload/drive/v3/files?uploadType=resumable"
               f"&supportsAllDrives=true&fields={FILE_FIELDS.replace(',', '%2C')}")
        metadata: dict[str, Any] = {"name": name, "parents": [folder]}
        headers = {"X-Upload-Content-Type": "application/octet-stream"}
        if expected is not None:
            metadata["appProperties"] = {"sha256": expected[1]}
            headers["X-Upload-Content-Length"] = str(expected[0])
        request = _Request("POST", url, json=metadata)
        response = await self._call(request, f"starting the upload of {where}", headers=headers,
                                    allow=(404,))
        if response.status == 404:
            # The folder was deleted (or trashed) since it was looked up: look it up
            # (or create it) again at the next attempt.
            self._folder_id = None
            raise DriveError(f"starting the upload of {where}: the folder no longer exists")
        location = response.headers.get("Location")
        if not location:
            raise DriveError(f"starting the upload of {where}: no session URI in the answer")
        return location

    async def _send_chunks(
        self, session_uri: str, source: ChunkSource, where: str
    ) -> dict[str, Any]:
        """Feed the session ``chunk_size`` bytes at a time, each once it is in the file (and
        one byte more, or the end: a chunk sent without the total is never the last);
        after a dropped connection ask Drive what it holds and go on from there."""
        offset: int | None = 0  # None: ask Drive what it holds
        held = 0
        failures = 0
        chunk_size = self.config.chunk_size
        doing = f"uploading {where}"
        while True:
            try:
                if offset is None:
                    total = source.total
                    response = await self._send("PUT", session_uri, data=b"", headers={
                        "Content-Range": f"bytes */{'*' if total is None else total}"})
                else:
                    end = offset + chunk_size
                    await source.available(end)
                    total = source.total
                    if total is not None:
                        end = min(end, total)
                    data = await source.read(offset, end - offset)
                    if end == total:
                        source.check_complete()
                    content_range = (f"bytes {offset}-{end - 1}/{'*' if total is None else total}"
                                     if end > offset else f"bytes */{total}")
                    response = await self._send(
                        "PUT", session_uri, data=data, headers={"Content-Range": content_range})
                    del data
            except _Transient as problem:
                failures += 1
                if failures >= self.request_attempts:
                    raise DriveError(f"{doing} failed: {problem}", retryable=True) from None
                log.info("google_drive_upload_retry", drive=self.label, error=str(problem),
                         attempt=failures)
                await self._backoff(failures, problem.retry_after, doing)
                offset = None
                continue
            status = response.status
            if status in (200, 201):
                answer = await self._json(response)
                if not isinstance(answer, dict):
                    raise DriveError(f"{doing}: the final answer is not a file resource")
                if source.total is None or source.hashed != source.total:
                    raise DriveError(f"{doing}: Drive finished the file before it was whole")
                return answer
            if status == 308:
                now_held = committed(response.headers.get("Range"))
                if now_held > source.hashed:
                    raise DriveError(
                        f"{doing}: Drive claims {now_held} bytes, {source.hashed} were sent")
                if now_held > held:
                    failures = 0  # progress
                held = offset = now_held
                if held == source.total:
                    # Everything is there, but the upload was not finalised: ask again.
                    offset = None
                    failures += 1
                    if failures >= self.request_attempts:
                        raise DriveError(f"{doing}: Drive does not finalise the upload")
                continue
            if status in (404, 410):
                raise DriveError(f"{doing} failed: the upload session expired (HTTP {status})")
            raise await self._failure(response, doing)

    async def _abandon(self, session_uri: str, total: int | None) -> None:
        """Clean up after a failed or cancelled upload (best effort): if Drive finished
        the file after all (the last chunk arrived, its answer did not), delete it;
        otherwise cancel the session."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                response = await self._send("PUT", session_uri, data=b"", headers={
                    "Content-Range": f"bytes */{'*' if total is None else total}"})
                if response.status in (200, 201):
                    answer = await self._json(response)
                    file_id = str(answer.get("id") or "") if isinstance(answer, dict) else ""
                    if _FILE_ID.match(file_id):
                        await self.delete(file_id)
                    return
                await self._send("DELETE", session_uri)

    async def _delete_quietly(self, file_id: str) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await self.delete(file_id)

    # ------------------------------------------------------------------ listing

    async def list_files(self, *, all_hosts: bool = False) -> list[RemoteFile]:
        """files.list in the folder, 1,000 a page; with ``all_hosts`` in every host's folder
        (each folder found under the part of the path before ``{host}``)."""
        location = Location.parse(self.config.folder)
        if not (all_hosts and location.has_host):
            folder = self._folder_id or await self._find_folder(self.folder_parts)
            if folder is None:
                return []
            host = self.host if location.has_host else None
            return [RemoteFile(name=name, path=file_id, size=size, host=host)
                    for file_id, name, size in await self._children(folder, folders=False)]
        found: list[RemoteFile] = []
        base = await self._find_folder(list(location.before))
        if base is None:
            return []
        for host_folder, host, _ in await self._children(base, folders=True):
            if not is_host_segment(host):
                continue
            folder = await self._find_folder(list(location.after), parent=host_folder)
            if folder is not None:
                found += [RemoteFile(name=name, path=file_id, size=size, host=host)
                          for file_id, name, size in await self._children(folder, folders=False)]
        return found

    async def _find_folder(self, parts: list[str], parent: str = "root") -> str | None:
        """The id of the folder at ``parts`` under ``parent`` (the oldest of each name),
        without creating anything; None when a level is missing."""
        for part in parts:
            found = await self._files_named(parent, part, folders_only=True)
            if not found:
                return None
            parent = str(found[0]["id"])
        return parent

    async def _children(self, parent: str, *, folders: bool) -> list[tuple[str, str, int | None]]:
        """(id, name, size) of the folders or the files in ``parent``, every page."""
        clauses = [f"{quote_query(parent)} in parents", "trashed = false",
                   f"mimeType {'=' if folders else '!='} {quote_query(FOLDER_MIME)}"]
        api = await self._drive_api()
        found: list[tuple[str, str, int | None]] = []
        token: str | None = None
        while True:
            options = {"pageToken": token} if token else {}
            request = api.files.list(
                q=" and ".join(clauses), fields="nextPageToken,files(id,name,size)",
                pageSize=LIST_PAGE_SIZE, spaces="drive", supportsAllDrives="true",
                includeItemsFromAllDrives="true", **options)
            response = await self._call(request, "listing a Google Drive folder")
            answer = await self._json(response)
            if not isinstance(answer, dict):
                raise DriveError("listing a Google Drive folder: the answer is not a file list")
            for item in answer.get("files") or ():
                if isinstance(item, dict) and _FILE_ID.match(str(item.get("id") or "")):
                    size = item.get("size")
                    found.append((str(item["id"]), str(item.get("name") or ""),
                                  int(size) if size is not None else None))
            token = answer.get("nextPageToken")
            if not token:
                return found

    # ------------------------------------------------------------------ the rest

    def _file_id(self, path: str) -> str:
        if not _FILE_ID.match(path):
            raise DriveError(f"{path!r} is not a Google Drive file id", retryable=False)
        return path

    async def download(
        self, path: str, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        file_id = self._file_id(path)
        if end is not None and end <= start:
            return
        api = await self._drive_api()
        request = api.files.get(fileId=file_id, alt="media", supportsAllDrives="true")
        headers = {}
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        doing = f"downloading Google Drive file {file_id}"
        response = await self._call(request, doing, allow=(404, 416), headers=headers, stream=True)
        try:
            if response.status == 416:
                return
            if response.status == 404:
                raise DriveError(f"Google Drive file {file_id} does not exist", retryable=False)
            skip = start if response.status == 200 else 0  # Range ignored: skip by hand
            remaining = None if end is None else end - start
            async for block in response.content.iter_chunked(DOWNLOAD_BLOCK):
                if skip:
                    if len(block) <= skip:
                        skip -= len(block)
                        continue
                    block, skip = block[skip:], 0
                if remaining is not None:
                    block = block[:remaining]
                    remaining -= len(block)
                if block:
                    yield block
                if remaining == 0:
                    break
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise DriveError(f"{doing} failed: {type(error).__name__}: {error}") from None
        finally:
            response.release()

    async def size(self, path: str) -> int | None:
        file_id = self._file_id(path)
        api = await self._drive_api()
        request = api.files.get(fileId=file_id, fields="size,trashed", supportsAllDrives="true")
        response = await self._call(request, f"reading Google Drive file {file_id}", allow=(404,))
        if response.status == 404:
            return None
        answer = await self._json(response)
        if not isinstance(answer, dict) or answer.get("trashed"):
            return None
        return int(answer.get("size") or 0)

    async def delete(self, path: str) -> None:
        file_id = self._file_id(path)
        api = await self._drive_api()
        request = api.files.delete(fileId=file_id, supportsAllDrives="true")
        await self._call(request, f"deleting Google Drive file {file_id}", allow=(404,))

    async def health(self) -> None:
        try:
            async with asyncio.timeout(self.health_timeout):
                api = await self._drive_api()
                await self._call(api.about.get(fields="user(emailAddress)"),
                                 "Google Drive: about", attempts=2)
                await self._check_folder()
        except TimeoutError:
            raise HealthError(
                f"Google Drive: no answer within {self.health_timeout:g} s") from None
        except DriveError as error:
            raise HealthError(str(error)) from None


class _Request:
    """The shape of an aiogoogle Request, for the one URL aiogoogle does not build."""

    def __init__(self, method: str, url: str, json: Any = None) -> None:
        self.method = method
        self.url = url
        self.json = json
