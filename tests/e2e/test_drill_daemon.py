"""Restore drills of a real daemon against the real PostgreSQL server: SIGTERM in the
middle of a drill leaves no scratch database, a scratch database a killed daemon left
is dropped at the next start, and an unreachable scratch server fails the drill."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Daemon, base_config, free_port, run_cli, write_config
from tests.servers.postgres import PostgresServer

DATABASE = "drilled"


@pytest.fixture(scope="module")
def big_database(postgres_server: PostgresServer) -> str:
    """About 150 MB of rows: a drill takes seconds to load it."""
    postgres_server.drop_database(DATABASE)
    postgres_server.create_database(DATABASE)
    postgres_server.psql(
        "CREATE TABLE rows (id bigint PRIMARY KEY, body text);"
        "INSERT INTO rows SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, 1200000) i;",
        db=DATABASE)
    return DATABASE


def scratch_databases(server: PostgresServer) -> list[str]:
    rows = server.query("postgres", "SELECT datname FROM pg_database "
                                    "WHERE datname LIKE 'backupmand\\_verify\\_%' ORDER BY 1")
    return [str(row[0]) for row in rows]


def config_for(tmp_path: Path, server: PostgresServer, **source: Any) -> tuple[Path, int]:
    port = free_port()
    document = base_config(tmp_path, data_sources=[
        server.source(DATABASE, tmp_path / "tmp", label="pg", **source)],
        compression="none", shutdown_grace=1)
    document["http"].update(port=port, app_url=f"http://127.0.0.1:{port}")
    return write_config(tmp_path / "config.yml", document), port


def wait(predicate: Any, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout} s"
        time.sleep(0.05)


def test_sigterm_mid_drill_and_a_killed_daemons_leftover_leave_no_scratch_database(
    tmp_path: Path, postgres_server: PostgresServer, big_database: str
) -> None:
    config, port = config_for(tmp_path, postgres_server)
    assert run_cli("run", config=config, timeout=600).returncode == 0
    backup_id = run_cli("list", "--json", config=config).stdout.split('"Id": "')[1][:36]
    assert scratch_databases(postgres_server) == []

    # SIGTERM while the drill loads: the daemon stops in time and drops its scratch.
    server = Daemon(config, port)
    try:
        server.wait_ready()
        status, _ = server.request("POST", f"/api/backups/{backup_id}/verify")
        assert status == 202
        wait(lambda: scratch_databases(postgres_server), what="the drill's scratch database")
        started = time.monotonic()
        assert server.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started < 30
    finally:
        server.stop()
    assert scratch_databases(postgres_server) == []
    log = server.log_path.read_text(errors="replace")
    assert "verify.failed" not in log, "a stopped drill is not a failed drill"

    # kill -9 mid-drill: the scratch database stays behind, and the next start drops it.
    server = Daemon(config, port, log_path=tmp_path / "killed.log")
    try:
        server.wait_ready()
        status, _ = server.request("POST", f"/api/backups/{backup_id}/verify")
        assert status == 202
        wait(lambda: scratch_databases(postgres_server), what="the drill's scratch database")
        server.stop(signal.SIGKILL)
    finally:
        server.stop()
    assert scratch_databases(postgres_server) != [], "what a killed daemon leaves"
    server = Daemon(config, port, log_path=tmp_path / "after.log")
    try:
        server.wait_ready()
        assert scratch_databases(postgres_server) == []
        assert "verify.leftover_dropped" in server.log_path.read_text(errors="replace")
        # And a drill to the end passes.
        status, _ = server.request("POST", f"/api/backups/{backup_id}/verify")
        assert status == 202
        deadline = time.monotonic() + 300
        while True:
            _, backup = server.request("GET", f"/api/backups/{backup_id}")
            if backup["Verification"] is not None:
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert backup["Verification"] == "passed", backup["VerifyError"]
        assert backup["Status"] == "finished"
    finally:
        server.stop()
    assert scratch_databases(postgres_server) == []


def test_an_unreachable_scratch_server_fails_the_drill(
    tmp_path: Path, postgres_server: PostgresServer, big_database: str
) -> None:
    closed = free_port()
    config, _port = config_for(tmp_path, postgres_server,
                               verify_target={"host": "127.0.0.1", "port": closed})
    assert run_cli("run", config=config, timeout=600).returncode == 0
    result = run_cli("verify", "--label", "pg", "--latest", config=config, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("failed")
    assert "the dump did not restore" in result.stdout
    assert str(closed) in result.stdout or "connect" in result.stdout.lower()
