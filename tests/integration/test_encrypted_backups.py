"""Encrypted at rest (SPEC §6.4), through the real CLI and the stock age tool: a host
that holds only recipients writes backups nobody can read without the identity."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from backupmand.drives.local import LocalFolder
from backupmand.encryption import AGE_HEADER
from backupmand.models import Status
from tests.helpers import base_config, make_sqlite, run_cli, write_config


def keypair(folder: Path, name: str) -> tuple[Path, str]:
    """(identity file, recipient) made by the stock age-keygen."""
    identity = folder / f"{name}.key"
    result = subprocess.run(["age-keygen", "-o", str(identity)], capture_output=True,
                            text=True, check=True)
    identity.chmod(0o600)
    recipient = next(line.split(": ", 1)[1] for line in result.stderr.splitlines()
                     if line.startswith("Public key: "))
    return identity, recipient


def rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT id, name, hex(data) FROM items ORDER BY id").fetchall()


def encrypted_config(tmp_path: Path, *recipients: str, **extra: Any) -> Path:
    return write_config(tmp_path / "config.yml", base_config(
        tmp_path, encryption={"recipients": list(recipients), **extra}))


def last_backup(config: Path) -> dict[str, Any]:
    listed = run_cli("list", "--json", config=config)
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)["Results"][0]  # type: ignore[no-any-return]


def test_every_stored_file_is_age_and_decrypts_with_the_stock_tool(tmp_path: Path) -> None:
    identity, recipient = keypair(tmp_path, "ops")
    config = encrypted_config(tmp_path, recipient)
    result = run_cli("run", config=config)
    assert result.returncode == 0, result.stderr
    backup = last_backup(config)
    assert backup["Status"] == "finished" and backup["Name"].endswith(".sqlite.zst.age")
    assert backup["Encryption"] == {"Scheme": "age", "Recipients": [recipient]}
    stored = Path(backup["DriveFiles"][0]["Path"])
    data = stored.read_bytes()
    assert data.startswith(AGE_HEADER)
    assert hashlib.sha256(data).hexdigest() == backup["Sha256"]
    assert b"SQLite format 3" not in data and b"item 1" not in data
    manifest = json.loads(Path(backup["DriveFiles"][0]["ManifestPath"]).read_text())
    assert manifest["Encryption"] == {"Scheme": "age", "Recipients": [recipient]}
    assert "AGE-SECRET-KEY" not in json.dumps(manifest)
    # By hand: age -d -i IDENTITY | zstd -d  gives the database back.
    plain = tmp_path / "by-hand.db"
    with open(plain, "wb") as out:
        decrypt = subprocess.Popen(["age", "-d", "-i", str(identity), str(stored)],
                                   stdout=subprocess.PIPE)
        subprocess.run(["zstd", "-dc"], stdin=decrypt.stdout, stdout=out, check=True)
        assert decrypt.wait() == 0
    assert rows(plain) == rows(tmp_path / "app.db")
    # Through backupmand, with the identity.
    target = tmp_path / "restored.db"
    restored = run_cli("restore", backup["Id"], "--to-file", str(target), "--identity",
                       str(identity), config=config)
    assert restored.returncode == 0, restored.stderr
    assert rows(target) == rows(tmp_path / "app.db")


def test_either_of_two_recipients_decrypts(tmp_path: Path) -> None:
    first, first_recipient = keypair(tmp_path, "first")
    second, second_recipient = keypair(tmp_path, "second")
    config = encrypted_config(tmp_path, first_recipient, second_recipient)
    assert run_cli("run", config=config).returncode == 0
    backup = last_backup(config)
    for index, identity in enumerate((first, second)):
        target = tmp_path / f"restored-{index}.db"
        result = run_cli("restore", backup["Id"], "--to-file", str(target), "--identity",
                         str(identity), config=config)
        assert result.returncode == 0, result.stderr
        assert rows(target) == rows(tmp_path / "app.db")


def test_without_the_identity_backups_work_and_restores_say_what_is_missing(tmp_path: Path) -> None:
    _identity, recipient = keypair(tmp_path, "ops")
    wrong, _ = keypair(tmp_path, "stranger")
    config = encrypted_config(tmp_path, recipient)
    assert run_cli("run", config=config).returncode == 0
    backup = last_backup(config)
    target = tmp_path / "never.db"
    missing = run_cli("restore", backup["Id"], "--to-file", str(target), config=config)
    assert missing.returncode == 1
    assert "encrypted" in missing.stderr and recipient in missing.stderr
    assert "--identity" in missing.stderr and "Traceback" not in missing.stderr
    refused = run_cli("restore", backup["Id"], "--to-file", str(target), "--identity",
                      str(wrong), config=config)
    assert refused.returncode == 1 and "can decrypt this backup" in refused.stderr, refused.stderr
    assert not target.exists(), "nothing written to the target"
    assert not list(tmp_path.glob(".backupmand-restore-*")), "no scratch left"


def test_a_world_readable_identity_is_refused(tmp_path: Path) -> None:
    identity, recipient = keypair(tmp_path, "ops")
    config = encrypted_config(tmp_path, recipient)
    assert run_cli("run", config=config).returncode == 0
    identity.chmod(0o644)
    result = run_cli("restore", last_backup(config)["Id"], "--to-file",
                     str(tmp_path / "x.db"), "--identity", str(identity), config=config)
    assert result.returncode == 1 and "chmod 600" in result.stderr, result.stderr


@pytest.mark.parametrize("encryption", [
    {"recipients": ["age1notarealrecipient"]},
    {"recipients": ["ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ example"]},
    {"recipients_file": "/nonexistent/recipients.txt"},
    {"recipients": []},
])
def test_a_recipient_that_does_not_parse_is_a_config_error(tmp_path: Path,
                                                            encryption: dict[str, Any]) -> None:
    config = write_config(tmp_path / "config.yml", base_config(tmp_path, encryption=encryption))
    result = run_cli("check-config", config=config)
    assert result.returncode == 78, result.stdout + result.stderr
    assert "encryption" in result.stderr
    run = run_cli("run", config=config)
    assert run.returncode == 78
    assert not (tmp_path / "drive").exists(), "nothing stored, let alone plaintext"


def test_a_source_can_turn_encryption_off_and_check_config_shows_fingerprints(
    tmp_path: Path,
) -> None:
    _identity, recipient = keypair(tmp_path, "ops")
    make_sqlite(tmp_path / "public.db")
    document = base_config(tmp_path, encryption={"recipients": [recipient]})
    document["data_sources"].append({"provider": "sqlite", "label": "public",
                                     "db_path": str(tmp_path / "public.db"),
                                     "tmp_folder": str(tmp_path / "dumps"), "encryption": None})
    config = write_config(tmp_path / "config.yml", document)
    checked = run_cli("check-config", config=config)
    assert checked.returncode == 0, checked.stderr
    assert "public: not encrypted" in checked.stdout
    assert f"recipient {recipient[:12]}" in checked.stdout
    assert run_cli("run", config=config).returncode == 0
    names = {b["Label"]: b["Name"] for b in json.loads(
        run_cli("list", "--json", config=config).stdout)["Results"]}
    assert names["app"].endswith(".age") and not names["public"].endswith(".age")


class PlaintextFolder(LocalFolder):
    """A drive that stores something else than it was given (here: zeros at the start)."""

    async def upload(self, source: Path, name: str, *, size: int, sha256: str,
                     adopt: bool = False) -> Any:
        stored = await super().upload(source, name, size=size, sha256=sha256, adopt=adopt)
        if name.endswith(".age"):
            path = Path(stored.path)
            data = bytearray(path.read_bytes())
            data[: len(AGE_HEADER)] = b"\0" * len(AGE_HEADER)
            path.write_bytes(bytes(data))
        return stored


async def test_a_copy_that_does_not_begin_with_the_age_header_fails_the_backup(
    tmp_path, make_settings, open_runtime
):
    _identity, recipient = keypair(tmp_path, "ops")
    settings = make_settings(encryption={"recipients": [recipient]},
                             uploads={"attempts": 1, "stream": False})
    async with open_runtime(settings) as runtime:
        runtime.services.drives["disk"] = PlaintextFolder(settings.drive("disk"))
        (backup,) = await runtime.start_backups()
        (final,) = await runtime.wait([backup.id])
    assert final.status is Status.FAILED
    assert "does not begin with the age header" in final.error
