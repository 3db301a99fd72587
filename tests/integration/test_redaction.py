"""One redaction everywhere: every command's logs and errors, Google's secrets as they are
read, every notification body; and Python's logging through the same processors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from backupmand import logs
from backupmand.catalog import Catalog
from backupmand.config import MailDestination, WebhookEndpoint
from backupmand.config import MailNotifier as MailConfig
from backupmand.config import PingNotifier as PingConfig
from backupmand.config import WebhookNotifier as WebhookConfig
from backupmand.drives.google_auth import StoredToken, load_client_secret, load_token, save_token
from backupmand.models import Backup, Status
from backupmand.notifiers.mail import MailNotifier
from backupmand.notifiers.ping import PingNotifier
from backupmand.notifiers.webhook import WebhookNotifier
from tests.factories import make_backup
from tests.helpers import base_config, child_env, run_cli, write_config
from tests.servers.smtp import SmtpServer
from tests.servers.webhook import WebhookReceiver


def captured_lines(emit) -> list[str]:  # type: ignore[no-untyped-def]
    import io

    stream = io.StringIO()
    logs.configure("info", stream=stream, force_console=False)
    try:
        emit(structlog.get_logger("test"))
    finally:
        logs.configure("info", force_console=False)
    return stream.getvalue().splitlines()


# ---------------------------------------------------------------------------- every command


def test_restore_redacts_its_logs_and_errors(tmp_path: Path):
    secret = "restore-secret-0123456789"
    config = write_config(tmp_path / "config.yml", base_config(tmp_path, http={
        "api_keys": [secret], "backup_job": {"enabled": False}}))
    ran = run_cli("run", config=config)
    assert ran.returncode == 0, ran.stderr
    listed = run_cli("list", "--json", config=config)
    backup_id = json.loads(listed.stdout)["Results"][0]["Id"]

    target = tmp_path / f"copy-{secret}.sqlite"
    restored = run_cli("restore", backup_id, "--to-file", str(target), config=config)
    assert restored.returncode == 0, restored.stderr
    assert target.exists()
    assert "restore.written" in restored.stderr
    assert secret not in restored.stderr and "copy-********.sqlite" in restored.stderr

    missing = run_cli("restore", f"id-{secret}", "--drive", "disk", "--to-file", str(target),
                      config=config)
    assert missing.returncode == 1
    assert secret not in missing.stderr and "id-********" in missing.stderr


def test_google_client_secrets_and_tokens_are_redacted_once_read(tmp_path: Path):
    client = tmp_path / "client.json"
    client.write_text(json.dumps({"installed": {
        "client_id": "id.apps.example", "client_secret": "GOCSPX-client-secret-abc123"}}))
    token_file = tmp_path / "token.json"
    token_file.write_text(json.dumps({"access_token": "ya29.access-token-first",
                                      "refresh_token": "1//refresh-token-xyz"}))
    load_client_secret(client)
    load_token(token_file)
    lines = captured_lines(lambda log: log.error(
        "drive.failed", error="HTTP 401 for ya29.access-token-first, refresh 1//refresh-token-xyz, "
        "client GOCSPX-client-secret-abc123"))
    assert lines == ["<3>" + lines[0][3:]] and "********, refresh ********, client ********" in lines[0]
    # A refreshed token replaces the old one (an expired token need not stay registered).
    save_token(token_file, StoredToken(access_token="ya29.access-token-second",
                                       refresh_token="1//refresh-token-xyz", expiry=None,
                                       scopes=(), document={}))
    lines = captured_lines(lambda log: log.error("x", error="ya29.access-token-second"))
    assert "ya29.access-token-second" not in lines[0]


# ---------------------------------------------------------------------------- notifications


SECRET_IN_ERROR = "notify-secret-0123456789"


@pytest.fixture
async def leaky_backup() -> AsyncIterator[Backup]:
    """A failed backup whose errors quote a tool that echoed a secret."""
    logs.register_secrets([SECRET_IN_ERROR])
    async with Catalog.open("memory") as catalog:
        yield await make_backup(
            catalog, label="Main", status=Status.FAILED, failed_drive="S3 Drive",
            drive_error=f"403: signature {SECRET_IN_ERROR} does not match")


async def test_webhook_bodies_are_redacted(webhook_receiver: WebhookReceiver, leaky_backup: Backup):
    notifier = WebhookNotifier(WebhookConfig(enabled=True, endpoints=(
        WebhookEndpoint(name="hook", url=webhook_receiver.url()),), backoff=0))
    try:
        await notifier.backup_finished(leaky_backup)
    finally:
        await notifier.aclose()
    [request] = webhook_receiver.requests
    assert SECRET_IN_ERROR.encode() not in request.body
    assert b"403: signature ******** does not match" in request.body


async def test_mail_bodies_are_redacted(smtp_server: SmtpServer, leaky_backup: Backup):
    notifier = MailNotifier(MailConfig(
        enabled=True, smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_crypto="none",
        destinations=(MailDestination(email="admin@example.com"),)), hostname="db1")
    await notifier.backup_finished(leaky_backup)
    [received] = smtp_server.messages
    text = received.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    page = received.message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    for part in (text, page):
        assert SECRET_IN_ERROR not in part and "signature ******** does not match" in part


async def test_ping_summaries_are_redacted(webhook_receiver: WebhookReceiver, leaky_backup: Backup):
    notifier = PingNotifier(PingConfig(enabled=True, url=webhook_receiver.url("/check"),
                                       method="POST", backoff=0))
    try:
        await notifier.backup_finished(leaky_backup)
    finally:
        await notifier.aclose()
    [request] = webhook_receiver.requests
    assert SECRET_IN_ERROR.encode() not in request.body and b"********" in request.body


# ---------------------------------------------------------------------------- Python's logging


LIBRARIES = textwrap.dedent("""
    import logging, warnings
    from backupmand import logs
    import structlog
    logs.register_secrets(["lib-secret-0123456789"])
    logs.configure("info")
    def fail():
        raise ValueError("refused with lib-secret-0123456789\\nand a second line")
    try:
        fail()
    except ValueError:
        logging.getLogger("aiohttp.server").exception("Error handling request lib-secret-0123456789")
    logging.getLogger("asyncio").error("Task exception was never retrieved")
    logging.getLogger("apscheduler.scheduler").info("Added job: chatter")
    logging.getLogger("botocore.credentials").warning("Refreshing credentials")
    structlog.get_logger("backupmand.test").info("ours", key="value")
    warnings.warn("deprecated thing")
