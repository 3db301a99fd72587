"""Placeholder journald renderer; replaced by the systemd branch."""

from __future__ import annotations

import os
from typing import Any

_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "exception": 3,
             "critical": 2}


def under_journald() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM"))


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(ch in text for ch in ' "=\n\\'):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def journald_renderer(include_timestamp: bool) -> Any:
    def render(_logger: Any, method: str, event: dict[str, Any]) -> str:
        level = event.pop("level", method)
        timestamp = event.pop("timestamp", None)
        message = event.pop("event", "")
        parts = [f"<{_PRIORITY.get(level, 6)}>"]
        if include_timestamp and timestamp:
            parts.append(str(timestamp))
        parts.append(str(message))
        parts.extend(f"{key}={_quote(value)}" for key, value in event.items())
        return " ".join(parts)

    return render
