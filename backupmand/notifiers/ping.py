"""Dead-man pings: tell a monitor (healthchecks.io, Uptime Kuma push, ...) that
backups run, so that it can raise the alarm when they stop or fail.

For a backup of source ``label`` the base URL is ``urls[label]``, else ``url``; a
source with neither is not pinged. The channel requests ``base + start_suffix`` when
a backup begins (unless ``send_start`` is false), ``base + success_suffix`` when it
finished and ``base + fail_suffix`` when it failed — and also when a restore drill of
it failed, when it was flagged suspect, and (for every source) when a scheduled tick
could not start: each is a reason to raise the alarm. With ``method: POST`` the request
carries a short plain-text summary (healthchecks.io shows it in the check's log).

Each ping has a short timeout and a few retries; a ping that still fails raises
NotifierError for the caller to log. health() sends nothing (a ping *is* the
signal): it opens a TCP connection to each monitor's host and port.
"""

from __future__ import annotations

import asyncio

from ..config import PingNotifier as PingConfig
from ..errors import HealthError, NotifierError
from ..logs import redact_text
from ..models import Backup, Status
from .base import Notifier
from .http import DeliveryError, HttpDelivery, tcp_check

HEALTH_TIMEOUT = 5.0
SUMMARY_LIMIT = 10_000


class PingNotifier(Notifier):
    name = "ping"

    def __init__(self, config: PingConfig, *, delivery: HttpDelivery | None = None) -> None:
        self.config = config
        self.delivery = delivery or HttpDelivery(
            timeout=config.timeout, attempts=config.attempts, backoff=config.backoff)

    def base_url(self, label: str) -> str | None:
        return self.config.urls.get(label, self.config.url)

    async def backup_started(self, backup: Backup) -> None:
        if self.config.send_start:
            await self._ping(backup, self.config.start_suffix, "start")

    async def backup_finished(self, backup: Backup) -> None:
        if backup.status is Status.FAILED:
            await self._ping(backup, self.config.fail_suffix, "fail")
        else:
            await self._ping(backup, self.config.success_suffix, "success")

    async def verify_finished(self, backup: Backup) -> None:
        if backup.verification == "failed":
            await self._ping(backup, self.config.fail_suffix, "verify failed",
                             f"restore drill failed: {backup.verify_error}")

    async def backup_suspect(self, backup: Backup) -> None:
        await self._ping(backup, self.config.fail_suffix, "suspect",
                         f"suspect backup: {backup.suspect_reason}")

    async def schedule_failed(self, job: str, reason: str) -> None:
        labels = [*self.config.urls] or ([""] if self.config.url else [])
        for label in labels:
            base = self.config.urls.get(label, self.config.url)
            if base is not None:
                await self._send(base + self.config.fail_suffix, "schedule failed", label,
                                 f"backupmand: the scheduled {job} could not start: {reason}")

    async def _ping(self, backup: Backup, suffix: str, kind: str, note: str = "") -> None:
        base = self.base_url(backup.label)
        if base is None:
            return
        text = summary(backup) + (f"\n{redact_text(note)}" if note else "")
        await self._send(base + suffix, kind, backup.label, text)

    async def _send(self, url: str, kind: str, label: str, text: str) -> None:
        data: bytes | None = None
        headers: dict[str, str] = {}
        if self.config.method == "POST":
            data = redact_text(text)[:SUMMARY_LIMIT].encode("utf-8")
            headers["Content-Type"] = "text/plain; charset=utf-8"
        try:
            await self.delivery.send(self.config.method, url, data=data, headers=headers)
        except DeliveryError as error:
            raise NotifierError(f"ping ({kind}) for {label or 'every source'}: {error}") from None

    async def health(self) -> None:
        bases = dict.fromkeys([*self.config.urls.values(), *filter(None, [self.config.url])])

        async def check(url: str) -> str | None:
            try:
                async with asyncio.timeout(min(self.config.timeout, HEALTH_TIMEOUT)):
                    await tcp_check(url)
            except (OSError, TimeoutError, ValueError) as error:
                reason = "timed out" if isinstance(error, TimeoutError) else (
                    getattr(error, "strerror", None) or str(error) or type(error).__name__)
                labels = [label for label, value in self.config.urls.items() if value == url]
                return f"{', '.join(labels) or 'url'}: cannot connect ({reason})"
            return None

        problems = [p for p in await asyncio.gather(*map(check, bases)) if p]
        if problems:
            raise HealthError("; ".join(problems))

    async def aclose(self) -> None:
        await self.delivery.aclose()


def summary(backup: Backup) -> str:
    """A few lines about the backup, for monitors that keep a request body."""
    lines = [f"backupmand: {backup.label}: {backup.status.value}", f"id: {backup.id}"]
    if backup.size is not None:
        lines.append(f"size: {backup.size} bytes")
    if backup.error:
        lines.append(f"error: {backup.error}")
    for drive_file in backup.drive_files:
        line = f"drive {drive_file.drive}: {drive_file.status.value}"
        if drive_file.error:
            line += f": {drive_file.error}"
        lines.append(line)
    return redact_text("\n".join(lines))[:SUMMARY_LIMIT]
