"""A real PostgreSQL 15 server for the tests, started once per session.

The server runs as the ``postgres`` system user (initdb and postgres refuse root)
from a folder under /tmp, listens on a free loopback port, and authenticates TCP
clients with scram-sha-256, so passwords are really checked. The fixture's own
helpers talk to it as the superuser over its Unix socket (trust).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from ._common import (
    as_user,
    chown_tree,
    free_port,
    remove_tree,
    run_or_fail,
    scratch_folder,
    server_user,
)

BIN = Path("/usr/lib/postgresql/15/bin")
FIELD = "\x1f"
RECORD = "\x1e"
NULL = "<<NULL>>"
SECTION = "\x1d"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"  # standard_conforming_strings is on


@dataclasses.dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    superuser: str
    password: str
    socket_dir: Path
    data_dir: Path
    log_file: Path

    # ------------------------------------------------------------------ helpers

    def psql(self, sql: str, *, db: str = "postgres",
             variables: Mapping[str, str] | None = None, check: bool = True) -> str:
        """Run ``sql`` (fed on stdin, so ``:'var'`` interpolation works) as the superuser."""
        argv = ["psql", "-X", "-q", "-A", "-t", "-F", FIELD, "-R", RECORD, "-P", f"null={NULL}",
                "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir), "-p", str(self.port),
                "-U", self.superuser, "-d", db]
        for key, value in (variables or {}).items():
            argv += ["-v", f"{key}={value}"]
        result = subprocess.run(
            argv, input=sql, capture_output=True, text=True, timeout=120, check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
        )
        if check and result.returncode != 0:
            raise AssertionError(f"psql failed: {result.stderr}\nSQL: {sql[:500]}")
        return result.stdout

    def query(self, db: str, sql: str) -> list[tuple[str | None, ...]]:
        """Rows of one statement, as text (NULL as None)."""
        return self._rows(self.psql(sql, db=db))

    def query_many(
        self, db: str, queries: Mapping[str, str]
    ) -> dict[str, list[tuple[str | None, ...]]]:
        """Several statements' rows in one psql run (one connection), by name."""
        script = "".join(f"\\echo {SECTION}{name}{SECTION}\n{sql.rstrip().rstrip(';')};\n"
                         for name, sql in queries.items())
        out = self.psql(script, db=db)
        results: dict[str, list[tuple[str | None, ...]]] = {}
        parts = out.split(SECTION)
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            results[name] = self._rows(body)
        return results

    @staticmethod
    def _rows(out: str) -> list[tuple[str | None, ...]]:
        rows: list[tuple[str | None, ...]] = []
        for record in out.split(RECORD):
            record = record.strip("\n")
            if not record:
                continue
            rows.append(tuple(None if field == NULL else field for field in record.split(FIELD)))
        return rows

    def scalar(self, db: str, sql: str) -> str | None:
        rows = self.query(db, sql)
        assert len(rows) == 1 and len(rows[0]) == 1, rows
        return rows[0][0]

    def create_database(self, name: str) -> None:
        self.psql("CREATE DATABASE :\"name\";", variables={"name": name})

    def drop_database(self, name: str) -> None:
        self.psql("DROP DATABASE IF EXISTS :\"name\" WITH (FORCE);", variables={"name": name})

    def database_exists(self, name: str) -> bool:
        return self.psql(
            "SELECT count(*) FROM pg_database WHERE datname = :'name';", variables={"name": name}
        ).strip(RECORD + "\n") == "1"

    def create_user(self, name: str, password: str, *, superuser: bool = False,
                    createdb: bool = True) -> None:
        flags = " SUPERUSER" if superuser else ""
        flags += " CREATEDB" if createdb else ""
        self.psql(f"CREATE ROLE :\"name\" LOGIN{flags} PASSWORD :'password';",
                  variables={"name": name, "password": password})

    def source(self, db_name: str, tmp_folder: Path, **overrides: Any) -> dict[str, Any]:
        """A ``data_sources`` entry that reaches this server over TCP as the superuser."""
        entry: dict[str, Any] = {
            "provider": "postgres", "label": f"pg-{db_name}", "host": self.host,
            "port": self.port, "db_name": db_name, "user": self.superuser,
            "password": self.password, "tmp_folder": str(tmp_folder),
        }
        entry.update(overrides)
        return entry


def start_server(prefix: str) -> tuple[PostgresServer, Path, str]:
    """initdb and start a PostgreSQL 15 server on a free loopback port; the server, its
    base folder and the system user that runs it (stop it with ``stop_server``)."""
    owner = server_user("postgres")
    base = scratch_folder(prefix, owner)
    data, sockets, log = base / "data", base / "sock", base / "server.log"
    password = "super-" + secrets.token_hex(8)
    pwfile = base / "pwfile"
    sockets.mkdir()
    pwfile.write_text(password + "\n")
    chown_tree(base, owner)
    port = free_port()
    run_or_fail(
        as_user(owner, [str(BIN / "initdb"), "-D", str(data), "-U", "postgres",
                        "--auth-local=trust", "--auth-host=scram-sha-256",
                        f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]),
        "initdb",
    )
    pwfile.unlink()
    options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off "
               "-c synchronous_commit=off -c full_page_writes=off")
    run_or_fail(
        as_user(owner, [str(BIN / "pg_ctl"), "-D", str(data), "-w", "-t", "60", "-l", str(log),
                        "-o", options, "start"]),
        "pg_ctl start", log=log,
    )
    server = PostgresServer(
        host="127.0.0.1", port=port, superuser="postgres", password=password,
        socket_dir=sockets, data_dir=data, log_file=log,
    )
    return server, base, owner


def stop_server(server: PostgresServer, base: Path, owner: str) -> None:
    subprocess.run(
        as_user(owner, [str(BIN / "pg_ctl"), "-D", str(server.data_dir), "-m", "fast", "-w",
                        "stop"]),
        capture_output=True, timeout=60, check=False,
    )
    remove_tree(base)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server, base, owner = start_server("backupmand-pg-")
    try:
        yield server
    finally:
        stop_server(server, base, owner)


@pytest.fixture(scope="session")
def second_postgres_server() -> Iterator[PostgresServer]:
    """Another, empty PostgreSQL server: no roles but its superuser, no databases of the
    first one (a restore "on a new machine", a drill's verify_target)."""
    server, base, owner = start_server("backupmand-pg2-")
    try:
        yield server
    finally:
        stop_server(server, base, owner)
