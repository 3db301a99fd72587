"""The status page in a real browser (headless Chromium through Playwright) against a real
daemon whose catalog holds a finished source drilled for real and a failed one.

JavaScript is off in every browser context: the page must work without it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from backupmand.models import rfc3339
from backupmand.schedule import next_fire_times, parse_cron
from backupmand.web.session import SESSION_COOKIE, SESSION_LIFETIME
from backupmand.web.view import human_size
from tests.browser import artifact, browser_context, is_loopback, playwright_driver
from tests.helpers import API_KEY, Daemon, base_config, daemon, write_config

ZONE = "America/New_York"
FINISHED = "Orders DB"
FAILED = "Ledger"
DRIVE = "Vault disk"
LABELS = (FINISHED, FAILED, DRIVE)


def drill(server: Any, backup_id: str, timeout: float = 60) -> dict[str, Any]:
    """A real restore drill through the daemon's API; the backup once it is recorded."""
    status, body = server.request("POST", f"/api/backups/{backup_id}/verify")
    assert status == 202, body
    deadline = time.monotonic() + timeout
    while True:
        status, backup = server.request("GET", f"/api/backups/{backup_id}")
        if backup["Verification"] is not None:
            return backup  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, "the drill did not end"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A daemon with one finished (and verified) and one failed backup, and a schedule
    whose next run is about 12 hours away in New York."""
    tmp = tmp_path_factory.mktemp("status-page")
    hour = (dt.datetime.now(ZoneInfo(ZONE)).hour + 12) % 24
    cron = f"17 {hour} * * *"
    document = base_config(tmp)
    document["data_sources"] = [
        {"provider": "sqlite", "label": FINISHED, "db_path": str(tmp / "app.db"),
         "tmp_folder": str(tmp / "dumps")},
        # A path with no place to break a line: the error quoting it must still fit 375 px.
        {"provider": "sqlite", "label": FAILED,
         "db_path": str(tmp / "ledger_database_files_kept_in_a_folder_with_a_long_name" / "missing.db"),
         "tmp_folder": str(tmp / "dumps")},
    ]
    document["drives"] = [{"provider": "local", "label": DRIVE, "folder": str(tmp / "drive")}]
    document["http"]["backup_job"] = {"enabled": True, "cron": cron, "timezone": ZONE}
    config = write_config(tmp / "config.yml", document)
    with daemon(config) as server:
        status, body = server.request("POST", "/api/backups")
        assert status == 200, body
        backups = {item["Label"]: item for item in map(server.wait_backup, body["BackupIds"])}
        assert backups[FINISHED]["Status"] == "finished" and backups[FAILED]["Status"] == "failed"
        finished_id = backups[FINISHED]["Id"]
        verified = drill(server, finished_id)
        assert verified["Verification"] == "passed", verified
        next_run = next_fire_times(parse_cron(cron, ZONE), 1)[0]
        yield {"server": server, "finished": verified, "failed": backups[FAILED],
               "next_run": rfc3339(next_run), "tmp": tmp}


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    with playwright_driver() as playwright:
        yield playwright


@contextlib.contextmanager
def browser(driver: Any, tmp_path: Path, name: str, width: int = 1280) -> Iterator[tuple[Any, list[str]]]:
    """A fresh Chromium profile with JavaScript off, and every URL it requested."""
    requested: list[str] = []
    with browser_context(driver, tmp_path / f"profile-{name}", java_script_enabled=False,
                         viewport={"width": width, "height": 900}) as context:
        context.on("request", lambda request: requested.append(request.url))
        yield context, requested
    outside = [url for url in requested if not is_loopback(url)]
    assert not outside, f"requests left loopback: {outside}"
    assert requested, "the browser requested nothing"


def sign_in(page: Any, server: Daemon, key: str = API_KEY) -> Any:
    page.goto(server.url + "/")
    page.fill("#api-key", key)
    with page.expect_navigation() as navigation:
        page.click("button[type=submit]")
    return navigation.value


def assert_only_the_form(page: Any) -> None:
    text = page.inner_text("body")
    for label in LABELS:
        assert label not in text
    content = page.content()
    for label in LABELS:
        assert label not in content
    assert page.locator("form").count() == 1
    assert page.locator("form").get_attribute("action") == "/login"
    assert page.locator(".source, .drive, .banner, .strip").count() == 0
    assert [line for line in text.splitlines() if line.strip()] in (
        ["backupmand", "API key", "Sign in"],
        ["backupmand", "API key", "Sign in", "Wrong API key."])


def card(page: Any, label: str) -> Any:
    return page.locator(f'article[data-label="{label}"]')


def test_without_a_session_only_the_form_shows_and_a_wrong_key_is_refused(
        served: dict[str, Any], driver: Any, tmp_path: Path) -> None:
    server = served["server"]
    with browser(driver, tmp_path, "anonymous") as (context, _requested):
        page = context.new_page()
        response = page.goto(server.url + "/")
        assert response.status == 200
        assert_only_the_form(page)
        refused = sign_in(page, server, key="not-" + API_KEY)
        assert refused.status == 401
        assert_only_the_form(page)
        assert page.inner_text(".message") == "Wrong API key."
        assert not [c for c in context.cookies() if c["name"] == SESSION_COOKIE]


def test_signed_in_the_page_shows_both_sources_the_drive_and_the_banner(
        served: dict[str, Any], driver: Any, tmp_path: Path) -> None:
    server, finished, failed = served["server"], served["finished"], served["failed"]
    console: list[str] = []
    with browser(driver, tmp_path, "operator") as (context, requested):
        page = context.new_page()
        page.on("console", lambda message: console.append(message.text))
        signed_in = sign_in(page, server)
        assert signed_in.status == 200 and signed_in.url == server.url + "/"
        [cookie] = [c for c in context.cookies() if c["name"] == SESSION_COOKIE]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]
        assert cookie["path"] == "/" and API_KEY not in cookie["value"]
        assert abs(cookie["expires"] - (time.time() + SESSION_LIFETIME)) < 120

        banner = page.locator(".banner")
        assert banner.is_visible()
        failed_item = banner.locator('li[data-kind="failed"]')
        assert failed_item.count() == 1
        assert failed_item.inner_text() == f"{FAILED}: the latest backup failed: {failed['Error']}"
        assert "does not exist" in failed["Error"]
        assert FINISHED not in banner.inner_text()

        good = card(page, FINISHED)
        assert good.locator('[data-fact="status"]').inner_text().lower() == "finished"
        size = good.locator('[data-fact="size"]')
        assert size.get_attribute("data-bytes") == str(finished["Size"])
        assert size.inner_text() == human_size(finished["Size"])
        verification = good.locator('[data-fact="verification"]')
        assert verification.get_attribute("data-value") == "passed"
        assert verification.locator("time").get_attribute("datetime") == finished["VerifiedAt"]
        assert good.locator('[data-fact="created"] time').get_attribute("datetime") == finished["CreatedAt"]
        assert good.locator('[data-fact="duration"]').inner_text().endswith(" s")
        next_run = good.locator('[data-fact="next-run"]')
        assert next_run.get_attribute("data-iso") == served["next_run"]
        assert next_run.locator("time").inner_text().endswith(("EST", "EDT"))
        assert "(in 1" in next_run.inner_text()  # about 12 hours from now: "in 11 h …" / "in 12 h …"
        assert good.locator('[data-fact="health"]').inner_text() == "UP"

        bad = card(page, FAILED)
        assert bad.locator('[data-fact="status"]').inner_text().lower() == "failed"
        assert bad.locator('[data-fact="size"]').inner_text() == "—"
        assert bad.locator('[data-fact="error"]').inner_text() == f"Error: {failed['Error']}"
        assert bad.locator('[data-fact="verification"]').get_attribute("data-value") == "not verified"
        assert bad.locator('[data-fact="last-finished"]').inner_text() == "never"
        assert bad.locator('[data-fact="next-run"]').get_attribute("data-iso") == served["next_run"]

        today = dt.datetime.now(ZoneInfo(ZONE)).date().isoformat()
        for label, outcome in ((FINISHED, "finished"), (FAILED, "failed")):
            days = card(page, label).locator(".strip li")
            assert days.count() == 30
            assert days.last.get_attribute("data-date") == today
            assert days.last.get_attribute("data-outcome") == outcome
            outcomes = [days.nth(n).get_attribute("data-outcome") for n in range(29)]
            assert set(outcomes) == {"none"}

        drive = card(page, DRIVE)
        assert drive.locator('[data-fact="health"]').inner_text() == "UP"
        uploaded = drive.locator('[data-fact="last-upload"] time').get_attribute("datetime")
        assert uploaded == finished["DriveFiles"][0]["FinishedAt"]

        # The stylesheet came from the daemon and applies; nothing broke the page's own CSP.
        assert page.evaluate("getComputedStyle(document.querySelector('.strip')).display") == "flex"
        assert page.evaluate("document.querySelectorAll('script').length") == 0
        page.screenshot(path=str(artifact("status-page-1280.png")), full_page=True)
    assert server.url + "/status.css" in requested
    assert not [line for line in console if "Content Security Policy" in line], console


def test_readable_at_375_px_without_horizontal_scroll(
        served: dict[str, Any], driver: Any, tmp_path: Path) -> None:
    server = served["server"]
    with browser(driver, tmp_path, "phone", width=375) as (context, _requested):
        page = context.new_page()
        page.goto(server.url + "/")
        login_widths = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
        assert login_widths[0] <= login_widths[1] == 375
        page.screenshot(path=str(artifact("login-375.png")), full_page=True)
        sign_in(page, server)
        assert card(page, FINISHED).is_visible() and card(page, FAILED).is_visible()
        scroll_width, inner_width = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
        assert inner_width == 375 and scroll_width <= inner_width
        overflowing = page.evaluate(
            "[...document.querySelectorAll('body *')]"
            ".filter(e => e.getBoundingClientRect().right > innerWidth + 0.5)"
            ".map(e => e.outerHTML.slice(0, 80))")
        assert overflowing == []
        page.evaluate("window.scrollTo(500, 0)")
        assert page.evaluate("scrollX") == 0
        smallest = page.evaluate(
            "Math.min(...[...document.querySelectorAll('body *')]"
            ".filter(e => e.offsetParent !== null && e.textContent.trim())"
            ".map(e => parseFloat(getComputedStyle(e).fontSize)))")
        assert smallest >= 11, f"text as small as {smallest}px"
        # 30 days fit across the card, each still a visible cell.
        widths = page.evaluate(
            "[...document.querySelectorAll('.strip li')].map(e => e.getBoundingClientRect().width)")
        assert len(widths) == 60 and min(widths) >= 5
        shot = artifact("status-page-375.png")
        page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"screenshots: {shot} and {shot.with_name('status-page-1280.png')}")


class _Attacker(http.server.BaseHTTPRequestHandler):
    """Another site (http://localhost:<port>, not http://127.0.0.1): forms that post to
    the daemon's login and logout."""

    target = ""

    def do_GET(self) -> None:
        body = (f'<!doctype html><form id="logout" method="post" action="{self.target}/logout">'
                f'<button id="logout-button">win a prize</button></form>'
                f'<form id="login" method="post" action="{self.target}/login">'
                f'<input type="hidden" name="api_key" value="{API_KEY}">'
                f'<button id="login-button">win another</button></form>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the test reads no log
        pass


@contextlib.contextmanager
def attacker_site(target: str) -> Iterator[str]:
    handler = type("Attacker", (_Attacker,), {"target": target})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_cross_site_posts_change_nothing(served: dict[str, Any], driver: Any, tmp_path: Path) -> None:
    server = served["server"]
    with attacker_site(server.url) as attacker, browser(driver, tmp_path, "victim") as (context, _):
        page = context.new_page()
        sign_in(page, server)
        before = [c["value"] for c in context.cookies() if c["name"] == SESSION_COOKIE]
        assert len(before) == 1
        page.goto(attacker)
        with page.expect_navigation() as navigation:
            page.click("#logout-button")
        assert navigation.value.status == 403
        assert [c["value"] for c in context.cookies() if c["name"] == SESSION_COOKIE] == before
        page.goto(server.url + "/")
        assert card(page, FINISHED).is_visible(), "still signed in"

        # A forced sign-in from another site (with a key the attacker knows) sets nothing.
        context.clear_cookies()
        page.goto(attacker)
        with page.expect_navigation() as navigation:
            page.click("#login-button")
        assert navigation.value.status == 403
        assert not [c for c in context.cookies() if c["name"] == SESSION_COOKIE]
        page.goto(server.url + "/")
        assert_only_the_form(page)


def test_logout_clears_the_cookie_and_ends_the_session(
        served: dict[str, Any], driver: Any, tmp_path: Path) -> None:
    server = served["server"]
    with browser(driver, tmp_path, "leaving") as (context, _requested):
        page = context.new_page()
        sign_in(page, server)
        [cookie] = [c for c in context.cookies() if c["name"] == SESSION_COOKIE]
        with page.expect_navigation() as navigation:
            page.click("form.logout button")
        assert navigation.value.status == 200
        assert_only_the_form(page)
        assert not [c for c in context.cookies() if c["name"] == SESSION_COOKIE]
        page.reload()
        assert_only_the_form(page)
        # A copy of the old cookie does not bring the session back.
        context.add_cookies([{key: cookie[key] for key in
                              ("name", "value", "domain", "path", "httpOnly", "sameSite", "expires")}])
        page.goto(server.url + "/")
        assert_only_the_form(page)
