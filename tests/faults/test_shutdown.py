"""Signals to a real daemon: SIGTERM mid-dump stops in time and cleanly; SIGHUP is ignored."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.faults.support import dump_processes, leftovers, wait_until
from tests.helpers import base_config, daemon, write_config

GRACE = 1.0


def test_sigterm_during_a_long_dump(tmp_path: Path, slow_db: Path) -> None:
    config = write_config(tmp_path / "config.yml", base_config(
        tmp_path, shutdown_grace=GRACE, data_sources=[
            {"provider": "sqlite", "label": "slow", "db_path": str(slow_db),
             "tmp_folder": str(tmp_path / "dumps")}]))
    with daemon(config) as server:
        status, body = server.request("POST", "/api/backups")
        assert status == 200, body
        (identifier,) = body["BackupIds"]
        # The copy is made; sqlite3 now checks it, for seconds: the dump is in flight.
        wait_until(lambda: dump_processes(str(tmp_path / "dumps")))
        sent = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        try:
            code = server.process.wait(timeout=GRACE + 5)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {GRACE + 5} s after SIGTERM:\n{server.log()}") from None
        took = time.monotonic() - sent
        assert code == 0, server.log()
        assert "shutdown.stopping_backups" in server.log()
    assert took < GRACE + 5
    with sqlite3.connect(tmp_path / "state" / "catalog.db") as connection:
        status_, error, dump_path = connection.execute(
            "SELECT status, error, dump_path FROM backups WHERE id = ?", (identifier,)).fetchone()
    assert status_ == "failed" and error.startswith("interrupted"), (status_, error)
    assert dump_path is None
    # The dump tool went with the daemon, at once (not orphaned), and left nothing.
    assert dump_processes(str(tmp_path)) == []
    assert dump_processes(str(slow_db)) == []
    assert leftovers([tmp_path / "dumps"], [tmp_path / "drive"]) == []
    assert list((tmp_path / "dumps").iterdir()) == []
    assert not (tmp_path / "drive").exists() or list((tmp_path / "drive").iterdir()) == []


def test_sigterm_when_idle_exits_at_once(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yml", base_config(tmp_path))
    with daemon(config) as server:
        sent = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=10) == 0
        assert time.monotonic() - sent < 5
        assert "daemon.stopped" in server.log()


def test_sighup_is_logged_and_ignored(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yml", base_config(tmp_path))
    with daemon(config) as server:
        for count in range(1, 4):  # one at a time: pending signals of a kind coalesce
            server.process.send_signal(signal.SIGHUP)
            wait_until(lambda n=count: server.log().count("signal.sighup_ignored") == n, timeout=10)
        assert server.process.poll() is None
        status, body = server.request("GET", "/ping")
        assert status == 200 and body == {"message": "pong"}
        status, body = server.request("POST", "/api/backups")  # still does its work
        assert status == 200, body
        assert server.wait_backup(body["BackupIds"][0])["Status"] == "finished"
    assert server.process.returncode == 0
