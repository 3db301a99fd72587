"""The status page's sign-in: signed session tokens, form tokens and the cross-site check.

The browser never holds the API key. ``POST /login`` checks the key once (in constant
time, against every ``http.api_keys`` entry) and hands back a session token:

    v1.<expires>.<nonce>.<key id>.<HMAC-SHA256>

signed with the daemon's URL-signing key (``signing.load_key``: ``http.url_secret`` or
the key file in the state directory, so sessions survive a restart). The key id is an
HMAC of the API key that was used, so removing that key from the config ends its
sessions too. ``POST /logout`` revokes the nonce for as long as this process runs and
clears the cookie.

Cross-site posts are refused twice over. The headers browsers send say where a post
came from (``Sec-Fetch-Site``, else ``Origin``, else ``Referer``), and a foreign one is
refused. But the page's ``Referrer-Policy: no-referrer`` makes browsers send ``Origin:
null`` on its own form posts, and ``Sec-Fetch-Site`` is only sent to loopback and
HTTPS origins, so headers alone cannot admit a genuine post from a plain-HTTP address.
Every form therefore also carries a token only this daemon can make: the login form's
is an HMAC of a nonce kept in its own ``SameSite=Strict`` cookie, the logout form's an
HMAC of the session's nonce. A page on another origin can neither read the form nor
send the cookie (nor forge the HMAC), so its post fails the token check whatever its
headers say.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

SESSION_COOKIE = "backupmand_session"
LOGIN_COOKIE = "backupmand_login"
#: How long a sign-in lasts (the cookie's Max-Age and the token's expiry).
SESSION_LIFETIME = 12 * 3600
#: How long a login form stays usable after it was shown.
LOGIN_FORM_LIFETIME = 3600
_VERSION = "v1"


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def key_id(url_key: bytes, api_key: str) -> str:
    """A short, keyed fingerprint of an API key: names it in a token without revealing it."""
    return _mac(url_key, f"page-api-key:{api_key}")[:16]


def matching_key_id(url_key: bytes, given: str, api_keys: Iterable[str]) -> str | None:
    """The key id of ``given`` when it is one of ``api_keys`` (every key is compared, in
    constant time, with no early exit), else None."""
    found: str | None = None
    for api_key in api_keys:
        if hmac.compare_digest(given.encode(), api_key.encode()):
            found = api_key
    return key_id(url_key, found) if found is not None else None


@dataclasses.dataclass(frozen=True)
class Session:
    nonce: str
    expires: int
    key_id: str


def issue(url_key: bytes, api_key_id: str, *, now: float | None = None,
          lifetime: int = SESSION_LIFETIME) -> str:
    """A new session token for a sign-in made with the API key named ``api_key_id``."""
    expires = int(now if now is not None else time.time()) + lifetime
    nonce = secrets.token_urlsafe(18)
    body = f"{_VERSION}.{expires}.{nonce}.{api_key_id}"
    return f"{body}.{_mac(url_key, 'page-session:' + body)}"


def read(url_key: bytes, token: str, api_keys: Iterable[str], *,
         revoked: Revocations | None = None, now: float | None = None) -> Session | None:
    """The session a token stands for, or None when it is malformed, forged, expired,
    revoked, or was made with an API key that is no longer configured."""
    parts = token.split(".")
    if len(parts) != 5 or parts[0] != _VERSION or not parts[1].isdigit():
        return None
    version, expires_text, nonce, api_key_id, mac = parts
    body = f"{version}.{expires_text}.{nonce}.{api_key_id}"
    if not hmac.compare_digest(_mac(url_key, "page-session:" + body), mac):
        return None
    moment = now if now is not None else time.time()
    expires = int(expires_text)
    # A token from the future (beyond one lifetime) was not made by this daemon's clock.
    if not moment < expires <= moment + SESSION_LIFETIME + 300:
        return None
    known = False
    for api_key in api_keys:  # every key compared: no early exit
        known |= hmac.compare_digest(key_id(url_key, api_key), api_key_id)
    if not known:
        return None
    if revoked is not None and revoked.contains(nonce, moment):
        return None
    return Session(nonce=nonce, expires=expires, key_id=api_key_id)


class Revocations:
    """Nonces of sessions ended by ``POST /logout``, kept until they would have expired.

    In memory: a restart forgets them, but the browser that logged out has dropped its
    cookie already; this only stops a copied cookie from outliving the logout."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def add(self, session: Session, now: float | None = None) -> None:
        moment = now if now is not None else time.time()
        self._until = {nonce: until for nonce, until in self._until.items() if until > moment}
        self._until[session.nonce] = session.expires

    def contains(self, nonce: str, now: float) -> bool:
        until = self._until.get(nonce)
        return until is not None and until > now


# ---------------------------------------------------------------------------- forms


def new_login_nonce(now: float | None = None) -> str:
    """A login form's nonce: its expiry and a random part (the form token signs both)."""
    expires = int(now if now is not None else time.time()) + LOGIN_FORM_LIFETIME
    return f"{expires}.{secrets.token_urlsafe(18)}"


def login_nonce_valid(nonce: str, now: float | None = None) -> bool:
    expires, _, random_part = nonce.partition(".")
    moment = now if now is not None else time.time()
    return (expires.isdigit() and bool(random_part)
            and moment < int(expires) <= moment + LOGIN_FORM_LIFETIME + 300)


def login_form_token(url_key: bytes, nonce: str) -> str:
    return _mac(url_key, f"page-login-form:{nonce}")


def logout_form_token(url_key: bytes, session: Session) -> str:
    return _mac(url_key, f"page-logout-form:{session.nonce}")


def form_token_matches(expected: str, given: str) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), given.encode())


# ---------------------------------------------------------------------------- origins


def _origin(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def cross_site_reason(headers: Mapping[str, str], own_origins: Iterable[str]) -> str | None:
    """Why a form post's headers show it came from another site, or None when they do
    not (they may say nothing at all: the form token decides then).

    ``own_origins``: the origins this page is served from (the request's own scheme and
    Host, and ``http.app_url`` for a daemon behind a proxy)."""
    own = {origin for origin in map(_origin, own_origins) if origin is not None}
    fetch_site = headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {fetch_site}"
    origin = headers.get("Origin")
    if origin is not None and origin != "null" and _origin(origin) not in own:
        return "Origin is another site"
    referer = headers.get("Referer")
    if referer and _origin(referer) not in own:
        return "Referer is another site"
    return None
