"""Webhooks: one JSON report per backup, POSTed to every configured endpoint.

The body is ``{"Event": "backup_report", "Payload": <the API's backup object>}``.
Headers: ``Content-Type: application/json``, ``X-Webhook-Token`` (the endpoint's
``token``, when set), ``X-Backupmand-Signature: sha256=<hex>`` (HMAC-SHA256 of the
exact body bytes with the endpoint's ``secret``, when set), ``X-Backupmand-Event``
and ``X-Backupmand-Delivery`` (one id per report, the same on every retry, so a
receiver can drop duplicates).

Endpoints are served concurrently; one failing never stops the others. Once all are
done, a NotifierError names the endpoints that failed (the caller logs it).

health() sends nothing: a HEAD or an empty POST could trigger the receiver. It opens
(and closes) a TCP connection to every endpoint's host and port, which proves the
receiver is listening without telling it anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid

from ..config import WebhookEndpoint
from ..config import WebhookNotifier as WebhookConfig
from ..errors import HealthError, NotifierError
from ..models import Backup, Status
from .base import Notifier
from .http import DeliveryError, HttpDelivery, tcp_check

EVENT = "backup_report"
HEALTH_TIMEOUT = 5.0


def report_body(backup: Backup) -> bytes:
    """The exact bytes POSTed (and signed) for a backup."""
    return json.dumps(
        {"Event": EVENT, "Payload": backup.to_api()}, ensure_ascii=False, separators=(",", ":"),
    ).encode("utf-8")


def signature(secret: str, body: bytes) -> str:
    """The X-Backupmand-Signature value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class WebhookNotifier(Notifier):
    name = "webhook"

    def __init__(self, config: WebhookConfig, *, delivery: HttpDelivery | None = None) -> None:
        self.config = config
        self.delivery = delivery or HttpDelivery(
            timeout=config.timeout, attempts=config.attempts, backoff=config.backoff)

    def headers(self, endpoint: WebhookEndpoint, body: bytes, delivery_id: str) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "X-Backupmand-Event": EVENT,
            "X-Backupmand-Delivery": delivery_id,
        }
        if endpoint.token is not None and endpoint.token.get_secret_value():
            headers["X-Webhook-Token"] = endpoint.token.get_secret_value()
        if endpoint.secret is not None and endpoint.secret.get_secret_value():
            headers["X-Backupmand-Signature"] = signature(endpoint.secret.get_secret_value(), body)
        return headers

    async def backup_finished(self, backup: Backup) -> None:
        endpoints = [
            endpoint for endpoint in self.config.endpoints
            if backup.status is Status.FAILED or not endpoint.only_on_failure
        ]
        if not endpoints:
            return
        body = report_body(backup)
        delivery_id = str(uuid.uuid4())

        async def deliver(endpoint: WebhookEndpoint) -> str | None:
            try:
                await self.delivery.send(
                    "POST", endpoint.url, data=body,
                    headers=self.headers(endpoint, body, delivery_id))
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
