"""The day the host is gone (SPEC §6.2): a new machine with only the config file restores
from any drive, rebuilds the catalog from the manifests, and sees the whole fleet."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import base_config, child_env, make_sqlite, run_cli, write_config
from tests.integration.test_three_drives import as_config

ENV = child_env(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/dev/null",
                AWS_SHARED_CREDENTIALS_FILE="/dev/null")


def rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT id, name, hex(data) FROM items ORDER BY id").fetchall()


def three_drives(tmp_path: Path, s3_server: Any, bucket: str, gdrive_server: Any,
                 prefix: str = "backups") -> list[dict[str, Any]]:
    return [
        {"provider": "local", "label": "disk", "folder": str(tmp_path / "drive")},
        as_config(s3_server.drive_config(bucket, prefix=prefix)),
        as_config(gdrive_server.drive_config(tmp_path / "google")),
    ]


def cli(*args: str, config: Path) -> Any:
    result = run_cli(*args, config=config, env=ENV, timeout=300)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


async def test_a_new_machine_restores_from_every_drive_with_only_the_config(
    tmp_path: Path, s3_server: Any, gdrive_server: Any
) -> None:
    bucket = s3_server.create_bucket()
    make_sqlite(tmp_path / "app.db", rows=300)
    document = base_config(tmp_path, host="db1",
                           drives=three_drives(tmp_path, s3_server, bucket, gdrive_server))
    config = write_config(tmp_path / "config.yml", document)
    made = []
    for _ in range(2):
        await asyncio.to_thread(cli, "run", config=config)
        listed = json.loads((await asyncio.to_thread(cli, "list", "--json", config=config)).stdout)
        made = listed["Results"]
    originals = rows(tmp_path / "app.db")

    # The host is lost: its catalog and state go; a new machine has the same config file.
    shutil.rmtree(tmp_path / "state")
    (tmp_path / "app.db").unlink()
    assert json.loads((await asyncio.to_thread(cli, "list", "--json",
                                                config=config)).stdout)["Results"] == []

    # Without a catalog: the latest backup of the label, straight from each drive.
    for drive in ("disk", "S3 Drive", "Google Drive"):
        target = tmp_path / f"latest-{drive.replace(' ', '-')}.db"
        await asyncio.to_thread(cli, "restore", "--drive", drive, "--label", "app", "--latest",
                                "--to-file", str(target), config=config)
        assert rows(target) == originals, drive

    # By name, from S3.
    by_name = tmp_path / "by-name.db"
    await asyncio.to_thread(cli, "restore", made[1]["Name"], "--drive", "S3 Drive",
                            "--to-file", str(by_name), config=config)
    assert rows(by_name) == originals

    # catalog rebuild from S3: the same ids, sizes and checksums; twice adds nothing.
    rebuilt = await asyncio.to_thread(cli, "catalog", "rebuild", "--drive", "S3 Drive",
                                      config=config)
    assert "2 backup(s) added" in rebuilt.stdout, rebuilt.stdout
    again = await asyncio.to_thread(cli, "catalog", "rebuild", "--drive", "S3 Drive",
                                    config=config)
    assert "0 backup(s) added" in again.stdout and "2 already in the catalog" in again.stdout
    listed = json.loads((await asyncio.to_thread(cli, "list", "--json", config=config)).stdout)
    seen = {b["Id"]: b for b in listed["Results"]}
    for original in made:
        copy = seen[original["Id"]]
        for key in ("Label", "Name", "Size", "Sha256", "Compression", "Host", "Provider",
                    "RawSize", "CreatedAt"):
            assert copy[key] == original[key], key
        assert copy["Status"] == "finished"
        assert [f["Drive"] for f in copy["DriveFiles"]] == ["S3 Drive"]
    # Another drive's copies join the same records.
    await asyncio.to_thread(cli, "catalog", "rebuild", "--drive", "disk", config=config)
    listed = json.loads((await asyncio.to_thread(cli, "list", "--json", config=config)).stdout)
    assert all(sorted(f["Drive"] for f in b["DriveFiles"]) == ["S3 Drive", "disk"]
               for b in listed["Results"])
    # And the rebuilt catalog restores into the data source.
    target = tmp_path / "app.db"
    await asyncio.to_thread(cli, "restore", made[0]["Id"], "--to-source", "app",
                            config=config)
    assert rows(target) == originals


async def test_rebuild_reports_what_it_cannot_trust_and_rebuilds_the_rest(tmp_path: Path) -> None:
    make_sqlite(tmp_path / "app.db")
    config = write_config(tmp_path / "config.yml", base_config(tmp_path, host="db1"))
    for _ in range(4):
        await asyncio.to_thread(cli, "run", config=config)
    backups = json.loads((await asyncio.to_thread(cli, "list", "--json", config=config)).stdout)
    good, tampered, orphan, lonely = backups["Results"]
    drive = tmp_path / "drive"
    # A tampered manifest: its dump's size no longer matches.
    manifest = drive / tampered["Manifest"]
    document = json.loads(manifest.read_text())
    document["Size"] += 1
    manifest.write_text(json.dumps(document))
    # A manifest without its dump; a dump without its manifest; a foreign file; junk JSON.
    (drive / orphan["Name"]).unlink()
    (drive / lonely["Manifest"]).unlink()
    (drive / "holiday-photos.tar").write_bytes(b"not ours")
    (drive / "app-20250101000000-0000abcd.manifest.json").write_text("{not json")
    shutil.rmtree(tmp_path / "state")
    result = await asyncio.to_thread(cli, "catalog", "rebuild", "--drive", "disk", config=config)
    out = result.stdout
    assert "1 backup(s) added" in out, out
    assert f"added {good['Id']}" in out
    assert f"{tampered['Manifest']}: its dump" in out and "holds" in out
    assert f"{orphan['Manifest']}: its dump {orphan['Name']} is not on the drive" in out
    assert f"{lonely['Name']}: a backupmand file without a (valid) manifest" in out
    assert "holiday-photos.tar: not a backupmand file" in out
    assert "app-20250101000000-0000abcd.manifest.json: not a valid manifest" in out
    listed = json.loads((await asyncio.to_thread(cli, "list", "--json", config=config)).stdout)
    assert [b["Id"] for b in listed["Results"]] == [good["Id"]]


async def test_two_hosts_on_one_bucket_see_each_other_in_the_fleet_and_prune_only_their_own(
    tmp_path: Path, s3_server: Any,
) -> None:
    bucket = s3_server.create_bucket()
    configs = {}
    for host in ("db1", "db2"):
        folder = tmp_path / host
        folder.mkdir()
        make_sqlite(folder / "app.db")
        drive = as_config(s3_server.drive_config(bucket, prefix="backups/{host}"))
        configs[host] = write_config(folder / "config.yml", base_config(
            folder, host=host, drives=[drive],
            retention={"enabled": True, "by": "count", "value": 2, "min_keep": 1}))
    for _ in range(2):
        for host in ("db1", "db2"):
            await asyncio.to_thread(cli, "run", config=configs[host])
    keys = s3_server.keys(bucket)
    assert {key.split("/")[1] for key in keys} == {"db1", "db2"}
    fleet = json.loads((await asyncio.to_thread(
        cli, "fleet", "list", "--drive", "S3 Drive", "--json", config=configs["db1"])).stdout)
    assert {(b["Host"], b["Label"]) for b in fleet["Backups"]} == {("db1", "app"), ("db2", "app")}
    assert len(fleet["Backups"]) == 4
    assert {(item["Host"], item["Label"]) for item in fleet["Latest"]} == {("db1", "app"),
                                                                           ("db2", "app")}
    assert all(item["AgeSeconds"] < 600 for item in fleet["Latest"])
    assert fleet["Backups"] == sorted(fleet["Backups"], key=lambda b: b["FinishedAt"],
                                      reverse=True)
    table = (await asyncio.to_thread(cli, "fleet", "list", "--drive", "S3 Drive",
                                     config=configs["db2"])).stdout
    assert "db1" in table and "db2" in table
    # db1 keeps making backups: its retention deletes db1's oldest, never db2's.
    db2_keys = [key for key in keys if key.startswith("backups/db2/")]
    for _ in range(2):
        await asyncio.to_thread(cli, "run", config=configs["db1"])
    after = s3_server.keys(bucket)
    assert [key for key in after if key.startswith("backups/db2/")] == db2_keys
    assert len([key for key in after if key.startswith("backups/db1/")]) == 4, \
        "two dumps and their manifests"
    # db2's config pointed at db1's backups (host db1) restores them.
    document = yaml.safe_load(configs["db2"].read_text())
    target = tmp_path / "from-db1.db"
    await asyncio.to_thread(cli, "restore", "--drive", "S3 Drive", "--host", "db1",
                            "--label", "app", "--latest", "--to-file", str(target),
                            config=configs["db2"])
    assert rows(target) == rows(tmp_path / "db1" / "app.db")
    assert document["host"] == "db2"

