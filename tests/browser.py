"""Headless Chromium for tests: Debian's /usr/bin/chromium, driven by Playwright.

Never ``playwright install`` (it downloads browser builds, which this machine and CI
must not do): Playwright is pointed at the distribution's browser. Every context gets a
fresh user-data folder and the flags that keep Chromium from calling home.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.helpers import ROOT

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
#: Screenshots for a person to look at (ignored by git: tests/artifacts/.gitignore).
ARTIFACTS = ROOT / "tests" / "artifacts"


def require_chromium() -> Path:
    """The browser, or a failure that says how to get it (a skip would hide the test)."""
    if not CHROMIUM.is_file() or shutil.which(str(CHROMIUM)) is None:
        raise AssertionError(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    return CHROMIUM


@contextlib.contextmanager
def playwright_driver() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    require_chromium()
    with sync_playwright() as driver:
        yield driver


@contextlib.contextmanager
def browser_context(driver: Any, user_data_dir: Path, **options: Any) -> Iterator[Any]:
    """A persistent Chromium context on a new, empty profile folder."""
    user_data_dir.mkdir(parents=True, exist_ok=False)
    context = driver.chromium.launch_persistent_context(
        str(user_data_dir), executable_path=str(CHROMIUM), args=list(FLAGS), headless=True,
        **options)
    try:
        yield context
    finally:
        context.close()


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
