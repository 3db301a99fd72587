"""Who can read the dumps: everything backupmand writes is 0600 in 0700 folders, whatever
umask it inherits, and the signing key is never written through a planted link."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from backupmand import signing
from backupmand.config import parse_settings
from tests.helpers import API_KEY, base_config, child_env, free_port, write_config


def ordinary_umask() -> None:
    os.umask(0o022)  # what `sudo -u backupmand backupmand run` passes on


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backupmand", "-c", str(config), *args],
                          capture_output=True, text=True, env=child_env(), timeout=120,
                          preexec_fn=ordinary_umask, check=False)


def test_every_file_backupmand_writes_is_private_under_umask_022(tmp_path: Path):
    base = tmp_path / "host"
    base.mkdir(mode=0o755)
    blocker = base / "not-a-folder"
    blocker.write_text("a file where the second drive's folder should be")
    port = free_port()
    document = base_config(base, drives=[
        {"provider": "local", "label": "disk", "folder": str(base / "drive" / "daily")},
        # Its uploads fail: the backup fails and its dump is kept for retry.
        {"provider": "local", "label": "broken", "folder": str(blocker / "sub"), "attempts": 1},
    ])
    document["http"]["port"] = port
    document["http"]["app_url"] = f"http://127.0.0.1:{port}"
    config = write_config(base / "config.yml", document)
    ours = {p for p in base.rglob("*")}  # the test's own files: the source, the config

    result = cli(config, "run")
    assert result.returncode == 1, result.stderr  # the broken drive failed; the dump is kept
    daemon = subprocess.Popen(  # serve writes the URL-signing key
        [sys.executable, "-m", "backupmand", "-c", str(config), "serve"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env(),
        preexec_fn=ordinary_umask)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1):
                    break
            except OSError:
                assert daemon.poll() is None, daemon.stderr.read().decode()
                assert time.monotonic() < deadline, "the daemon did not answer"
                time.sleep(0.05)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/backups",
                                         headers={"X-Api-Key": API_KEY})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0

    written = sorted(p for p in base.rglob("*") if p not in ours
                     and not p.name.startswith("app.db"))  # the source's own -wal / -shm
    names = {str(p.relative_to(base)) for p in written}
    assert {"state", "state/catalog.db", "state/locks", "state/url-signing.key", "dumps",
            "drive", "drive/daily"} <= names
    kept = [p for p in written if p.parent == base / "dumps"]
    copies = [p for p in written if p.parent == base / "drive" / "daily"]
    assert kept and copies, names
    assert any(p.name.endswith(".lock") for p in written)
    loose = [(str(p.relative_to(base)), oct(stat.S_IMODE(p.lstat().st_mode))) for p in written
             if stat.S_IMODE(p.lstat().st_mode) != (0o700 if p.is_dir() else 0o600)]
    assert loose == [], loose


def key_settings(tmp_path: Path):
    return parse_settings(yaml.safe_dump(base_config(tmp_path, state_dir=str(tmp_path / "state"))))


def test_the_signing_key_is_never_written_through_a_planted_link(tmp_path: Path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (state / "url-signing.tmp").symlink_to(victim)
    key = signing.load_key(key_settings(tmp_path))
    assert victim.read_text() == "precious\n", "the link was followed"
    stored = state / "url-signing.key"
    info = stored.lstat()
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert bytes.fromhex(stored.read_text()) == key and len(key) == 32
    assert not (state / "url-signing.tmp").exists() and not (state / "url-signing.tmp").is_symlink()
    assert signing.load_key(key_settings(tmp_path)) == key, "kept across restarts"


@pytest.mark.parametrize("planted", ["link", "readable"])
def test_a_key_file_others_control_is_not_trusted(tmp_path: Path, planted: str):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    known = "ab" * 32
    stored = state / "url-signing.key"
    if planted == "link":
        elsewhere = tmp_path / "known-key"
        elsewhere.write_text(known)
        elsewhere.chmod(0o600)
        stored.symlink_to(elsewhere)
    else:
        stored.write_text(known)
        stored.chmod(0o644)
    key = signing.load_key(key_settings(tmp_path))
    assert key != bytes.fromhex(known)
    info = stored.lstat()
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    if planted == "link":
        assert (tmp_path / "known-key").read_text() == known
