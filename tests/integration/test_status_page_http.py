"""The status page's routes over real HTTP (the real aiohttp app and Runtime on loopback,
plain and TLS): headers, cookies, sign-in and logout, and refused cross-site posts."""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator, Callable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web

from backupmand.api import create_app
from backupmand.web import session
from backupmand.web.render import CONTENT_SECURITY_POLICY
from tests.helpers import API_KEY

URL_KEY = b"u" * 32
FORM_TOKEN = re.compile(r'name="form_token" value="([0-9a-f]{64})"')


class Page:
    """A client of one served app, with its cookies kept by hand (what a browser would send)."""

    def __init__(self, client: aiohttp.ClientSession, base: str) -> None:
        self.client = client
        self.base = base
        self.cookies: dict[str, str] = {}

    async def request(self, method: str, path: str, *, data: dict[str, str] | None = None,
                      headers: dict[str, str] | None = None, keep: bool = True,
                      ) -> tuple[aiohttp.ClientResponse, str, SimpleCookie]:
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        async with self.client.request(method, self.base + path, data=data, headers=sent,
                                       allow_redirects=False) as response:
            body = await response.text()
        jar: SimpleCookie = SimpleCookie()
        for header in response.headers.getall("Set-Cookie", []):
            jar.load(header)
        if keep:
            for name, morsel in jar.items():
                if morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return response, body, jar

    async def sign_in(self, key: str = API_KEY) -> tuple[aiohttp.ClientResponse, str, SimpleCookie]:
        _response, body, _jar = await self.request("GET", "/")
        token = FORM_TOKEN.search(body)
        assert token is not None, body
        return await self.request("POST", "/login", data={"api_key": key, "form_token": token.group(1)},
                                  headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"})


@pytest.fixture
async def serve(make_settings: Callable[..., Any], open_runtime: Callable[..., Any], tmp_path: Path
                ) -> AsyncIterator[Callable[..., Any]]:
    """serve(tls=None) -> a Page on a new app (its own Runtime) on a free loopback port."""
    runners: list[web.AppRunner] = []
    clients: list[aiohttp.ClientSession] = []
    runtimes: list[Any] = []

    async def start(tls: trustme.CA | None = None) -> Page:
        settings = make_settings(data_sources=[{
            "provider": "sqlite", "label": "Secret Orders", "db_path": str(tmp_path / "app.db"),
            "tmp_folder": str(tmp_path / "dumps")}])
        context_manager = open_runtime(settings)
        runtime = await context_manager.__aenter__()
        runtimes.append(context_manager)
        runner = web.AppRunner(create_app(runtime, url_key=URL_KEY))
        await runner.setup()
        runners.append(runner)
        server_context = None
        client_context: ssl.SSLContext | bool = False
        if tls is not None:
            server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.issue_cert("127.0.0.1").configure_cert(server_context)
            client_context = ssl.create_default_context()
            tls.configure_trust(client_context)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        client = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(),
                                       connector=aiohttp.TCPConnector(ssl=client_context))
        clients.append(client)
        return Page(client, f"{'https' if tls else 'http'}://127.0.0.1:{port}")

    yield start
    for client in clients:
        await client.close()
    for runner in runners:
        await runner.cleanup()
    for context_manager in reversed(runtimes):
        await context_manager.__aexit__(None, None, None)


def assert_page_headers(response: aiohttp.ClientResponse) -> None:
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'none'" in CONTENT_SECURITY_POLICY and "default-src 'self'" in CONTENT_SECURITY_POLICY
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_without_a_session_only_the_login_form_is_served(serve: Any) -> None:
    page = await serve()
    response, body, jar = await page.request("GET", "/")
    assert response.status == 200 and response.content_type == "text/html"
    assert_page_headers(response)
    assert 'action="/login"' in body and "Secret Orders" not in body and "disk" not in body
    login = jar[session.LOGIN_COOKIE]
    assert login["httponly"] and login["samesite"] == "Strict" and login["path"] == "/"
    assert not login["secure"]
    # A reload keeps the same form nonce (two tabs both work) ...
    _response, again, jar = await page.request("GET", "/")
    assert session.LOGIN_COOKIE not in jar and FORM_TOKEN.findall(again) == FORM_TOKEN.findall(body)


