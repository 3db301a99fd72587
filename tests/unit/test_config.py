"""Config validation: every rule, backupman compatibility, env and file secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from backupmand.config import config_path, masked, parse_settings
from backupmand.errors import ConfigError
from tests.helpers import run_cli

MINIMAL = """
data_sources:
  - provider: sqlite
    label: app
    db_path: /srv/app.db
drives:
  - provider: local
    label: disk
    folder: /var/backups/x
"""

SPEC_EXAMPLE = """
database:
  provider: sqlite
  db_path: /var/lib/backupmand/backupmand.db
data_sources:
  - provider: postgres
    label: Main
    host: 127.0.0.1
    port: 5432
    db_name: app
    user: backup
    password: ${PG_PASSWORD}
    tls: false
    tmp_folder: /var/lib/backupmand/tmp/main
  - provider: sqlite
    label: Local app
    db_path: /srv/app/app.db
    tmp_folder: ./tmp/sqlite
drives:
  - provider: local
    label: Local Drive
    folder: /var/backups/backupmand
  - provider: s3
    label: S3 Drive
    bucket: my-backup-bucket
    region: us-east-1
    access_key: ${AWS_ACCESS_KEY_ID}
    secret_key: ${AWS_SECRET_ACCESS_KEY}
    endpoint: ""
    prefix: backups
    force_path_style: false
  - provider: google_drive
    label: Google Drive
    folder: backups
    client_secret_file: /etc/backupmand/google-client-secret.json
    token_file: /var/lib/backupmand/google-token.json
notifiers:
  mail:
    enabled: true
    smtp_host: smtp.example.com
    smtp_port: 587
    smtp_user: user
    smtp_password: ${SMTP_PASSWORD}
    smtp_crypto: ssl
    destinations:
      - name: Admin
        email: admin@example.com
  webhook:
    enabled: true
    endpoints:
      - name: My Webhook
        url: http://localhost:9000/webhook
        token: xxx
compression: zstd
retention:
  enabled: true
  by: age
  value: 30
  min_keep: 1
http:
  app_url: http://localhost:8080
  listen: 127.0.0.1
  port: 8080
  api_keys: [apikey1]
  backup_job:
    enabled: true
    cron: "0 3 * * *"
    timezone: Europe/Paris
"""

#: The SPEC's example with an API key long enough to be accepted (its own ``apikey1``,
#: 7 bytes, is refused: see test_the_spec_examples_short_api_key_is_refused).
SPEC_EXAMPLE_LONG_KEY = SPEC_EXAMPLE.replace("[apikey1]", "[apikey1-0123456789]")

ENV = {"PG_PASSWORD": "pg-secret-pw", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
       "AWS_SECRET_ACCESS_KEY": "aws-secret-value", "SMTP_PASSWORD": "smtp-secret-pw"}


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, env=env or {})
    return caught.value.problems


def test_the_spec_example_loads_with_a_long_enough_api_key():
    settings = parse_settings(SPEC_EXAMPLE_LONG_KEY, env=ENV)
    assert [s.label for s in settings.data_sources] == ["Main", "Local app"]
    assert settings.data_sources[0].password.get_secret_value() == "pg-secret-pw"
    assert [d.provider for d in settings.drives] == ["local", "s3", "google_drive"]
    assert settings.http.backup_job.timezone == "Europe/Paris"
    assert settings.notifiers.mail.smtp_crypto == "ssl"
    assert set(settings.secrets()) >= {"pg-secret-pw", "aws-secret-value", "smtp-secret-pw",
                                       "xxx", "apikey1-0123456789"}


def test_the_spec_examples_short_api_key_is_refused():
    assert problems(SPEC_EXAMPLE, env=ENV) == [
        "http.api_keys[0]: an API key needs at least 16 bytes (for example: openssl rand -hex 16)"]


def test_defaults():
    settings = parse_settings(MINIMAL, env={})
    assert settings.database.provider == "sqlite"
    assert str(settings.database.db_path) == "/var/lib/backupmand/backupmand.db"
    assert settings.compression == "zstd"
    assert (settings.http.listen, settings.http.port) == ("127.0.0.1", 8080)
    assert settings.retention.min_keep == 1


def test_memory_catalog_is_accepted_and_other_catalogs_get_a_clear_error():
    assert parse_settings("database: {provider: memory}\n" + MINIMAL, env={}).database.provider == "memory"
    (problem,) = problems("database: {provider: mysql}\n" + MINIMAL)
    assert problem.startswith("database.provider:")
    assert "'sqlite'" in problem and "'memory'" in problem


def test_every_problem_is_reported_at_once_with_its_key_path():
    found = problems("""
