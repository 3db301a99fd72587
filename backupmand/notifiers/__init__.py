"""Notification channels: one module per channel, each implementing notifiers.base.Notifier."""

from __future__ import annotations

from ..config import Settings
from .base import Notifier


def build_notifiers(settings: Settings) -> list[Notifier]:
    """The enabled channels (each module imported only when its channel is enabled)."""
    notifiers: list[Notifier] = []
    config = settings.notifiers
    if config.mail.enabled:
        from .mail import MailNotifier

        notifiers.append(MailNotifier(config.mail))
    if config.webhook.enabled:
        from .webhook import WebhookNotifier

        notifiers.append(WebhookNotifier(config.webhook))
    if config.ping.enabled:
        from .ping import PingNotifier

        notifiers.append(PingNotifier(config.ping))
    return notifiers


__all__ = ["Notifier", "build_notifiers"]