async def test_sign_in_then_the_page_then_logout(serve: Any) -> None:
    page = await serve()
    response, _body, jar = await page.sign_in()
    assert response.status == 303 and response.headers["Location"] == "/"
    assert_page_headers(response)
    cookie = jar[session.SESSION_COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    assert cookie["max-age"] == str(session.SESSION_LIFETIME) and not cookie["secure"]
    assert API_KEY not in cookie.value
    assert jar[session.LOGIN_COOKIE]["max-age"] == "0", "the form's nonce is spent"
    signed_in_token = page.cookies[session.SESSION_COOKIE]

    response, body, _jar = await page.request("GET", "/")
    assert response.status == 200 and "Secret Orders" in body and "Log out" in body
    assert_page_headers(response)
    # The cookie is for the page only: the API still wants its header.
    response, _body, _jar = await page.request("GET", "/api/backups")
    assert response.status == 401

    # A logout without the page's token changes nothing.
    response, body, _jar = await page.request("POST", "/logout", data={"form_token": "0" * 64})
    assert response.status == 403 and session.SESSION_COOKIE in page.cookies
    logout_token = FORM_TOKEN.findall((await page.request("GET", "/"))[1])[-1]
    response, _body, jar = await page.request("POST", "/logout", data={"form_token": logout_token},
                                              headers={"Sec-Fetch-Site": "same-origin"})
    assert response.status == 303 and jar[session.SESSION_COOKIE]["max-age"] == "0"
    assert jar[session.SESSION_COOKIE]["httponly"] and jar[session.SESSION_COOKIE]["samesite"] == "Strict"
    assert session.SESSION_COOKIE not in page.cookies
    # The ended session stays ended even for a copy of the cookie.
    page.cookies[session.SESSION_COOKIE] = signed_in_token
    response, body, jar = await page.request("GET", "/")
    assert "Secret Orders" not in body and 'action="/login"' in body
    assert jar[session.SESSION_COOKIE]["max-age"] == "0", "a dead cookie is dropped"


async def test_a_wrong_key_is_refused_and_sets_no_session(serve: Any) -> None:
    page = await serve()
    response, body, jar = await page.sign_in("not-the-key")
    assert response.status == 401 and "Wrong API key." in body
    assert session.SESSION_COOKIE not in jar and "Secret Orders" not in body
    response, body, jar = await page.sign_in("")
    assert response.status == 401 and session.SESSION_COOKIE not in jar


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "cross-site"},
    {"Origin": "http://evil.example"},
    {"Referer": "http://evil.example/attack.html"},
])
async def test_cross_site_posts_are_refused(serve: Any, headers: dict[str, str]) -> None:
    page = await serve()
    _response, body, _jar = await page.request("GET", "/")
    token = FORM_TOKEN.findall(body)[0]
    response, body, jar = await page.request(
        "POST", "/login", data={"api_key": API_KEY, "form_token": token}, headers=headers)
    assert response.status == 403 and not jar, "no cookie is set or cleared"
    assert_page_headers(response)
    await page.sign_in()
    logout_token = FORM_TOKEN.findall((await page.request("GET", "/"))[1])[-1]
    response, _body, jar = await page.request("POST", "/logout", data={"form_token": logout_token},
                                              headers=headers)
    assert response.status == 403 and not jar
    assert "Secret Orders" in (await page.request("GET", "/"))[1], "still signed in"


async def test_a_post_without_the_forms_token_is_refused_whatever_its_headers(serve: Any) -> None:
    """What a browser sends from a plain-HTTP address: Origin null, no Sec-Fetch-Site."""
    page = await serve()
    response, body, jar = await page.request("POST", "/login", data={"api_key": API_KEY},
                                             headers={"Origin": "null"})
    assert response.status == 403 and session.SESSION_COOKIE not in jar
    assert "expired" in body and 'action="/login"' in body
    # The refused form comes back with a fresh nonce and token that do work.
    token = FORM_TOKEN.findall(body)[0]
    response, _body, jar = await page.request(
        "POST", "/login", data={"api_key": API_KEY, "form_token": token}, headers={"Origin": "null"})
    assert response.status == 303 and session.SESSION_COOKIE in jar
    # A form token made for another browser's nonce does not do.
    other = await serve()
    _response, other_body, _jar = await other.request("GET", "/")
    page.cookies.pop(session.SESSION_COOKIE)
    await page.request("GET", "/")  # this browser's own, new nonce
    response, _body, jar = await page.request(
        "POST", "/login", data={"api_key": API_KEY, "form_token": FORM_TOKEN.findall(other_body)[0]})
    assert response.status == 403 and session.SESSION_COOKIE not in jar


async def test_over_tls_the_cookies_are_secure(serve: Any) -> None:
    page = await serve(tls=trustme.CA())
    _response, _body, jar = await page.request("GET", "/")
    assert jar[session.LOGIN_COOKIE]["secure"]
    response, _body, jar = await page.sign_in()
    assert response.status == 303 and jar[session.SESSION_COOKIE]["secure"]
    assert "Secret Orders" in (await page.request("GET", "/"))[1]


@pytest.mark.parametrize("header", [{"X-Forwarded-Proto": "https"},
                                    {"Forwarded": "for=192.0.2.1;proto=https"}])
async def test_behind_a_tls_proxy_that_says_so_the_cookies_are_secure(
        serve: Any, header: dict[str, str]) -> None:
    page = await serve()
    _response, _body, jar = await page.request("GET", "/", headers=header)
    assert jar[session.LOGIN_COOKIE]["secure"]
    plain = await serve()
    _response, _body, jar = await plain.request("GET", "/", headers={"X-Forwarded-Proto": "http"})
    assert not jar[session.LOGIN_COOKIE]["secure"]


async def test_the_stylesheet_is_local_and_revalidated(serve: Any) -> None:
    page = await serve()
    response, body, _jar = await page.request("GET", "/status.css")
    assert response.status == 200 and response.content_type == "text/css"
    assert "@import" not in body and "url(" not in body, "nothing fetched from elsewhere"
    etag = response.headers["ETag"]
    response, body, _jar = await page.request("GET", "/status.css", headers={"If-None-Match": etag})
    assert response.status == 304 and body == ""
