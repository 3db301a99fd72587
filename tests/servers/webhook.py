"""An HTTP receiver for webhook and ping tests: records every request, on loopback.

It answers any method on any path. Tell it to misbehave with:

- ``fail(times, status=500, retry_after=None)``: the next ``times`` requests get
  ``status`` (``times=None``: every request);
- ``hang()``: requests wait (until the test ends) without an answer.

``await receiver.wait_for(n)`` returns once ``n`` requests have arrived (an event,
not a sleep).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from multidict import CIMultiDict


@dataclasses.dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    body: bytes
    answered: int  # the status the receiver gave (0: it hung)


class WebhookReceiver:
    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self.base_url = ""
        self._failures: int | None = 0
        self._status = 500
        self._retry_after: str | None = None
        self._hang = False
        self._arrived = asyncio.Condition()
        self._release = asyncio.Event()

    def url(self, path: str = "/hook") -> str:
        return self.base_url + path

    def fail(self, times: int | None, *, status: int = 500, retry_after: str | None = None) -> None:
        self._failures, self._status, self._retry_after = times, status, retry_after

    def hang(self) -> None:
        self._hang = True

    async def wait_for(self, count: int) -> list[ReceivedRequest]:
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return self.requests

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        status = 200
        if self._hang:
            status = 0
        elif self._failures is None or self._failures > 0:
            status = self._status
            if self._failures is not None:
                self._failures -= 1
        self.requests.append(ReceivedRequest(
            method=request.method, path=request.path, query=dict(request.query),
            headers=CIMultiDict(request.headers), body=body, answered=status))
        async with self._arrived:
            self._arrived.notify_all()
        if status == 0:
            await self._release.wait()
            status = 503
        headers = {"Retry-After": self._retry_after} if (
            status != 200 and self._retry_after is not None) else {}
        return web.Response(status=status, text="OK" if status == 200 else "nope",
                            headers=headers)

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return runner

    def release(self) -> None:
        self._release.set()


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    """A recording HTTP receiver on a free loopback port (``receiver.url("/path")``)."""
    receiver = WebhookReceiver()
    runner = await receiver.start()
    try:
        yield receiver
    finally:
        receiver.release()
        await runner.cleanup()


@pytest.fixture
def closed_port_url() -> str:
    """An http URL where nothing listens: connections are refused at once."""
    from . import free_port

    return f"http://127.0.0.1:{free_port()}/hook"
