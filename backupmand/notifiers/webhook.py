"""Webhooks: one JSON report per event, POSTed to every configured endpoint.

The body is ``{"Event": <event>, "Payload": ...}``, every string in it redacted:

- ``backup_report``: a backup's outcome; the payload is the API's backup object;
- ``verify_failed``: a restore drill failed (``Verification``, ``VerifyError`` in the
  backup object);
- ``backup_suspect``: a finished backup was flagged suspect (``SuspectReason``);
- ``schedule_failed``: a scheduled tick could not start its work; the payload is
  ``{"Schedule": "backup_job" | "verify_job", "Error": ..., "Host": ...}``.

An endpoint with ``only_on_failure`` gets the failures only (a finished backup's report
is not a failure; the other three events are). Headers:

- ``Content-Type: application/json``, ``X-Backupmand-Event`` (the event);
- ``webhook-id`` (one id per report, the same on every retry, so that a receiver can
  drop duplicates; also sent as ``X-Backupmand-Delivery``) and ``webhook-timestamp``
  (Unix seconds of this attempt);
- with the endpoint's ``secret``: ``webhook-signature: v1,<base64>``, the Standard
  Webhooks signature (HMAC-SHA256 of ``<webhook-id>.<webhook-timestamp>.<body>``), so a
  receiver that checks the timestamp and remembers ids refuses a replayed or altered
  request; and, for receivers written for backupmand 1.0, ``X-Backupmand-Signature:
  sha256=<hex>`` (HMAC-SHA256 of the body alone: it does not stop replays);
- with the endpoint's ``token``: ``X-Webhook-Token``.

A ``secret`` written ``whsec_<base64>`` (the Standard Webhooks form) signs with the
decoded bytes, as the Standard Webhooks libraries expect; any other secret signs with
its UTF-8 bytes (give those libraries the bytes). docs/notifications.md shows how a
receiver verifies.

Endpoints are served concurrently; one failing never stops the others. Once all are
done, a NotifierError names the endpoints that failed (the caller logs it).

health() sends nothing: a HEAD or an empty POST could trigger the receiver. It opens
(and closes) a TCP connection to every endpoint's host and port, which proves the
receiver is listening without telling it anything.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..config import WebhookEndpoint
from ..config import WebhookNotifier as WebhookConfig
from ..errors import HealthError, NotifierError
from ..logs import redact
from ..models import Backup, Status
from .base import Notifier
from .http import DeliveryError, HttpDelivery, tcp_check

EVENT = "backup_report"
HEALTH_TIMEOUT = 5.0
#: The Standard Webhooks form of a secret: this prefix, then the key in base64.
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix naming the format, not a secret


def report_body(backup: Backup, event: str = EVENT) -> bytes:
    """The exact bytes POSTed (and signed) for a backup."""
    return event_body(event, backup.to_api())


def event_body(event: str, payload: Any) -> bytes:
    return json.dumps(
        {"Event": event, "Payload": redact(payload)}, ensure_ascii=False, separators=(",", ":"),
    ).encode("utf-8")


def signing_key(secret: str) -> bytes:
    """The HMAC key of an endpoint's ``secret``: ``whsec_<base64>`` decoded, else its
    UTF-8 bytes. ValueError for a ``whsec_`` secret that is not base64."""
    if secret.startswith(SECRET_PREFIX):
        encoded = secret[len(SECRET_PREFIX):]
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except binascii.Error:
            raise ValueError("a secret starting with whsec_ must continue in base64") from None
        if not key:
            raise ValueError("a secret starting with whsec_ must carry a key")
        return key
    return secret.encode("utf-8")


def signature(secret: str, body: bytes) -> str:
    """The X-Backupmand-Signature value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def standard_signature(key: bytes, delivery_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature value: ``v1,`` and the base64 HMAC-SHA256 of
    ``<delivery_id>.<timestamp>.<body>``."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class WebhookNotifier(Notifier):
    name = "webhook"

    def __init__(self, config: WebhookConfig, *, delivery: HttpDelivery | None = None) -> None:
        self.config = config
        self.delivery = delivery or HttpDelivery(
            timeout=config.timeout, attempts=config.attempts, backoff=config.backoff)

    def headers(
        self, endpoint: WebhookEndpoint, body: bytes, delivery_id: str, timestamp: int | None = None,
        event: str = EVENT,
    ) -> dict[str, str]:
        """The headers of one attempt (``timestamp``: now), signed for that moment."""
        moment = int(time.time()) if timestamp is None else timestamp
        headers = {
            "Content-Type": "application/json",
            "X-Backupmand-Event": event,
            "X-Backupmand-Delivery": delivery_id,
            "webhook-id": delivery_id,
            "webhook-timestamp": str(moment),
        }
        if endpoint.token is not None and endpoint.token.get_secret_value():
            headers["X-Webhook-Token"] = endpoint.token.get_secret_value()
        if endpoint.secret is not None and endpoint.secret.get_secret_value():
            secret = endpoint.secret.get_secret_value()
            headers["webhook-signature"] = standard_signature(
                signing_key(secret), delivery_id, moment, body)
            headers["X-Backupmand-Signature"] = signature(secret, body)
        return headers

    async def backup_finished(self, backup: Backup) -> None:
        await self._post(EVENT, backup.to_api(), failure=backup.status is Status.FAILED)

    async def verify_finished(self, backup: Backup) -> None:
        if backup.verification == "failed":
            await self._post("verify_failed", backup.to_api(), failure=True)

    async def backup_suspect(self, backup: Backup) -> None:
        await self._post("backup_suspect", backup.to_api(), failure=True)

    async def schedule_failed(self, job: str, reason: str) -> None:
        import socket

        await self._post("schedule_failed", {"Schedule": job, "Error": reason,
                                             "Host": socket.gethostname()}, failure=True)

    async def _post(self, event: str, payload: Any, *, failure: bool) -> None:
        endpoints = [
            endpoint for endpoint in self.config.endpoints
            if failure or not endpoint.only_on_failure
        ]
        if not endpoints:
            return
        body = event_body(event, payload)
        delivery_id = str(uuid.uuid4())

        def attempt_headers(endpoint: WebhookEndpoint) -> Callable[[], dict[str, str]]:
            # Signed again for every attempt: a retry carries its own timestamp, so that
            # a receiver's tolerance window (minutes) never refuses a late retry.
            return lambda: self.headers(endpoint, body, delivery_id, event=event)

        async def deliver(endpoint: WebhookEndpoint) -> str | None:
            try:
                await self.delivery.send(
                    "POST", endpoint.url, data=body, headers=attempt_headers(endpoint))
            except DeliveryError as error:
                return f"{endpoint.name}: {error}"
            return None

        problems = [p for p in await asyncio.gather(*map(deliver, endpoints)) if p is not None]
        if problems:
            raise NotifierError(
                f"webhook: {len(problems)} of {len(endpoints)} endpoints failed: "
                + "; ".join(problems))

    async def health(self) -> None:
        async def check(endpoint: WebhookEndpoint) -> str | None:
            try:
                async with asyncio.timeout(min(self.config.timeout, HEALTH_TIMEOUT)):
                    await tcp_check(endpoint.url)
            except (OSError, TimeoutError, ValueError) as error:
                reason = "timed out" if isinstance(error, TimeoutError) else (
                    getattr(error, "strerror", None) or str(error) or type(error).__name__)
                return f"{endpoint.name}: cannot connect ({reason})"
            return None

        problems = [p for p in await asyncio.gather(*map(check, self.config.endpoints)) if p]
        if problems:
            raise HealthError("; ".join(problems))

    async def aclose(self) -> None:
        await self.delivery.aclose()
