"""The sd_notify protocol, without libsystemd: readiness, status, watchdog, stopping.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an
abstract socket) and, with ``WatchdogSec=``, ``$WATCHDOG_USEC`` and
``$WATCHDOG_PID``. A notification is one datagram of newline-separated
``KEY=value`` assignments on an ``AF_UNIX``/``SOCK_DGRAM`` socket; systemd learns
the sender's PID from the kernel (``SCM_CREDENTIALS``), which is how
``NotifyAccess=main`` tells the daemon from its dump tools.

Outside systemd (``$NOTIFY_SOCKET`` unset) every function here does nothing and
reports False, so the daemon calls them unconditionally.

How ``serve`` uses this module::

    ready("Scheduled: next backup 2025-07-03 03:00 CEST")   # API listening, schedule set
    watchdog = asyncio.create_task(watchdog_loop())          # WATCHDOG=1 from the loop
    status("Backing up Main")                                 # whenever it helps an operator
    stopping("Stopping: 1 backup in flight")                 # on SIGTERM, first thing
    watchdog.cancel()
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger("backupmand.systemd")

#: The variables systemd sets for the notify protocol. A child process has no use
#: for them (and NotifyAccess=main ignores what it would send).
NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

#: How long sending one notification may block the caller (seconds). systemd's
#: socket has a large receive buffer: in practice a send never waits.
SEND_TIMEOUT = 1.0


def _address(raw: str) -> str | bytes | None:
    """The socket address for a $NOTIFY_SOCKET value; None when unusable."""
    if raw.startswith("/"):
        return raw
    if raw.startswith("@") and len(raw) > 1:
        return b"\0" + os.fsencode(raw[1:])  # Linux abstract namespace
    return None  # relative paths and vsock: addresses are not supported


def _one_line(text: str) -> str:
    """A value fit for one assignment: line breaks would start a new assignment."""
    return " ".join(text.splitlines()).strip()


def notify(*messages: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``messages`` ("READY=1", "STATUS=...") to systemd as one datagram.

    Returns True when the datagram was sent, False when there is no notify socket
    ($NOTIFY_SOCKET unset: not running under systemd) or sending failed (logged).
    Never raises: a lost notification must not take the daemon down.
    """
    environment = os.environ if env is None else env
    raw = environment.get("NOTIFY_SOCKET", "")
    if not raw or not messages:
        return False
    address = _address(raw)
    if address is None:
        log.warning("systemd.notify_socket_unsupported", notify_socket=raw)
        return False
    payload = "\n".join(messages).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(SEND_TIMEOUT)
            sock.sendto(payload, address)
    except OSError as error:
        log.warning("systemd.notify_failed", error=error.strerror or str(error),
                    messages=[message.split("=", 1)[0] for message in messages])
        return False
    return True


def ready(status_text: str | None = None, *, env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd that start-up is finished (``READY=1``), with an optional status."""
    messages = ["READY=1"]
    if status_text:
        messages.append(f"STATUS={_one_line(status_text)}")
    return notify(*messages, env=env)


def status(text: str, *, env: Mapping[str, str] | None = None) -> bool:
    """Set the one-line status `systemctl status backupmand` shows (``STATUS=``)."""
    return notify(f"STATUS={_one_line(text)}", env=env)


def stopping(status_text: str | None = None, *, env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd that the daemon is shutting down (``STOPPING=1``)."""
    messages = ["STOPPING=1"]
    if status_text:
        messages.append(f"STATUS={_one_line(status_text)}")
    return notify(*messages, env=env)


def extend_timeout(seconds: float, *, env: Mapping[str, str] | None = None) -> bool:
    """Ask for ``seconds`` more before systemd gives up on the current start or stop
    (``EXTEND_TIMEOUT_USEC=``); for a shutdown grace longer than TimeoutStopSec=."""
    return notify(f"EXTEND_TIMEOUT_USEC={max(0, round(seconds * 1_000_000))}", env=env)


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between two ``WATCHDOG=1`` pings, or None when no watchdog is armed.

    systemd sets ``$WATCHDOG_USEC`` (the WatchdogSec= period) and ``$WATCHDOG_PID``
    (the process it is meant for; a child that inherited the variables is not).
    Pinging at half the period, as sd_watchdog_enabled(3) advises, leaves time for
    one late ping.
    """
    environment = os.environ if env is None else env
    raw_usec = environment.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw_usec)
    except ValueError:
        return None
    if usec <= 0:
        return None
    raw_pid = environment.get("WATCHDOG_PID", "")
    if raw_pid:
        try:
            if int(raw_pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 1_000_000 / 2


async def watchdog_loop(
    interval: float | None = None, *, env: Mapping[str, str] | None = None
) -> None:
    """Send ``WATCHDOG=1`` every ``interval`` seconds (default: watchdog_interval()).

    Runs until cancelled; returns at once when no watchdog is armed. The pings come
    from the event loop itself, so an event loop that is blocked (a synchronous call
    that hangs, a busy loop) stops them, and systemd restarts the service.
    """
    period = watchdog_interval(env) if interval is None else interval
    if period is None or period <= 0:
        return
    log.debug("systemd.watchdog_armed", interval=period)
    while True:
        notify("WATCHDOG=1", env=env)
        await asyncio.sleep(period)
