"""The second round over every engine's awkward database (SPEC §6.2-§6.4): the manifest
describes the dump exactly, a drill through the real CLI passes and leaves nothing, a
machine with an empty catalog restores from the drive alone (and rebuilds the
catalog), and an encrypted backup round-trips through backupmand and through the
stock age tool."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from backupmand.sources.base import OBJECT_KINDS
from tests.helpers import run_cli, write_config

from .conftest import LABEL, Case

pytestmark = pytest.mark.slow


def _backup(case: Case) -> dict:
    result = case.cli("show", case.backup_id, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_the_manifest_holds_the_dumps_exact_facts(case: Case) -> None:
    backup = _backup(case)
    (record,) = backup["DriveFiles"]
    manifest = json.loads(Path(record["ManifestPath"]).read_text())
    assert manifest["Format"] == "backupmand-manifest/1"
    assert manifest["BackupId"] == case.backup_id and manifest["Label"] == LABEL
    assert manifest["File"] == backup["Name"] and manifest["Sha256"] == backup["Sha256"]
    assert manifest["Size"] == backup["Size"] == Path(record["Path"]).stat().st_size
    assert manifest["Tables"] == case.engine.row_counts(case.original)
    assert sorted(manifest["Objects"]) == sorted(OBJECT_KINDS)
    assert manifest["ServerVersion"] and manifest["Tool"] and manifest["ToolVersion"]
    assert manifest["Encryption"] is None
    if case.globals_file is not None:
        assert manifest["Globals"]["File"] == case.globals_file.name
    assert backup["RowCount"] == sum(manifest["Tables"].values())
    assert backup["Objects"] == manifest["Objects"]


def test_a_drill_through_the_cli_passes_and_leaves_nothing(case: Case) -> None:
    databases = case.engine.databases()
    others = case.others()
    result = case.cli("verify", case.backup_id)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("passed"), result.stdout
    backup = _backup(case)
    assert backup["Verification"] == "passed" and backup["VerifyError"] is None
    assert case.engine.databases() == databases, "the scratch target is gone"
    assert case.others() == others
    assert case.engine.snapshot(case.original) == case.expected


def test_an_empty_catalog_restores_from_the_drive_alone(case: Case) -> None:
    """The host is gone: a fresh state folder, the same config file."""
    document = yaml.safe_load(case.config.read_text())
    fresh = case.root / "fresh"
    document["database"]["db_path"] = str(fresh / "catalog.db")
    config = write_config(case.root / "fresh.yml", document)
    target = case.name("fidelity_from_drive")
    rebuilt_target = case.name("fidelity_rebuilt")
    others = case.others()
    try:
        with_globals = ["--globals"] if case.globals_file is not None else []
        result = run_cli("restore", "--drive", "Local", "--label", LABEL, "--latest",
                         "--to-source", LABEL, "--db-name", target, *with_globals,
                         config=config, timeout=900)
        assert result.returncode == 0, result.stdout + result.stderr
        assert case.engine.snapshot(target) == case.expected
        rebuilt = run_cli("catalog", "rebuild", "--drive", "Local", config=config)
        assert rebuilt.returncode == 0 and "1 backup(s) added" in rebuilt.stdout, rebuilt.stdout
        listed = json.loads(run_cli("list", "--json", config=config).stdout)["Results"]
        assert [b["Id"] for b in listed] == [case.backup_id]
        restored = run_cli("restore", case.backup_id, "--to-source", LABEL, "--db-name",
                           rebuilt_target, config=config, timeout=900)
        assert restored.returncode == 0, restored.stderr
        assert case.engine.snapshot(rebuilt_target) == case.expected
        assert case.others() == others
    finally:
        case.cleanup(target, rebuilt_target)
        shutil.rmtree(fresh, ignore_errors=True)


def test_an_encrypted_backup_round_trips_through_backupmand_and_the_stock_age(case: Case) -> None:
    work = case.root / "encrypted"
    work.mkdir()
    identity = work / "identity.txt"
    keys = subprocess.run(["age-keygen", "-o", str(identity)], capture_output=True, text=True,
                          check=True)
    identity.chmod(0o600)
    recipient = keys.stderr.split("Public key: ", 1)[1].split()[0]
    document = yaml.safe_load(case.config.read_text())
    document["database"]["db_path"] = str(work / "catalog.db")
    document["drives"] = [{"provider": "local", "label": "Sealed", "folder": str(work / "drive")}]
    document["encryption"] = {"recipients": [recipient]}
    config = write_config(work / "config.yml", document)
    ran = run_cli("run", config=config, timeout=900)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    (backup,) = json.loads(run_cli("list", "--json", config=config).stdout)["Results"]
    (record,) = backup["DriveFiles"]
    stored = Path(record["Path"])
    assert stored.name.endswith(".age") and stored.read_bytes().startswith(
        b"age-encryption.org/v1\n")
    if record["GlobalsPath"]:
        assert Path(record["GlobalsPath"]).read_bytes().startswith(b"age-encryption.org/v1\n")
    target = case.name("fidelity_sealed")
    by_hand = case.name("fidelity_sealed_by_hand")
    others = case.others()
    try:
        refused = run_cli("restore", backup["Id"], "--to-source", LABEL, "--db-name", target,
                          config=config)
        assert refused.returncode == 1 and "--identity" in refused.stderr
        assert target not in case.engine.databases()
        restored = run_cli("restore", backup["Id"], "--to-source", LABEL, "--db-name", target,
                           "--identity", str(identity), config=config, timeout=900)
        assert restored.returncode == 0, restored.stderr
        assert case.engine.snapshot(target) == case.expected
        # By hand: age -d -i IDENTITY, then the engine's own by-hand restore of the .zst.
        plain = work / stored.name.removesuffix(".age")
        subprocess.run(["age", "-d", "-i", str(identity), "-o", str(plain), str(stored)],
                       check=True)
        companion = None
        if record["GlobalsPath"]:
            companion = work / Path(record["GlobalsPath"]).name.removesuffix(".age")
            subprocess.run(["age", "-d", "-i", str(identity), "-o", str(companion),
                            record["GlobalsPath"]], check=True)
        scratch = work / "by-hand"
        scratch.mkdir()
        case.engine.restore_by_hand(plain, by_hand, globals_file=companion, workdir=scratch)
        assert case.engine.snapshot(by_hand) == case.expected
        assert case.others() == others
    finally:
        case.cleanup(target, by_hand)
