"""Dump-tool options validation, trailer checks and redaction, with stand-in tools."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backupmand.config import MysqlSource, PostgresSource, parse_settings
from backupmand.errors import ConfigError, DumpError, HealthError
from backupmand.sources.base import DumpFacts
from backupmand.sources.mysql import MysqlDatabase
from backupmand.sources.mysql_client import option_value
from backupmand.sources.options import check_mysqldump_options, check_pg_dump_options
from backupmand.sources.postgres import PostgresDatabase, conninfo_dbname

PG_OK = ["--no-owner", "-O", "-x", "--no-privileges", "--exclude-table=audit",
         "--exclude-table-data=big*", "--schema=public", "--if-exists", "--clean", "-v",
         "--lock-wait-timeout=30s", "--data-only", "--no-comments"]
PG_REFUSED = ["-f", "--file=/tmp/x", "--fi=/tmp/x", "-Fd", "-F", "--format=directory",
              "--form=c", "-j", "--jobs=4", "-C", "--create", "-Z", "--compress=5",
              "-d", "--dbname=other", "--host=evil", "-h", "-p", "--port=1", "-U",
              "--username=x", "-W", "--password", "--", "-", "no-dash", "public",
              "-nfoo", "-n", "-vx", "--c", "--h"]
MY_OK = ["--skip-extended-insert", "--complete-insert", "--ignore-table=app.audit",
         "--where=id>10", "--skip-add-drop-table", "--order-by-primary", "-c", "-K",
         "--set-gtid-purged=OFF", "--skip-dump-date", "--tables"]
MY_REFUSED = ["--result-file=/tmp/x", "--result_file=/tmp/x", "--loose-result-file=/x",
              "--res=/x", "-r", "--tab=/tmp", "-T", "--xml", "-X", "--databases", "-B",
              "--all-databases", "-A", "--compact", "--skip-comments", "--skip_comments",
              "--comments=0", "--host=evil", "-h", "-P", "--port=1", "-u", "--user=x",
              "-p", "--password=x", "--socket=/x", "-S", "--defaults-file=/x",
              "--defaults-extra-file=/x", "--no-defaults", "--login-path=x",
              "--plugin-dir=/x", "--log-error=/x", "--debug", "-#", "-V", "--", "x",
              "-wid>10", "--add-locks", "--skip-single-transaction", "--skip-dump-history",
              "--as-of=2020-01-01", "--skip-hex-blob", "--skip-quote-names", "-Q", "-x",
              "--lock-all-tables", "--skip-triggers", "--skip_routines", "--force", "-f",
              "--compatible=ansi", "--skip-tz-utc", "--skip-opt", "--max-allowed-packet=1M"]


@pytest.mark.parametrize("option", PG_OK)
def test_pg_dump_options_allowed(option: str) -> None:
    assert check_pg_dump_options([option]) == (option,)


@pytest.mark.parametrize("option", PG_REFUSED)
def test_pg_dump_options_refused(option: str) -> None:
    with pytest.raises(ValueError, match=r"options\[0\]"):
        check_pg_dump_options([option])


@pytest.mark.parametrize("option", MY_OK)
def test_mysqldump_options_allowed(option: str) -> None:
    assert check_mysqldump_options([option]) == (option,)


@pytest.mark.parametrize("option", MY_REFUSED)
def test_mysqldump_options_refused(option: str) -> None:
    with pytest.raises(ValueError, match=r"options\[0\]"):
        check_mysqldump_options([option])


def test_pg_dump_compress_only_for_custom_archives() -> None:
    with pytest.raises(ValueError, match="--compress is not allowed"):
        check_pg_dump_options(["--compress=6"])
    assert check_pg_dump_options(["--compress=6"], custom=True) == ("--compress=6",)
    with pytest.raises(ValueError, match="long form"):
        check_pg_dump_options(["-Z6"], custom=True)
    PostgresSource(provider="postgres", label="p", db_name="x", format="custom",
                   options=("--compress=6",))
    with pytest.raises(ValueError, match="--compress is not allowed"):
        PostgresSource(provider="postgres", label="p", db_name="x", options=("--compress=6",))


def test_refused_options_are_config_errors_with_their_key_path() -> None:
    text = """
data_sources:
  - {provider: postgres, label: pg, db_name: app, options: ["--no-owner", "--file=/x"]}
  - {provider: mariadb, label: my, db_name: app, options: ["--password=hunter2"]}
drives:
  - {provider: local, label: l, folder: /tmp/x}
