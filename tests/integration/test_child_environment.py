"""Dump tools get only what they need from the daemon's environment.

A real daemon, started with secrets in its environment (another source's password, the
API key, a webhook token, AWS keys), backs up an SQLite source through a `sqlite3` that
records the environment it was started with, then runs the real one.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from tests.helpers import API_KEY, base_config, child_env, daemon, write_config

ALLOWED = {"PATH", "LANG", "LANGUAGE", "TZ", "HOME", "TMPDIR"}
SECRETS = {
    "OTHER_DB_PASSWORD": "other-source-password-123",
    "BACKUPMAND_API_KEY": "api-key-from-env-0123456789",
    "WEBHOOK_TOKEN": "webhook-token-from-env-456",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-from-env-789",
    "SOME_APP_TOKEN": "unrelated-app-token-000",
}


def recording_sqlite3(folder: Path, records: Path) -> None:
    real = shutil.which("sqlite3")
    assert real is not None
    folder.mkdir()
    tool = folder / "sqlite3"
    # /proc/$$/environ is exactly what this process was started with.
    tool.write_text(f"#!/bin/sh\ncat /proc/$$/environ > '{records}'/env-$$\nexec {real} \"$@\"\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)


def test_dump_tools_get_only_path_locale_time_zone_home_and_tmpdir(tmp_path: Path):
    records = tmp_path / "records"
    records.mkdir()
    recording_sqlite3(tmp_path / "bin", records)
    document = base_config(tmp_path)
    document["http"]["api_keys"] = [API_KEY, "${BACKUPMAND_API_KEY}"]
    document["data_sources"].append({
        "provider": "postgres", "label": "other", "host": "127.0.0.1", "port": 1,
        "db_name": "other", "user": "backup", "password": "${OTHER_DB_PASSWORD}",
        "tmp_folder": str(tmp_path / "other-dumps")})
    config = write_config(tmp_path / "config.yml", document)
    env = child_env(**SECRETS, PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
                    LANG="C.UTF-8", LC_ALL="C.UTF-8", LC_TIME="C.UTF-8", TZ="UTC",
                    HOME=str(tmp_path), TMPDIR=str(tmp_path))
    with daemon(config, env=env) as server:
        status, body = server.request("POST", "/api/backups", {"Sources": ["app"]})
        assert status == 200, body
        assert server.wait_backup(body["BackupIds"][0])["Status"] == "finished"
    seen = sorted(records.iterdir())
    assert seen, "the dump ran through the recording sqlite3"
    for record in seen:
        variables = dict(item.split("=", 1) for item in record.read_text().split("\0") if item)
        unexpected = {name for name in variables
                      if name not in ALLOWED and not name.startswith("LC_")}
        assert unexpected == set(), (record.name, sorted(unexpected))
        for value in SECRETS.values():
            assert value not in "\0".join(variables.values())
        assert variables["PATH"].startswith(str(tmp_path / "bin"))
        assert variables["LC_ALL"] == "C.UTF-8" and variables["TZ"] == "UTC"
        assert variables["HOME"] == str(tmp_path) and variables["TMPDIR"] == str(tmp_path)
