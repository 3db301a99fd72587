"""The HTTP API: routes, authentication and error mapping. No business logic here."""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from . import health, signing
from .errors import (
    BackupmandError,
    CatalogError,
    ConflictError,
    DriveError,
    InvalidInputError,
    NotFoundError,
)
from .files import read_file
from .models import Status
from .runtime import Runtime
from .web import pages as status_pages
from .web.session import Revocations

log = structlog.get_logger("backupmand.api")

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)
URL_KEY: web.AppKey[bytes] = web.AppKey("url_key", bytes)
HEALTH: web.AppKey[health.HealthCache] = web.AppKey("health", health.HealthCache)
#: The daemon's schedule (scheduler.Schedule), when there is one: /metrics and the
#: status page show its next runs.
SCHEDULE: web.AppKey[Any] = web.AppKey("schedule")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_LIMIT = 100_000
#: Digits a number in a query or a Range may have: enough for any offset or byte
#: position (2**63 has 19), few enough that parsing one costs nothing.
MAX_DIGITS = 19


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"Error": message}, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exception:
        if exception.status < 400:
            raise
        response = _error(exception.status, exception.reason or "error")
        for header in ("Allow", "Content-Range"):
            if header in exception.headers:
                response.headers[header] = exception.headers[header]
        return response
    except InvalidInputError as error:
        return _error(400, str(error))
    except NotFoundError as error:
        return _error(404, str(error))
    except ConflictError as error:
        return _error(409, str(error))
    except CatalogError as error:  # gone, replaced, damaged or full: the daemon cannot serve
        log.error("api.catalog_error", path=request.path, error=str(error))
        return _error(503, str(error))
    except DriveError as error:
        log.error("api.drive_error", path=request.path, error=str(error))
        return _error(502, f"drive error: {error}")
    except BackupmandError as error:
        log.error("api.error", path=request.path, error=str(error))
        return _error(500, str(error))
    except Exception:
        log.exception("api.crashed", path=request.path)
        return _error(500, "internal error; see the daemon's log")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/api/"):
        return await handler(request)
    runtime = request.app[RUNTIME]
    given = request.headers.get("X-Api-Key", "")
    if given and _key_matches(given, runtime):
        return await handler(request)
    if request.method == "GET" and request.path.endswith("/download"):
        identifier = request.match_info.get("id", "")
        if signing.verify(request.app[URL_KEY], identifier,
                          request.query.get("expires", ""), request.query.get("signature", "")):
            return await handler(request)
        if "signature" in request.query:
            return _error(401, "the download signature is invalid or has expired")
    return _error(401, "missing or wrong X-Api-Key" if not given else "wrong X-Api-Key")


def _key_matches(given: str, runtime: Runtime) -> bool:
    # aiohttp decodes header bytes that are not UTF-8 as lone surrogates: turned back
    # into the bytes sent, they simply match no key.
    sent = given.encode("utf-8", "surrogateescape")
    found = False
    for key in runtime.settings.http.api_keys:  # every key compared: no early exit
        found |= hmac.compare_digest(sent, key.get_secret_value().encode())
    return found


# ---------------------------------------------------------------------------- routes

routes = web.RouteTableDef()


@routes.get("/ping")
async def ping(_request: web.Request) -> web.Response:
    return web.json_response({"message": "pong"})


@routes.get("/metrics")
async def get_metrics(request: web.Request) -> web.Response:
    from .metrics import CONTENT_TYPE, render_metrics

    runtime = request.app[RUNTIME]
    services = runtime.services
    schedule = request.app.get(SCHEDULE)
    moment = schedule.next_run() if schedule is not None else None
    interval = schedule.interval() if schedule is not None else None
    body = await render_metrics(
        runtime.catalog,
        next_runs={label: moment for label in services.sources},
        intervals={label: interval for label in services.sources} if interval else {},
        upload_failures=services.upload_failures,
        upload_attempt_failures=services.upload_attempt_failures,
        schedule_failures=services.schedule_failures,
        verifications=services.verifications,
        drives=list(services.drives),
    )
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


@routes.get("/api/openapi.json")
async def get_openapi(_request: web.Request) -> web.Response:
    from .openapi import load_document

    return web.json_response(load_document())


@routes.get("/health")
async def get_health(request: web.Request) -> web.Response:
    body = await request.app[HEALTH].report()
    return web.json_response(body, status=200 if body["Status"] == "UP" else 503)