data_sources:
  - provider: sqlite
    label: app
    db_path: /a.db
  - provider: postgres
    label: pg
    port: 99999
    colour: blue
  - provider: oracle
    label: x
drives:
  - provider: local
    label: disk
compression: brotli
http:
  backup_job:
    cron: "0 3 * *"
""")
    text = "\n".join(found)
    assert "data_sources[1].port:" in text
    assert "data_sources[1].colour: unknown key" in text
    assert "data_sources[1].db_name: required key is missing" in text
    assert "data_sources[2].provider: unknown provider" in text
    assert "drives[0].folder: required key is missing" in text
    assert "compression:" in text
    assert "http.backup_job.cron:" in text and "4 fields" in text


def test_unknown_top_level_key_and_missing_sections():
    found = problems("surprise: 1\n")
    assert "surprise: unknown key" in found
    assert "data_sources: required key is missing" in found
    assert "drives: required key is missing" in found


def test_duplicate_labels_are_rejected():
    found = problems(MINIMAL + """  - provider: local
    label: Disk
    folder: /elsewhere
""")
    assert found == ["drives[1].label: 'Disk' is used twice (also drives[0].label; labels are "
                     "compared ignoring case and punctuation, as they name files)"]


def test_env_expansion_with_defaults_and_missing_variables():
    text = MINIMAL.replace("/srv/app.db", "${APP_DB:-/srv/default.db}").replace(
        "/var/backups/x", "${BACKUP_DIR}")
    settings = parse_settings(text, env={"BACKUP_DIR": "/mnt/b"})
    assert str(settings.data_sources[0].db_path) == "/srv/default.db"
    assert str(settings.drives[0].folder) == "/mnt/b"
    settings = parse_settings(text, env={"BACKUP_DIR": "/mnt/b", "APP_DB": "/x.db"})
    assert str(settings.data_sources[0].db_path) == "/x.db"
    (problem,) = problems(text)
    assert problem == "drives[0].folder: environment variable BACKUP_DIR is not set"


def test_secret_files_and_credentials_directory(tmp_path: Path):
    (tmp_path / "pg").write_text("from-file-pw\n")
    (tmp_path / "keys").write_text("key-one-0123456789\n\nkey-two-0123456789\n")
    absolute = tmp_path / "abs"
    absolute.write_text("absolute-secret")
    text = f"""
data_sources:
  - provider: postgres
    label: pg
    db_name: app
    password_file: pg
drives:
  - provider: s3
    label: s3
    bucket: bucket-name
    access_key: AKIA
    secret_key_file: {absolute}
http:
  api_keys_file: keys
"""
    settings = parse_settings(text, env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert settings.data_sources[0].password.get_secret_value() == "from-file-pw"
    assert settings.drives[0].secret_key.get_secret_value() == "absolute-secret"
    assert [k.get_secret_value() for k in settings.http.api_keys] == [
        "key-one-0123456789", "key-two-0123456789"]
    found = problems(text, env={})
    assert any(p.startswith("data_sources[0].password_file: cannot read") for p in found)


def test_a_secret_and_its_file_together_are_an_error(tmp_path: Path):
    (tmp_path / "pw").write_text("x")
    found = problems(f"""
data_sources:
  - provider: mysql
    label: my
    db_name: app
    password: inline
    password_file: {tmp_path / 'pw'}
drives: [{{provider: local, label: d, folder: /x}}]
""")
    assert found == ["data_sources[0].password_file: give either password or password_file, not both"]


def test_secret_values_are_never_echoed_in_errors():
    found = problems("""
data_sources:
  - provider: postgres
    label: pg
    db_name: app
    password: [not, a, string, hunter2-secret]
    port: hunter3-secret
drives:
  - provider: s3
    label: s3
    bucket: b-bucket
    access_key: only-half-secret
