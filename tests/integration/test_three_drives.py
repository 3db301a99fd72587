"""One backup to a local folder, S3 and Google Drive at once — verified, downloaded and
restored from each (S3 on moto's server, Drive on the local Drive v3 server)."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import BaseModel, SecretStr

from tests.helpers import API_KEY, Daemon, base_config, child_env, free_port, run_cli, write_config


def as_config(model: BaseModel) -> dict[str, Any]:
    """A drive config object back to YAML-ready data, secrets included."""
    values = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, Path):
            value = str(value)
        if value is not None:
            values[name] = value
    return values


async def test_local_s3_and_google_drive_at_once(tmp_path, s3_server, gdrive_server):
    bucket = s3_server.create_bucket()
    port = free_port()
    document = base_config(tmp_path, drives=[
        {"provider": "local", "label": "disk", "folder": str(tmp_path / "drive")},
        as_config(s3_server.drive_config(bucket, prefix="nightly")),
        as_config(gdrive_server.drive_config(tmp_path / "google")),
    ])
    document["http"].update(port=port, app_url=f"http://127.0.0.1:{port}")
    config = write_config(tmp_path / "config.yml", document)
    env = child_env(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/dev/null",
                    AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    server = Daemon(config, port, env=env)
    try:
        await asyncio.to_thread(server.wait_ready)
        status, body = await asyncio.to_thread(server.request, "POST", "/api/backups")
        assert status == 200
        backup = await asyncio.to_thread(server.wait_backup, body["BackupIds"][0])
        assert backup["Status"] == "finished", backup
        records = {record["Provider"]: record for record in backup["DriveFiles"]}
        assert set(records) == {"local", "s3", "google_drive"}
        assert all(record["Status"] == "finished" for record in records.values())
        assert records["s3"]["Path"] == f"nightly/{backup['Name']}"
        assert s3_server.keys(bucket) == sorted([records["s3"]["Path"],
                                                 records["s3"]["ManifestPath"]])
        assert records["s3"]["ManifestPath"] == f"nightly/{backup['Manifest']}"
        assert records["google_drive"]["Path"] in gdrive_server.files  # Path is the Drive file id
        expected = Path(records["local"]["Path"]).read_bytes()
        assert hashlib.sha256(expected).hexdigest() == backup["Sha256"]

        async with aiohttp.ClientSession() as client:
            for record in records.values():
                async with client.get(
                    f"{server.url}/api/backups/{record['Id']}/generate-download-url",
                    headers={"X-Api-Key": API_KEY},
                ) as response:
                    url = (await response.json())["Url"]
                async with client.get(url) as response:  # signed: no key
                    assert response.status == 200, record["Provider"]
                    assert await response.read() == expected, record["Provider"]
                    assert backup["Name"] in response.headers["Content-Disposition"]
    finally:
        await asyncio.to_thread(server.stop)

    originals = sqlite3.connect(tmp_path / "app.db").execute(
        "SELECT id, hex(data) FROM items ORDER BY id").fetchall()
    for drive in ("disk", "S3 Drive", "Google Drive"):
        target = tmp_path / f"restored-{drive.replace(' ', '-')}.db"
        result = await asyncio.to_thread(
            run_cli, "restore", backup["Id"], "--drive", drive, "--to-file", str(target),
            config=config, env=env)
        assert result.returncode == 0, (drive, result.stderr)
        with sqlite3.connect(target) as restored:
            assert restored.execute("SELECT id, hex(data) FROM items ORDER BY id").fetchall() == originals
