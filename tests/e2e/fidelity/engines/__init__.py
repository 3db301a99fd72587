"""The engines of the restore-fidelity suite: one line per engine, nothing discovered."""

from __future__ import annotations

from .base import Engine
from .mariadb import MariadbEngine
from .postgres import PostgresEngine
from .sqlite import SqliteEngine

ENGINES: dict[str, type[Engine]] = {
    SqliteEngine.name: SqliteEngine,
    PostgresEngine.name: PostgresEngine,
    MariadbEngine.name: MariadbEngine,
}

__all__ = ["ENGINES", "Engine"]