"""
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, env={})
    problems = "\n".join(caught.value.problems)
    assert "data_sources[0].options: options[1]: --file is not allowed" in problems
    assert "data_sources[1].options: options[0]: --password is not allowed" in problems
    assert "hunter2" not in str(caught.value)


def test_option_file_values_are_quoted() -> None:
    assert option_value('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert option_value("p@ss:w/rd?#'") == "\"p@ss:w/rd?#'\""


def test_conninfo_quoting() -> None:
    assert conninfo_dbname("it's \\ x") == "dbname='it\\'s \\\\ x'"


def test_extensions() -> None:
    plain = PostgresDatabase(PostgresSource(provider="postgres", label="p", db_name="x"))
    custom = PostgresDatabase(PostgresSource(provider="postgresql", label="p", db_name="x",
                                             format="custom"))
    mysql = MysqlDatabase(MysqlSource(provider="mariadb", label="m", db_name="x"))
    assert (plain.extension, custom.extension, mysql.extension) == (".sql", ".dump", ".sql")
    assert plain.provider == "postgres" and mysql.provider == "mysql"


# --------------------------------------------------------------------------- stand-in tools


def fake_tool(folder: Path, name: str, body: str) -> None:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    return folder


async def collect(source: PostgresDatabase | MysqlDatabase, workdir: Path) -> bytes:
    return b"".join([chunk async for chunk in source.dump(workdir, DumpFacts())])


async def test_pg_dump_without_trailer_is_incomplete(fake_bin: Path, tmp_path: Path) -> None:
    # The first call reads the database's own properties (--create), the second dumps.
    fake_tool(fake_bin, "pg_dump",
              "case \"$*\" in *--create*) printf -- '--\\n-- Name: x; Type: DATABASE; "
              "Schema: -; Owner: o\\n--\\n\\nCREATE DATABASE x WITH TEMPLATE = template0;\\n'; "
              "exit 0;; esac\n"
              "printf -- '--\\n-- PostgreSQL database dump\\n"
              "CREATE TABLE t (x int);\\nCOPY t (x) FROM stdin;\\n1\\n'\n")
    source = PostgresDatabase(PostgresSource(provider="postgres", label="p", db_name="x"))
    with pytest.raises(DumpError, match="lacks the end-of-dump trailer"):
        await collect(source, tmp_path)


#: A stand-in client that answers the questions a dump asks before it starts.
FAKE_MARIADB = """sql=$(cat)
case "$sql" in
  *DEFAULT_CHARACTER_SET_NAME*) printf 'utf8mb4\\tutf8mb4_general_ci\\t\\n' ;;
  *"COLUMN_NAME = 'SCHEMA_COMMENT'"*) printf '1\\n' ;;
  *VERSION*) printf '10.11.19-MariaDB\\t16777216\\n' ;;
esac
"""
FAKE_DUMP_INFO = ("case \"$1\" in --version) echo 'Ver 10.19 Distrib 10.11.19-MariaDB'; exit 0;;"
                  " --help) echo '--dump-history'; exit 0;; --defaults-file=*) ;; *) exit 9;; esac\n")


async def test_mysqldump_without_trailer_is_incomplete(fake_bin: Path, tmp_path: Path) -> None:
    fake_tool(fake_bin, "mariadb", FAKE_MARIADB)
    fake_tool(fake_bin, "mariadb-dump",
              FAKE_DUMP_INFO + "printf -- '-- MariaDB dump\\nCREATE TABLE `t` (x int);\\n'\n")
    source = MysqlDatabase(MysqlSource(provider="mysql", label="m", db_name="x"))
    with pytest.raises(DumpError, match="lacks the end-of-dump trailer"):
        await collect(source, tmp_path)
    assert list(tmp_path.glob("*.cnf")) == []  # the option file did not outlive the dump


async def test_secrets_in_tool_errors_are_redacted(fake_bin: Path, tmp_path: Path) -> None:
    secret = "s3cr3t-value"
    fake_tool(fake_bin, "pg_dump", 'echo "FATAL: login as $PGUSER with $PGPASSWORD refused" >&2\n'
                                   "exit 1\n")
    source = PostgresDatabase(PostgresSource(provider="postgres", label="p", db_name="x",
                                             user="backup", password=secret))
    with pytest.raises(DumpError) as caught:
        await collect(source, tmp_path)
    message = str(caught.value)
    assert "pg_dump exited with status 1" in message
    assert "login as backup with ******** refused" in message and secret not in message

    fake_tool(fake_bin, "mariadb", FAKE_MARIADB)
    fake_tool(fake_bin, "mariadb-dump", FAKE_DUMP_INFO + 'cat "${1#--defaults-file=}" >&2; exit 2\n')
    mysql = MysqlDatabase(MysqlSource(provider="mysql", label="m", db_name="x",
                                      password=secret))
    with pytest.raises(DumpError) as caught_mysql:
        await collect(mysql, tmp_path)
    assert secret not in str(caught_mysql.value)
    assert 'password="********"' in str(caught_mysql.value)


async def test_mysql_tls_refuses_an_unencrypted_session(fake_bin: Path, tmp_path: Path) -> None:
    """A MariaDB client asked for --ssl may fall back to plain text: it is caught."""
    version = 'test "$1" = --version && echo "Ver 10.19 Distrib 10.11.19-MariaDB" && exit 0\n'
    fake_tool(fake_bin, "mariadb", version + "printf 'Ssl_cipher\\t\\n'\n")
    fake_tool(fake_bin, "mariadb-dump", version + "exit 7\n")
    source = MysqlDatabase(MysqlSource(provider="mysql", label="m", db_name="x", tls=True))
    with pytest.raises(DumpError, match=r"tls is true but the connection .* is not encrypted"):
        await collect(source, tmp_path)
    with pytest.raises(HealthError, match="not encrypted"):
        await source.health()
