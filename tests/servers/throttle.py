"""A network link on loopback: an asyncio TCP proxy with a rate limit, and a pair of scissors.

``ThrottleProxy(target, rate=..., per_connection=...)`` listens on 127.0.0.1 and
forwards every connection to ``target``. ``rate`` caps what all connections together
carry in each direction (bytes per second), ``per_connection`` what each connection
carries in each direction, as a real link with a per-flow limit would (so that
parallel requests matter the way they do on real S3). ``cut()`` resets every open
connection at once (new connections are still accepted, as after a network blip);
``cut_after(n)`` does it once ``n`` more bytes went from clients to the target. Counts
of bytes, connections and the most connections open at once are kept.

In a test: ``async with ThrottleProxy(("127.0.0.1", port)) as proxy:`` in the test's
event loop. For benchmarks, as a process of its own::

    python -m tests.servers.throttle --target 127.0.0.1:9000 --port 9100 \\
        --rate 60e6 --per-connection 20e6
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import struct
from types import TracebackType

CHUNK = 64 * 1024


class Pacer:
    """Lets ``n`` bytes go at ``rate`` bytes per second on average, allowing a burst of
    ``burst`` seconds' worth after an idle spell; callers are served in call order."""

    def __init__(self, rate: float, burst: float = 0.05) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst
        self._next = 0.0  # when the link is free again (loop time)

    def reserve(self, count: int) -> float:
        """Book ``count`` bytes; the loop time at which they may go."""
        now = asyncio.get_running_loop().time()
        start = max(self._next, now - self.burst)
        self._next = start + count / self.rate
        return self._next


class ThrottleProxy:
    def __init__(self, target: tuple[str, int], *, rate: float | None = None,
                 per_connection: float | None = None, port: int = 0) -> None:
        self.target = target
        self.rate = rate
        self.per_connection = per_connection
        self.port = port
        self.bytes_up = 0  # clients -> target
        self.bytes_down = 0  # target -> clients
        self.connections = 0
        self.open_connections = 0
        self.most_open = 0
        self.cuts = 0
        #: Set when an armed cut (cut_after) has happened.
        self.cut_done = asyncio.Event()
        self._pacers = {"up": Pacer(rate) if rate else None, "down": Pacer(rate) if rate else None}
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._cut_at: int | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> ThrottleProxy:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut(count=False)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> ThrottleProxy:
        return await self.start()

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.stop()

    def cut(self, *, count: bool = True) -> int:
        """Reset every open connection now; how many there were."""
        links, self._links = self._links, set()
        for client, upstream in links:
            for writer in (client, upstream):
                _reset(writer)
        if count:
            self.cuts += 1
        return len(links)

    def cut_after(self, count: int) -> None:
        """Cut every connection once ``count`` more bytes went up (one time)."""
        self.cut_done.clear()
        self._cut_at = self.bytes_up + count

    async def _connect(self, client_reader: asyncio.StreamReader,
                       client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(client_writer)
            return
        link = (client_writer, upstream_writer)
        self._links.add(link)
        self.connections += 1
        self.open_connections += 1
        self.most_open = max(self.most_open, self.open_connections)
        own = {direction: Pacer(self.per_connection) if self.per_connection else None
               for direction in ("up", "down")}
        pumps = [asyncio.ensure_future(self._pump(client_reader, upstream_writer, "up", own["up"])),
                 asyncio.ensure_future(self._pump(upstream_reader, client_writer, "down",
                                                  own["down"]))]
        for pump in pumps:
            self._tasks.add(pump)
            pump.add_done_callback(self._tasks.discard)
        try:
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self.open_connections -= 1
            self._links.discard(link)
            for writer in link:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    direction: str, own: Pacer | None) -> None:
        try:
            while data := await reader.read(CHUNK):
                loop = asyncio.get_running_loop()
                shared = self._pacers[direction]
                moment = max([pacer.reserve(len(data)) for pacer in (shared, own)
                              if pacer is not None], default=0.0)
                delay = moment - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)  # the link's own pace
                writer.write(data)
                await writer.drain()
                if direction == "up":
                    self.bytes_up += len(data)
                    if self._cut_at is not None and self.bytes_up >= self._cut_at:
                        self._cut_at = None
                        self.cut()
                        self.cut_done.set()
                        return
                else:
                    self.bytes_down += len(data)
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """End the connection with a TCP reset, as a dropped link or a crashed peer would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _serve(arguments: argparse.Namespace) -> None:
    host, _, port = arguments.target.rpartition(":")
    proxy = ThrottleProxy((host, int(port)), rate=arguments.rate,
                          per_connection=arguments.per_connection, port=arguments.port)
    await proxy.start()
    print(f"listening on 127.0.0.1:{proxy.port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await proxy.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to (loopback)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=float, default=None, help="bytes/s, all connections")
    parser.add_argument("--per-connection", type=float, default=None, help="bytes/s each")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
