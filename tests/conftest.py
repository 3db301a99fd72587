"""Shared fixtures. Server fixtures (PostgreSQL, MariaDB, S3, Drive, SMTP) live in tests/servers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from backupmand.config import Settings, parse_settings
from backupmand.runtime import Runtime
from tests.helpers import base_config, write_config

pytest_plugins = [
    "tests.servers.mariadb",
    "tests.servers.postgres",
    "tests.servers.s3",
    "tests.servers.fake_gdrive",
    "tests.servers.smtp",
    "tests.servers.webhook",
]


@pytest.fixture(autouse=True)
def _quiet_logs() -> None:
    from backupmand import logs

    logs.configure("info", force_console=False)
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Path]:
    """make_config(**overrides) -> path of a config written under tmp_path."""
    counter = iter(range(1000))

    def create(**overrides: Any) -> Path:
        return write_config(tmp_path / f"config-{next(counter)}.yml", base_config(tmp_path, **overrides))

    return create


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def create(**overrides: Any) -> Settings:
        import yaml

        return parse_settings(yaml.safe_dump(base_config(tmp_path, **overrides)))

    return create


@pytest.fixture
def open_runtime() -> Callable[[Settings], contextlib.AbstractAsyncContextManager[Runtime]]:
    @contextlib.asynccontextmanager
    async def create(settings: Settings, **kwargs: Any) -> AsyncIterator[Runtime]:
        async with Runtime.open(settings, **kwargs) as runtime:
            yield runtime

    return create
