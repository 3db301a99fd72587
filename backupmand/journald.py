"""One log line per event, for journald (or any non-terminal stderr).

Each line starts with the sd-daemon priority prefix (``<3>`` for an error, see
sd-daemon(3)), which journald turns into the entry's PRIORITY, so that
``journalctl -u backupmand -p err`` shows the errors. The rest is
``event key=value ...`` in logfmt: values with spaces, quotes, ``=`` or control
characters are quoted, and line breaks are escaped, so an event (even one carrying
a traceback) stays a single journal entry with a single priority.

Under journald (``$JOURNAL_STREAM`` names our stderr) the line has no timestamp:
journald records its own. Elsewhere (a file, a pipe) an ISO 8601 UTC timestamp
follows the prefix.

Used by logs.py::

    renderer = journald_renderer(include_timestamp=not under_journald())
    structlog.configure(processors=[..., structlog.processors.add_log_level, renderer])
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import traceback
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

#: sd-daemon(3) / syslog priorities by structlog level (and method) name.
PRIORITIES: dict[str, int] = {
    "critical": 2,
    "fatal": 2,
    "exception": 3,
    "error": 3,
    "warning": 4,
    "warn": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
    "notset": 7,
}
DEFAULT_PRIORITY = 6

#: Keys the renderer consumes instead of printing as key=value.
_CONSUMED = ("event", "level", "timestamp", "exc_info")

Processor = Callable[[Any, str, MutableMapping[str, Any]], str]


def under_journald(fd: int = 2, env: Mapping[str, str] | None = None) -> bool:
    """True when ``fd`` (stderr by default) is connected to journald.

    systemd sets ``$JOURNAL_STREAM`` to ``<device>:<inode>`` of the stream it
    connected stdout/stderr to; children inherit the variable, so it only counts
    when it still names ``fd`` (systemd.exec(5), "$JOURNAL_STREAM").
    """
    environment = os.environ if env is None else env
    device, _, inode = environment.get("JOURNAL_STREAM", "").partition(":")
    if not device or not inode:
        return False
    try:
        stat = os.fstat(fd)
        return stat.st_dev == int(device) and stat.st_ino == int(inode)
    except (OSError, ValueError):
        return False


def stderr_is_terminal() -> bool:
    """True when stderr is a terminal (then logs.py picks readable console lines)."""
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def priority(level: str) -> int:
    """The sd-daemon priority (0 emergency ... 7 debug) for a structlog level name."""
    return PRIORITIES.get(level.lower(), DEFAULT_PRIORITY)


def _escape(text: str) -> str:
    """Escape backslashes, quotes and control characters (for quoted values)."""
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char == '"':
            out.append('\\"')
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def _needs_quotes(text: str) -> bool:
    return text == "" or any(
        char in ' ="\\' or ord(char) < 0x20 or ord(char) == 0x7F for char in text
    )


def format_value(value: Any) -> str:
    """One logfmt value: bare when safe, double-quoted and escaped otherwise."""
    if value is None:
        text = "null"
    elif value is True:
        text = "true"
    elif value is False:
        text = "false"
    elif isinstance(value, dt.datetime):
        text = value.isoformat()
    elif isinstance(value, str):
        text = value
    else:
        text = str(value)
    return f'"{_escape(text)}"' if _needs_quotes(text) else text


def _format_key(key: Any) -> str:
    text = str(key)
    cleaned = "".join("_" if char in ' ="\\' or ord(char) < 0x21 else char for char in text)
    return cleaned or "_"


def _format_event(event: Any) -> str:
    """The free-text event: unquoted, but still on one line."""
    text = "" if event is None else str(event)
    return "".join(
        "\\n" if char == "\n" else "\\r" if char == "\r" else
        f"\\u{ord(char):04x}" if ord(char) < 0x20 and char != "\t" else char
        for char in text
    )


def exception_text(exc_info: Any) -> str | None:
    """A traceback from structlog's ``exc_info`` (True, an exception, or a tuple)."""
    if not exc_info:
        return None
    if isinstance(exc_info, BaseException):
        info: Any = (type(exc_info), exc_info, exc_info.__traceback__)
    elif isinstance(exc_info, tuple):
        info = exc_info
    else:
        info = sys.exc_info()
        if info[0] is None:
            return None
    return "".join(traceback.format_exception(*info)).rstrip("\n")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render(
    event_dict: Mapping[str, Any], method_name: str = "info", *, include_timestamp: bool,
    prefix: bool = True,
) -> str:
    """One line for one event: ``<N>[timestamp ]event key=value ...``."""
    level = str(event_dict.get("level") or method_name)
    parts: list[str] = []
    if include_timestamp:
        stamp = event_dict.get("timestamp")
        parts.append(str(stamp) if stamp else _now())
    parts.append(_format_event(event_dict.get("event")))
    for key, value in event_dict.items():
        if key not in _CONSUMED:
            parts.append(f"{_format_key(key)}={format_value(value)}")
    exception = exception_text(event_dict.get("exc_info"))
    if exception and "exception" not in event_dict:
        parts.append(f"exception={format_value(exception)}")
    line = " ".join(part for part in parts if part)
    return f"<{priority(level)}>{line}" if prefix else line


def journald_renderer(include_timestamp: bool, *, prefix: bool = True) -> Processor:
    """A structlog renderer (the last processor) producing one line per event.

    ``include_timestamp``: False under journald (it timestamps each entry itself;
    a ``timestamp`` key from an earlier TimeStamper is then dropped, not
    duplicated), True otherwise (the event's ``timestamp`` if a TimeStamper set
    one, else the current UTC time). ``prefix``: the ``<N>`` priority prefix.
    """

    def renderer(_logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> str:
        return render(event_dict, method_name, include_timestamp=include_timestamp,
                      prefix=prefix)

    return renderer