""")
    text = "\n".join(found)
    assert "hunter2-secret" not in text and "hunter3-secret" not in text
    assert "only-half-secret" not in text
    assert "data_sources[0].password:" in text
    assert "drives[0].secret_key: access_key and secret_key go together" in text


def test_masked_output_hides_every_secret():
    settings = parse_settings(SPEC_EXAMPLE_LONG_KEY, env=ENV)
    dumped = repr(masked(settings))
    for secret in ENV.values():
        assert secret not in dumped
    assert "apikey1" not in dumped and "'xxx'" not in dumped
    assert "********" in dumped


def test_bad_yaml_and_bad_types():
    (problem,) = problems("data_sources: [\n")
    assert "line" in problem
    assert problems("- a list\n") == ["(top level): must be a mapping of keys"]


def test_config_file_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert config_path("x.yml", env={"BACKUPMAND_CONFIG": "y.yml"}) == Path("x.yml")
    assert config_path(None, env={"BACKUPMAND_CONFIG": "y.yml"}) == Path("y.yml")
    monkeypatch.setattr("backupmand.config.DEFAULT_CONFIG_PATH", tmp_path / "etc.yml")
    assert config_path(None, env={}) == Path("config.yml")
    (tmp_path / "etc.yml").write_text("")
    assert config_path(None, env={}) == tmp_path / "etc.yml"


def test_cli_exits_78_with_key_paths_and_no_secret(tmp_path: Path):
    config = tmp_path / "bad.yml"
    config.write_text("""
data_sources:
  - provider: postgres
    label: pg
    db_name: app
    password: sup3r-s3cret
    port: "eighty"
    extra_key: 1
drives: []
""")
    result = run_cli("check-config", config=config)
    assert result.returncode == 78
    assert "data_sources[0].port:" in result.stderr
    assert "data_sources[0].extra_key: unknown key" in result.stderr
    assert "drives:" in result.stderr
    assert "sup3r-s3cret" not in result.stderr + result.stdout
    missing = run_cli("run", config=tmp_path / "absent.yml")
    assert missing.returncode == 78 and "cannot read the config file" in missing.stderr


def test_check_config_prints_masked_config_and_next_runs(tmp_path: Path):
    config = tmp_path / "ok.yml"
    config.write_text(SPEC_EXAMPLE_LONG_KEY)
    env_result = run_cli("check-config", config=config, env={
        **__import__("tests.helpers", fromlist=["child_env"]).child_env(**ENV)})
    assert env_result.returncode == 0, env_result.stderr
    out = env_result.stdout
    assert "pg-secret-pw" not in out and "aws-secret-value" not in out
    assert "backup_job: '0 3 * * *' in Europe/Paris" in out
    nexts = [line for line in out.splitlines() if "next:" in line]
    assert len(nexts) == 3 and all("03:00:00" in line and "(CE" in line for line in nexts)


def test_host_is_a_whole_path_segment_of_a_drive_location():
    good = MINIMAL.replace("folder: /var/backups/x", "folder: '/var/backups/{host}/db'") + """
  - {provider: s3, label: bucket, bucket: shared-bucket, prefix: 'backups/{host}'}
  - {provider: google_drive, label: gd, folder: '{host}', client_secret_file: /c, token_file: /t}
"""
    settings = parse_settings(good)
    assert [getattr(drive, "prefix", None) for drive in settings.drives][1] == "backups/{host}"
    bad = MINIMAL.replace("folder: /var/backups/x", "folder: '/var/backups/db-{host}'") + """
  - {provider: s3, label: bucket, bucket: shared-bucket, prefix: 'backups/{host}/{host}'}
  - {provider: google_drive, label: gd, folder: 'x/{host}.d', client_secret_file: /c,
     token_file: /t}
"""
    with pytest.raises(ConfigError) as raised:
        parse_settings(bad)
    assert raised.value.problems == [
        "drives[0].folder: {host} must be a whole path segment (such as backups/{host}/nightly), "
        "not part of one: '/var/backups/db-{host}'",
        "drives[1].prefix: may contain {host} only once",
        "drives[2].folder: {host} must be a whole path segment (such as backups/{host}/nightly), "
        "not part of one: 'x/{host}.d'",
    ]
