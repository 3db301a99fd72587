"""A real daemon against clients that misbehave: malformed input gets its 4xx and JSON
error (never a traceback), idle connections are closed and capped without locking the
operator out, and /health holds under a crowd."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.helpers import (
    API_KEY,
    Daemon,
    base_config,
    child_env,
    daemon,
    free_port,
    make_sqlite,
    write_config,
)
from tests.servers.postgres import PostgresServer

pytestmark = pytest.mark.slow


def raw(port: int, method: str, path: str, *, headers: dict[str, str | bytes] | None = None,
        body: bytes | None = None) -> tuple[int, dict[str, str], Any]:
    """One request with whatever bytes the caller wants in its headers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
            connection.putheader("Content-Type", "application/json")
        connection.endheaders(body)
        response = connection.getresponse()
        data = response.read()
        answer_headers = {key: value for key, value in response.getheaders()}
        try:
            parsed: Any = json.loads(data)
        except ValueError:
            parsed = data
        return response.status, answer_headers, parsed
    finally:
        connection.close()


def errors_in_log(server: Daemon) -> list[str]:
    return [line for line in server.log_path.read_text().splitlines()
            if line.startswith(("<0>", "<1>", "<2>", "<3>")) or not line.startswith("<")
            or "Traceback" in line]


# ---------------------------------------------------------------------------- bad input


def test_malformed_input_gets_a_4xx_json_error_and_no_traceback(tmp_path: Path):
    config = write_config(tmp_path / "config.yml", base_config(tmp_path))
    with daemon(config) as server:
        status, body = server.request("POST", "/api/backups")
        backup = server.wait_backup(body["BackupIds"][0])
        assert backup["Status"] == "finished"
        download = f"/api/backups/{backup['Id']}/download"
        digits = "9" * 5000
        cases: list[tuple[str, str, dict[str, str | bytes], bytes | None, int]] = [
            ("GET", "/api/backups", {"X-Api-Key": b"\xff\xfe not utf-8"}, None, 401),
            ("GET", "/api/backups", {"X-Api-Key": "clé-non-ascii-0123456789"}, None, 401),
            ("GET", f"{download}?expires=99999999999&signature=%C3%A9t%C3%A9", {}, None, 401),
            ("GET", f"{download}?expires={digits}&signature=ab", {}, None, 401),
            ("GET", f"{download}?expires=%D9%A1%D9%A2&signature=ab", {}, None, 401),
            ("POST", "/api/backups", {"X-Api-Key": API_KEY}, b"[" * 100_000 + b"]" * 100_000, 400),
            ("POST", "/api/backups", {"X-Api-Key": API_KEY}, b'{"Sources": ' * 50_000, 400),
            ("GET", f"/api/backups?limit={digits}", {"X-Api-Key": API_KEY}, None, 400),
            ("GET", f"/api/backups?offset={digits}", {"X-Api-Key": API_KEY}, None, 400),
            ("GET", "/api/backups?limit=%D9%A1", {"X-Api-Key": API_KEY}, None, 400),
            ("GET", download, {"X-Api-Key": API_KEY, "Range": f"bytes={digits}-"}, None, 416),
            ("GET", download, {"X-Api-Key": API_KEY, "Range": f"bytes=0-{digits}"}, None, 416),
            ("GET", download, {"X-Api-Key": API_KEY, "Range": f"bytes=-{digits}"}, None, 416),
            ("GET", "/api/backups/%FF%FE", {"X-Api-Key": API_KEY}, None, 404),
        ]
        for method, path, headers, payload, expected in cases:
            status, answer_headers, answer = raw(server.port, method, path, headers=headers,
                                                 body=payload)
            where = f"{method} {path[:60]} {list(headers)}"
            assert status == expected, (where, status, answer)
            assert answer_headers["Content-Type"].startswith("application/json"), where
            assert isinstance(answer, dict) and set(answer) == {"Error"}, (where, answer)
        status, _ = server.request("GET", "/ping")
        assert status == 200
    assert errors_in_log(server) == []


# ---------------------------------------------------------------------------- connections


def start_with_few_descriptors(config: Path, soft: int = 1024) -> tuple[subprocess.Popen[bytes], int, Path]:
    """`backupmand serve` started with a low soft RLIMIT_NOFILE (the hard one unchanged),
    as a shell or a cron would start it."""
    document = yaml.safe_load(config.read_text())
    port = free_port()
    document["http"]["port"] = port
    config.write_text(yaml.safe_dump(document))
    log_path = config.with_suffix(".log")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "backupmand", "-c", str(config), "serve"],
            stdout=log, stderr=subprocess.STDOUT, env=child_env(), preexec_fn=lower)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1):
                return process, port, log_path
        except OSError:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the daemon did not answer"
            time.sleep(0.05)


@contextlib.contextmanager
def serving(config: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    process, port, log_path = start_with_few_descriptors(config)
    try:
        yield process, port, log_path
    finally:
        process.terminate()
        assert process.wait(30) == 0, log_path.read_text()


def open_files_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open files line")


def ping(port: int, timeout: float = 5) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=timeout) as response:
        return response.status


