"""Fixtures of the fault-injection tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.support import make_indexed_sqlite

#: Rows of the slow database: its integrity check, part of every SQLite dump, then
#: takes seconds — long enough to stop a daemon in the middle of a real dump.
SLOW_ROWS = 1_000_000


@pytest.fixture(scope="session")
def slow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~75 MB SQLite database whose dump takes several seconds (built once)."""
    return make_indexed_sqlite(tmp_path_factory.mktemp("slow") / "slow.db", SLOW_ROWS)
