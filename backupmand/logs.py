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
    from .journald import journald_renderer, under_journald

    output = stream or sys.stderr
    console = output.isatty() if force_console is None else force_console
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.format_exc_info,
        _redact,
    ]
    if console:
        processors += [
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=True),
        ]
    else:
        journald = under_journald()
        if not journald:
            processors.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
        processors.append(journald_renderer(include_timestamp=not journald))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(output),
        cache_logger_on_first_use=False,
    )
