"""A real MariaDB 10.11 server for the tests, started once per session.

``mariadbd --no-defaults`` (the packaged /etc/mysql config points at /run/mysqld)
runs from a folder under /tmp as the ``mysql`` system user, on a free loopback port.
The fixture's helpers log in as root over the Unix socket (unix_socket auth); tests
reach it over TCP as ``admin``, a password user with every privilege.
"""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from ._common import (
    chown_tree,
    free_port,
    is_root,
    remove_tree,
    run_or_fail,
    scratch_folder,
    server_user,
)

START_TIMEOUT = 60.0
#: A test server needs no durability: small redo log, no flushes (less I/O, faster start).
INNODB_OPTIONS = ["--innodb-log-file-size=16M", "--innodb-flush-method=nosync",
                  "--innodb-doublewrite=0", "--innodb-flush-log-at-trx-commit=0"]


def quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def quote_literal(value: str) -> str:
    """A string literal for the server's default sql_mode (backslash escapes on)."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\0", "\\0")
    return f"'{escaped}'"


@dataclasses.dataclass(frozen=True)
class MariadbServer:
    host: str
    port: int
    superuser: str
    password: str
    socket: Path
    socket_dir: Path
    data_dir: Path
    log_file: Path
    socket_user: str
    ca_file: Path  # the CA that signed the server's TLS certificate (for 127.0.0.1)
    process: subprocess.Popen[bytes] = dataclasses.field(repr=False, compare=False)

    # ------------------------------------------------------------------ helpers

    def client_argv(self, db: str | None = None) -> list[str]:
        argv = ["mariadb", "--no-defaults", f"--socket={self.socket}", "-u", self.socket_user,
                "--batch", "--skip-column-names", "--default-character-set=utf8mb4"]
        if db is not None:
            argv.append(f"--database={db}")
        return argv

    def sql(self, sql: str, *, db: str | None = None, check: bool = True) -> str:
        """Run ``sql`` (on stdin) as root over the socket; the batch output as text."""
        result = subprocess.run(
            self.client_argv(db), input=sql.encode(), capture_output=True, timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"mariadb failed: {result.stderr.decode(errors='replace')}\nSQL: {sql[:500]}"
            )
        return result.stdout.decode("utf-8", "backslashreplace")

    def query(self, db: str | None, sql: str) -> list[tuple[str, ...]]:
        """Rows as batch-mode text (tabs, newlines and backslashes escaped; NULL is 'NULL')."""
        return [tuple(line.split("\t")) for line in self.sql(sql, db=db).splitlines()]

    def scalar(self, db: str | None, sql: str) -> str:
        rows = self.query(db, sql)
        assert len(rows) == 1 and len(rows[0]) == 1, rows
        return rows[0][0]

    def create_database(self, name: str) -> None:
        self.sql(f"CREATE DATABASE {quote_ident(name)} CHARACTER SET utf8mb4;")

    def drop_database(self, name: str) -> None:
        self.sql(f"DROP DATABASE IF EXISTS {quote_ident(name)};")

    def database_exists(self, name: str) -> bool:
        return self.scalar(None, "SELECT count(*) FROM information_schema.SCHEMATA WHERE "
                                 f"SCHEMA_NAME = {quote_literal(name)}") == "1"

    def create_user(self, name: str, password: str, *, all_privileges: bool = True) -> None:
        account = f"{quote_literal(name)}@'%'"
        statements = [f"CREATE USER {account} IDENTIFIED BY {quote_literal(password)};"]
        if all_privileges:
            statements.append(f"GRANT ALL PRIVILEGES ON *.* TO {account} WITH GRANT OPTION;")
        self.sql("\n".join(statements))

    def source(self, db_name: str, tmp_folder: Path, **overrides: Any) -> dict[str, Any]:
        """A ``data_sources`` entry that reaches this server over TCP as ``admin``."""
        entry: dict[str, Any] = {
            "provider": "mariadb", "label": f"my-{db_name}", "host": self.host,
            "port": self.port, "db_name": db_name, "user": self.superuser,
            "password": self.password, "tmp_folder": str(tmp_folder),
        }
        entry.update(overrides)
        return entry


def _ping(socket_path: Path, user: str) -> bool:
    result = subprocess.run(
        ["mariadb", "--no-defaults", f"--socket={socket_path}", "-u", user, "-e", "SELECT 1"],
        capture_output=True, timeout=10, check=False,
    )
    return result.returncode == 0


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariadbServer]:
    owner = server_user("mysql")
    socket_user = "root" if is_root() else owner
    base = scratch_folder("backupmand-my-", owner)
    data, tmp, log = base / "data", base / "tmp", base / "error.log"
    socket_path, pid_file = base / "mysqld.sock", base / "mysqld.pid"
    data.mkdir()
    tmp.mkdir()
    # TLS is offered (clients use it only when asked): a throwaway CA and certificate.
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = base / "ca.pem", base / "server.pem", base / "server.key"
    authority.cert_pem.write_to_path(str(ca_file))
    certificate.cert_chain_pems[0].write_to_path(str(cert_file))
    certificate.private_key_pem.write_to_path(str(key_file))
    key_file.chmod(0o600)
    chown_tree(base, owner)
    run_or_fail(
        ["mariadb-install-db", "--no-defaults", f"--datadir={data}", f"--user={owner}",
         "--auth-root-authentication-method=socket", "--skip-test-db", *INNODB_OPTIONS],
        "mariadb-install-db",
    )
    port = free_port()
    argv = ["mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={socket_path}",
            f"--port={port}", "--bind-address=127.0.0.1", f"--pid-file={pid_file}",
            f"--log-error={log}", f"--tmpdir={tmp}", "--skip-name-resolve", "--skip-log-bin",
            *INNODB_OPTIONS, "--innodb-buffer-pool-size=64M", "--event-scheduler=OFF",
            f"--ssl-ca={ca_file}", f"--ssl-cert={cert_file}", f"--ssl-key={key_file}"]
    if is_root():
        argv.append(f"--user={owner}")
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + START_TIMEOUT
    # No readiness event to await: the server offers none but its socket answering.
    while not (socket_path.exists() and _ping(socket_path, socket_user)):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            detail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            remove_tree(base)
            pytest.fail(f"mariadbd did not start (exit {process.returncode}):\n{detail}",
                        pytrace=False)
        time.sleep(0.05)
    password = "admin-" + secrets.token_hex(8)
    server = MariadbServer(
        host="127.0.0.1", port=port, superuser="admin", password=password, socket=socket_path,
        socket_dir=base, data_dir=data, log_file=log, socket_user=socket_user, ca_file=ca_file,
        process=process,
    )
    try:
        server.create_user("admin", password)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        remove_tree(base)
