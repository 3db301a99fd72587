"""sd_notify for real: a bound AF_UNIX datagram socket plays systemd's part."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupmand import systemd

ROOT = Path(__file__).resolve().parents[2]


class Receiver:
    """systemd's end of the notify socket: collects datagrams with sender PIDs."""

    def __init__(self, address: str | bytes, notify_socket: str) -> None:
        self.notify_socket = notify_socket
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        # As systemd does: have the kernel attach the sender's credentials.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)

    def receive(self, timeout: float = 5.0) -> tuple[str, int | None]:
        """The next datagram and the PID the kernel vouches for."""
        self.sock.settimeout(timeout)
        data, ancillary, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid, _uid, _gid = struct.unpack("iII", payload[:12])
        return data.decode(), pid

    def pending(self) -> list[str]:
        found = []
        self.sock.setblocking(False)
        try:
            while True:
                found.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            return found

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def path_receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    # A short folder: socket paths are limited to 107 bytes, pytest's tmp_path is long.
    folder = tempfile.mkdtemp(prefix="bmd-notify-")
    path = os.path.join(folder, "notify")
    receiver = Receiver(path, path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield receiver
    receiver.close()
    shutil.rmtree(folder)


@pytest.fixture
def abstract_receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    name = f"backupmand-test-{uuid.uuid4().hex}"
    receiver = Receiver(b"\0" + name.encode(), "@" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield receiver
    receiver.close()


@pytest.fixture
def no_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in systemd.NOTIFY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------- notify


def test_path_socket_gets_one_datagram_with_every_assignment(path_receiver: Receiver) -> None:
    assert systemd.notify("READY=1", "STATUS=Scheduled") is True
    message, pid = path_receiver.receive()
    assert message == "READY=1\nSTATUS=Scheduled"
    assert pid == os.getpid()  # what NotifyAccess=main relies on


def test_abstract_socket(abstract_receiver: Receiver) -> None:
    assert systemd.notify("STATUS=hello") is True
    assert abstract_receiver.receive() == ("STATUS=hello", os.getpid())


def test_unset_socket_is_a_silent_no_op(no_systemd: None) -> None:
    assert systemd.notify("READY=1") is False
    assert systemd.ready("x") is False
    assert systemd.status("x") is False
    assert systemd.stopping() is False
    assert systemd.extend_timeout(5) is False


def test_explicit_environment_wins(path_receiver: Receiver, no_systemd: None) -> None:
    # no_systemd removed $NOTIFY_SOCKET; the mapping given still reaches the socket.
    assert systemd.notify("READY=1") is False
    assert systemd.notify("READY=1", env={"NOTIFY_SOCKET": path_receiver.notify_socket})
    assert path_receiver.receive()[0] == "READY=1"


def test_no_messages_sends_nothing(path_receiver: Receiver) -> None:
    assert systemd.notify() is False
    assert path_receiver.pending() == []


def test_a_missing_socket_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tempfile.mkdtemp(prefix="bmd-notify-")
    monkeypatch.setenv("NOTIFY_SOCKET", os.path.join(folder, "gone"))
    try:
        assert systemd.notify("READY=1") is False
    finally:
        shutil.rmtree(folder)


@pytest.mark.parametrize("value", ["relative/notify", "@", "vsock:2:1234"])
def test_unsupported_addresses(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert systemd.notify("READY=1") is False


# --------------------------------------------------------------------------- helpers


def test_ready_with_status(path_receiver: Receiver) -> None:
    assert systemd.ready("Listening on 127.0.0.1:8080")
    assert path_receiver.receive()[0] == "READY=1\nSTATUS=Listening on 127.0.0.1:8080"


def test_ready_alone(abstract_receiver: Receiver) -> None:
    assert systemd.ready()
    assert abstract_receiver.receive()[0] == "READY=1"


def test_status_stays_one_assignment(path_receiver: Receiver) -> None:
    # A line break would start a new assignment (here: a forged READY=1).
    assert systemd.status("dump failed\nREADY=1\n")
    assert path_receiver.receive()[0] == "STATUS=dump failed READY=1"


def test_stopping(path_receiver: Receiver) -> None:
    assert systemd.stopping()
    assert path_receiver.receive()[0] == "STOPPING=1"
    assert systemd.stopping("Stopping: 2 backups in flight")
    assert path_receiver.receive()[0] == "STOPPING=1\nSTATUS=Stopping: 2 backups in flight"


def test_extend_timeout(abstract_receiver: Receiver) -> None:
    assert systemd.extend_timeout(12.5)
    assert abstract_receiver.receive()[0] == "EXTEND_TIMEOUT_USEC=12500000"


def test_a_child_process_with_the_environment(path_receiver: Receiver) -> None:
    # What systemd sees from a daemon it started: the env is the only link.
    child = subprocess.run(
        [sys.executable, "-c", "from backupmand import systemd; "
         "raise SystemExit(0 if systemd.ready('up') else 1)"],
        cwd=ROOT, env={**os.environ, "NOTIFY_SOCKET": path_receiver.notify_socket},
        timeout=60, check=False,
    )
    assert child.returncode == 0
    message, pid = path_receiver.receive()
    assert message == "READY=1\nSTATUS=up"
    assert pid is not None and pid != os.getpid()


# --------------------------------------------------------------------------- watchdog


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "self"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "sixty"}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "500000"}, 0.25),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert systemd.watchdog_interval(env) == expected


def test_watchdog_interval_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 10.0


async def test_watchdog_loop_without_watchdog_returns_at_once(no_systemd: None) -> None:
    await asyncio.wait_for(systemd.watchdog_loop(), 1)


async def test_watchdog_loop_pings_at_half_the_period(
    path_receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # 0.1 s: a ping every 0.05 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    task = asyncio.create_task(systemd.watchdog_loop())
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pings = path_receiver.pending()
    assert set(pings) == {"WATCHDOG=1"}
    assert 5 <= len(pings) <= 12


async def test_a_blocked_event_loop_stops_the_pings(path_receiver: Receiver) -> None:
    """The reason the pings come from the loop: systemd notices a stuck daemon."""
    arrivals: list[float] = []
    stop = threading.Event()

    def collect() -> None:  # systemd's side, independent of our event loop
        path_receiver.sock.settimeout(0.05)
        while not stop.is_set():
            try:
                path_receiver.sock.recv(4096)
            except TimeoutError:
                continue
            arrivals.append(time.monotonic())

    thread = threading.Thread(target=collect)
    thread.start()
    try:
        task = asyncio.create_task(systemd.watchdog_loop(0.05))
        await asyncio.sleep(0.3)
        blocked_at = time.monotonic()
        time.sleep(0.6)  # blocking the loop on purpose
        unblocked_at = time.monotonic()
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        stop.set()
        thread.join()
    during = [t for t in arrivals if blocked_at + 0.01 < t < unblocked_at - 0.01]
    before = [t for t in arrivals if t < blocked_at]
    after = [t for t in arrivals if t > unblocked_at]
    assert before and after
    assert during == []
