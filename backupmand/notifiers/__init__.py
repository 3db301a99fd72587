"""Notification channels: one module per channel, each implementing notifiers.base.Notifier."""

from __future__ import annotations

from .. import logs
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
    if config.apprise.enabled:
        from .apprise import AppriseNotifier

        channel = AppriseNotifier(config.apprise, app_url=settings.http.app_url,
                                  host=settings.host_name)
        # Beyond the whole URLs (registered with the settings), the parts of them that
        # Apprise or an error message may quote on their own.
        logs.register_secrets(channel.secrets())
        notifiers.append(channel)
    return notifiers


__all__ = ["Notifier", "build_notifiers"]
