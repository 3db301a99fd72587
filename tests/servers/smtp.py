"""SMTP servers for tests: aiosmtpd in its own thread, on a free loopback port.

Variants (see ``smtp_server_factory``):

- ``none``: plain SMTP that *offers* STARTTLS without requiring it, so a client
  that upgrades on its own would be caught;
- ``starttls``: STARTTLS required, AUTH required (only after TLS), certificate from
  the session's test CA (trustme);
- ``ssl``: implicit TLS with the same certificate, AUTH required;
- ``plain-only``: no STARTTLS offered at all.

Every accepted message is parsed (email.policy.default) and kept in
``server.messages``; the handler stores it before the server answers DATA, so once
the client's send returns the message is there: no waiting needed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email
import email.policy
import ssl
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from . import free_port

SMTP_USER = "backup-bot"
SMTP_PASSWORD = "s3cr3t-Pässword"

Mode = Literal["none", "starttls", "ssl", "plain-only"]


@dataclasses.dataclass
class ReceivedMail:
    mail_from: str | None
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    authenticated: bool


@dataclasses.dataclass
class LocalCA:
    ca: trustme.CA
    ca_file: Path
    server_context: ssl.SSLContext


@dataclasses.dataclass
class SmtpServer:
    host: str
    port: int
    mode: Mode
    messages: list[ReceivedMail]
    ca_file: Path | None
    user: str = SMTP_USER
    password: str = SMTP_PASSWORD


class _Recorder:
    def __init__(self) -> None:
        self.messages: list[ReceivedMail] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        transport = server.transport
        self.messages.append(ReceivedMail(
            mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos), message=message,
            tls=transport is not None and transport.get_extra_info("ssl_object") is not None,
            authenticated=bool(session.authenticated),
        ))
        return "250 Message accepted"


def _authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any,
) -> AuthResult:
    ok = (isinstance(auth_data, LoginPassword)
          and auth_data.login == SMTP_USER.encode()
          and auth_data.password == SMTP_PASSWORD.encode())
    return AuthResult(success=ok, handled=False)


@contextlib.contextmanager
def running_smtp_server(mode: Mode, test_ca: LocalCA) -> Iterator[SmtpServer]:
    recorder = _Recorder()
    host, port = "127.0.0.1", free_port()
    options: dict[str, Any] = {}
    if mode == "none":
        options = {"tls_context": test_ca.server_context, "require_starttls": False}
    elif mode == "starttls":
        options = {"tls_context": test_ca.server_context, "require_starttls": True,
                   "authenticator": _authenticator, "auth_required": True,
                   "auth_require_tls": True}
    elif mode == "ssl":
        options = {"ssl_context": test_ca.server_context, "authenticator": _authenticator,
                   "auth_required": True, "auth_require_tls": False}
    controller = Controller(
        recorder, hostname=host, port=port, server_hostname="mail.test", ready_timeout=5,
        **options)
    controller.start()
    try:
        yield SmtpServer(host=host, port=port, mode=mode, messages=recorder.messages,
                         ca_file=test_ca.ca_file)
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def smtp_test_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost."""
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("smtp-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return LocalCA(ca=ca, ca_file=ca_file, server_context=context)


@pytest.fixture
def smtp_server_factory(
    smtp_test_ca: LocalCA,
) -> Iterator[Callable[[Mode], SmtpServer]]:
    """Start SMTP servers of any mode; all are stopped after the test.

    ``start`` blocks while the server thread comes up: call it from sync fixtures,
    not from inside a running event loop (the mode fixtures below do that).
    """
    with contextlib.ExitStack() as stack:
        def start(mode: Mode) -> SmtpServer:
            return stack.enter_context(running_smtp_server(mode, smtp_test_ca))

        yield start


@pytest.fixture
def smtp_server(smtp_server_factory: Callable[[Mode], SmtpServer]) -> SmtpServer:
    """Plain SMTP (STARTTLS offered, not required; no AUTH)."""
    return smtp_server_factory("none")


@pytest.fixture
def smtp_server_starttls(smtp_server_factory: Callable[[Mode], SmtpServer]) -> SmtpServer:
    """STARTTLS and AUTH required; the certificate is signed by ``server.ca_file``."""
    return smtp_server_factory("starttls")


@pytest.fixture
def smtp_server_ssl(smtp_server_factory: Callable[[Mode], SmtpServer]) -> SmtpServer:
    """Implicit TLS and AUTH required; the certificate is signed by ``server.ca_file``."""
    return smtp_server_factory("ssl")


@pytest.fixture
def smtp_server_plain_only(smtp_server_factory: Callable[[Mode], SmtpServer]) -> SmtpServer:
    """Plain SMTP that does not offer STARTTLS at all."""
    return smtp_server_factory("plain-only")
