"""Mail, webhook and ping notifiers against real local servers."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator

import pytest

from backupmand.catalog import Catalog
from backupmand.config import MailDestination, WebhookEndpoint
from backupmand.config import MailNotifier as MailConfig
from backupmand.config import PingNotifier as PingConfig
from backupmand.config import WebhookNotifier as WebhookConfig
from backupmand.errors import HealthError, NotifierError
from backupmand.models import Backup, Status
from backupmand.notifiers.http import DeliveryError, HttpDelivery
from backupmand.notifiers.mail import MailNotifier
from backupmand.notifiers.ping import PingNotifier
from backupmand.notifiers.webhook import WebhookNotifier
from tests.factories import make_backup
from tests.servers.smtp import SmtpServer
from tests.servers.webhook import WebhookReceiver

DESTINATIONS = (MailDestination(name="Admin", email="admin@example.com"),
                MailDestination(name="Ops, Night", email="ops@example.com"))


@pytest.fixture
async def catalog() -> AsyncIterator[Catalog]:
    async with Catalog.open("memory") as opened:
        yield opened


@pytest.fixture
async def finished(catalog: Catalog) -> Backup:
    return await make_backup(catalog, label="Main")


@pytest.fixture
async def failed(catalog: Catalog) -> Backup:
    return await make_backup(catalog, label="Main", status=Status.FAILED,
                             failed_drive="S3 Drive")


def mail_config(server: SmtpServer, **overrides: object) -> MailConfig:
    values: dict[str, object] = {
        "enabled": True, "smtp_host": server.host, "smtp_port": server.port,
        "smtp_crypto": "none", "destinations": DESTINATIONS, "sender": "", "timeout": 5,
    }
    values.update(overrides)
    return MailConfig.model_validate(values)


def tls_mail_config(server: SmtpServer, **overrides: object) -> MailConfig:
    values: dict[str, object] = {
        "smtp_crypto": "starttls", "smtp_user": server.user, "smtp_password": server.password,
        "ca_file": server.ca_file}
    values.update(overrides)
    return mail_config(server, **values)


# ---------------------------------------------------------------------------- mail


async def test_mail_plain_never_upgrades_and_reports_everything(
    smtp_server: SmtpServer, finished: Backup,
) -> None:
    notifier = MailNotifier(mail_config(smtp_server), hostname="db1.example.com")
    await notifier.backup_finished(finished)

    assert len(smtp_server.messages) == 1
    received = smtp_server.messages[0]
    assert received.tls is False  # offered STARTTLS, but smtp_crypto none means none
    assert received.mail_from == "backupmand@db1.example.com"
    assert sorted(received.rcpt_tos) == ["admin@example.com", "ops@example.com"]
    message = received.message
    assert message["Subject"] == "[backupmand] ✔ finished: Main on db1.example.com"
    assert message["X-Backupmand-Status"] == "finished"
    assert message["To"].addresses[1].display_name == "Ops, Night"
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    page = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    for part in (text, page):
        assert "Main" in part
        assert "finished" in part
        assert "1.2 MiB (1234567 bytes)" in part
        assert "1m 05s" in part
        assert "Local Drive (local): finished" in part
        assert "S3 Drive (s3): finished" in part
        assert finished.id in part


async def test_mail_starttls_with_test_ca_and_login(
    smtp_server_starttls: SmtpServer, failed: Backup,
) -> None:
    notifier = MailNotifier(tls_mail_config(smtp_server_starttls), hostname="db1")
    await notifier.backup_finished(failed)

    assert len(smtp_server_starttls.messages) == 1
    received = smtp_server_starttls.messages[0]
    assert received.tls and received.authenticated
    message = received.message
    assert message["Subject"] == "[backupmand] ✘ FAILED: Main on db1"
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    page = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "S3 Drive (s3): failed after 5 attempts" in text
    assert "error: upload refused: <HTTP 403> & co" in text
    assert "Local Drive (local): finished" in text
    assert "Error:" in text and "upload to S3 Drive failed" in text
    # the HTML alternative escapes values
    assert "upload refused: &lt;HTTP 403&gt; &amp; co" in page
    assert "<HTTP 403>" not in page
    assert "S3 Drive (s3): failed after 5 attempts" in page


# aiosmtpd warns that its implicit-TLS server does not "require TLS" for AUTH: it is TLS.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_mail_implicit_tls(smtp_server_ssl: SmtpServer, finished: Backup) -> None:
    notifier = MailNotifier(tls_mail_config(smtp_server_ssl, smtp_crypto="ssl"))
    await notifier.backup_finished(finished)
    assert [m.tls for m in smtp_server_ssl.messages] == [True]


async def test_mail_untrusted_certificate_is_an_error(
    smtp_server_starttls: SmtpServer, failed: Backup,
) -> None:
    notifier = MailNotifier(tls_mail_config(smtp_server_starttls, ca_file=None))
    with pytest.raises(NotifierError, match=r"(?i)certificate verify failed.*needs ca_file"):
        await notifier.backup_finished(failed)
    assert smtp_server_starttls.messages == []
    with pytest.raises(HealthError, match=r"(?i)certificate"):
        await notifier.health()


async def test_mail_starttls_required_when_configured(
    smtp_server_plain_only: SmtpServer, failed: Backup,
) -> None:
    notifier = MailNotifier(mail_config(smtp_server_plain_only, smtp_crypto="starttls"))
    with pytest.raises(NotifierError, match=r"(?i)starttls"):
        await notifier.backup_finished(failed)
    assert smtp_server_plain_only.messages == []


async def test_mail_wrong_password_never_shows_it(
    smtp_server_starttls: SmtpServer, failed: Backup,
) -> None:
    wrong = "not-the-Password-42"
    notifier = MailNotifier(tls_mail_config(smtp_server_starttls, smtp_password=wrong))
    with pytest.raises(NotifierError) as caught:
        await notifier.backup_finished(failed)
    assert wrong not in str(caught.value)
    assert "535" in str(caught.value)  # the server's authentication failure
    assert smtp_server_starttls.messages == []


async def test_mail_only_on_failure(
    smtp_server: SmtpServer, finished: Backup, failed: Backup,
) -> None:
    notifier = MailNotifier(mail_config(smtp_server, only_on_failure=True))
    await notifier.backup_finished(finished)
    assert smtp_server.messages == []
    await notifier.backup_finished(failed)
    assert [m.message["X-Backupmand-Status"] for m in smtp_server.messages] == ["failed"]


async def test_mail_dump_failure_report(
    smtp_server: SmtpServer, catalog: Catalog,
) -> None:
    backup = await make_backup(catalog, label="Other", dump_error="pg_dump: connection refused")
    await MailNotifier(mail_config(smtp_server, sender="ops@example.org")).backup_finished(backup)
    received = smtp_server.messages[0]
    assert received.mail_from == "ops@example.org"
    text = received.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "pg_dump: connection refused" in text
    assert "(none: the dump did not reach the upload step)" in text


async def test_mail_health(
    smtp_server_starttls: SmtpServer, closed_port_url: str,
) -> None:
    await MailNotifier(tls_mail_config(smtp_server_starttls)).health()
    assert smtp_server_starttls.messages == []
    port = int(closed_port_url.split(":")[2].split("/")[0])
    down = MailNotifier(MailConfig(enabled=True, smtp_host="127.0.0.1", smtp_port=port,
                                   smtp_crypto="none", destinations=DESTINATIONS))
    with pytest.raises(HealthError, match=f"127.0.0.1:{port}"):
        await down.health()


# ---------------------------------------------------------------------------- webhook


def webhook_config(*endpoints: WebhookEndpoint, **overrides: object) -> WebhookConfig:
    values: dict[str, object] = {"enabled": True, "endpoints": endpoints, "timeout": 2,
                                 "attempts": 3, "backoff": 0.001}
    values.update(overrides)
    return WebhookConfig.model_validate(values)


async def test_webhook_body_token_and_signature(
    webhook_receiver: WebhookReceiver, failed: Backup,
) -> None:
    endpoint = WebhookEndpoint.model_validate({
        "name": "Hook", "url": webhook_receiver.url("/hook"), "token": "tok-123",
        "secret": "shh"})
    notifier = WebhookNotifier(webhook_config(endpoint))
    try:
        await notifier.backup_finished(failed)
    finally:
        await notifier.aclose()

    [request] = webhook_receiver.requests
    assert request.method == "POST" and request.path == "/hook"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Webhook-Token"] == "tok-123"
    expected = "sha256=" + hmac.new(b"shh", request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Backupmand-Signature"] == expected
    assert json.loads(request.body) == {"Event": "backup_report", "Payload": failed.to_api()}


async def test_webhook_without_token_or_secret_sends_neither(
    webhook_receiver: WebhookReceiver, finished: Backup,
) -> None:
    endpoint = WebhookEndpoint(name="Bare", url=webhook_receiver.url())
    notifier = WebhookNotifier(webhook_config(endpoint))
    try:
        await notifier.backup_finished(finished)
    finally:
        await notifier.aclose()
    [request] = webhook_receiver.requests
    assert "X-Webhook-Token" not in request.headers
    assert "X-Backupmand-Signature" not in request.headers


async def test_webhook_retries_then_succeeds(
    webhook_receiver: WebhookReceiver, finished: Backup,
) -> None:
    webhook_receiver.fail(2, status=429, retry_after="0")
    endpoint = WebhookEndpoint(name="Flaky", url=webhook_receiver.url())
    notifier = WebhookNotifier(webhook_config(endpoint, attempts=3))
    try:
        await notifier.backup_finished(finished)
    finally:
        await notifier.aclose()
    requests = webhook_receiver.requests
    assert [r.answered for r in requests] == [429, 429, 200]
    assert len({r.headers["X-Backupmand-Delivery"] for r in requests}) == 1
    assert len({r.body for r in requests}) == 1


async def test_backoff_doubles_up_to_the_cap_and_honours_retry_after(
    webhook_receiver: WebhookReceiver,
) -> None:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    delivery = HttpDelivery(timeout=2, attempts=5, backoff=10, sleep=record)
    webhook_receiver.fail(None, status=503)
    try:
        with pytest.raises(DeliveryError, match=r"HTTP 503.*after 5 attempts"):
            await delivery.send("POST", webhook_receiver.url(), data=b"{}")
        assert waits == [10, 20, 30, 30]
        waits.clear()
        webhook_receiver.fail(1, status=429, retry_after="7")
        await delivery.send("POST", webhook_receiver.url(), data=b"{}")
        assert waits == [7]
    finally:
        await delivery.aclose()


async def test_webhook_failures_are_reported_and_do_not_stop_others(
    webhook_receiver: WebhookReceiver, closed_port_url: str, failed: Backup,
) -> None:
    good_receiver = WebhookReceiver()
    runner = await good_receiver.start()
    webhook_receiver.fail(None, status=500)
    endpoints = (
        WebhookEndpoint(name="Broken", url=webhook_receiver.url("/broken?key=hidden")),
        WebhookEndpoint(name="Nobody", url=closed_port_url),
        WebhookEndpoint(name="Good", url=good_receiver.url()),
    )
    notifier = WebhookNotifier(webhook_config(*endpoints, attempts=2))
    try:
        async with asyncio.timeout(10):
            with pytest.raises(NotifierError) as caught:
                await notifier.backup_finished(failed)
    finally:
        await notifier.aclose()
        await runner.cleanup()
    message = str(caught.value)
    assert message.startswith("webhook: 2 of 3 endpoints failed")
    assert "Broken: HTTP 500" in message and "after 2 attempts" in message
    assert "Nobody:" in message
    assert "Good" not in message and "hidden" not in message
    assert len(webhook_receiver.requests) == 2
    assert len(good_receiver.requests) == 1


async def test_webhook_client_errors_are_not_retried(
    webhook_receiver: WebhookReceiver, failed: Backup,
) -> None:
    webhook_receiver.fail(None, status=404)
    notifier = WebhookNotifier(webhook_config(WebhookEndpoint(name="Gone",
                                                              url=webhook_receiver.url())))
    try:
        with pytest.raises(NotifierError, match="Gone: HTTP 404"):
            await notifier.backup_finished(failed)
    finally:
        await notifier.aclose()
    assert len(webhook_receiver.requests) == 1


async def test_webhook_hanging_receiver_times_out(
    webhook_receiver: WebhookReceiver, failed: Backup,
) -> None:
    webhook_receiver.hang()
    notifier = WebhookNotifier(webhook_config(
        WebhookEndpoint(name="Slow", url=webhook_receiver.url()), timeout=0.2, attempts=2))
    try:
        async with asyncio.timeout(10):
            with pytest.raises(NotifierError, match=r"Slow: no answer within 0\.2 s"):
                await notifier.backup_finished(failed)
    finally:
        await notifier.aclose()
    assert len(webhook_receiver.requests) == 2


async def test_webhook_only_on_failure(
    webhook_receiver: WebhookReceiver, finished: Backup, failed: Backup,
) -> None:
    endpoints = (
        WebhookEndpoint(name="Always", url=webhook_receiver.url("/always")),
        WebhookEndpoint(name="Alarms", url=webhook_receiver.url("/alarms"),
                        only_on_failure=True),
    )
    notifier = WebhookNotifier(webhook_config(*endpoints))
    try:
        await notifier.backup_finished(finished)
        await notifier.backup_finished(failed)
    finally:
        await notifier.aclose()
    assert sorted(r.path for r in webhook_receiver.requests) == ["/alarms", "/always", "/always"]


async def test_webhook_health_connects_without_sending(
    webhook_receiver: WebhookReceiver, closed_port_url: str,
) -> None:
    up = WebhookNotifier(webhook_config(WebhookEndpoint(name="Up", url=webhook_receiver.url())))
    await up.health()
    assert webhook_receiver.requests == []
    down = WebhookNotifier(webhook_config(
        WebhookEndpoint(name="Up", url=webhook_receiver.url()),
        WebhookEndpoint(name="Down", url=closed_port_url)))
    with pytest.raises(HealthError, match=r"^Down: cannot connect"):
        await down.health()
    await up.aclose()
    await down.aclose()


# ---------------------------------------------------------------------------- ping


def ping_config(**values: object) -> PingConfig:
    return PingConfig.model_validate(
        {"enabled": True, "timeout": 2, "attempts": 2, "backoff": 0.001, **values})


async def test_pings_arrive_in_order(
    webhook_receiver: WebhookReceiver, catalog: Catalog,
) -> None:
    notifier = PingNotifier(ping_config(url=webhook_receiver.url("/ping/main")))
    try:
        good = await make_backup(catalog, status=Status.PENDING)
        await notifier.backup_started(good)
        await notifier.backup_finished(await make_backup(catalog))
        bad = await make_backup(catalog, status=Status.PENDING)
        await notifier.backup_started(bad)
        await notifier.backup_finished(
            await make_backup(catalog, status=Status.FAILED, failed_drive="S3 Drive"))
    finally:
        await notifier.aclose()
    assert [(r.method, r.path) for r in webhook_receiver.requests] == [
        ("GET", "/ping/main/start"), ("GET", "/ping/main"),
        ("GET", "/ping/main/start"), ("GET", "/ping/main/fail"),
    ]


async def test_ping_per_source_urls_and_post_summary(
    webhook_receiver: WebhookReceiver, catalog: Catalog,
) -> None:
    notifier = PingNotifier(ping_config(
        urls={"Main": webhook_receiver.url("/main-check")}, method="POST", send_start=False))
    try:
        main = await make_backup(catalog, label="Main", dump_error="pg_dump: boom")
        await notifier.backup_started(main)
        await notifier.backup_finished(main)
        await notifier.backup_finished(await make_backup(catalog, label="Unmapped"))
    finally:
        await notifier.aclose()
    [request] = webhook_receiver.requests
    assert (request.method, request.path) == ("POST", "/main-check/fail")
    assert b"pg_dump: boom" in request.body
    assert request.headers["Content-Type"].startswith("text/plain")


async def test_ping_failure_raises(
    webhook_receiver: WebhookReceiver, finished: Backup, closed_port_url: str,
) -> None:
    webhook_receiver.fail(None, status=502)
    notifier = PingNotifier(ping_config(url=webhook_receiver.url("/check")))
    try:
        with pytest.raises(NotifierError, match=r"ping \(success\) for Main: HTTP 502"):
            await notifier.backup_finished(finished)
    finally:
        await notifier.aclose()
    assert len(webhook_receiver.requests) == 2
    await PingNotifier(ping_config(url=webhook_receiver.url("/check"))).health()
    with pytest.raises(HealthError, match="cannot connect"):
        await PingNotifier(ping_config(url=closed_port_url)).health()