def _int_param(request: web.Request, name: str, low: int, high: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if (len(raw) > MAX_DIGITS or not re.fullmatch(r"[0-9]+", raw)
            or not low <= int(raw) <= high):
        raise InvalidInputError(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


@routes.get("/api/backups")
async def list_backups(request: web.Request) -> web.Response:
    known = {"status", "label", "limit", "offset"}
    unknown = sorted(set(request.query) - known)
    if unknown:
        raise InvalidInputError(f"unknown query parameter(s): {', '.join(unknown)}")
    status_text = request.query.get("status")
    status = None
    if status_text is not None:
        try:
            status = Status(status_text)
        except ValueError:
            raise InvalidInputError("status must be pending, finished or failed") from None
    label = request.query.get("label")
    if label is not None and not label:
        raise InvalidInputError("label must not be empty")
    limit = _int_param(request, "limit", 1, MAX_LIMIT)
    offset = _int_param(request, "offset", 0, 2**62) or 0
    body = await request.app[RUNTIME].catalog.list_backups_json(
        status=status, label=label, limit=limit, offset=offset)
    return web.Response(text=body, content_type="application/json")


@routes.post("/api/backups")
async def start_backups(request: web.Request) -> web.Response:
    body = await _body_object(request, {"Sources"}, '{"Sources": [...]}')
    labels: list[str] | None = None
    sources = body.get("Sources")
    if sources is not None:
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise InvalidInputError("Sources must be a list of data source labels")
        labels = sources or None
    backups = await request.app[RUNTIME].start_backups(labels)
    return web.json_response(
        {"Message": "Backup started", "BackupIds": [backup.id for backup in backups]})


async def _body_object(request: web.Request, fields: set[str], example: str) -> dict[str, Any]:
    """A request's optional JSON object body ({} when there is none); InvalidInputError
    for anything else, or for a field not in ``fields``."""
    if not request.can_read_body:
        return {}
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInputError("the body must be JSON") from None
    except RecursionError:  # arrays in arrays, 100,000 deep
        raise InvalidInputError("the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidInputError(f"the body must be a JSON object like {example}")
    extra = sorted(set(body) - fields)
    if extra:
        raise InvalidInputError(f"unknown field(s): {', '.join(extra)}")
    return body


@routes.get("/api/backups/{id}")
async def get_backup(request: web.Request) -> web.Response:
    backup = await request.app[RUNTIME].catalog.get_backup(request.match_info["id"])
    return web.json_response(backup.to_api())


@routes.post("/api/backups/{id}/retry")
async def retry_backup(request: web.Request) -> web.Response:
    backup = await request.app[RUNTIME].retry(request.match_info["id"])
    return web.json_response({"Message": "Retry started", "BackupIds": [backup.id]})


@routes.post("/api/backups/{id}/verify")
async def verify_backup(request: web.Request) -> web.Response:
    body = await _body_object(request, {"Drive"}, '{"Drive": "label"}')
    drive = body.get("Drive")
    if drive is not None and not isinstance(drive, str):
        raise InvalidInputError("Drive must be a drive's label")
    await request.app[RUNTIME].start_verify(request.match_info["id"], drive=drive)
    return web.json_response({"Message": "Verification started"}, status=202)


async def _pin(request: web.Request, pinned: bool) -> web.Response:
    body = await _body_object(request, {"Note"} if pinned else set(), '{"Note": "why"}')
    note = body.get("Note")
    if note is not None and (not isinstance(note, str) or len(note) > 1000):
        raise InvalidInputError("Note must be a string of at most 1000 characters")
    backup = await request.app[RUNTIME].catalog.update_backup(
        request.match_info["id"], pinned=pinned, pin_note=note)
    return web.json_response(backup.to_api())


@routes.post("/api/backups/{id}/pin")
async def pin_backup(request: web.Request) -> web.Response:
    return await _pin(request, True)


@routes.delete("/api/backups/{id}/pin")
async def unpin_backup(request: web.Request) -> web.Response:
    return await _pin(request, False)


@routes.get("/api/retention/preview")
async def retention_preview(request: web.Request) -> web.Response:
    from .retention import plan, preview

    unknown = sorted(set(request.query) - {"label"})
    if unknown:
        raise InvalidInputError(f"unknown query parameter(s): {', '.join(unknown)}")
    runtime = request.app[RUNTIME]
    label = request.query.get("label") or None
    verdicts = await plan(runtime.services, label=label, mark=False)
    body = preview(verdicts)
    body["Enabled"] = runtime.settings.retention.enabled
    body["Policy"] = runtime.settings.retention.by
    return web.json_response(body)


@routes.get("/api/backups/{id}/generate-download-url")
async def generate_download_url(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    identifier = request.match_info["id"]
    await runtime.find_download(identifier)  # 404 / 409 before handing out a URL
    http = runtime.settings.http
    url = signing.signed_url(request.app[URL_KEY], http.app_url, identifier, http.download_url_ttl)
    return web.json_response({"Url": url, "ExpiresIn": http.download_url_ttl})


_RANGE = re.compile(rf"^bytes=([0-9]{{0,{MAX_DIGITS}}})-([0-9]{{0,{MAX_DIGITS}}})$")


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The single range of a Range header as [start, end); None for the whole file."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    first, last = match.groups()
    if first:
        start = int(first)
        end = min(int(last) + 1, size) if last else size
    else:
        start, end = max(size - int(last), 0), size
    if start >= size or start >= end:
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    return start, end


@routes.get("/api/backups/{id}/download")
async def download(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    backup, record = await runtime.find_download(request.match_info["id"])
    if record is None:
        assert backup.dump_path is not None
        local = Path(backup.dump_path)
        size = backup.size or local.stat().st_size

        def stream(start: int, end: int) -> AsyncIterator[bytes]:
            return read_file(local, start, end)
        name = backup.name
    else:
        if record.status is not Status.FINISHED or record.path is None:
            raise ConflictError(f"drive file {record.id} is {record.status.value}, not finished")
        drive = runtime.drive(record.drive)
        size = record.size or backup.size or 0
        path = record.path

        def stream(start: int, end: int) -> AsyncIterator[bytes]:
            return drive.download(path, start=start, end=end)
        name = record.label
    selected = _byte_range(request.headers.get("Range"), size)
    start, end = selected or (0, size)
    response = web.StreamResponse(status=206 if selected else 200, headers={
        "Content-Type": "application/octet-stream",
        "Content-Disposition": f'attachment; filename="{_safe_filename(name)}"',
        "Accept-Ranges": "bytes",
        "Content-Length": str(end - start),
    })
    if selected:
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    chunks = stream(start, end)
    first = await anext(aiter(chunks), b"")  # a drive error becomes a JSON error, not a cut body
    await response.prepare(request)
    if first:
        await response.write(first)
    async for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


def _safe_filename(name: str) -> str:
    return re.sub(r'[^A-Za-z0-9._-]', "_", name)


# ---------------------------------------------------------------------------- the status page
# HTML for browsers (backupmand/web): signed in with a form and a cookie, never with the
# X-Api-Key header, and outside /api/, so auth_middleware leaves these routes to it.

#: The page's routes: for browsers, so not in the OpenAPI document (data/openapi.json).
PAGE_ROUTES = frozenset({("get", "/"), ("post", "/login"), ("post", "/logout"),
                         ("get", "/status.css")})
#: Sessions ended by POST /logout in this process (web.session).
PAGE_REVOCATIONS: web.AppKey[Revocations] = web.AppKey("page_revocations", Revocations)


def _page_context(request: web.Request) -> status_pages.PageContext:
    app = request.app
    return status_pages.PageContext(runtime=app[RUNTIME], schedule=app.get(SCHEDULE),
                                    url_key=app[URL_KEY], revocations=app[PAGE_REVOCATIONS])


@routes.get("/")
async def status_page(request: web.Request) -> web.Response:
    return await status_pages.show(request, _page_context(request))


@routes.post("/login")
async def status_page_login(request: web.Request) -> web.Response:
    return await status_pages.login(request, _page_context(request))


@routes.post("/logout")
async def status_page_logout(request: web.Request) -> web.Response:
    return await status_pages.logout(request, _page_context(request))


@routes.get("/status.css")
async def status_page_stylesheet(request: web.Request) -> web.Response:
    return status_pages.stylesheet(request)


# ---------------------------------------------------------------------------- the app


def create_app(runtime: Runtime, url_key: bytes | None = None) -> web.Application:
    app = web.Application(middlewares=[errors_middleware, auth_middleware],
                          client_max_size=1024 * 1024)
    app[RUNTIME] = runtime
    app[URL_KEY] = url_key if url_key is not None else signing.load_key(runtime.settings)
    app[HEALTH] = health.HealthCache(runtime)
    app[PAGE_REVOCATIONS] = Revocations()
    app.add_routes(routes)
    return app
