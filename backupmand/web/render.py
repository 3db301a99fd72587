"""The status page's HTML: Jinja2 templates with autoescaping, read once at import.

Every value reaches the HTML through the templates, and autoescaping is on for all of
them (``select_autoescape`` would leave it to file names), so a label, an error text or
a path from a dump tool cannot become markup. Undefined names are errors, not empty
strings, so a template cannot silently show nothing.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from jinja2 import DictLoader, Environment, StrictUndefined

from .view import StatusView

_TEMPLATES = ("base.html", "login.html", "status.html")
#: The page reloads itself (a meta refresh: no script needed) this often.
REFRESH_SECONDS = 60


def _read(folder: str, name: str) -> str:
    return resources.files("backupmand.web").joinpath(folder, name).read_text(encoding="utf-8")


# Read at import, when the daemon starts, so that no request reads a file on the event loop.
_ENVIRONMENT = Environment(
    loader=DictLoader({name: _read("templates", name) for name in _TEMPLATES}),
    autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
)
_LOGIN = _ENVIRONMENT.get_template("login.html")
_STATUS = _ENVIRONMENT.get_template("status.html")

STYLESHEET = _read("static", "status.css").encode()
STYLESHEET_ETAG = '"' + hashlib.sha256(STYLESHEET).hexdigest()[:16] + '"'

#: For every response of the page: nothing but this daemon may be loaded or framed,
#: no script runs, forms post only here, and nothing is cached or sent as a referrer.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'none'; object-src 'none'; style-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
PAGE_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-store"}


def render_login(form_token: str, message: str | None = None) -> str:
    return _LOGIN.render(form_token=form_token, message=message)


def render_status(view: StatusView, logout_token: str) -> str:
    return _STATUS.render(view=view, logout_token=logout_token, refresh_seconds=REFRESH_SECONDS)
