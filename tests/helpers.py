"""Test helpers: configs as data, the CLI and the daemon as real processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "test-key-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    env.update(extra)
    return env


def write_config(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def base_config(tmp: Path, **overrides: Any) -> dict[str, Any]:
    """A config with an SQLite catalog, one SQLite source and one local drive under ``tmp``."""
    database = tmp / "app.db"
    if not database.exists():
        make_sqlite(database, rows=100)
    document: dict[str, Any] = {
        "database": {"provider": "sqlite", "db_path": str(tmp / "state" / "catalog.db")},
        "data_sources": [{"provider": "sqlite", "label": "app", "db_path": str(database),
                          "tmp_folder": str(tmp / "dumps")}],
        "drives": [{"provider": "local", "label": "disk", "folder": str(tmp / "drive")}],
        "uploads": {"attempts": 2, "initial_backoff": 0.01, "max_backoff": 0.05},
        "http": {"listen": "127.0.0.1", "port": 8080, "api_keys": [API_KEY],
                 "app_url": "http://127.0.0.1:8080",
                 "backup_job": {"enabled": False, "cron": "0 3 * * *"}},
        "shutdown_grace": 2,
    }
    document.update(overrides)
    return document


def stored_names(*dump_names: str) -> list[str]:
    """What a drive holds for these dumps: each dump and its manifest, sorted."""
    from backupmand.manifest import manifest_name

    return sorted([*dump_names, *(manifest_name(name) for name in dump_names)])


def make_sqlite(path: Path, rows: int = 100, blob_size: int = 64) -> None:
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT, data BLOB)")
    connection.executemany(
        "INSERT INTO items (name, data) VALUES (?, randomblob(?))",
        [(f"item {i}", blob_size) for i in range(rows)],
    )
    connection.commit()
    connection.close()


def run_cli(*args: str, config: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "backupmand"]
    if config is not None:
        argv += ["-c", str(config)]
    return subprocess.run(
        [*argv, *args], capture_output=True, text=True, timeout=timeout,
        env=env or child_env(), cwd=cwd, check=False,
    )


_TEMPLATES = [
    (re.compile(r"^/api/backups/[^/]+/retry$"), "/api/backups/{id}/retry"),
    (re.compile(r"^/api/backups/[^/]+/verify$"), "/api/backups/{id}/verify"),
    (re.compile(r"^/api/backups/[^/]+/pin$"), "/api/backups/{id}/pin"),
    (re.compile(r"^/api/retention/preview$"), "/api/retention/preview"),
    (re.compile(r"^/api/backups/[^/]+/generate-download-url$"),
     "/api/backups/{id}/generate-download-url"),
    (re.compile(r"^/api/backups/[^/]+/download$"), "/api/backups/{id}/download"),
    (re.compile(r"^/api/backups/[^/]+$"), "/api/backups/{id}"),
    (re.compile(r"^/api/backups$"), "/api/backups"),
    (re.compile(r"^/health$"), "/health"),
    (re.compile(r"^/ping$"), "/ping"),
    (re.compile(r"^/api/openapi.json$"), "/api/openapi.json"),
]


def api_template(path: str) -> str | None:
    """The OpenAPI path template a request path belongs to (None: not a documented route)."""
    bare = path.split("?", 1)[0]
    for pattern, template in _TEMPLATES:
        if pattern.match(bare):
            return template
    return None


class Daemon:
    """A real `backupmand serve` process on a free loopback port."""

    def __init__(self, config: Path, port: int, env: dict[str, str] | None = None,
                 log_path: Path | None = None) -> None:
        self.config = config
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path or config.with_suffix(".log")
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "backupmand", "-c", str(config), "serve", "--port", str(port)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env or child_env(),
        )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        raise RuntimeError(f"daemon not ready after {timeout} s:\n{self.log()}")

    def request(self, method: str, path: str, body: Any = None, key: str | None = API_KEY,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if key:
            request.add_header("X-Api-Key", key)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            raw = error.read()
            status = error.code
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw
        template = api_template(path)
        if template is not None and method in ("GET", "POST", "DELETE"):
            from backupmand.openapi import validate_response

            validate_response(method, template, status, parsed)
        return status, parsed

    def wait_backup(self, backup_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = self.request("GET", f"/api/backups/{backup_id}")
            if status == 200 and body["Status"] != "pending":
                return body  # type: ignore[no-any-return]
            time.sleep(0.05)
        raise AssertionError(f"backup {backup_id} still pending after {timeout} s")

    def wait_health(self, expected: str, timeout: float = 15) -> tuple[int, Any]:
        """``GET /health`` once its Status is ``expected`` (the daemon reuses a report for a
        few seconds, so a change shows within that time)."""
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.request("GET", "/health", key=None)
            if isinstance(body, dict) and body.get("Status") == expected:
                return status, body
            if time.monotonic() > deadline:
                raise AssertionError(f"/health still says {body!r} after {timeout} s")
            time.sleep(0.1)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@contextlib.contextmanager
def daemon(config: Path, env: dict[str, str] | None = None) -> Iterator[Daemon]:
    document = yaml.safe_load(config.read_text())
    port = free_port()
    document.setdefault("http", {})["port"] = port
    document["http"]["app_url"] = f"http://127.0.0.1:{port}"
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    process = Daemon(config, port, env)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


async def wait_for(predicate: Any, timeout: float = 30, interval: float = 0.02) -> None:
    """Poll a condition that no event announces (another process's state)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def fill_disk(path: Path) -> None:
    """Write zeros to ``path`` until the file system is full."""
    with open(path, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError:
            pass


@contextlib.contextmanager
def small_filesystem(folder: Path, size: str = "4m") -> Iterator[bool]:
    """A tmpfs of ``size`` on ``folder`` (True), or False where mounting is not allowed."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                              str(folder)], capture_output=True, check=False).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)
