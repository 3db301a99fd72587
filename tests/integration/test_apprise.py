"""The Apprise channel against local receivers on loopback: Apprise's json:// and form://
to the recording aiohttp receiver, ntfy:// to an ntfy-compatible publishing endpoint
(JSON at POST /, Basic auth as an ntfy server with access control asks for).

Every URL carries a secret (a password, a path token, an ntfy topic); none may show in
an error, in the structlog events (captured raw, before any redaction), or in a stdlib
log record, also when the receiver fails.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import yaml
from aiohttp import web
from blockbuster import BlockBuster
from structlog.testing import capture_logs

from backupmand.config import AppriseNotifier as AppriseConfig
from backupmand.config import parse_settings
from backupmand.errors import ConfigError, NotifierError
from backupmand.models import Backup, DriveFile, Status
from backupmand.notifiers import build_notifiers
from backupmand.notifiers.apprise import AppriseNotifier
from tests.helpers import base_config
from tests.servers import free_port

APP_URL = "https://backups.example.test:8443"
PASSWORD = "pa55-w0rd-Secret"
PATH_TOKEN = "T0ken-In-The-Path-9f8e7d"
TOPIC = "backups-topic-x7f3q"
CREATED = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC)


def make_backup(status: Status = Status.FAILED, **fields: object) -> Backup:
    drive_file = DriveFile(
        id="df-1", backup_id="4f1c2a9e-0000-4000-8000-00000000beef", drive="disk",
        provider="local", label="main.sql.zst", path="/srv/main.sql.zst", status=Status.FINISHED,
        size=5_452_595, error=None, attempts=1, created_at=CREATED, updated_at=None,
        finished_at=CREATED + dt.timedelta(seconds=65))
    values: dict[str, object] = dict(
        id="4f1c2a9e-0000-4000-8000-00000000beef", label="Main", source_provider="postgres",
        status=status, dump_status=status, name="main.sql.zst", dump_path=None,
        compression="zstd", size=5_452_595, sha256="ab" * 32,
        error="pg_dump: error: connection to server on socket failed" if status is Status.FAILED
        else None, created_at=CREATED, updated_at=CREATED + dt.timedelta(seconds=65),
        finished_at=CREATED + dt.timedelta(seconds=65), drive_files=(drive_file,))
    values.update(fields)
    return Backup(**values)  # type: ignore[arg-type]


def channel(*urls: str, events: tuple[str, ...] | None = None, timeout: float = 10
            ) -> AppriseNotifier:
    config: dict[str, object] = {"enabled": True, "urls": list(urls), "timeout": timeout}
    if events is not None:
        config["events"] = list(events)
    return AppriseNotifier(AppriseConfig.model_validate(config), app_url=APP_URL, host="db1")


def json_url(receiver, *, scheme: str = "json") -> str:
    host_port = receiver.base_url.removeprefix("http://")
    return f"{scheme}://ops:{PASSWORD}@{host_port}/hook/{PATH_TOKEN}"


def assert_secret_free(text: str, *urls: str) -> None:
    for secret in (*urls, PASSWORD, PATH_TOKEN, TOPIC):
        assert secret not in text, f"{secret!r} leaked into: {text}"


# ---------------------------------------------------------------------------- ntfy


@dataclasses.dataclass
class NtfyServer:
    """Publishing as ntfy serves it: POST / with {"topic", "title", "message", ...}."""

    user: str
    password: str
    messages: list[dict[str, object]] = dataclasses.field(default_factory=list)
    refusals: int = 0
    base_url: str = ""

    async def publish(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            self.refusals += 1
            return web.json_response({"code": 40101, "http": 401, "error": "unauthorized"},
                                     status=401)
        payload = await request.json()
        self.messages.append(payload)
        return web.json_response({"id": f"m{len(self.messages)}", "time": int(time.time()),
                                  "event": "message", "topic": payload["topic"],
                                  "title": payload.get("title"), "message": payload["message"]})

    def url(self, password: str) -> str:
        return f"ntfy://{self.user}:{password}@{self.base_url.removeprefix('http://')}/{TOPIC}"


@pytest.fixture
async def ntfy_server() -> AsyncIterator[NtfyServer]:
    server = NtfyServer(user="alerts", password=PASSWORD)
    app = web.Application()
    app.router.add_post("/", server.publish)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.base_url = f"http://{host}:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------------------- delivery


async def test_a_failed_backup_reaches_a_json_receiver_with_label_reason_and_link(webhook_receiver):
    url = json_url(webhook_receiver)
    await channel(url).backup_finished(make_backup(Status.FAILED))
    (request,) = webhook_receiver.requests
    assert request.method == "POST" and request.path == f"/hook/{PATH_TOKEN}"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(
        f"ops:{PASSWORD}".encode()).decode(), "the URL's credentials are used, not dropped"
    payload = json.loads(request.body)
    assert payload["type"] == "failure"
    assert payload["title"] == "✘ Backup of Main failed on db1"
    message = payload["message"]
    assert "The backup of Main failed on db1." in message
    assert "Reason: pg_dump: error: connection to server on socket failed" in message
    assert "Backup 4f1c2a9e-0000-4000-8000-00000000beef, started 2026-11-30T03:00:00Z." in message
    assert f"Status page: {APP_URL}/" in message
    assert len(message) < 400, "short enough for a phone"


async def test_a_suspect_backup_reaches_a_form_receiver(webhook_receiver):
    url = json_url(webhook_receiver, scheme="form")
    backup = make_backup(Status.FINISHED, suspect=True,
                         suspect_reason="size 12 bytes is below 50% of the median 5.2 MiB")
    await channel(url).backup_suspect(backup)
    (request,) = webhook_receiver.requests
    assert request.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    form = {key: values[0] for key, values in parse_qs(request.body.decode()).items()}
    assert form["type"] == "warning"
    assert form["title"] == "⚠ Backup of Main looks suspicious on db1"
    assert "Reason: size 12 bytes is below 50% of the median 5.2 MiB" in form["message"]
    assert f"Status page: {APP_URL}/" in form["message"]


async def test_a_failed_drill_reaches_an_ntfy_server(ntfy_server):
    backup = make_backup(Status.FINISHED, verification="failed",
                         verify_error="table public.customers: 499 rows, the manifest says 500")
    await channel(ntfy_server.url(PASSWORD)).verify_finished(backup)
    (message,) = ntfy_server.messages
    assert message["topic"] == TOPIC
    assert message["title"] == "✘ Restore drill of Main failed on db1"
    assert "Reason: table public.customers: 499 rows, the manifest says 500" in message["message"]
    assert f"Status page: {APP_URL}/" in message["message"]


async def test_only_the_configured_events_are_sent(webhook_receiver):
    url = json_url(webhook_receiver)
    defaults = channel(url)  # backup_failed, verify_failed, backup_suspect
    await defaults.backup_finished(make_backup(Status.FINISHED))
    await defaults.verify_finished(make_backup(Status.FINISHED, verification="passed"))
    await defaults.schedule_failed("backup_job", "the catalog is locked")
    assert webhook_receiver.requests == [], "finished, passed and schedule events are not defaults"

    chosen = channel(url, events=("backup_finished", "schedule_failed"))
    await chosen.backup_finished(make_backup(Status.FAILED))  # not chosen
    await chosen.backup_finished(make_backup(Status.FINISHED))
    await chosen.schedule_failed("verify_job", "the catalog is locked")
    finished, schedule = (json.loads(r.body) for r in webhook_receiver.requests)
    assert finished["type"] == "success"
    assert finished["title"] == "✔ Backup of Main finished on db1"
    assert "finished on db1: 5.2 MiB in 1 min 5 s, on 1 drive." in finished["message"]
    assert schedule["title"] == "✘ Scheduled verify_job could not start on db1"
    assert "Reason: the catalog is locked" in schedule["message"]


async def test_every_url_is_served_and_one_failing_does_not_stop_the_others(
    webhook_receiver, ntfy_server
):
    refused = f"json://127.0.0.1:{free_port()}/hook/{PATH_TOKEN}"
    notifier = channel(refused, ntfy_server.url(PASSWORD), json_url(webhook_receiver))
    with pytest.raises(NotifierError) as caught:
        await notifier.backup_finished(make_backup(Status.FAILED))
    assert len(ntfy_server.messages) == 1 and len(webhook_receiver.requests) == 1
    text = str(caught.value)
    assert text.startswith("apprise: backup_failed: 1 of 3 channels failed: #1 JSON: ")
    assert "Connection error" in text
    assert_secret_free(text, refused)


# ---------------------------------------------------------------------------- failures and secrets


class RecordingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_refusing_receiver_raises_without_any_secret(webhook_receiver, ntfy_server):
    webhook_receiver.fail(None, status=500)
    url = json_url(webhook_receiver)
    wrong_password = "wr0ng-Passw0rd-123"
    ntfy = ntfy_server.url(wrong_password)
    notifier = channel(url, ntfy)
    # What a process that logs everything to the root logger would see.
    root, handler = logging.getLogger(), RecordingHandler()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with capture_logs() as events, pytest.raises(NotifierError) as caught:
            await notifier.backup_finished(make_backup(Status.FAILED))
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    text = str(caught.value)
    assert "2 of 2 channels failed" in text
    assert "#1 JSON: " in text and "error=500" in text
    assert "#2 ntfy: " in text and "unauthorized" in text
    assert ntfy_server.refusals == 1, "the wrong password was sent and refused"
    warnings = "\n".join(r.getMessage() for r in handler.records if r.levelno >= logging.WARNING)
    for leaked in (text, repr(events), warnings):
        assert_secret_free(leaked, url, ntfy)
        assert wrong_password not in leaked
    assert not [r for r in handler.records if r.name.startswith("apprise")], (
        "Apprise's own log (whole URLs at debug level) must not reach the root logger")


async def test_the_pipeline_logs_a_failing_channel_without_its_url(
    tmp_path, make_settings, open_runtime, webhook_receiver
):
    # A backup that fails (its database is missing), told to a receiver that fails too.
    webhook_receiver.fail(None, status=503)
    url = json_url(webhook_receiver)
    settings = make_settings(
        data_sources=[{"provider": "sqlite", "label": "gone", "db_path": str(tmp_path / "no.db"),
                       "tmp_folder": str(tmp_path / "dumps")}],
        notifiers={"apprise": {"enabled": True, "urls": [url], "timeout": 10}})
    with capture_logs() as events:
        async with open_runtime(settings) as runtime:
            (backup,) = await runtime.start_backups()
            (final,) = await runtime.wait([backup.id])
    assert final.status is Status.FAILED and "no.db" in (final.error or "")
    (request,) = webhook_receiver.requests
    assert "Backup of gone failed" in json.loads(request.body)["title"]
    (failure,) = [event for event in events if event["event"] == "notify.failed"]
    assert failure["channel"] == "apprise" and "#1 JSON" in failure["error"]
    assert_secret_free(repr(events), url)


async def test_a_receiver_that_never_answers_times_out_without_blocking_the_loop(webhook_receiver):
    webhook_receiver.hang()
    notifier = channel(json_url(webhook_receiver), timeout=1)
    blockbuster = BlockBuster()
    blockbuster.activate()  # a blocking call on the loop's thread now raises
    started = time.monotonic()
    try:
        with pytest.raises(NotifierError) as caught:
            await notifier.backup_finished(make_backup(Status.FAILED))
    finally:
        blockbuster.deactivate()
    assert time.monotonic() - started < 1 + 5 + 2, "Apprise's deadline, then the thread grace"
    assert "no answer within 1 s" in str(caught.value)
    assert len(webhook_receiver.requests) == 1


# ---------------------------------------------------------------------------- config


def test_urls_file_builds_a_channel_and_registers_its_secrets(tmp_path: Path, webhook_receiver):
    from backupmand import logs

    urls_file = tmp_path / "apprise-urls"
    urls_file.write_text(json_url(webhook_receiver) + "\n" + f"ntfy://127.0.0.1/{TOPIC}\n")
    document = base_config(tmp_path, notifiers={"apprise": {
        "enabled": True, "urls_file": str(urls_file), "events": ["backup_failed"]}})
    settings = parse_settings(yaml.safe_dump(document))
    assert json_url(webhook_receiver) in settings.secrets()
    (notifier,) = build_notifiers(settings)
    assert isinstance(notifier, AppriseNotifier) and notifier.name == "apprise"
    assert notifier.status_page == "http://127.0.0.1:8080/"
    assert {PASSWORD, PATH_TOKEN, TOPIC} <= set(notifier.secrets())
    assert "127.0.0.1" not in notifier.secrets(), "a host name is not a secret worth hiding"
    line = logs.redact_text(f"ntfy said: unknown topic {TOPIC}, user ops:{PASSWORD}")
    assert_secret_free(line)


def test_a_url_apprise_does_not_know_is_a_config_error_without_its_value():
    secret = "nosuchservice://s3cr3t-t0ken@example"
    with pytest.raises(ConfigError) as caught:
        channel("json://127.0.0.1/ok", secret)
    assert caught.value.problems == [
        "notifiers.apprise.urls[1]: Apprise does not recognise this URL (an unknown service, or "
        "a part the service needs is missing)"]
    assert "s3cr3t" not in str(caught.value)
