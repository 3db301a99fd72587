"""The status page's requests: who is signed in, and the responses of each route.

api.py registers the routes and hands each request here with a ``PageContext``; the
facts come from ``gather``, the words from ``view``, the HTML from ``render`` and the
tokens from ``session``. Every response carries ``render.SECURITY_HEADERS``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import structlog
from aiohttp import web

from ..runtime import Runtime
from . import render, session
from .gather import ScheduleFacts, gather
from .view import build

log = structlog.get_logger("backupmand.web")

CROSS_SITE_REFUSAL = "refused: this form was not sent from this daemon's status page\n"


@dataclasses.dataclass(frozen=True)
class PageContext:
    runtime: Runtime
    schedule: ScheduleFacts | None
    url_key: bytes
    revocations: session.Revocations

    @property
    def api_keys(self) -> list[str]:
        return [key.get_secret_value() for key in self.runtime.settings.http.api_keys]


def _own_origins(request: web.Request, context: PageContext) -> list[str]:
    return [f"{request.scheme}://{request.host}", context.runtime.settings.http.app_url]


def served_over_tls(request: web.Request) -> bool:
    """TLS to this daemon, or to a proxy in front of it that says so. Trusting the proxy's
    header is safe here: it can only make the cookie stricter (Secure), never looser."""
    if request.secure:
        return True
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return forwarded == "https" or any(
        item.get("proto", "").lower() == "https" for item in request.forwarded[:1])


def _cookie_flags(request: web.Request) -> dict[str, Any]:
    # Secure only over TLS: over plain HTTP (an SSH tunnel to 127.0.0.1, say) the browser
    # would drop a Secure cookie, and nobody could sign in.
    return {"path": "/", "httponly": True, "samesite": "Strict",
            "secure": True if served_over_tls(request) else None}


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8",
                        headers=render.PAGE_HEADERS)


def _refusal(status: int, text: str) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/plain", charset="utf-8",
                        headers=render.PAGE_HEADERS)


def _see_other() -> web.Response:
    return web.Response(status=303, headers={**render.PAGE_HEADERS, "Location": "/"})


def current_session(request: web.Request, context: PageContext) -> session.Session | None:
    token = request.cookies.get(session.SESSION_COOKIE)
    if not token:
        return None
    return session.read(context.url_key, token, context.api_keys, revoked=context.revocations)


def login_page(request: web.Request, context: PageContext, *, message: str | None = None,
               status: int = 200, new_form: bool = False) -> web.Response:
    """The login form alone: no label, count or state of anything behind it. Its nonce
    cookie is kept while valid (so that two open tabs both work) unless ``new_form``."""
    nonce = request.cookies.get(session.LOGIN_COOKIE, "")
    fresh = new_form or not session.login_nonce_valid(nonce)
    if fresh:
        nonce = session.new_login_nonce()
    response = _html(render.render_login(session.login_form_token(context.url_key, nonce), message),
                     status)
    if fresh:
        response.set_cookie(session.LOGIN_COOKIE, nonce, max_age=session.LOGIN_FORM_LIFETIME,
                            **_cookie_flags(request))
    if request.cookies.get(session.SESSION_COOKIE):  # expired, revoked or forged: drop it
        response.del_cookie(session.SESSION_COOKIE, **_cookie_flags(request))
    return response


async def show(request: web.Request, context: PageContext) -> web.Response:
    """``GET /``: the status page when signed in, the login form otherwise."""
    current = current_session(request, context)
    if current is None:
        return login_page(request, context)
    view = build(await gather(context.runtime, context.schedule))
    return _html(render.render_status(view, session.logout_form_token(context.url_key, current)))


async def login(request: web.Request, context: PageContext) -> web.Response:
    """``POST /login``: check the key once, then keep a signed session in a cookie."""
    reason = session.cross_site_reason(request.headers, _own_origins(request, context))
    if reason is not None:
        log.warning("page.login_refused", reason=reason, peer=request.remote)
        return _refusal(403, CROSS_SITE_REFUSAL)
    form = await request.post()
    nonce = request.cookies.get(session.LOGIN_COOKIE, "")
    token = str(form.get("form_token", ""))
    if not (session.login_nonce_valid(nonce) and session.form_token_matches(
            session.login_form_token(context.url_key, nonce), token)):
        log.warning("page.login_refused", reason="no valid form token", peer=request.remote)
        return login_page(request, context, status=403, new_form=True,
                          message="This form has expired (or cookies are off). Please try again.")
    given = str(form.get("api_key", ""))
    key_id = session.matching_key_id(context.url_key, given, context.api_keys) if given else None
    if key_id is None:
        log.warning("page.login_refused", reason="wrong API key", peer=request.remote)
        return login_page(request, context, message="Wrong API key.", status=401)
    response = _see_other()
    response.set_cookie(session.SESSION_COOKIE, session.issue(context.url_key, key_id),
                        max_age=session.SESSION_LIFETIME, **_cookie_flags(request))
    response.del_cookie(session.LOGIN_COOKIE, **_cookie_flags(request))
    log.info("page.login", key_id=key_id, peer=request.remote)
    return response


async def logout(request: web.Request, context: PageContext) -> web.Response:
    """``POST /logout``: end the session (here and in the browser), back to the form."""
    reason = session.cross_site_reason(request.headers, _own_origins(request, context))
    if reason is not None:
        log.warning("page.logout_refused", reason=reason, peer=request.remote)
        return _refusal(403, CROSS_SITE_REFUSAL)
    current = current_session(request, context)
    if current is None:
        return _see_other()  # nothing to end; / shows the form (and drops a stale cookie)
    form = await request.post()
    expected = session.logout_form_token(context.url_key, current)
    if not session.form_token_matches(expected, str(form.get("form_token", ""))):
        log.warning("page.logout_refused", reason="no valid form token", peer=request.remote)
        return _refusal(403, CROSS_SITE_REFUSAL)
    context.revocations.add(current)
    response = _see_other()
    response.del_cookie(session.SESSION_COOKIE, **_cookie_flags(request))
    log.info("page.logout", key_id=current.key_id, peer=request.remote)
    return response


def stylesheet(request: web.Request) -> web.Response:
    """``GET /status.css``: public (it says nothing about the backups), revalidated by ETag."""
    headers = {**render.SECURITY_HEADERS, "ETag": render.STYLESHEET_ETAG, "Cache-Control": "no-cache"}
    if request.headers.get("If-None-Match") == render.STYLESHEET_ETAG:
        return web.Response(status=304, headers=headers)
    return web.Response(body=render.STYLESHEET, content_type="text/css", charset="utf-8",
                        headers=headers)
