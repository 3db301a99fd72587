"""The notify protocol, spoken by a real `backupmand serve` to a real AF_UNIX socket."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from tests.helpers import Daemon, child_env, free_port


class NotifyListener:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def until(self, predicate, timeout: float = 30) -> list[str]:
        """Receive datagrams until one satisfies ``predicate``; return them all."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no matching notification; got {self.messages}"
            self.sock.settimeout(remaining)
            message = self.sock.recv(4096).decode()
            self.messages.append(message)
            if predicate(message):
                return self.messages

    def close(self) -> None:
        self.sock.close()


def test_ready_status_watchdog_and_stopping(make_config, tmp_path):
    listener = NotifyListener(tmp_path / "notify.sock")
    port = free_port()
    config = make_config(http={"listen": "127.0.0.1", "port": port, "api_keys": ["test-key-0123456789"],
                               "backup_job": {"enabled": True, "cron": "0 3 * * *", "timezone": "UTC"}})
    env = child_env(NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="200000")
    server = Daemon(config, port, env=env)
    try:
        listener.until(lambda m: "READY=1" in m)
        ready = next(m for m in listener.messages if "READY=1" in m)
        assert "STATUS=" in ready and "next backup" in ready
        # READY comes only once the API answers
        assert server.request("GET", "/ping", key=None)[0] == 200
        listener.until(lambda m: m == "WATCHDOG=1")
        listener.until(lambda m: m == "WATCHDOG=1")  # a loop, not a single ping
        _, body = server.request("POST", "/api/backups")
        listener.until(lambda m: "STATUS=backing up app" in m)
        listener.until(lambda m: m.startswith("STATUS=idle"))
        server.wait_backup(body["BackupIds"][0])
        server.process.send_signal(signal.SIGTERM)
        listener.until(lambda m: "STOPPING=1" in m)
        assert server.process.wait(30) == 0
    finally:
        server.stop()
        listener.close()
    # the dump tool never inherits the daemon's notify socket: only the daemon speaks
    assert all(m.split("=", 1)[0] in {"READY", "STATUS", "WATCHDOG", "STOPPING", "EXTEND_TIMEOUT_USEC"}
               for message in listener.messages for m in message.splitlines())
