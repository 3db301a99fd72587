"""S3 for the tests: moto's server on a free loopback port, and a TCP proxy to break it.

Fixtures:

- ``s3_server`` (session): moto's ``ThreadedMotoServer`` in this process; an
  :class:`S3Server` with the endpoint, fixed credentials and helpers.
- ``s3_process_server`` (session): the same, as a separate ``python -m moto.server``
  process, for tests that measure this process's memory (moto keeps objects in RAM).
- ``s3_bucket`` (function): a new, empty bucket on ``s3_server``; its name.
- ``s3_proxy`` (function): a :class:`TcpProxy` in front of ``s3_server``, which a test
  can stop (connections reset, new ones refused) and start again on the same port,
  or arm to stop by itself once some bytes went through.
- ``s3_fault_proxy`` (function): an :class:`S3FaultProxy` (HTTP) in front of
  ``s3_server``: counts part requests in flight, fails chosen part attempts, loses
  the answers of completions.

Credentials are always given explicitly and botocore's instance-metadata lookup is
disabled, so that nothing ever leaves the loopback interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from aiohttp import web
from botocore.config import Config as BotoConfig

from backupmand.config import S3Drive

ACCESS_KEY = "AKIATESTBACKUPMAND00"
SECRET_KEY = "test-secret-key-for-moto-only"
REGION = "us-east-1"


@dataclass
class S3Server:
    endpoint: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION

    def client(self) -> Any:
        """A plain (blocking) boto3 client talking to the server directly."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=BotoConfig(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
        )

    def create_bucket(self, name: str | None = None, region: str | None = None) -> str:
        name = name or f"test-{uuid.uuid4().hex[:16]}"
        options: dict[str, Any] = {}
        if region and region != "us-east-1":
            options["CreateBucketConfiguration"] = {"LocationConstraint": region}
        self.client().create_bucket(Bucket=name, **options)
        return name

    def multipart_uploads(self, bucket: str) -> list[dict[str, Any]]:
        return list(self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))

    def seed(self, bucket: str, keys: list[str], body: bytes) -> None:
        """Store many small objects at once, straight into the in-process server's
        backend (``s3_server`` only): 10,000 PUTs over HTTP would take a minute."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        for key in keys:
            backend.put_object(bucket, key, body)

    def keys(self, bucket: str) -> list[str]:
        answer = self.client().list_objects_v2(Bucket=bucket)
        return sorted(item["Key"] for item in answer.get("Contents", []))

    def drive_config(self, bucket: str, *, endpoint: str | None = None, **keys: Any) -> S3Drive:
        values: dict[str, Any] = {
            "provider": "s3",
            "label": "S3 Drive",
            "bucket": bucket,
            "region": self.region,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "endpoint": endpoint or self.endpoint,
            "force_path_style": True,
        }
        values.update(keys)
        return S3Drive.model_validate(values)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def _offline_aws_environment() -> Iterator[None]:
    """No instance metadata, no shared config or credentials files from the host."""
    saved = {key: os.environ.get(key) for key in (
        "AWS_EC2_METADATA_DISABLED", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    for key in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        os.environ.pop(key, None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    with _offline_aws_environment():
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield S3Server(endpoint=f"http://{host}:{port}")
        finally:
            server.stop()


@pytest.fixture(scope="session")
def s3_process_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with _offline_aws_environment():
        port = free_port()
        log = tmp_path_factory.mktemp("moto") / "moto.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        drain: threading.Thread | None = None
        try:
            drain = _wait_for_line(process, "Running on", log)
            yield S3Server(endpoint=f"http://127.0.0.1:{port}")
        finally:
            process.terminate()
            process.wait(timeout=10)
            if drain is not None:
                drain.join(timeout=10)
            assert process.stderr is not None
            process.stderr.close()


def _wait_for_line(process: subprocess.Popen[str], marker: str, log: Path) -> threading.Thread:
    """Block until the process prints ``marker`` on stderr; a thread keeps draining it
    into ``log`` until the process ends (returned, to be joined)."""
    assert process.stderr is not None
    stderr = process.stderr
    ready = threading.Event()

    def drain() -> None:
        with open(log, "a", encoding="utf-8") as sink:
            for line in stderr:
                sink.write(line)
                sink.flush()
                if marker in line:
                    ready.set()

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    if not ready.wait(timeout=30):
        process.kill()
        process.wait(timeout=10)
        raise RuntimeError(f"moto server did not start: {log.read_text(errors='replace')}")
    return thread


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    return s3_server.create_bucket()


@pytest.fixture
def s3_proxy(s3_server: S3Server) -> Iterator[TcpProxy]:
    host, _, port = s3_server.endpoint.removeprefix("http://").rpartition(":")
    proxy = TcpProxy((host, int(port)))
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


class TcpProxy:
    """A loopback TCP proxy (threads, not asyncio: it works whatever the test's loop does).

    ``stop()`` resets every connection and closes the listening socket, as a server
    that died would; ``start()`` listens again on the same port. ``stop_after(n)``
    arms the proxy to stop by itself once ``n`` bytes went from clients to the server.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.bytes_up = 0
        self.connections_seen = 0
        self.stopped = threading.Event()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop_after: int | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
            self.stopped.clear()
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
            self._stop_after = None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in sockets:
            _reset(sock)
        self.stopped.set()

    def stop_after(self, nbytes: int) -> None:
        with self._lock:
            self._stop_after = self.bytes_up + nbytes

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                _reset(client)
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    for sock in (client, upstream):
                        _reset(sock)
                        sock.close()
                    return
                self._sockets.update((client, upstream))
                self.connections_seen += 1
            pumps = [2]
            for source, sink, up in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(
                    target=self._pump, args=(source, sink, up, pumps), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, up: bool, pumps: list[int]) -> None:
        try:
            while block := source.recv(256 * 1024):
                sink.sendall(block)
                if up:
                    with self._lock:
                        self.bytes_up += len(block)
                        trip = self._stop_after is not None and self.bytes_up >= self._stop_after
                    if trip:
                        self.stop()
                        break
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
        except OSError:
            _reset(sink)
            _reset(source)
        finally:
            with self._lock:
                pumps[0] -= 1
                last = pumps[0] == 0
                if last:
                    self._sockets.difference_update((source, sink))
            if last:
                source.close()
                sink.close()


def _reset(sock: socket.socket) -> None:
    """Make the connection end with a TCP reset, as a crashed peer's would (the pump
    threads, which own the sockets, close them)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class S3FaultProxy:
    """An HTTP proxy in front of an S3 server that sees every request (asyncio, in the
    test's event loop): it counts UploadPart requests per part number and in flight
    (and the most in flight at once), can hold part requests until ``hold_parts`` of
    them are in flight (so that concurrency is seen by counting, not by timing), and
    answers chosen attempts of chosen parts with an error or a cut connection.

    ``faults[part] = [fault, ...]``: one entry per attempt of that part, in order; a
    fault is ``(status, code)`` (an S3 error answer, after the body was read) or
    ``"cut"`` (the connection is reset halfway through the body).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = 0
        self.requests: list[tuple[str, str]] = []
        self.part_attempts: Counter[int] = Counter()
        self.part_sizes: dict[int, int] = {}
        self.in_flight = 0
        self.most_in_flight = 0
        self.faults: dict[int, list[tuple[int, str] | str]] = {}
        #: Headers of the last request of each part (lower-case names).
        self.part_headers: dict[int, dict[str, str]] = {}
        #: CompleteMultipartUpload requests to forward whose answer is then lost.
        self.lose_completion_answers = 0
        self.hold_parts: int | None = None
        self.hold_timeout = 30.0
        self._released = asyncio.Event()
        #: Set whenever a part request arrives.
        self.part_arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> S3FaultProxy:
        app = web.Application(client_max_size=6 * 1024**3)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._client = aiohttp.ClientSession(auto_decompress=False)
        return self

    async def stop(self) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        part = int(request.query["partNumber"]) if (
            request.method == "PUT" and "uploadId" in request.query
            and "partNumber" in request.query) else None
        if part is None:
            answer = await self._send_upstream(request, await request.read())
            if (request.method == "POST" and "uploadId" in request.query
                    and self.lose_completion_answers > 0):
                self.lose_completion_answers -= 1
                _abort(request)  # done upstream, but the client never hears of it
            return answer
        self.part_attempts[part] += 1
        attempt = self.part_attempts[part]
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.part_arrived.set()
        try:
            planned = self.faults.get(part, [])
            fault = planned[attempt - 1] if attempt <= len(planned) else None
            self.part_headers[part] = {key.lower(): value for key, value in request.headers.items()}
            if fault == "cut":
                length = int(request.headers.get("Content-Length") or 0)
                await request.content.readexactly(max(1, length // 2))
                _abort(request)
                return web.Response(status=500)
            body = await request.read()
            self.part_sizes[part] = len(body)
            if self.hold_parts is not None and not self._released.is_set():
                if self.in_flight >= self.hold_parts:
                    self._released.set()
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._released.wait(), self.hold_timeout)
            if isinstance(fault, tuple):
                status, code = fault
                return web.Response(status=status, content_type="application/xml", text=(
                    f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>"
                    f"<Message>injected {code}</Message></Error>"))
            return await self._send_upstream(request, body)
        finally:
            self.in_flight -= 1

    async def _send_upstream(self, request: web.Request, body: bytes) -> web.Response:
        assert self._client is not None
        headers = {key: value for key, value in request.headers.items()
                   if key.lower() not in ("content-length", "transfer-encoding", "expect",
                                          "connection")}
        async with self._client.request(
                request.method, f"{self.upstream}{request.raw_path}", headers=headers,
                data=body, allow_redirects=False) as answer:
            payload = await answer.read()
            kept = {key: value for key, value in answer.headers.items()
                    if key.lower() not in ("content-length", "transfer-encoding", "connection",
                                           "content-encoding", "date", "server")}
            response = web.Response(status=answer.status, body=payload, headers=kept)
            if request.method == "HEAD" and "Content-Length" in answer.headers:
                response.headers["Content-Length"] = answer.headers["Content-Length"]
            return response


def _abort(request: web.Request) -> None:
    """Reset the client's connection (no answer), as a dropped link would."""
    transport = request.transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@pytest.fixture
async def s3_fault_proxy(s3_server: S3Server) -> AsyncIterator[S3FaultProxy]:
    proxy = await S3FaultProxy(s3_server.endpoint).start()
    try:
        yield proxy
    finally:
        await proxy.stop()
