"""The HTTP API through a real `backupmand serve` process."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import API_KEY, daemon, make_sqlite

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
BACKUP_FIELDS = {"Id": str, "Status": str, "Label": str, "DumpPath": (str, type(None)),
                 "CreatedAt": str, "UpdatedAt": (str, type(None)), "DriveFiles": list}
DRIVE_FILE_FIELDS = {"Id": str, "BackupId": str, "Provider": str, "Label": str,
                     "Path": (str, type(None)), "Status": str, "CreatedAt": str,
                     "UpdatedAt": (str, type(None))}


def check_backup(item: dict[str, Any]) -> None:
    for field, kind in BACKUP_FIELDS.items():
        assert field in item, field
        assert isinstance(item[field], kind), (field, item[field])
    assert UUID.match(item["Id"])
    assert item["Status"] in ("pending", "finished", "failed")
    assert TIMESTAMP.match(item["CreatedAt"])
    if item["UpdatedAt"] is not None:
        assert TIMESTAMP.match(item["UpdatedAt"])
        assert item["UpdatedAt"] >= item["CreatedAt"]
    for record in item["DriveFiles"]:
        for field, kind in DRIVE_FILE_FIELDS.items():
            assert field in record, field
            assert isinstance(record[field], kind), (field, record[field])
        assert UUID.match(record["Id"]) and record["BackupId"] == item["Id"]
        assert record["Provider"] in ("local", "s3", "google_drive")
        assert record["Status"] in ("pending", "finished", "failed")
        assert TIMESTAMP.match(record["CreatedAt"])
    if item["Status"] == "finished":
        assert item["DumpPath"] is None
        assert item["DriveFiles"] and all(f["Status"] == "finished" for f in item["DriveFiles"])


@pytest.fixture
def two_sources(tmp_path: Path, make_config):
    make_sqlite(tmp_path / "other.db", rows=10)
    return make_config(data_sources=[
        {"provider": "sqlite", "label": "app", "db_path": str(tmp_path / "app.db"),
         "tmp_folder": str(tmp_path / "dumps")},
        {"provider": "sqlite", "label": "Other DB", "db_path": str(tmp_path / "other.db"),
         "tmp_folder": str(tmp_path / "dumps")},
    ])


def test_post_then_poll_then_list_matches_the_spec(two_sources, tmp_path):
    with daemon(two_sources) as server:
        status, body = server.request("GET", "/api/backups")
        assert (status, body) == (200, {"Results": []})
        status, body = server.request("POST", "/api/backups")
        assert status == 200 and body["Message"] == "Backup started"
        assert len(body["BackupIds"]) == 2
        for backup_id in body["BackupIds"]:
            assert server.wait_backup(backup_id)["Status"] == "finished"
        status, body = server.request("POST", "/api/backups", {"Sources": ["Other DB"]})
        assert status == 200 and len(body["BackupIds"]) == 1
        newest = server.wait_backup(body["BackupIds"][0])
        status, listing = server.request("GET", "/api/backups")
    assert status == 200 and list(listing) == ["Results"]
    results = listing["Results"]
    assert len(results) == 3
    for item in results:
        check_backup(item)
    assert results[0]["Id"] == newest["Id"], "newest first"
    created = [item["CreatedAt"] for item in results]
    assert created == sorted(created, reverse=True)
    assert {item["Label"] for item in results} == {"app", "Other DB"}
    for item in results:
        (record,) = item["DriveFiles"]
        assert record["Provider"] == "local" and record["Drive"] == "disk"
        stored = Path(record["Path"])
        assert stored.name == record["Label"]
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == item["Sha256"]
        assert re.match(r"^(app|other-db)-\d{14}-[0-9a-f]{8}\.sqlite\.zst$", record["Label"])


def test_filters_pagination_and_bad_parameters(two_sources):
    with daemon(two_sources) as server:
        ids = []
        for _ in range(2):
            _, body = server.request("POST", "/api/backups")
            ids += body["BackupIds"]
            for backup_id in body["BackupIds"]:
                server.wait_backup(backup_id)
        _, everything = server.request("GET", "/api/backups")
        _, page = server.request("GET", "/api/backups?limit=2&offset=1")
        assert [b["Id"] for b in page["Results"]] == [b["Id"] for b in everything["Results"][1:3]]
        _, labelled = server.request("GET", "/api/backups?label=Other%20DB")
        assert len(labelled["Results"]) == 2 and all(b["Label"] == "Other DB" for b in labelled["Results"])
        _, finished = server.request("GET", "/api/backups?status=finished&limit=10")
        assert len(finished["Results"]) == 4
        _, pending = server.request("GET", "/api/backups?status=pending")
        assert pending == {"Results": []}
        for query in ("status=done", "limit=0", "limit=-1", "limit=abc", "offset=x", "label=",
                      "colour=red"):
            status, body = server.request("GET", f"/api/backups?{query}")
            assert status == 400 and isinstance(body["Error"], str), query


def test_authentication_and_error_statuses(two_sources):
    with daemon(two_sources) as server:
        assert server.request("GET", "/api/backups", key=None)[0] == 401
        status, body = server.request("GET", "/api/backups", key="wrong")
        assert status == 401 and body == {"Error": "wrong X-Api-Key"}
        assert server.request("GET", "/ping", key=None) == (200, {"message": "pong"})
        status, body = server.request("GET", "/api/backups/0b5b8a9e-0000-4000-8000-000000000000")
        assert status == 404 and "Error" in body
        assert server.request("POST", "/api/backups/unknown-id/retry")[0] == 404
        assert server.request("POST", "/api/backups", {"Sources": ["nope"]})[0] == 400
        assert server.request("POST", "/api/backups", {"Sources": "app"})[0] == 400
        assert server.request("POST", "/api/backups", {"Colour": 1})[0] == 400
        assert server.request("POST", "/api/backups", [1, 2])[0] == 400
        status, body = server.request("GET", "/api/nothing-here")
        assert status == 404 and "Error" in body
        _, started = server.request("POST", "/api/backups", {"Sources": ["app"]})
        finished = server.wait_backup(started["BackupIds"][0])
        status, body = server.request("POST", f"/api/backups/{finished['Id']}/retry")
        assert status == 409 and "not failed" in body["Error"]
        log = server.log()
    assert API_KEY not in log


def test_health_reports_every_component(two_sources, tmp_path):
    with daemon(two_sources) as server:
        status, body = server.request("GET", "/health", key=None)
        assert status == 200 and body["Status"] == "UP"
        assert set(body) >= {"Version", "CommitSHA", "BuildDate", "Status", "Details"}
        details = body["Details"]
        assert details["Database"] == {"Status": "UP", "Components": None}
        assert details["Drives"]["Components"] == {"disk": {"Status": "UP", "Components": None}}
        assert set(details["DataSources"]["Components"]) == {"app", "Other DB"}
        assert details["Notifiers"]["Status"] == "UP"
        (tmp_path / "other.db").unlink()
        status, body = server.wait_health("DOWN")
    assert status == 503 and body["Status"] == "DOWN"
    assert body["Details"]["DataSources"]["Components"]["Other DB"]["Status"] == "DOWN"
    assert body["Details"]["DataSources"]["Components"]["app"]["Status"] == "UP"


def test_signed_download_urls(two_sources):
    with daemon(two_sources) as server:
        _, started = server.request("POST", "/api/backups", {"Sources": ["app"]})
        backup = server.wait_backup(started["BackupIds"][0])
        expected = Path(backup["DriveFiles"][0]["Path"]).read_bytes()
        status, body = server.request("GET", f"/api/backups/{backup['Id']}/generate-download-url")
        assert status == 200
        url = body["Url"]
        assert url.startswith(server.url + f"/api/backups/{backup['Id']}/download?")
        with urllib.request.urlopen(url) as response:  # no API key
            assert response.read() == expected
            assert response.headers["Content-Disposition"] == (
                f'attachment; filename="{backup["DriveFiles"][0]["Label"]}"')
        key_file = two_sources.parent / "state" / "url-signing.key"
        assert key_file.stat().st_mode & 0o777 == 0o600, "the signing key is kept private"
        tampered = url.replace("signature=", "signature=0")
        assert server.request("GET", tampered[len(server.url):], key=None)[0] == 401
        expired = re.sub(r"expires=\d+", "expires=1000", url)
        assert server.request("GET", expired[len(server.url):], key=None)[0] == 401
        other = url.replace(backup["Id"], backup["DriveFiles"][0]["Id"])
        assert server.request("GET", other[len(server.url):], key=None)[0] == 401
        # the API key works too, by backup id or drive file id, with ranges
        for identifier in (backup["Id"], backup["DriveFiles"][0]["Id"]):
            status, raw = server.request("GET", f"/api/backups/{identifier}/download")
            assert status == 200 and raw == expected
        status, raw = server.request("GET", f"/api/backups/{backup['Id']}/download",
                                     headers={"Range": "bytes=10-19"})
        assert status == 206 and raw == expected[10:20]
        status, _ = server.request("GET", f"/api/backups/{backup['Id']}/download",
                                   headers={"Range": f"bytes={len(expected)}-"})
        assert status == 416


def test_cli_list_show_and_run_share_the_catalog(two_sources, tmp_path):
    from tests.helpers import run_cli

    result = run_cli("run", "--source", "app", config=two_sources)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("finished")
    listing = run_cli("list", "--json", config=two_sources)
    import json

    (item,) = json.loads(listing.stdout)["Results"]
    check_backup(item)
    table = run_cli("list", config=two_sources).stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "STATUS", "LABEL"] and item["Id"] in table[1]
    shown = run_cli("show", item["Id"], config=two_sources)
    assert shown.returncode == 0 and item["Sha256"] in shown.stdout
    assert run_cli("show", "missing", config=two_sources).returncode == 1
    failing = run_cli("run", "--source", "nope", config=two_sources)
    assert failing.returncode == 1 and "unknown data source" in failing.stderr
    version = run_cli("version")
    assert version.returncode == 0 and version.stdout.startswith("backupmand 1.1.0")
    health = run_cli("health", "--json", config=two_sources)
    assert health.returncode == 0 and json.loads(health.stdout)["Status"] == "UP"
    assert dt.datetime.strptime(item["CreatedAt"], "%Y-%m-%dT%H:%M:%SZ")


def test_metrics_agree_with_the_catalog(two_sources, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    with daemon(two_sources) as server:
        _, started = server.request("POST", "/api/backups")
        for backup_id in started["BackupIds"]:
            server.wait_backup(backup_id)
        (tmp_path / "other.db").write_bytes(b"garbage, not a database" * 10)
        _, again = server.request("POST", "/api/backups", {"Sources": ["Other DB"]})
        failed = server.wait_backup(again["BackupIds"][0])
        assert failed["Status"] == "failed"
        with urllib.request.urlopen(server.url + "/metrics") as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            text = response.read().decode()
        _, listing = server.request("GET", "/api/backups")
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    counts: dict[tuple[str, str], int] = {}
    for item in listing["Results"]:
        counts[(item["Label"], item["Status"])] = counts.get((item["Label"], item["Status"]), 0) + 1
    for (label, status), count in counts.items():
        assert samples[("backupmand_backups", (("label", label), ("status", status)))] == count
    for item in listing["Results"]:
        if item["Status"] == "finished" and item["Label"] == "app":
            assert samples[("backupmand_last_size_bytes", (("label", "app"),))] == item["Size"]
