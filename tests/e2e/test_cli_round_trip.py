"""`backupmand run` backs up PostgreSQL, MariaDB and SQLite side by side, and
`backupmand restore` brings each one back identical — through the real CLI."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import yaml

from tests.e2e import test_mysql, test_postgres
from tests.helpers import child_env, make_sqlite, run_cli
from tests.servers.mariadb import MariadbServer
from tests.servers.postgres import PostgresServer


def test_run_then_restore_every_engine(postgres_server: PostgresServer,
                                       mariadb_server: MariadbServer, tmp_path: Path) -> None:
    postgres_server.create_database("cli_source")
    postgres_server.psql(test_postgres.SCHEMA, db="cli_source")
    mariadb_server.create_database("cli_source")
    mariadb_server.sql(test_mysql.SCHEMA, db="cli_source")
    make_sqlite(tmp_path / "app.db", rows=500)
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({
        "database": {"provider": "sqlite", "db_path": str(tmp_path / "catalog.db")},
        "data_sources": [
            postgres_server.source("cli_source", tmp_path / "tmp", label="pg"),
            mariadb_server.source("cli_source", tmp_path / "tmp", label="maria"),
            {"provider": "sqlite", "label": "lite", "db_path": str(tmp_path / "app.db"),
             "tmp_folder": str(tmp_path / "tmp")},
        ],
        "drives": [{"provider": "local", "label": "disk", "folder": str(tmp_path / "drive")}],
        "http": {"api_keys": ["k-0123456789abcdef"]},
    }))
    try:
        ran = run_cli("run", config=config, env=child_env())
        assert ran.returncode == 0, ran.stdout + ran.stderr
        listing = json.loads(run_cli("list", "--json", config=config).stdout)["Results"]
        ids = {item["Label"]: item["Id"] for item in listing}
        assert set(ids) == {"pg", "maria", "lite"}
        assert all(item["Status"] == "finished" for item in listing)
        for secret in (postgres_server.password, mariadb_server.password):
            assert secret not in ran.stdout + ran.stderr + json.dumps(listing)

        restored = run_cli("restore", ids["pg"], "--to-source", "pg", "--db-name", "cli_restored",
                           config=config)
        assert restored.returncode == 0, restored.stderr
        assert test_postgres.snapshot(postgres_server, "cli_source") == test_postgres.snapshot(
            postgres_server, "cli_restored")

        restored = run_cli("restore", ids["maria"], "--to-source", "maria", "--db-name",
                           "cli_restored", config=config)
        assert restored.returncode == 0, restored.stderr
        assert test_mysql.snapshot(mariadb_server, "cli_source") == test_mysql.snapshot(
            mariadb_server, "cli_restored")

        again = run_cli("restore", ids["maria"], "--to-source", "maria", "--db-name",
                        "cli_restored", config=config)
        assert again.returncode == 1 and "--force" in again.stderr

        target = tmp_path / "restored.db"
        restored = run_cli("restore", ids["lite"], "--to-source", "lite", "--db-name", str(target),
                           config=config)
        assert restored.returncode == 0, restored.stderr
        with sqlite3.connect(tmp_path / "app.db") as source, sqlite3.connect(target) as copy:
            query = "SELECT id, name, hex(data) FROM items ORDER BY id"
            assert source.execute(query).fetchall() == copy.execute(query).fetchall()

        plain = tmp_path / "pg.sql"
        written = run_cli("restore", ids["pg"], "--to-file", str(plain), config=config)
        assert written.returncode == 0, written.stderr
        assert "-- PostgreSQL database dump complete" in plain.read_text()[-500:]
    finally:
        for server in (postgres_server, mariadb_server):
            for name in ("cli_source", "cli_restored"):
                if server.database_exists(name):
                    server.drop_database(name)
