"""HTTP delivery shared by the webhook and ping channels.

One lazily created aiohttp session per channel; every request is retried with
exponential backoff (no jitter: a handful of endpoints cannot stampede anyone) on
connection errors, timeouts, 5xx and 429 (honouring a ``Retry-After`` in seconds, up
to the backoff cap). Other statuses fail at once: retrying a 404 cannot help.
Redirects are not followed, so a token header never travels to another host.

Error messages name the endpoint, never its URL: webhook URLs (Slack, Discord, ...)
and ping URLs (healthchecks.io uuids) are secrets in their own right.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlsplit

import aiohttp

from ..version import VERSION

MAX_BACKOFF = 30.0
#: Statuses worth another try: the receiver is overloaded or briefly broken.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = f"backupmand/{VERSION}"


class DeliveryError(Exception):
    """One request failed for good (after its retries); the message is safe to log."""


@dataclasses.dataclass(frozen=True)
class Response:
    status: int
    attempts: int


class HttpDelivery:
    """Send requests with retries through one shared, lazily opened session."""

    def __init__(
        self, *, timeout: float, attempts: int, backoff: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None and retry_after.strip().isdigit():
            return min(float(retry_after.strip()), MAX_BACKOFF)
        return min(self.backoff * 2.0 ** (attempt - 1), MAX_BACKOFF)

    async def send(
        self, method: str, url: str, *, data: bytes | None = None,
        headers: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
    ) -> Response:
        """Return the 2xx response's status; raise DeliveryError once retries are spent.

        ``headers`` may be a function, called for every attempt (a signature that covers
        the attempt's time)."""
        problem = "not attempted"
        for attempt in range(1, self.attempts + 1):
            retry_after: str | None = None
            sent = headers() if callable(headers) else headers
            try:
                async with self.session().request(
                    method, url, data=data, headers=dict(sent or {}), allow_redirects=False,
                ) as response:
                    if 200 <= response.status < 300:
                        return Response(response.status, attempt)
                    text = (await response.content.read(300)).decode("utf-8", "replace")
                    problem = f"HTTP {response.status}" + (
                        f": {' '.join(text.split())[:200]}" if text.strip() else "")
                    if response.status not in RETRY_STATUSES:
                        raise DeliveryError(f"{problem} (not retried)")
                    retry_after = response.headers.get("Retry-After")
            except TimeoutError:
                problem = f"no answer within {self.timeout:g} s"
            except aiohttp.ClientError as error:
                problem = _describe(error, url)
            if attempt < self.attempts:
                await self._sleep(self.delay(attempt, retry_after))
        raise DeliveryError(f"{problem} (after {self.attempts} attempts)")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _describe(error: BaseException, url: str) -> str:
    text = str(error) or type(error).__name__
    # aiohttp puts the URL into some messages: keep only the host.
    parts = urlsplit(url)
    return text.replace(url, f"{parts.scheme}://{parts.hostname}/…")


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError("the URL has no host")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


async def tcp_check(url: str) -> None:
    """Open and close a TCP connection to the URL's host and port: nothing is sent.

    Raise OSError when the host cannot be reached (the caller bounds the time).
    """
    host, port = host_port(url)
    _reader, writer = await asyncio.open_connection(host, port)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
