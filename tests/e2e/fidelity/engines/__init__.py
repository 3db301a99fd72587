"""The engines of the restore-fidelity suite: one line per engine, nothing discovered."""

from __future__ import annotations

from .base import Engine
from .sqlite import SqliteEngine

ENGINES: dict[str, type[Engine]] = {
    SqliteEngine.name: SqliteEngine,
}

__all__ = ["ENGINES", "Engine"]
