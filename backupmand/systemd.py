"""Placeholder sd_notify; replaced by the systemd branch."""

from __future__ import annotations

import asyncio
import os
import socket


def notify(*messages: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall("\n".join(messages).encode())
    return True


def watchdog_interval() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    return int(usec) / 2_000_000


async def watchdog_loop() -> None:
    interval = watchdog_interval()
    if interval is None:
        return
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def ready(text: str) -> None:
    notify("READY=1", f"STATUS={text}")


def status(text: str) -> None:
    notify(f"STATUS={text}")


def stopping() -> None:
    notify("STOPPING=1")
