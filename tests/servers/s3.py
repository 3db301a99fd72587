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

Credentials are always given explicitly and botocore's instance-metadata lookup is
disabled, so that nothing ever leaves the loopback interface.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
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
