"""ConnectionGuard against a burst: connections that the kernel hands over together
(while the event loop was busy) are counted as they are made, so the limit holds."""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web
from structlog.testing import capture_logs

from backupmand.connections import ConnectionGuard, open_listener


async def test_a_burst_of_connections_accepted_together_is_held_to_the_limit() -> None:
    async def pong(_request: web.Request) -> web.Response:
        return web.json_response({"message": "pong"})

    app = web.Application()
    app.router.add_get("/ping", pong)
    guard = ConnectionGuard(limit=8)
    app.middlewares.insert(0, guard.middleware)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=60)
    await runner.setup()
    guard.server = runner.server
    listener = await open_listener(guard, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    crowd: list[socket.socket] = []
    try:
        with capture_logs() as logs:
            # The loop does not run while these connect: the kernel queues all 40, and
            # asyncio accepts them in one go (their protocols made before any is counted).
            crowd = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 30)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
            assert b'"pong"' in answer
            # Every crowd connection beyond the limit is closed by the server: await
            # their ends (an EOF or a reset), all but the limit's worth.
            loop = asyncio.get_running_loop()
            for item in crowd:
                item.setblocking(False)

            async def ended(item: socket.socket) -> None:
                try:
                    assert await loop.sock_recv(item, 1) == b""
                except ConnectionResetError:
                    pass

            waits = [asyncio.ensure_future(ended(item)) for item in crowd]
            try:
                async with asyncio.timeout(30):
                    for count, done in enumerate(asyncio.as_completed(waits), start=1):
                        await done
                        if count == len(crowd) - guard.limit:
                            break
            finally:
                for wait in waits:
                    wait.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
            assert len(runner.server.connections) <= guard.limit
        reached = [entry for entry in logs if entry["event"] == "http.connection_limit_reached"]
        assert len(reached) == 1
        assert guard.evicted >= 40 - guard.limit
    finally:
        for item in crowd:
            item.close()
        listener.close()
        await runner.cleanup()