""")


def test_library_records_become_one_redacted_line_each():
    result = subprocess.run([sys.executable, "-c", LIBRARIES], capture_output=True, text=True,
                            env=child_env(), timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 5, lines  # APScheduler's INFO chatter is not among them
    assert all(line.startswith(("<3>", "<4>", "<6>")) for line in lines), lines
    assert "lib-secret-0123456789" not in result.stderr
    first = lines[0]
    assert first.startswith("<3>") and "Error handling request ********" in first
    assert "logger=aiohttp.server" in first
    assert 'exception="Traceback (most recent call last):\\n' in first
    assert "ValueError: refused with ********\\nand a second line" in first
    assert lines[1].startswith("<3>") and "logger=asyncio" in lines[1]
    assert lines[2].startswith("<4>") and "logger=botocore.credentials" in lines[2]
    assert lines[3].startswith("<6>") and "ours key=value" in lines[3]
    assert lines[4].startswith("<4>") and "logger=py.warnings" in lines[4]
    assert "deprecated thing" in lines[4]


def test_a_real_daemon_writes_only_prefixed_lines(tmp_path: Path):
    """aiohttp's own log of a malformed request is one warning line like every other (the
    client's fault: no traceback, and nothing for ``journalctl -p err``)."""
    import socket

    from tests.helpers import daemon

    config = write_config(tmp_path / "config.yml", base_config(tmp_path))
    with daemon(config) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
            connection.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nthis is no header\r\n\r\n")
            answer = connection.recv(65536)
        assert answer.split(b" ")[1] == b"400"
        status, _ = server.request("GET", "/ping")
        assert status == 200
    text = server.log_path.read_text()
    stray = [line for line in text.splitlines() if not line.startswith("<")]
    assert stray == [], stray
    [line] = [line for line in text.splitlines() if "logger=aiohttp.server" in line]
    assert line.startswith("<4>") and "Error handling request from 127.0.0.1: HTTP 400" in line
    assert "Traceback" not in text
