"""The catalog file: WAL on disk, and a damaged catalog refused, never recreated over."""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
from pathlib import Path

import pytest

from tests.helpers import base_config, free_port, run_cli, write_config


def catalog_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "catalog.db"


def test_the_catalog_is_in_wal_mode(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yml", base_config(tmp_path))
    result = run_cli("run", config=config)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(catalog_path(tmp_path)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert catalog_path(tmp_path).read_bytes()[18:20] == b"\x02\x02", "WAL in the file header"


def garbage(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(7).randbytes(48 * 1024))


def torn_pages(path: Path) -> None:
    """A real catalog with pages overwritten in the middle: the header still looks fine."""
    config = write_config(path.parent.parent / "build.yml", base_config(path.parent.parent))
    for _ in range(2):
        assert run_cli("run", config=config).returncode == 0
    with contextlib.closing(sqlite3.connect(path)) as connection:  # the last one: no -wal left
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    assert sorted(p.name for p in path.parent.iterdir()) == ["catalog.db", "locks"]
    data = bytearray(path.read_bytes())
    assert len(data) >= 3 * page_size
    data[page_size: 3 * page_size] = random.Random(8).randbytes(2 * page_size)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [garbage, torn_pages], ids=["garbage", "torn pages"])
@pytest.mark.parametrize("command", [["run"], ["serve", "--port", "0"], ["list"]],
                         ids=["run", "serve", "list"])
def test_a_damaged_catalog_is_refused_and_left_untouched(
    tmp_path: Path, damage: object, command: list[str]
) -> None:
    catalog = catalog_path(tmp_path)
    damage(catalog)  # type: ignore[operator]
    before = catalog.read_bytes()
    siblings = sorted(p.name for p in catalog.parent.iterdir())
    config = write_config(tmp_path / "config.yml", base_config(tmp_path))
    if command[0] == "serve":
        command = ["serve", "--port", str(free_port())]
    result = run_cli(*command, config=config, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"backupmand: the catalog {catalog} "), message
    assert "damaged" in message or "cannot be read" in message, message
    assert "left untouched" in message and "restore it from a copy" in message
    assert "Traceback" not in result.stderr
    assert catalog.read_bytes() == before, "not a byte changed"
    after = sorted(p.name for p in catalog.parent.iterdir() if p.name != "locks")
    assert after == [s for s in siblings if s != "locks"], "no -wal, -shm or new catalog"


def test_an_unreadable_catalog_location_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where the state folder should be")
    config = write_config(tmp_path / "config.yml", base_config(tmp_path))
    result = run_cli("run", config=config)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert str(tmp_path / "state") in result.stderr
    assert os.path.isfile(tmp_path / "state")
