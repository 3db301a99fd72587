"""Mail: one report per backup, over SMTP (aiosmtplib).

``smtp_crypto`` decides the transport, and nothing else does:

- ``ssl``: implicit TLS from the first byte (default port 465);
- ``tls`` / ``starttls``: plain connection upgraded with STARTTLS, which is required
  (default port 587): a server that does not offer it is an error, never a fallback;
- ``none``: plain text all the way (default port 25), even when the server offers
  STARTTLS (aiosmtplib would upgrade on its own; here it is told not to).

Server certificates are verified against the system's CAs, plus ``ca_file`` when
set. The client logs in when ``smtp_user`` is set. The report is plain text with an
HTML alternative (every value escaped); its subject tells success or failure at a
glance. health() connects, says EHLO (and STARTTLS), and QUITs: nothing is sent and
no login is attempted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import html
import socket
from email.message import EmailMessage

import aiosmtplib
import structlog

from ..config import MailNotifier as MailConfig
from ..errors import HealthError, NotifierError
from ..logs import redact_text
from ..models import Backup, DriveFile, Status, rfc3339
from .base import Notifier

log = structlog.get_logger("backupmand.notifiers.mail")

DEFAULT_PORTS = {"ssl": 465, "tls": 587, "starttls": 587, "none": 25}
HEALTH_TIMEOUT = 10.0


class MailNotifier(Notifier):
    name = "mail"

    def __init__(self, config: MailConfig, *, hostname: str | None = None) -> None:
        self.config = config
        self.hostname = hostname or socket.gethostname() or "localhost"
        self.port = config.smtp_port or DEFAULT_PORTS[config.smtp_crypto]
        self.sender = config.sender or f"backupmand@{self.hostname}"
        if config.smtp_crypto == "none" and config.smtp_user:
            log.warning("mail.plaintext_login", smtp_host=config.smtp_host,
                        hint="smtp_crypto is none: the SMTP password would travel unencrypted")

    # ------------------------------------------------------------------ transport

    def _client(self, timeout: float) -> aiosmtplib.SMTP:
        crypto = self.config.smtp_crypto
        return aiosmtplib.SMTP(
            hostname=self.config.smtp_host,
            port=self.port,
            use_tls=crypto == "ssl",
            start_tls=crypto in ("tls", "starttls"),  # False for none and ssl: never implicit
            validate_certs=True,
            cert_bundle=str(self.config.ca_file) if self.config.ca_file else None,
            timeout=timeout,
        )

    def _secrets(self) -> list[str]:
        password = self.config.smtp_password
        return [password.get_secret_value()] if password and password.get_secret_value() else []

    def _reason(self, error: BaseException) -> str:
        text = redact_text(str(error) or type(error).__name__)
        for secret in self._secrets():
            text = text.replace(secret, "********")
        if "CERTIFICATE_VERIFY_FAILED" in text and self.config.ca_file is None:
            text += " (a server with a private CA needs ca_file)"
        return text

    async def backup_finished(self, backup: Backup) -> None:
        if self.config.only_on_failure and backup.status is not Status.FAILED:
            return
        await self._send(self.compose(backup))

    async def verify_finished(self, backup: Backup) -> None:
        if backup.verification == "failed":
            await self._send(self.compose(
                backup, subject=f"[backupmand] ✘ RESTORE DRILL FAILED: {backup.label} on "
                                f"{self.hostname}",
                lead=f"The restore drill of a backup of {backup.label} failed: the backup did "
                     "not restore as it was dumped."))

    async def backup_suspect(self, backup: Backup) -> None:
        await self._send(self.compose(
            backup, subject=f"[backupmand] ⚠ SUSPECT backup: {backup.label} on {self.hostname}",
            lead=f"A backup of {backup.label} finished much smaller than the ones before it: "
                 f"{backup.suspect_reason}."))

    async def schedule_failed(self, job: str, reason: str) -> None:
        message = EmailMessage()
        self._address(message, f"[backupmand] ✘ schedule failed: {job} on {self.hostname}")
        message.set_content(redact_text(
            f"The scheduled {job} on {self.hostname} could not start its work:\n\n"
            f"  {reason}\n\nThe next tick tries again; the daemon's log (journalctl -u "
            "backupmand -p err) says more.\n\n-- \nbackupmand\n"))
        await self._send(message)

    async def _send(self, message: EmailMessage) -> None:
        smtp = self._client(self.config.timeout)
        where = f"{self.config.smtp_host}:{self.port}"
        try:
            await smtp.connect()
            try:
                if self.config.smtp_user:
                    password = self.config.smtp_password
                    await smtp.login(
                        self.config.smtp_user, password.get_secret_value() if password else "")
                refused, _ = await smtp.send_message(message)
            finally:
                await _quit(smtp)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            raise NotifierError(f"mail via {where}: {self._reason(error)}") from None
        if refused:
            raise NotifierError(
                f"mail via {where}: refused recipients: "
                + ", ".join(f"{address} ({response.code} {response.message})"
                            for address, response in refused.items()))

    async def health(self) -> None:
        smtp = self._client(min(self.config.timeout, HEALTH_TIMEOUT))
        where = f"{self.config.smtp_host}:{self.port}"
        try:
            async with asyncio.timeout(min(self.config.timeout, HEALTH_TIMEOUT) * 2):
                await smtp.connect()  # greeting, EHLO, and STARTTLS when configured
                await _quit(smtp)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            reason = "timed out" if isinstance(error, TimeoutError) else self._reason(error)
            raise HealthError(f"SMTP server {where}: {reason}") from None
        finally:
            smtp.close()

    # ------------------------------------------------------------------ the report

    def subject(self, backup: Backup) -> str:
        if backup.status is Status.FAILED:
            return f"[backupmand] ✘ FAILED: {backup.label} on {self.hostname}"
        if backup.status is Status.FINISHED:
            return f"[backupmand] ✔ finished: {backup.label} on {self.hostname}"
        return f"[backupmand] {backup.status.value}: {backup.label} on {self.hostname}"

    def compose(self, backup: Backup, *, subject: str | None = None,
                lead: str | None = None) -> EmailMessage:
        """The report for one backup: plain text with an HTML alternative."""
        message = EmailMessage()
        self._address(message, subject or self.subject(backup))
        message["X-Backupmand-Status"] = backup.status.value
        message["X-Backupmand-Backup-Id"] = backup.id
        facts = report_facts(backup, self.hostname)
        message.set_content(_text(backup, facts, lead))
        message.add_alternative(_html(backup, facts, lead), subtype="html")
        return message

    def _address(self, message: EmailMessage, subject: str) -> None:
        message["Subject"] = subject
        message["From"] = self.sender
        message["To"] = ", ".join(
            email.utils.formataddr((d.name, d.email)) for d in self.config.destinations)
        message["Date"] = email.utils.format_datetime(dt.datetime.now(dt.UTC))
        message["Message-ID"] = email.utils.make_msgid("backupmand", domain=self.hostname)
        message["Auto-Submitted"] = "auto-generated"


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    if smtp.is_connected:
        try:
            await smtp.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            smtp.close()


# ---------------------------------------------------------------------------- formatting


def human_size(size: int | None) -> str:
    if size is None:
        return "unknown"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            text = f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
            return text if unit == "B" else f"{text} ({size} bytes)"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def duration(backup: Backup) -> float | None:
    """Seconds from creation to the end (finished_at, else the last update)."""
    end = backup.finished_at or backup.updated_at
    if end is None:
        return None
    return (end - backup.created_at).total_seconds()


def report_facts(backup: Backup, hostname: str) -> list[tuple[str, str]]:
    """What the report says about a backup, every value redacted (an error may quote a
    tool's output, and a tool may have echoed a secret)."""
    return [(key, redact_text(value)) for key, value in _facts(backup, hostname)]


def _facts(backup: Backup, hostname: str) -> list[tuple[str, str]]:
    facts = [
        ("Label", backup.label),
        ("Status", backup.status.value),
        ("Host", hostname),
        ("Backup id", backup.id),
        ("Source", backup.source_provider),
        ("File", backup.name),
        ("Size", human_size(backup.size)),
        ("Duration", human_duration(duration(backup))),
        ("Started", rfc3339(backup.created_at) or ""),
        ("Ended", rfc3339(backup.finished_at or backup.updated_at) or "not yet"),
    ]
    if backup.sha256:
        facts.append(("SHA-256", backup.sha256))
    if backup.dump_path:
        facts.append(("Local dump", backup.dump_path))
    if backup.error:
        facts.append(("Error", backup.error))
    if backup.verification is not None:
        facts.append(("Restore drill", f"{backup.verification} at {rfc3339(backup.verified_at)}"))
    if backup.verify_error:
        facts.append(("Drill error", backup.verify_error))
    if backup.suspect_reason:
        facts.append(("Suspect", backup.suspect_reason))
    return facts


def _drive_line(drive_file: DriveFile) -> str:
    line = f"{drive_file.drive} ({drive_file.provider}): {drive_file.status.value}"
    if drive_file.attempts > 1:
        line += f" after {drive_file.attempts} attempts"
    if drive_file.path:
        line += f" — {drive_file.path}"
    return redact_text(line)


def _text(backup: Backup, facts: list[tuple[str, str]], lead: str | None = None) -> str:
    verdict = "FAILED" if backup.status is Status.FAILED else backup.status.value
    lines = [redact_text(lead) if lead else f"Backup of {backup.label}: {verdict}.", ""]
    width = max(len(key) for key, _ in facts) + 1
    lines += [f"{key + ':':<{width}} {value}" for key, value in facts]
    lines += ["", "Drives:"]
    if not backup.drive_files:
        lines.append("  (none: the dump did not reach the upload step)")
    for drive_file in backup.drive_files:
        lines.append(f"  - {_drive_line(drive_file)}")
        if drive_file.error:
            lines.append(f"    error: {redact_text(drive_file.error)}")
    lines += ["", "-- ", "backupmand"]
    return "\n".join(lines) + "\n"


def _html(backup: Backup, facts: list[tuple[str, str]], lead: str | None = None) -> str:
    e = html.escape
    failed = backup.status is Status.FAILED or lead is not None
    colour = "#b00020" if failed else "#1b5e20"
    verdict = "FAILED" if failed else backup.status.value
    rows = "\n".join(
        f'<tr><th style="text-align:left;padding-right:1em">{e(key)}</th>'
        f"<td>{e(value)}</td></tr>" for key, value in facts)
    drives = "\n".join(
        f"<li>{e(_drive_line(drive_file))}"
        + (f'<br><span style="color:#b00020">error: {e(redact_text(drive_file.error))}</span>'
           if drive_file.error else "")
        + "</li>"
        for drive_file in backup.drive_files
    ) or "<li>(none: the dump did not reach the upload step)</li>"
    return (
        "<!DOCTYPE html>\n<html><body style=\"font-family:sans-serif\">\n"
        + (f'<h2 style="color:{colour}">{e(redact_text(lead))}</h2>\n' if lead else
           f'<h2 style="color:{colour}">Backup of {e(backup.label)}: {e(verdict)}</h2>\n')
        + f"<table>\n{rows}\n</table>\n<h3>Drives</h3>\n<ul>\n{drives}\n</ul>\n"
        "<p style=\"color:#777\">backupmand</p>\n</body></html>\n"
    )
