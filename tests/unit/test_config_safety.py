"""Configs that would lose data or let people in are refused at load, with the key at fault.

Overlapping folders and buckets, secrets too short to protect anything, and error
paths that name the key (``drives[0].provider``), not its parent (``drives[0]``).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from backupmand.config import parse_settings
from backupmand.errors import ConfigError
from tests.helpers import run_cli

#: The example recipient of age's README (a valid X25519 recipient).
GOOD_RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"


def document(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "data_sources": [{"provider": "sqlite", "label": "app", "db_path": str(tmp_path / "a.db"),
                          "tmp_folder": str(tmp_path / "dumps")}],
        "drives": [{"provider": "local", "label": "disk", "folder": str(tmp_path / "drive")}],
    }
    base.update(overrides)
    return base


def problems_of(data: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(yaml.safe_dump(data), env=env or {})
    return caught.value.problems


def loads(data: dict[str, Any], env: dict[str, str] | None = None) -> None:
    parse_settings(yaml.safe_dump(data), env=env or {})


def source(label: str, tmp_folder: Path | str) -> dict[str, Any]:
    return {"provider": "sqlite", "label": label, "db_path": "/srv/app.db",
            "tmp_folder": str(tmp_folder)}


def local(label: str, folder: Path | str) -> dict[str, Any]:
    return {"provider": "local", "label": label, "folder": str(folder)}


def s3(label: str, bucket: str = "backups", prefix: str = "", endpoint: str = "") -> dict[str, Any]:
    return {"provider": "s3", "label": label, "bucket": bucket, "prefix": prefix,
            "endpoint": endpoint, "access_key": "AKIAEXAMPLE", "secret_key": "secret-example"}


# ---------------------------------------------------------------------------- overlapping folders


def test_a_tmp_folder_equal_to_a_drive_folder_is_refused_naming_both_keys(tmp_path: Path):
    shared = tmp_path / "shared"
    (problem,) = problems_of(document(tmp_path, data_sources=[source("app", shared)],
                                      drives=[local("disk", shared)]))
    assert problem.startswith(f"data_sources[0].tmp_folder: {shared} is the same folder as "
                              f"drives[0].folder ({shared})")
    assert "separate folders" in problem


def test_a_tmp_folder_inside_or_around_a_drive_folder_is_refused(tmp_path: Path):
    drive = tmp_path / "drive"
    inside = problems_of(document(tmp_path, data_sources=[source("app", drive / "tmp")]))
    assert inside[0].startswith(f"data_sources[0].tmp_folder: {drive / 'tmp'} is inside "
                                f"drives[0].folder ({drive})")
    around = problems_of(document(tmp_path, data_sources=[source("app", tmp_path)]))
    assert around[0].startswith(f"data_sources[0].tmp_folder: {tmp_path} contains "
                                f"drives[0].folder ({drive})")


def test_paths_are_compared_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    drive = tmp_path / "drive"
    drive.mkdir()
    (tmp_path / "link").symlink_to(drive)
    monkeypatch.chdir(tmp_path)
    through_link = problems_of(document(tmp_path, data_sources=[source("app", tmp_path / "link")]))
    assert through_link[0].startswith(f"data_sources[0].tmp_folder: {drive} is the same folder")
    relative = problems_of(document(tmp_path, data_sources=[source("app", "./drive/../drive/x")]))
    assert relative[0].startswith(f"data_sources[0].tmp_folder: {drive / 'x'} is inside")
    # A sibling whose name merely starts the same is another folder.
    loads(document(tmp_path, data_sources=[source("app", tmp_path / "drive-tmp")]))


def test_two_local_drives_on_one_folder_or_nested_are_refused(tmp_path: Path):
    drive = tmp_path / "drive"
    same = problems_of(document(tmp_path, drives=[local("one", drive), local("two", drive)]))
    assert same == [f"drives[1].folder: {drive} is the same folder as drives[0].folder: the two "
                    "drives would share files and count one copy as two; give each drive a "
                    "folder of its own"]
    nested = problems_of(document(tmp_path, drives=[local("one", drive / "deeper"),
                                                    local("two", drive)]))
    assert nested[0].startswith(f"drives[1].folder: {drive} contains drives[0].folder")
    loads(document(tmp_path, drives=[local("one", tmp_path / "d1"), local("two", tmp_path / "d2")]))


def test_two_s3_drives_on_one_bucket_and_prefix_are_refused(tmp_path: Path):
    same = problems_of(document(tmp_path, drives=[s3("one", prefix="backups"),
                                                  s3("two", prefix="/backups/")]))
    assert same == ["drives[1].prefix: bucket 'backups' at s3.amazonaws.com with prefix 'backups' "
                    "overlaps drives[0].prefix ('backups'): the two drives would share objects "
                    "and count one copy as two; give each drive a prefix of its own"]
    nested = problems_of(document(tmp_path, drives=[s3("one", prefix="a/b"), s3("two", prefix="a")]))
    assert nested[0].startswith("drives[1].prefix: bucket 'backups' at s3.amazonaws.com with "
                                "prefix 'a' overlaps drives[0].prefix ('a/b')")
    whole_bucket = problems_of(document(tmp_path, drives=[s3("one", prefix="x"), s3("two")]))
    assert whole_bucket[0].startswith("drives[1].prefix: bucket 'backups' at s3.amazonaws.com "
                                      "with prefix '(none)' overlaps")
    endpoint = problems_of(document(tmp_path, drives=[
        s3("one", endpoint="http://127.0.0.1:9000"), s3("two", endpoint="HTTP://127.0.0.1:9000/")]))
    assert endpoint[0].startswith("drives[1].prefix: bucket 'backups' at 127.0.0.1:9000")
    # Other prefixes (by whole segments), buckets or endpoints are other places.
    loads(document(tmp_path, drives=[s3("one", prefix="backups"), s3("two", prefix="backups2")]))
    loads(document(tmp_path, drives=[s3("one"), s3("two", bucket="other-bucket")]))
    loads(document(tmp_path, drives=[s3("one"), s3("two", endpoint="http://127.0.0.1:9000")]))


def test_host_placeholders_are_compared_with_this_hosts_name(tmp_path: Path):
    drive = tmp_path / "{host}"
    clash = problems_of(document(tmp_path, host="web1", data_sources=[source("app", tmp_path / "web1")],
                                 drives=[local("disk", drive)]))
    assert clash[0].startswith(f"data_sources[0].tmp_folder: {tmp_path / 'web1'} is the same "
                               f"folder as drives[0].folder ({tmp_path / 'web1'})")
    loads(document(tmp_path, host="web2", data_sources=[source("app", tmp_path / "web1")],
                   drives=[local("disk", drive)]))
    buckets = problems_of(document(tmp_path, host="web1", drives=[
        s3("one", prefix="hosts/{host}"), s3("two", prefix="hosts/web1/daily")]))
    assert buckets[0].startswith("drives[1].prefix: bucket 'backups' at s3.amazonaws.com with "
                                 "prefix 'hosts/web1/daily' overlaps drives[0].prefix ('hosts/web1')")
    # Without `host:`, {host} is this machine's name.
    machine = socket.gethostname().split(".")[0]
    default = problems_of(document(tmp_path, data_sources=[source("app", tmp_path / machine)],
                                   drives=[local("disk", drive)]))
    assert default[0].startswith("data_sources[0].tmp_folder:")


def test_every_overlap_is_reported_at_once(tmp_path: Path):
    drive = tmp_path / "drive"
    found = problems_of(document(
        tmp_path, data_sources=[source("app", drive), source("other", drive / "x")],
        drives=[local("one", drive), local("two", drive)]))
    assert [problem.split(":")[0] for problem in found] == [
        "data_sources[0].tmp_folder", "data_sources[0].tmp_folder",
        "data_sources[1].tmp_folder", "data_sources[1].tmp_folder", "drives[1].folder"]


def test_the_cli_exits_78_naming_both_key_paths(tmp_path: Path):
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(document(
        tmp_path, data_sources=[source("app", tmp_path / "drive")])))
    for command in ("check-config", "run", "serve"):
        result = run_cli(command, config=config)
        assert result.returncode == 78, (command, result.stderr)
        assert "data_sources[0].tmp_folder:" in result.stderr
        assert "drives[0].folder" in result.stderr
    assert not (tmp_path / "drive").exists(), "nothing was created before the refusal"


# ---------------------------------------------------------------------------- secrets too short


def test_api_keys_need_16_bytes_and_url_secrets_32(tmp_path: Path):
    def http(**keys: Any) -> dict[str, Any]:
        return document(tmp_path, http=keys)

    loads(http(api_keys=["k" * 16], url_secret="s" * 32))
    assert problems_of(http(api_keys=["k" * 16, "short-key-15byt"])) == [
        "http.api_keys[1]: an API key needs at least 16 bytes (for example: openssl rand -hex 16)"]
    assert problems_of(http(url_secret="s" * 31)) == [
        "http.url_secret: needs at least 32 bytes (for example: openssl rand -hex 32), or leave "
        "it out to have a key generated"]
    # Bytes, not characters: eight 2-byte characters are 16 bytes.
    loads(http(api_keys=["é" * 8]))


def test_a_secret_that_expands_to_nothing_is_refused(tmp_path: Path):
    found = problems_of(document(tmp_path, http={"api_keys": ["${API_KEY:-}"],
                                                 "url_secret": "${URL_SECRET:-}"}))
    assert found == [
        "http.api_keys[0]: an API key needs at least 16 bytes (for example: openssl rand -hex 16)",
        "http.url_secret: needs at least 32 bytes (for example: openssl rand -hex 32), or leave "
        "it out to have a key generated"]


def test_short_secrets_are_never_echoed(tmp_path: Path):
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(document(tmp_path, http={
        "api_keys": ["tiny-key-secret"], "url_secret": "tiny-url-secret"})))
    result = run_cli("check-config", config=config)
    assert result.returncode == 78
    assert "http.api_keys[0]:" in result.stderr and "http.url_secret:" in result.stderr
    assert "tiny-key-secret" not in result.stderr + result.stdout
    assert "tiny-url-secret" not in result.stderr + result.stdout


def test_download_urls_valid_for_more_than_7_days_are_warned_about(tmp_path: Path):
    long_lived = parse_settings(yaml.safe_dump(document(
        tmp_path, http={"download_url_ttl": 7 * 24 * 3600 + 1})), env={})
    assert long_lived.warnings() == [
        "http.download_url_ttl: 604801 s is more than 7 days: a signed download URL that leaks "
        "(a chat message, a proxy log) downloads the backup until it expires"]
    assert parse_settings(yaml.safe_dump(document(
        tmp_path, http={"download_url_ttl": 7 * 24 * 3600})), env={}).warnings() == []
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(document(tmp_path, http={"download_url_ttl": 30 * 24 * 3600})))
    result = run_cli("check-config", config=config)
    assert result.returncode == 0, result.stderr
    assert "# warning: http.download_url_ttl: 2592000 s is more than 7 days" in result.stdout
    logged = [line for line in result.stderr.splitlines() if "config.warning" in line]
    assert len(logged) == 1 and logged[0].startswith("<4>")
    assert "http.download_url_ttl" in logged[0]


# ---------------------------------------------------------------------------- key paths


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"drives": [{"provider": "ftp", "label": "x"}]},
     "drives[0].provider: unknown provider (expected one of 'local', 's3', 'google_drive', "
     "'gdrive')"),
    ({"drives": [{"label": "x", "folder": "/x"}]}, "drives[0].provider: required key is missing"),
    ({"data_sources": [{"provider": "oracle", "label": "x"}]},
     "data_sources[0].provider: unknown provider"),
    ({"http": {"backup_job": {"cron": "61 3 * * *"}}}, "http.backup_job.cron: cron expression"),
    ({"http": {"backup_job": {"cron": "0 3 * * *", "timezone": "Mars/Olympus"}}},
     "http.backup_job.timezone: unknown time zone 'Mars/Olympus'"),
    ({"http": {"verify_job": {"enabled": True, "cron": "* * *"}}},
     "http.verify_job.cron: cron expression '* * *' has 3 fields"),
    ({"notifiers": {"mail": {"enabled": True}}},
     "notifiers.mail.destinations: mail is enabled but has no destinations"),
    ({"notifiers": {"webhook": {"enabled": True}}},
     "notifiers.webhook.endpoints: webhook is enabled but has no endpoints"),
    ({"notifiers": {"ping": {"enabled": True}}},
     "notifiers.ping.url: ping is enabled but has neither url nor urls"),
    ({"notifiers": {"ping": {"enabled": True, "urls": {"Nope": "http://127.0.0.1:1/x"}}}},
     "notifiers.ping.urls.Nope: no data source is labelled 'Nope'"),
    ({"retention": {"enabled": True, "by": "gfs"}}, "retention.by: gfs needs at least one keep_*"),
    ({"drives": [{"provider": "s3", "label": "x", "bucket": "abc", "access_key": "AKIA"}]},
     "drives[0].secret_key: access_key and secret_key go together"),
    ({"drives": [{"provider": "s3", "label": "x", "bucket": "abc", "secret_key": "s"}]},
     "drives[0].access_key: access_key and secret_key go together"),
    ({"encryption": {"recipients": [GOOD_RECIPIENT, "not-a-key"]}},
     "encryption.recipients[1]: is not an age recipient"),
    ({"encryption": {}}, "encryption.recipients: encryption needs at least one recipient"),
    ({"encryption": {"recipients": [GOOD_RECIPIENT], "recipients_file": "/r"}},
     "encryption.recipients_file: give either recipients or recipients_file, not both"),
    ({"encryption": {"recipients_file": "/nonexistent/recipients"}},
     "encryption.recipients_file: cannot read /nonexistent/recipients"),
    ({"notifiers": {"webhook": {"endpoints": [
        {"name": "x", "url": "http://127.0.0.1:1/", "secret": "whsec_not base64!"}]}}},
     "notifiers.webhook.endpoints[0].secret: a secret starting with whsec_ must continue in "
     "base64"),
    ({"data_sources": [source("app", "/t/a"), source("App", "/t/b")]},
     "data_sources[1].label: 'App' is used twice (also data_sources[0].label;"),
])
def test_errors_name_the_key_at_fault(tmp_path: Path, overrides: dict[str, Any], expected: str):
    found = problems_of(document(tmp_path, **overrides))
    assert len(found) == 1, found
    assert found[0].startswith(expected), found[0]


def test_a_recipients_file_line_is_reported_under_its_key(tmp_path: Path):
    recipients = tmp_path / "recipients"
    recipients.write_text(f"# team\n{GOOD_RECIPIENT}\nnonsense\n")
    (problem,) = problems_of(document(tmp_path, encryption={"recipients_file": str(recipients)}))
    assert problem.startswith("encryption.recipients_file: line 2: is not an age recipient")


# ---------------------------------------------------------------------------- shipped configs


@pytest.mark.parametrize("name", ["config/quickstart.yml", "config/backupmand.example.yml",
                                  "packaging/config.yml"])
def test_the_shipped_configs_load(name: str):
    from tests.helpers import ROOT

    variables = {"PG_PASSWORD": "pg-password", "SHOP_DB_PASSWORD": "shop-password",
                 "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "aws-secret",
                 "SMTP_PASSWORD": "smtp-password", "WEBHOOK_TOKEN": "webhook-token",
                 "BACKUPMAND_API_KEY": "an-api-key-0123456789",
                 "APPRISE_URL": "ntfy://ntfy.example.com/backups", "DRILL_PASSWORD": "drill"}
    settings = parse_settings((ROOT / name).read_text(), env=variables)
    assert settings.warnings() == []
    if name == "config/quickstart.yml":
        quickstart = parse_settings((ROOT / name).read_text(), env={})
        assert [key.get_secret_value() for key in quickstart.http.api_keys] == [
            "quickstart-key-change-me"]
