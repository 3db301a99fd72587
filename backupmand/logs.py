"""structlog set-up: readable lines on a terminal, one `<N>`-prefixed line per event
otherwise (journald reads the prefix as the priority, so `journalctl -p err` works).

Every string in every event goes through ``redact``: secret values registered from
the config are replaced before anything is rendered.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

import structlog

_SECRETS: list[str] = []


def register_secrets(values: Iterable[str]) -> None:
    """Secrets that must never be logged (the config's passwords, keys, tokens)."""
    for value in values:
        if value and len(value) >= 3 and value not in _SECRETS:
            _SECRETS.append(value)
    _SECRETS.sort(key=len, reverse=True)


def redact_text(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "********")
    return text


def _redact(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    if not _SECRETS:
        return event
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redact_text(value)
        elif isinstance(value, BaseException):
            event[key] = redact_text(str(value))
    return event


def configure(level: str = "info", *, stream: Any = None, force_console: bool | None = None) -> None:
    """Console lines on a terminal; otherwise `<N>`-prefixed key=value lines, without
    a timestamp under journald (it stamps each entry itself), with one elsewhere."""
    from .journald import journald_renderer, under_journald

    output = stream or sys.stderr
    journal = stream is None and under_journald()
    if force_console is None:
        console = not journal and output.isatty()
    else:
        console = force_console
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _redact,
    ]
    if console:
        processors += [
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=True),
        ]
    else:
        processors += [
            structlog.processors.format_exc_info,
            _redact,
            journald_renderer(include_timestamp=not journal),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(output),
        cache_logger_on_first_use=False,
    )
