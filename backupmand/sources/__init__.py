"""Data sources: one module per engine, each implementing sources.base.Source."""

from __future__ import annotations

from typing import Any

from ..config import MysqlSource, PostgresSource, SqliteSource
from .base import Source


def build_source(config: PostgresSource | MysqlSource | SqliteSource) -> Source[Any]:
    """The Source for one data_sources entry (imports only the engine it needs)."""
    if isinstance(config, SqliteSource):
        from .sqlite import SqliteDatabase

        return SqliteDatabase(config)
    if isinstance(config, PostgresSource):
        from .postgres import PostgresDatabase

        return PostgresDatabase(config)
    if isinstance(config, MysqlSource):
        from .mysql import MysqlDatabase

        return MysqlDatabase(config)
    raise TypeError(f"unknown data source config {type(config).__name__}")


__all__ = ["Source", "build_source"]
