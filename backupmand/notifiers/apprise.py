"""Apprise: one short message per event to every channel Apprise knows (Slack,
Telegram, Discord, Teams, ntfy, Matrix, Gotify, mail, ...), from ``notifiers.apprise``.

Events (``events``, default ``backup_failed``, ``verify_failed``, ``backup_suspect``):
``backup_failed`` / ``backup_finished`` when a backup settles, ``verify_failed`` when a
restore drill fails, ``backup_suspect`` when a finished backup is flagged, and
``schedule_failed`` when a scheduled tick cannot start. Each message says the label,
what happened, the reason, and links to the status page (``http.app_url`` + ``/``).

Sending: Apprise and the ``requests`` library under it block, so every URL is served
in a worker thread of its own, with a fresh Apprise object (nothing shared between
threads), bounded by ``timeout`` (Apprise's own deadline, and an asyncio one a little
later in case a thread hangs anyway). One channel failing never stops the others;
once all are done a NotifierError names the failed ones (the caller logs it).

The URLs carry credentials in every part (``tgram://BOT_TOKEN/CHAT``,
``ntfy://user:password@host/topic``), so:

- a channel is named by its position and service (``#2 ntfy``), never its URL;
- Apprise's warning for a failed channel is quoted with every part of every URL
  replaced by ``***`` (its ntfy warning names the topic, for one);
- Apprise's own log (the stdlib logger ``apprise``) does not propagate to the
  process's log: its debug lines print whole URLs;
- ``secrets()`` lists the URLs and their credential-like parts for log redaction.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from collections.abc import Iterable
from urllib.parse import unquote

import apprise
import structlog

from .. import logs
from ..config import AppriseNotifier as AppriseConfig
from ..errors import ConfigError, NotifierError
from ..models import Backup, Status, rfc3339
from .base import Notifier

log = structlog.get_logger("backupmand.notifiers.apprise")

# Apprise logs whole URLs at debug level: keep its records out of any handler the
# process (or a library) may install on the root logger. The NullHandler stops
# Python's last-resort handler from printing its warnings to stderr instead.
_APPRISE_LOG = logging.getLogger("apprise")
_APPRISE_LOG.propagate = False
if not any(isinstance(handler, logging.NullHandler) for handler in _APPRISE_LOG.handlers):
    _APPRISE_LOG.addHandler(logging.NullHandler())

#: Seconds the event loop waits beyond Apprise's own deadline before giving up on a thread.
THREAD_GRACE = 5.0
#: A reason longer than this is cut: the message stays readable on a phone.
MAX_REASON = 400
#: Parts of a URL at least this long are registered for redaction of every log line;
#: shorter ones ("api", "json") would blank out ordinary words.
MIN_GLOBAL_SECRET = 8
#: Parts of a URL at least this long are blanked in Apprise's warnings quoted in errors.
MIN_LOCAL_SECRET = 3
_HOST_NAME = re.compile(r"^(?:[A-Za-z0-9-]+\.)+[A-Za-z0-9-]+$|^localhost$|^\d+$")


class AppriseNotifier(Notifier):
    name = "apprise"

    def __init__(self, config: AppriseConfig, *, app_url: str, host: str) -> None:
        self.config = config
        self.status_page = app_url.rstrip("/") + "/"
        self.host = host
        self._urls = tuple(url.get_secret_value() for url in config.urls)
        problems = [
            f"notifiers.apprise.urls[{index}]: Apprise does not recognise this URL (an unknown "
            "service, or a part the service needs is missing)"
            for index, url in enumerate(self._urls) if not apprise.Apprise().add(url)
        ]
        if problems:
            raise ConfigError(problems)
        self._scrub_parts = sorted(
            {part for url in self._urls for part in url_parts(url) if len(part) >= MIN_LOCAL_SECRET},
            key=len, reverse=True)

    def secrets(self) -> list[str]:
        """The URLs, and those of their parts that can carry a credential, for redaction."""
        found: list[str] = []
        for url in self._urls:
            found.append(url)
            found += [part for part in url_parts(url)
                      if len(part) >= MIN_GLOBAL_SECRET and not _HOST_NAME.match(part)]
        return sorted(set(found), key=len, reverse=True)

    # ------------------------------------------------------------------ the events

    async def backup_finished(self, backup: Backup) -> None:
        if backup.status is Status.FAILED:
            await self._send("backup_failed", apprise.NotifyType.FAILURE,
                             f"✘ Backup of {backup.label} failed on {self.host}",
                             [f"The backup of {backup.label} failed on {self.host}.",
                              f"Reason: {_reason(backup.error)}",
                              *self._backup_lines(backup)])
        elif backup.status is Status.FINISHED:
            drives = sum(1 for record in backup.drive_files if record.status is Status.FINISHED)
            await self._send("backup_finished", apprise.NotifyType.SUCCESS,
                             f"✔ Backup of {backup.label} finished on {self.host}",
                             [f"The backup of {backup.label} finished on {self.host}: "
                              f"{_size(backup.size)} in {_duration(backup)}, on {drives} "
                              f"drive{'s' if drives != 1 else ''}.",
                              *self._backup_lines(backup)])

    async def verify_finished(self, backup: Backup) -> None:
        if backup.verification != "failed":
            return
        await self._send("verify_failed", apprise.NotifyType.FAILURE,
                         f"✘ Restore drill of {backup.label} failed on {self.host}",
                         [f"The restore drill of a backup of {backup.label} failed on "
                          f"{self.host}: it may not restore.",
                          f"Reason: {_reason(backup.verify_error)}",
                          *self._backup_lines(backup)])

    async def backup_suspect(self, backup: Backup) -> None:
        await self._send("backup_suspect", apprise.NotifyType.WARNING,
                         f"⚠ Backup of {backup.label} looks suspicious on {self.host}",
                         [f"The backup of {backup.label} on {self.host} finished but looks "
                          "suspicious; check the source before relying on it.",
                          f"Reason: {_reason(backup.suspect_reason)}",
                          *self._backup_lines(backup)])

    async def schedule_failed(self, job: str, reason: str) -> None:
        await self._send("schedule_failed", apprise.NotifyType.FAILURE,
                         f"✘ Scheduled {job} could not start on {self.host}",
                         [f"The schedule's {job} could not start its work on {self.host}.",
                          f"Reason: {_reason(reason)}",
                          f"Status page: {self.status_page}"])

    def _backup_lines(self, backup: Backup) -> list[str]:
        return [f"Backup {backup.id}, started {rfc3339(backup.created_at)}.",
                f"Status page: {self.status_page}"]

    # ------------------------------------------------------------------ sending

    async def _send(self, event: str, kind: apprise.NotifyType, title: str,
                    lines: Iterable[str]) -> None:
        if event not in self.config.events:
            return
        title = logs.redact_text(title)
        body = logs.redact_text("\n".join(lines))
        try:
            async with asyncio.timeout(self.config.timeout + THREAD_GRACE):
                outcomes = await asyncio.gather(*(
                    asyncio.to_thread(self._deliver, index, title, body, kind)
                    for index in range(len(self._urls))))
        except TimeoutError:
            raise NotifierError(
                f"apprise: {event}: no answer within {self.config.timeout:g} s") from None
        problems = [problem for problem in outcomes if problem is not None]
        if problems:
            raise NotifierError(
                f"apprise: {event}: {len(problems)} of {len(outcomes)} channels failed: "
                + "; ".join(problems))
        log.debug("notify.sent", channel=self.name, notify_event=event, channels=len(outcomes))

    def _deliver(self, index: int, title: str, body: str, kind: apprise.NotifyType) -> str | None:
        """Send to URL ``index`` (in a worker thread); None, or why it failed (URL-free)."""
        channel = apprise.Apprise()
        if not channel.add(self._urls[index]):
            return f"#{index + 1}: Apprise refused the URL"
        result = channel.notify(body=body, title=title, notify_type=kind,
                                body_format=apprise.NotifyFormat.TEXT,
                                timeout=self.config.timeout)
        try:
            if result:
                return None
            services = [service.name for service in result.results]
            warnings = [entry.message for entry in result.logs()
                        if entry.level in ("WARNING", "ERROR", "CRITICAL")]
            status = result.status.name.lower()
            if status == "timeout":
                reason = f"no answer within {self.config.timeout:g} s"
            else:
                reason = warnings[-1] if warnings else status
            service = services[0] if services else "?"
            return f"#{index + 1} {service}: {self.scrub(reason)}"
        finally:
            result.close()

    def scrub(self, text: str) -> str:
        """``text`` with every URL, and every part of one, replaced by ``***``."""
        for url in self._urls:
            text = text.replace(url, "***")
        for part in self._scrub_parts:
            text = text.replace(part, "***")
        return logs.redact_text(text)


def url_parts(url: str) -> list[str]:
    """The pieces of an Apprise URL that may carry a credential: everything between its
    delimiters after the scheme (user, password, host, path segments, query values,
    fragment), as written and percent-decoded."""
    _scheme, _, rest = url.partition("://")
    rest, _, fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    pieces = re.split(r"[/:@]", rest)
    pieces += [pair.partition("=")[2] for pair in query.split("&")]
    pieces.append(fragment)
    found: list[str] = []
    for piece in pieces:
        for variant in (piece, unquote(piece)):
            if variant and variant not in found:
                found.append(variant)
    return found


def _reason(text: str | None) -> str:
    if not text or not text.strip():
        return "none recorded"
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def _size(size: int | None) -> str:
    if size is None:
        return "an unknown size"
    if size < 1024:
        return f"{size} bytes"
    amount = size / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if amount < 1024:
            return f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"


def _duration(backup: Backup) -> str:
    end = backup.finished_at or backup.updated_at
    if end is None:
        return "an unknown time"
    seconds = max(0, round((end - backup.created_at) / dt.timedelta(seconds=1)))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"
