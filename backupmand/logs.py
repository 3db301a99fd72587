"""structlog set-up: readable lines on a terminal, one `<N>`-prefixed line per event
otherwise (journald reads the prefix as the priority, so `journalctl -p err` works).

Python's own ``logging`` (aiohttp, asyncio, APScheduler, botocore, ...) goes through
the same processors: a record of any library becomes one line with its priority and
``logger=<name>``, its traceback (if any) escaped into that line, never a stray
multi-line traceback on stderr. Libraries speak from WARNING up (everything with
``--log-level debug``).

One redaction serves the whole process: every secret registered here (the config's
passwords, keys and tokens at the start of every command, Google's client secret and
tokens as they are read) is replaced by ``********`` in every log line, and
``redact_text`` / ``redact`` do the same for whatever else leaves the process: errors
stored in the catalog, notification bodies, messages the CLI prints.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import structlog
from structlog.typing import EventDict

if TYPE_CHECKING:
    from .config import Settings

MASK = "********"
#: Shorter values are not masked: "pw" would blank every "pw" in every line.
MIN_SECRET_LENGTH = 3

_lock = threading.Lock()
_static: set[str] = set()
_owned: dict[str, tuple[str, ...]] = {}
#: Longest first, so that a secret containing another is masked whole. Replaced, never
#: mutated: redaction in other threads reads it without a lock.
_secrets: tuple[str, ...] = ()
_handler: logging.Handler | None = None


def register_secrets(values: Iterable[str], *, owner: str | None = None) -> None:
    """Secrets that must never leave the process in clear.

    With ``owner`` (say, one token file), the values replace that owner's previous
    ones: a token refreshed every hour does not grow the list for ever.
    """
    global _secrets
    kept = tuple(value for value in values if value and len(value) >= MIN_SECRET_LENGTH)
    with _lock:
        if owner is None:
            _static.update(kept)
        else:
            _owned[owner] = kept
        every = set(_static).union(*_owned.values())
        _secrets = tuple(sorted(every, key=len, reverse=True))


def register_settings(settings: Settings) -> None:
    """Every secret of the config, and the notification URLs that work as secrets (a
    webhook URL of Slack or Discord, a healthchecks.io ping URL)."""
    ping = settings.notifiers.ping
    urls = [endpoint.url for endpoint in settings.notifiers.webhook.endpoints]
    urls += [url for url in (ping.url, *ping.urls.values()) if url]
    register_secrets([*settings.secrets(), *urls])


def redact_text(text: str) -> str:
    """``text`` with every registered secret replaced by ``********``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact(value: Any) -> Any:
    """``redact_text`` through strings, exceptions, mappings, lists and tuples."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, BaseException):
        return redact_text(str(value))
    if isinstance(value, Mapping):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, tuple):
        return tuple(redact(item) for item in value)
    return value


# ---------------------------------------------------------------------------- processors


def _redact(_logger: Any, _method: str, event: EventDict) -> EventDict:
    if not _secrets:
        return event
    for key, value in event.items():
        if not key.startswith("_"):  # ProcessorFormatter's own record and flags
            event[key] = redact(value)
    return event


def _exception_text(_logger: Any, _method: str, event: EventDict) -> EventDict:
    """A traceback (``exc_info``) as the ``exception`` string, so that it is redacted like
    everything else before any renderer sees it."""
    from .journald import exception_text

    exc_info = event.pop("exc_info", None)
    text = exception_text(exc_info)
    if text is not None and "exception" not in event:
        event["exception"] = text
    return event


def _foreign_logger_name(_logger: Any, _method: str, event: EventDict) -> EventDict:
    record = event.get("_record")
    if isinstance(record, logging.LogRecord):
        event["logger"] = record.name
    return event


class _StructlogHandler(logging.Handler):
    """Writes formatted records with structlog's own per-file lock, so that a library's
    line and one of backupmand's never interleave."""

    def __init__(self, output: Any) -> None:
        super().__init__()
        self._printer = structlog.PrintLogger(output)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._printer.msg(self.format(record))
        except Exception:
            self.handleError(record)


def configure(level: str = "info", *, stream: Any = None, force_console: bool | None = None) -> None:
    """Console lines on a terminal; otherwise `<N>`-prefixed key=value lines, without
    a timestamp under journald (it stamps each entry itself), with one elsewhere."""
    from .journald import journald_renderer, under_journald

    global _handler
    output = stream or sys.stderr
    journal = stream is None and under_journald()
    if force_console is None:
        console = not journal and output.isatty()
    else:
        console = force_console
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _exception_text,
        _redact,
    ]
    renderer: list[Any]
    if console:
        renderer = [structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
                    structlog.dev.ConsoleRenderer(colors=True)]
    else:
        renderer = [journald_renderer(include_timestamp=not journal)]
    threshold = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[*shared, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(output),
        cache_logger_on_first_use=False,
    )

    handler = _StructlogHandler(output)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[_foreign_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *shared,
                    *renderer],
    ))
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    _handler = handler
    # Libraries' INFO is chatter (APScheduler's every tick, botocore's every client).
    root.setLevel(threshold if threshold <= logging.DEBUG else max(threshold, logging.WARNING))
    logging.captureWarnings(True)
