"""Remote services on loopback, behind simulated network links, each a process of its own.

- :class:`Throttle`: ``tests/servers/throttle.py`` (an asyncio TCP proxy) as a process:
  a total rate in each direction and optionally a per-connection cap, as a real link
  with per-flow limits has. Each remote service gets a link of its own (the S3 bucket
  and Google Drive are different places on the internet; one shared uplink would make
  the three-drive figure a measure of that uplink, not of backupmand).
- :class:`FakeDrive`: the tests' Google Drive v3 stand-in (``bench/gdrive_server.py``),
  with its upload sessions handed out on the link's address, so that every byte of an
  upload crosses the link.

Each one's CPU time (``cpu()``, from /proc) shows what the loopback servers cost the
machine during a run: on real links that work happens on other machines.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from measure import cpu_seconds
from servers import free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent


def _read_line(stream: IO[str], process: subprocess.Popen[str], what: str,
               timeout: float = 60) -> str:
    """The next line a child prints, waiting at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.1)
        if ready:
            line = stream.readline()
            if line:
                return line.strip()
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited ({process.returncode}) before answering")
    raise RuntimeError(f"{what} did not answer in {timeout:.0f} s")


class _Child:
    """A long-lived helper process: started, its pid for CPU accounting, stopped."""

    what = "helper"

    def __init__(self, log: Path) -> None:
        self.log = log
        self.process: subprocess.Popen[str] | None = None

    def _start(self, argv: list[str], *, stdin: bool = False) -> subprocess.Popen[str]:
        with open(self.log, "ab") as sink:
            self.process = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=sink, text=True, cwd=ROOT,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
        return self.process

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        if process.stdin is not None:
            process.stdin.close()  # the Drive fake stops at the end of its stdin
        stop_process(process, 15, terminate=process.stdin is None)


class Throttle(_Child):
    """A throttling TCP proxy in front of ``target`` (host, port) on a free loopback port."""

    what = "throttle proxy"

    def __init__(self, target: tuple[str, int], log: Path, *, rate: float | None,
                 per_connection: float | None = None) -> None:
        super().__init__(log)
        self.target = target
        self.rate = rate
        self.per_connection = per_connection
        self.port = free_port()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def describe(self) -> str:
        """``60 MB/s``, ``20 MB/s per connection``, or both."""
        parts = []
        if self.rate:
            parts.append(f"{self.rate / 1e6:g} MB/s")
        if self.per_connection:
            parts.append(f"{self.per_connection / 1e6:g} MB/s per connection")
        return ", ".join(parts) or "unthrottled"

    def start(self) -> Throttle:
        argv = [sys.executable, "-m", "tests.servers.throttle",
                "--target", f"{self.target[0]}:{self.target[1]}", "--port", str(self.port)]
        if self.rate:
            argv += ["--rate", repr(self.rate)]
        if self.per_connection:
            argv += ["--per-connection", repr(self.per_connection)]
        process = self._start(argv)
        assert process.stdout is not None
        line = _read_line(process.stdout, process, self.what)
        if not line.startswith("listening on"):
            raise RuntimeError(f"{self.what} said {line!r}")
        return self


class FakeDrive(_Child):
    """The Google Drive stand-in; ``link`` (set by :meth:`behind`) is the way in."""

    what = "fake Google Drive"

    def __init__(self, folder: Path, log: Path) -> None:
        super().__init__(log)
        self.folder = folder
        self.url = ""
        self.public_url = ""

    @property
    def port(self) -> int:
        return int(self.url.rstrip("/").rsplit(":", 1)[1])

    def start(self) -> FakeDrive:
        process = self._start([sys.executable, str(ROOT / "bench" / "gdrive_server.py"),
                               "--folder", str(self.folder)], stdin=True)
        assert process.stdout is not None
        line = _read_line(process.stdout, process, self.what)
        if not line.startswith("ready "):
            raise RuntimeError(f"{self.what} said {line!r}")
        self.url = self.public_url = line.split(" ", 1)[1]
        return self

    def _ask(self, command: str) -> str:
        process = self.process
        assert process is not None and process.stdin is not None and process.stdout is not None
        process.stdin.write(command + "\n")
        process.stdin.flush()
        return _read_line(process.stdout, process, self.what)

    def behind(self, link: Throttle) -> None:
        """Hand out upload sessions on the link's address (every chunk crosses it)."""
        self.public_url = link.endpoint + "/"
        answer = self._ask(f"origin {self.public_url}")
        if answer != "origin set":
            raise RuntimeError(f"{self.what} said {answer!r}")

    def clear(self) -> int:
        """Forget every stored file (they are kept in RAM); how many there were."""
        answer = self._ask("clear")
        return int(answer.split()[1])

    def files(self) -> int:
        return int(self._ask("count").split()[1])

    def drive(self, label: str) -> dict[str, Any]:
        """A google_drive drive entry for backupmand's config, through the link."""
        return {"provider": "google_drive", "label": label, "folder": "backups",
                "client_secret_file": str(self.folder / "client-secret.json"),
                "token_file": str(self.folder / "token.json"),
                "api_url": self.public_url, "token_uri": self.public_url + "token"}
