"""Webhook deliveries carry Standard Webhooks signatures over id, time and body: the
reference library and the receiver in docs/notifications.md accept them, and refuse the
same request altered or replayed."""

from __future__ import annotations

import base64
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import standardwebhooks

from backupmand.catalog import Catalog
from backupmand.config import WebhookEndpoint
from backupmand.config import WebhookNotifier as WebhookConfig
from backupmand.models import Backup, Status
from backupmand.notifiers.webhook import WebhookNotifier
from tests.factories import make_backup
from tests.helpers import ROOT
from tests.servers.webhook import ReceivedRequest, WebhookReceiver

Verify = Callable[..., dict[str, Any]]


@pytest.fixture(scope="module")
def documented_verify() -> Verify:
    """The receiver's `verify` exactly as docs/notifications.md prints it."""
    text = (ROOT / "docs" / "notifications.md").read_text()
    section = text[text.index("### Verifying a delivery"):]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None
    namespace: dict[str, Any] = {}
    exec(compile(code.group(1), "docs/notifications.md", "exec"), namespace)  # the doc, run as is
    return namespace["verify"]  # type: ignore[no-any-return]


@pytest.fixture
async def backup() -> AsyncIterator[Backup]:
    async with Catalog.open("memory") as catalog:
        yield await make_backup(catalog, label="Main", status=Status.FAILED,
                                failed_drive="S3 Drive")


async def deliver(receiver: WebhookReceiver, backup: Backup, secret: str | None,
                  **config: Any) -> list[ReceivedRequest]:
    endpoint = WebhookEndpoint(name="hook", url=receiver.url(), secret=secret,
                               token="a-token-0123456789")
    notifier = WebhookNotifier(WebhookConfig(enabled=True, endpoints=(endpoint,), backoff=0,
                                             **config))
    try:
        await notifier.backup_finished(backup)
    finally:
        await notifier.aclose()
    return receiver.requests


def headers_of(request: ReceivedRequest) -> dict[str, str]:
    return {name: request.headers[name] for name in request.headers}


async def test_a_delivery_verifies_and_its_alterations_and_replays_do_not(
    webhook_receiver: WebhookReceiver, backup: Backup, documented_verify: Verify,
):
    secret = "plain-webhook-secret-0123456789"
    [request] = await deliver(webhook_receiver, backup, secret)
    headers, body, key = headers_of(request), request.body, secret.encode()
    assert re.fullmatch(r"v1,[A-Za-z0-9+/]{43}=", headers["webhook-signature"])
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert headers["webhook-id"] == headers["X-Backupmand-Delivery"]
    assert headers["X-Webhook-Token"] == "a-token-0123456789"

    seen: set[str] = set()
    report = documented_verify(key, headers, body, seen)
    assert report["Payload"]["Id"] == backup.id
    standardwebhooks.Webhook(key).verify(body, headers)  # the reference implementation agrees

    def refused(changed_headers: dict[str, str], changed_body: bytes, **options: Any) -> str:
        with pytest.raises(ValueError) as caught:
            documented_verify(key, changed_headers, changed_body, set(), **options)
        with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
            if "now" in options:  # the library reads the clock itself: shift the stamp
                moved = {**changed_headers, "webhook-timestamp": str(
                    int(changed_headers["webhook-timestamp"]) - int(options["now"] - time.time()))}
                standardwebhooks.Webhook(key).verify(changed_body, moved)
            else:
                standardwebhooks.Webhook(key).verify(changed_body, changed_headers)
        return str(caught.value)

    assert refused(headers, body.replace(b'"failed"', b'"finished"', 1)) == "wrong signature"
    assert refused({**headers, "webhook-id": "another-id"}, body) == "wrong signature"
    later = str(int(headers["webhook-timestamp"]) + 60)
    assert refused({**headers, "webhook-timestamp": later}, body) == "wrong signature"
    assert refused(headers, body, now=time.time() + 600) == "too old or too new: a replay?"
    unsigned = {name: value for name, value in headers.items() if name != "webhook-signature"}
    with pytest.raises(ValueError, match="wrong signature"):
        documented_verify(key, unsigned, body, set())
    with pytest.raises(ValueError, match="wrong signature"):
        documented_verify(b"another-secret", headers, body, set())
    # The same request again, at once: its id was processed already.
    with pytest.raises(ValueError, match="already processed"):
        documented_verify(key, headers, body, seen)


async def test_whsec_secrets_sign_with_their_decoded_key(
    webhook_receiver: WebhookReceiver, backup: Backup, documented_verify: Verify,
):
    raw_key = secrets.token_bytes(32)
    secret = "whsec_" + base64.b64encode(raw_key).decode()
    [request] = await deliver(webhook_receiver, backup, secret)
    headers = headers_of(request)
    standardwebhooks.Webhook(secret).verify(request.body, headers)
    documented_verify(raw_key, headers, request.body, set())


async def test_every_retry_is_signed_for_its_own_time_with_the_same_id(
    webhook_receiver: WebhookReceiver, backup: Backup, documented_verify: Verify,
):
    webhook_receiver.fail(1, status=503)
    secret = "retry-webhook-secret-0123456789"
    first, second = await deliver(webhook_receiver, backup, secret, attempts=2)
    assert (first.answered, second.answered) == (503, 200)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    for request in (first, second):
        documented_verify(secret.encode(), headers_of(request), request.body, set())
        standardwebhooks.Webhook(secret.encode()).verify(request.body, headers_of(request))


async def test_without_a_secret_nothing_is_signed(webhook_receiver: WebhookReceiver, backup: Backup):
    [request] = await deliver(webhook_receiver, backup, None)
    assert "webhook-signature" not in request.headers
    assert "X-Backupmand-Signature" not in request.headers
    assert request.headers["webhook-id"] and request.headers["webhook-timestamp"].isdigit()


def test_the_documented_receiver_is_standard_library_only():
    text = (ROOT / "docs" / "notifications.md").read_text()
    code = re.search(r"### Verifying a delivery.*?```python\n(.*?)```", text, re.DOTALL)
    assert code is not None
    imports = set(re.findall(r"^import (\w+)", code.group(1), re.MULTILINE))
    assert imports == {"base64", "hashlib", "hmac", "json", "time"}
