"""Fixtures of the restore-fidelity suite: one engine per parameter, one real backup each.

``engine`` is module-scoped and parametrized over ``engines.ENGINES``; ``case`` builds
that engine's awkward database once, backs it up with the real CLI (``backupmand run``,
a separate process with its own SQLite catalog and a local drive) and keeps what the
tests compare against: the snapshot at backup time, the stored file, the raw dump.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backupmand.config import Settings
from backupmand.sources import Source, build_source
from tests.helpers import run_cli, write_config

from .engines import ENGINES, Engine
from .engines.base import decompress

LABEL = "Fidelity"


@dataclasses.dataclass
class Case:
    """One engine's awkward database, backed up once by the real CLI."""

    engine: Engine
    root: Path
    config: Path
    settings: Settings
    original: str
    backup_id: str
    #: The stored (compressed) dump on the local drive, and its globals companion.
    stored: Path
    globals_file: Path | None
    #: The raw (uncompressed) dump, decompressed from ``stored`` with the stock zstd.
    raw: Path
    #: The original's snapshot when it was backed up.
    expected: dict[str, Any]
    #: Every database name the suite has handed out (the others are fingerprinted).
    names: list[str] = dataclasses.field(default_factory=list)

    def name(self, stem: str) -> str:
        """A database name of the engine's, owned by the suite (dropped by ``cleanup``)."""
        name = self.engine.database_name(stem)
        if name not in self.names:
            self.names.append(name)
        return name

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, config=self.config, timeout=timeout)

    def source(self) -> Source[Any]:
        return build_source(self.settings.source(LABEL))

    def others(self) -> dict[str, str]:
        return self.engine.fingerprint_others(self.names)

    def cleanup(self, *names: str) -> None:
        """Drop ``names`` and every database left under them (``__before_`` copies)."""
        for database in sorted(self.engine.databases()):
            if any(database.startswith(name) for name in names):
                self.engine.drop(database)


@pytest.fixture(scope="module", params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    kind = ENGINES[request.param]
    server = request.getfixturevalue(kind.server_fixture) if kind.server_fixture else None
    return kind(server, tmp_path_factory.mktemp(f"fidelity-{kind.name}"))


def _config(case_root: Path, source: dict[str, Any]) -> dict[str, Any]:
    return {
        "database": {"provider": "sqlite", "db_path": str(case_root / "state" / "catalog.db")},
        "data_sources": [source],
        "drives": [{"provider": "local", "label": "Local", "folder": str(case_root / "drive")}],
        "compression": "zstd",
        "uploads": {"attempts": 1, "initial_backoff": 0.01, "max_backoff": 0.01},
        "http": {"listen": "127.0.0.1", "port": 8080, "api_keys": ["fidelity-key-0123456789"],
                 "backup_job": {"enabled": False}},
    }


@pytest.fixture(scope="module")
def case(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Case]:
    root = tmp_path_factory.mktemp(f"case-{engine.name}")
    original = engine.database_name("fidelity_original")
    engine.build(original)
    source = engine.data_source(original, label=LABEL, tmp_folder=root / "tmp")
    document = _config(root, source)
    config = write_config(root / "config.yml", document)
    try:
        expected = engine.snapshot(original)
        result = run_cli("run", config=config, timeout=900)
        assert result.returncode == 0, f"backupmand run failed:\n{result.stdout}\n{result.stderr}"
        listed = run_cli("list", "--json", "--label", LABEL, config=config)
        assert listed.returncode == 0, listed.stderr
        (backup,) = json.loads(listed.stdout)["Results"]
        assert backup["Status"] == "finished", backup
        (drive_file,) = [item for item in backup["DriveFiles"] if item["Drive"] == "Local"]
        stored = Path(drive_file["Path"])
        companions = sorted(stored.parent.glob(stored.name.split(".")[0] + ".globals.*"))
        raw = root / "raw.dump"
        raw.write_bytes(decompress(stored))
        assert engine.snapshot(original) == expected, "backing up changed the database"
        yield Case(engine=engine, root=root, config=config,
                   settings=Settings.model_validate(document), original=original,
                   backup_id=backup["Id"], stored=stored,
                   globals_file=companions[0] if companions else None, raw=raw,
                   expected=expected, names=[original])
    finally:
        for database in sorted(engine.databases()):
            if database.startswith(original):
                engine.drop(database)
