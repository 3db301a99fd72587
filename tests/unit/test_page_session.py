"""The status page's session and form tokens, and its cross-site check."""

from __future__ import annotations

import pytest

from backupmand.web import session

URL_KEY = b"k" * 32
KEYS = ["first-key-0123456789", "second-key-0123456789"]
NOW = 1_800_000_000.0


def signed_in(api_key: str = KEYS[1], now: float = NOW) -> str:
    key_id = session.matching_key_id(URL_KEY, api_key, KEYS)
    assert key_id is not None
    return session.issue(URL_KEY, key_id, now=now)


def test_a_token_stands_for_its_session_until_it_expires() -> None:
    token = signed_in()
    found = session.read(URL_KEY, token, KEYS, now=NOW + 60)
    assert found is not None and found.expires == NOW + session.SESSION_LIFETIME
    assert all(key not in token for key in KEYS), "the cookie never holds the API key"
    assert session.read(URL_KEY, token, KEYS, now=NOW + session.SESSION_LIFETIME) is None
    assert session.read(URL_KEY, token, KEYS, now=NOW + session.SESSION_LIFETIME - 1) is not None


def test_a_token_made_long_before_by_a_clock_ahead_is_refused() -> None:
    token = signed_in(now=NOW + 86400)
    assert session.read(URL_KEY, token, KEYS, now=NOW) is None


@pytest.mark.parametrize("part", range(5))
def test_a_changed_token_is_refused(part: int) -> None:
    pieces = signed_in().split(".")
    pieces[part] = pieces[part][:-1] + ("0" if pieces[part][-1] != "0" else "1")
    assert session.read(URL_KEY, ".".join(pieces), KEYS, now=NOW) is None


@pytest.mark.parametrize("token", ["", "v1", "v1.x.y.z.w", "v2.1.a.b.c", "v1.1800000100.a.b", "a.b.c.d.e.f"])
def test_malformed_tokens_are_refused(token: str) -> None:
    assert session.read(URL_KEY, token, KEYS, now=NOW) is None


def test_another_daemons_key_or_a_removed_api_key_ends_the_session() -> None:
    token = signed_in(KEYS[1])
    assert session.read(b"o" * 32, token, KEYS, now=NOW) is None
    assert session.read(URL_KEY, token, [KEYS[0]], now=NOW) is None
    assert session.read(URL_KEY, token, [KEYS[1]], now=NOW) is not None


def test_only_a_configured_key_signs_in() -> None:
    assert session.matching_key_id(URL_KEY, "wrong", KEYS) is None
    assert session.matching_key_id(URL_KEY, KEYS[0][:-1], KEYS) is None
    assert session.matching_key_id(URL_KEY, KEYS[0], []) is None
    first, second = (session.matching_key_id(URL_KEY, key, KEYS) for key in KEYS)
    assert first and second and first != second


def test_a_revoked_session_stays_revoked_until_it_would_have_expired() -> None:
    revocations = session.Revocations()
    token = signed_in()
    current = session.read(URL_KEY, token, KEYS, now=NOW)
    assert current is not None
    revocations.add(current, now=NOW)
    assert session.read(URL_KEY, token, KEYS, revoked=revocations, now=NOW + 1) is None
    other = signed_in()
    assert session.read(URL_KEY, other, KEYS, revoked=revocations, now=NOW + 1) is not None
    # Expired entries are dropped when the next one is added.
    later = session.read(URL_KEY, signed_in(now=NOW + session.SESSION_LIFETIME),
                         KEYS, now=NOW + session.SESSION_LIFETIME + 1)
    assert later is not None
    revocations.add(later, now=NOW + session.SESSION_LIFETIME + 1)
    assert not revocations.contains(current.nonce, NOW)  # forgotten: it has expired anyway


def test_form_tokens_belong_to_their_nonce_and_session() -> None:
    nonce = session.new_login_nonce(now=NOW)
    assert session.login_nonce_valid(nonce, now=NOW + 10)
    assert not session.login_nonce_valid(nonce, now=NOW + session.LOGIN_FORM_LIFETIME)
    assert not session.login_nonce_valid("garbage", now=NOW)
    token = session.login_form_token(URL_KEY, nonce)
    assert session.form_token_matches(token, session.login_form_token(URL_KEY, nonce))
    assert not session.form_token_matches(token, session.login_form_token(URL_KEY, nonce + "x"))
    assert not session.form_token_matches(token, "")
    current = session.read(URL_KEY, signed_in(), KEYS, now=NOW)
    assert current is not None
    assert session.logout_form_token(URL_KEY, current) != token


OWN = ["http://127.0.0.1:8080", "https://backups.example.org"]


@pytest.mark.parametrize(("headers", "refused"), [
    ({}, False),  # curl: nothing says it came from elsewhere; the form token decides
    ({"Sec-Fetch-Site": "same-origin", "Origin": "null"}, False),  # our own form, no-referrer
    ({"Sec-Fetch-Site": "none"}, False),
    ({"Sec-Fetch-Site": "cross-site"}, True),
    ({"Sec-Fetch-Site": "same-site"}, True),  # another port or subdomain of the same site
    ({"Origin": "http://127.0.0.1:8080"}, False),
    ({"Origin": "https://backups.example.org"}, False),  # app_url, behind a TLS proxy
    ({"Origin": "https://backups.example.org:443"}, False),
    ({"Origin": "http://127.0.0.1:8081"}, True),
    ({"Origin": "http://evil.example"}, True),
    ({"Origin": "not a url"}, True),
    ({"Referer": "http://127.0.0.1:8080/"}, False),
    ({"Referer": "http://evil.example/page"}, True),
    ({"Origin": "null", "Referer": "http://evil.example/"}, True),
])
def test_cross_site_posts_are_told_apart_by_their_headers(headers: dict[str, str], refused: bool) -> None:
    assert (session.cross_site_reason(headers, OWN) is not None) is refused