def test_a_thousand_idle_connections_do_not_lock_the_operator_out(tmp_path: Path):
    config = write_config(tmp_path / "config.yml", base_config(tmp_path))
    idle: list[socket.socket] = []
    with serving(config) as (process, port, log_path):
        try:
            for _ in range(1100):
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            started = time.monotonic()
            assert ping(port) == 200
            assert time.monotonic() - started < 5
            # The operator is served again and again while the idle crowd stays.
            assert [ping(port) for _ in range(5)] == [200] * 5
        finally:
            for connection in idle:
                connection.close()
        soft, hard = open_files_limit(process.pid)
        assert soft == hard, "the soft limit was raised to the hard one"
    text = log_path.read_text()
    assert text.count("http.connection_limit_reached") == 1, text[-2000:]
    assert [line for line in text.splitlines() if not line.startswith("<")
            or line.startswith("<3>") or "Traceback" in line] == []


def test_idle_connections_are_closed_after_the_idle_timeout(tmp_path: Path):
    config = write_config(tmp_path / "config.yml", base_config(tmp_path))
    with daemon(config) as server:  # the default idle_timeout: 5 s
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=15)
        started = time.monotonic()
        assert silent.recv(1) == b"", "the server closed the silent connection"
        assert 4 < time.monotonic() - started < 8
        silent.close()
    document = base_config(tmp_path)
    document["http"]["idle_timeout"] = 1
    config = write_config(tmp_path / "config-1s.yml", document)
    with daemon(config) as server:
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=15)
        started = time.monotonic()
        assert silent.recv(1) == b""
        assert time.monotonic() - started < 3
        silent.close()
        # A keep-alive connection is closed as well once it stays idle after a request.
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
        connection.request("GET", "/ping")
        assert connection.getresponse().read() == b'{"message": "pong"}'
        assert connection.sock is not None
        started = time.monotonic()
        assert connection.sock.recv(1) == b""
        assert time.monotonic() - started < 5
        connection.close()


def test_a_download_in_progress_is_never_closed_to_make_room(tmp_path: Path):
    make_sqlite(tmp_path / "app.db", rows=4000, blob_size=4096)  # a dump of some 16 MB
    document = base_config(tmp_path, compression="none")
    document["http"]["max_connections"] = 16
    config = write_config(tmp_path / "config.yml", document)
    with daemon(config) as server:
        _, body = server.request("POST", "/api/backups")
        backup = server.wait_backup(body["BackupIds"][0])
        stored = Path(backup["DriveFiles"][0]["Path"])
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("GET", f"/api/backups/{backup['Id']}/download",
                           headers={"X-Api-Key": API_KEY})
        response = connection.getresponse()
        assert response.status == 200
        first = response.read(1024)  # the server is now blocked writing to this socket
        crowd = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                 for _ in range(100)]
        try:
            assert ping(server.port) == 200
            rest = response.read()
        finally:
            for item in crowd:
                item.close()
        assert len(first) + len(rest) == stored.stat().st_size == int(
            response.headers["Content-Length"])
        assert first + rest == stored.read_bytes()
    assert server.log_path.read_text().count("http.connection_limit_reached") == 1


# ---------------------------------------------------------------------------- /health


def test_four_hundred_concurrent_health_calls_all_say_up(
    tmp_path: Path, postgres_server: PostgresServer,
):
    document = base_config(tmp_path)
    document["data_sources"].append(postgres_server.source("postgres", tmp_path / "pg-dumps"))
    config = write_config(tmp_path / "config.yml", document)

    async def crowd(url: str) -> list[tuple[int, str]]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=60)) as session:
            async def one() -> tuple[int, str]:
                async with session.get(url + "/health") as response:
                    return response.status, (await response.json())["Status"]

            return await asyncio.gather(*(one() for _ in range(400)))

    with daemon(config) as server:
        answers = asyncio.run(crowd(server.url))
        assert answers == [(200, "UP")] * 400
    assert errors_in_log(server) == []


def test_a_catalog_deleted_or_replaced_under_the_daemon_makes_health_down(tmp_path: Path):
    config = write_config(tmp_path / "config.yml", base_config(tmp_path))
    catalog = tmp_path / "state" / "catalog.db"
    with daemon(config) as server:
        status, body = server.request("GET", "/health", key=None)
        assert status == 200 and body["Details"]["Database"]["Status"] == "UP"
        catalog.unlink()
        status, body = server.wait_health("DOWN")
        assert status == 503 and body["Details"]["Database"]["Status"] == "DOWN"
        assert "the catalog" in server.log_path.read_text() and "is gone" in server.log_path.read_text()
    other = tmp_path / "other"
    other.mkdir()
    config = write_config(other / "config.yml", base_config(other))
    catalog = other / "state" / "catalog.db"
    with daemon(config) as server:
        assert server.request("GET", "/health", key=None)[0] == 200
        replacement = catalog.with_name("replacement.db")
        replacement.write_bytes(catalog.read_bytes())
        os.replace(replacement, catalog)
        status, body = server.wait_health("DOWN")
        assert body["Details"]["Database"]["Status"] == "DOWN"
        assert "was replaced by another file" in server.log_path.read_text()
