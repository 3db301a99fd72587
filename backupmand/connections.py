"""How many connections the HTTP listener holds, and for how long.

Idle connections cost a file descriptor each and give nothing back, so:

- a connection with no request in progress (before its first request, or between two
  keep-alive requests) is closed after ``http.idle_timeout`` seconds (aiohttp's
  keep-alive timer, which also runs from the moment a connection is accepted);
- at most ``http.max_connections`` are held at once: a new connection beyond that closes
  the longest-open connection that has no request in progress, so a flood of idle
  connections can never lock the operator out (the newest connection, about to send
  its request, is always served); connections with a request in progress are never
  closed to make room;
- the soft ``RLIMIT_NOFILE`` is raised to the hard limit at start, and the connection
  limit kept below it with room for the catalog, dumps and uploads.

Reaching the limit is logged once (``http.connection_limit_reached``), and again only
after the connections fell back under half the limit.
"""

from __future__ import annotations

import asyncio
import logging
import resource

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from .api import Handler

log = structlog.get_logger("backupmand.connections")

#: Descriptors kept for everything but connections: the catalog, locks, dump pipes,
#: stage files, drive clients, threads.
RESERVED_DESCRIPTORS = 256
#: Connections waiting in the kernel to be accepted.
BACKLOG = 512


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft if soft != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as error:
        log.warning("limits.open_files_not_raised", soft=soft, hard=hard, error=str(error))
        return soft
    log.info("limits.open_files_raised", soft=hard, previous=soft)
    return hard


def connection_limit(configured: int, open_files: int) -> int:
    """``configured``, lowered when the descriptors left after RESERVED_DESCRIPTORS are fewer."""
    usable = max(open_files - RESERVED_DESCRIPTORS, 8)
    if usable < configured:
        log.warning("http.connection_limit_lowered", configured=configured, limit=usable,
                    open_files=open_files,
                    hint="raise LimitNOFILE= (the hard limit) to serve more connections")
        return usable
    return configured


class ConnectionGuard:
    """The listener's protocol factory, holding connections to ``limit``.

    The limit is applied when a connection is *made*, not when its protocol is created:
    asyncio creates the protocols of a burst of accepted connections before any of them
    is made (and counted by aiohttp), so a check at creation would let a burst of
    connections arrive together go past the limit unnoticed.
    """

    def __init__(self, limit: int) -> None:
        self.server: web.Server | None = None  # the runner's, once it is set up
        self.limit = limit
        #: Connections with a request in progress (never closed to make room).
        self.busy: set[RequestHandler] = set()
        #: Connections closed to make room, until they are gone.
        self._closing: set[RequestHandler] = set()
        self._reported = False
        self.evicted = 0

    def __call__(self) -> asyncio.Protocol:
        assert self.server is not None, "ConnectionGuard.server is set before listening"
        return _Admission(self, self.server())

    def admitted(self, newest: RequestHandler) -> None:
        """``newest`` was just made (and counted): make room if that went over the limit."""
        assert self.server is not None
        connections = self.server.connections  # oldest first
        self._closing &= set(connections)
        if len(connections) - len(self._closing) > self.limit:
            self._make_room(connections, newest)
        elif self._reported and len(connections) < self.limit // 2:
            log.info("http.connection_limit_cleared", limit=self.limit, closed=self.evicted)
            self._reported = False

    def _make_room(self, connections: list[RequestHandler], newest: RequestHandler) -> None:
        for handler in connections:
            if handler is not newest and handler not in self.busy \
                    and handler not in self._closing:
                self._closing.add(handler)
                handler.force_close()
                self.evicted += 1
                break
        if not self._reported:
            self._reported = True
            log.warning("http.connection_limit_reached", limit=self.limit,
                        hint="the longest-open connections without a request in progress are "
                             "closed to make room (http.max_connections, http.idle_timeout)")

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        protocol = request.protocol
        self.busy.add(protocol)
        try:
            return await handler(request)
        finally:
            self.busy.discard(protocol)


class _Admission(asyncio.Protocol):
    """aiohttp's handler of one connection, told to the guard once the connection is made.
    Everything else passes straight through to the handler."""

    def __init__(self, guard: ConnectionGuard, handler: RequestHandler) -> None:
        self.guard = guard
        self.handler = handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.handler.connection_made(transport)
        self.guard.admitted(self.handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self.handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.handler.data_received(data)

    def eof_received(self) -> None:
        self.handler.eof_received()  # None: the transport closes itself

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()


class ClientErrors(logging.Filter):
    """aiohttp logs a malformed request (a bad header line, a request line of garbage) as an
    error with a traceback; it is the client's fault, already answered with a 400: keep it
    one warning line, without the traceback (anyone who can connect could otherwise fill
    ``journalctl -p err``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError) and 400 <= (error.code or 0) < 500:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = f"{record.getMessage()}: HTTP {error.code}: {error.message}"
            record.args = ()
            record.exc_info = record.exc_text = None
        return True


def quiet_client_errors() -> None:
    """Install ClientErrors on aiohttp's server logger (once)."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(item, ClientErrors) for item in server_log.filters):
        server_log.addFilter(ClientErrors())


async def open_listener(
    guard: ConnectionGuard, host: str, port: int
) -> asyncio.Server:
    """Start accepting on ``host:port`` through ``guard``."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(guard, host, port, reuse_address=True, backlog=BACKLOG)
