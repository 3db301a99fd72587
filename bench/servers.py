"""The servers a benchmark run needs, started as plain processes on loopback ports.

- :class:`Postgres`: a PostgreSQL 15 cluster made with initdb in a scratch folder,
  run by the ``postgres`` system user (initdb and postgres refuse root), scram-sha-256
  on TCP so that the dump really authenticates with a password.
- :class:`MotoS3`: moto's S3 server (``python -m moto.server``) in its own process,
  so that its work (it keeps every object in RAM) is not counted in the bench process.
- :class:`Mariadb`: a MariaDB 10.11 server (mariadb-install-db, mariadbd --no-defaults)
  in a scratch folder, run by the ``mysql`` system user under root, for the cost of
  counting rows in a MariaDB dump.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PG_BIN = Path("/usr/lib/postgresql/15/bin")
MOTO_ACCESS_KEY = "AKIABENCHBACKUPMAND0"
MOTO_SECRET_KEY = "bench-secret-key-for-moto-only"

# The rows of the benchmark table: a mix of numbers, timestamps, short enums and text
# with some entropy (md5) and some repetition, so that compressors see a realistic mix.
TABLE_SQL = """
CREATE UNLOGGED TABLE IF NOT EXISTS events (
    id          bigint NOT NULL,
    created_at  timestamptz NOT NULL,
    account_id  integer NOT NULL,
    kind        text NOT NULL,
    amount      numeric(12, 2) NOT NULL,
    note        text NOT NULL
);
"""
INSERT_SQL = """
INSERT INTO events
SELECT i,
       timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second',
       (i * 7919) % 100000,
       (ARRAY['created', 'updated', 'deleted', 'viewed', 'exported'])[1 + i % 5],
       ((i * 31) % 1000000) / 100.0,
       md5(i::text) || ' ' || repeat(chr((97 + i % 26)::int), (10 + i % 40)::int)
  FROM generate_series({first}::bigint, {last}::bigint) AS i;
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop_process(process: subprocess.Popen[Any] | None, timeout: float,
                 *, terminate: bool = True) -> None:
    """End ``process`` if it still runs: SIGTERM (unless ``terminate`` is False: the
    caller asked it to stop some other way), ``timeout`` seconds, then SIGKILL."""
    if process is None or process.poll() is not None:
        return
    if terminate:
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _run(argv: list[str], what: str, timeout: float = 600, **kwargs: Any) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                            **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}): {result.stderr.strip()}")
    return str(result.stdout)


class Postgres:
    """A throwaway PostgreSQL cluster under ``base`` (removed by :meth:`stop`)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.sockets = base / "sock"
        self.log = base / "server.log"
        self.port = free_port()
        self.host = "127.0.0.1"
        self.user = "postgres"
        self.password = "bench-" + secrets.token_hex(8)
        self.owner = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() == 0 and self.owner != "root":
            return ["runuser", "-u", self.owner, "--", *argv]
        return argv

    def start(self) -> None:
        self.base.mkdir(parents=True)
        self.base.chmod(0o755)
        self.sockets.mkdir()
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            entry = pwd.getpwnam(self.owner)
            for path in (self.base, self.sockets, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        _run(self._as_owner([
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", self.user,
            "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
            "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]), "initdb")
        pwfile.unlink()
        options = (f"-c listen_addresses={self.host} -p {self.port} -k {self.sockets} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c shared_buffers=256MB -c max_wal_size=4GB")
        _run(self._as_owner([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60",
                             "-l", str(self.log), "-o", options, "start"]), "pg_ctl start")

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(self._as_owner([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m",
                                           "fast", "-w", "stop"]),
                           capture_output=True, timeout=120, check=False)
        shutil.rmtree(self.base, ignore_errors=True)

    def psql(self, sql: str, db: str = "postgres") -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return _run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h",
                     str(self.sockets), "-p", str(self.port), "-U", self.user, "-d", db],
                    "psql", input=sql, env=env, timeout=3600)

    def server_pid(self) -> int:
        """The postmaster's pid (its children's CPU time is the server's work)."""
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def copy_database(self, source: str, target: str) -> None:
        """``target``, a file-level copy of ``source`` (CREATE DATABASE ... TEMPLATE)."""
        self.psql(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE);')
        self.psql(f'CREATE DATABASE "{target}" TEMPLATE "{source}";')

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE);')

    def count_rows(self, db: str, table: str = "events") -> int:
        return int(self.psql(f"SELECT count(*) FROM {table};", db).strip())

    def client_env(self) -> dict[str, str]:
        """libpq's variables, as backupmand's PostgreSQL source hands them to pg_dump."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update({"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user,
                    "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "30",
                    "PGAPPNAME": "backupmand"})
        return env

    def dump_size(self, db: str) -> int:
        """Bytes of ``pg_dump`` plain output (streamed and counted, nothing stored)."""
        process = subprocess.Popen(
            ["pg_dump", *pg_dump_args(db)], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=self.client_env())
        assert process.stdout is not None
        size = 0
        while block := process.stdout.read(1024 * 1024):
            size += len(block)
        _, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"pg_dump failed: {err.decode(errors='replace')}")
        return size

    def make_database(self, db: str, target_bytes: int, log: Any = print) -> int:
        """Create ``db`` with a plain dump of at least ``target_bytes``; its dump size."""
        self.psql(f'CREATE DATABASE "{db}";')
        self.psql(TABLE_SQL, db)
        sample = 20_000
        self.psql(INSERT_SQL.format(first=1, last=sample), db)
        empty = 2000  # roughly the dump's fixed part (header, DDL, trailer)
        per_row = max((self.dump_size(db) - empty) / sample, 1.0)
        rows = sample
        while True:
            wanted = int((target_bytes - empty) / per_row * 1.02) + 1
            if wanted > rows:
                step = 2_000_000
                for first in range(rows + 1, wanted + 1, step):
                    self.psql(INSERT_SQL.format(first=first, last=min(first + step - 1, wanted)),
                              db)
                rows = wanted
            size = self.dump_size(db)
            if size >= target_bytes:
                self.psql("VACUUM ANALYZE events;", db)
                log(f"  database {db}: {rows} rows, plain dump {size} bytes")
                return size
            per_row = (size - empty) / rows


#: String-heavy rows (quotes, backslashes, ``),(``, emoji, binary): what makes a MariaDB
#: dump's statements costly to read, so the worst case of counting its rows.
MARIADB_FILL = """
CREATE TABLE s (id INT PRIMARY KEY, a VARCHAR(255), b TEXT, c VARBINARY(64), n DECIMAL(12,3));
INSERT INTO s SELECT seq, CONCAT('row ', seq, ' it''s a "quoted" ),( value \\\\ back'),
    REPEAT(CONCAT('Zoë 🙂 ', MD5(seq), ' ),( x'), 3), UNHEX(SHA2(seq, 256)), seq / 7
    FROM seq_1_to_{rows};
"""
#: Bytes of mariadb-dump output per row of MARIADB_FILL (measured: 340 MB for 1.2 M rows).
MARIADB_BYTES_PER_ROW = 283


class Mariadb:
    """A throwaway MariaDB server under ``base``: root over the socket, ``bench`` (all
    privileges, a password) over TCP on a free loopback port."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.owner = "mysql" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.socket = base / "mysqld.sock"
        self.port = free_port()
        self.host = "127.0.0.1"
        self.user = "bench"
        self.password = "bench-" + secrets.token_hex(8)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        for folder in (self.base, self.base / "data", self.base / "tmp"):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o755)
            if os.geteuid() == 0:
                entry = pwd.getpwnam(self.owner)
                os.chown(folder, entry.pw_uid, entry.pw_gid)
        _run(["mariadb-install-db", "--no-defaults", f"--datadir={self.base / 'data'}",
              f"--user={self.owner}", "--auth-root-authentication-method=socket",
              "--skip-test-db"], "mariadb-install-db")
        argv = ["mariadbd", "--no-defaults", f"--datadir={self.base / 'data'}",
                f"--socket={self.socket}", f"--port={self.port}", f"--bind-address={self.host}",
                f"--pid-file={self.base / 'pid'}", f"--log-error={self.base / 'error.log'}",
                f"--tmpdir={self.base / 'tmp'}", "--skip-name-resolve", "--skip-log-bin",
                "--innodb-buffer-pool-size=512M", "--innodb-flush-log-at-trx-commit=0"]
        if os.geteuid() == 0:
            argv.append(f"--user={self.owner}")
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while self.sql("SELECT 1", check=False).returncode != 0:
            if time.monotonic() > deadline or self.process.poll() is not None:
                log = self.base / "error.log"
                raise RuntimeError("mariadbd did not start: "
                                   + (log.read_text(errors="replace")[-2000:] if log.exists() else ""))
            time.sleep(0.1)
        self.sql(f"CREATE USER '{self.user}'@'%' IDENTIFIED BY '{self.password}'; "
                 f"GRANT ALL ON *.* TO '{self.user}'@'%';")

    @property
    def admin(self) -> str:
        """Who logs in over the socket with no password (root, or the user running it)."""
        return "root" if os.geteuid() == 0 else self.owner

    def sql(self, text: str, *, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            ["mariadb", "--no-defaults", f"--socket={self.socket}", "-u", self.admin,
             "--default-character-set=utf8mb4"],
            input=text.encode(), capture_output=True, check=False, timeout=3600)
        if check and result.returncode != 0:
            raise RuntimeError(f"mariadb failed: {result.stderr.decode(errors='replace')}")
        return result

    def make_database(self, name: str, target_bytes: int) -> int:
        """Database ``name`` with one string-heavy table of about ``target_bytes`` of dump;
        its row count."""
        rows = max(1000, target_bytes // MARIADB_BYTES_PER_ROW)
        self.sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4;\nUSE `{name}`;\n"
                 + MARIADB_FILL.format(rows=rows))
        return rows

    def server_pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        stop_process(self.process, 60)
        shutil.rmtree(self.base, ignore_errors=True)


def pg_dump_args(db: str) -> list[str]:
    """The arguments backupmand's PostgreSQL source gives pg_dump for a plain dump
    (backupmand/sources/postgres.py: --no-password, a quoted dbname, --format=plain)."""
    return ["--no-password", f"--dbname=dbname='{db}'", "--format=plain"]


class MotoS3:
    """moto's S3 server as a separate process on a free loopback port."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def offline_env() -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
                    "AWS_SHARED_CREDENTIALS_FILE": os.devnull})
        return env

    def start(self) -> None:
        with open(self.log, "ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=sink, stderr=subprocess.STDOUT, env=self.offline_env())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited: {self.log.read_text(errors='replace')}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
                return
            time.sleep(0.1)
        raise RuntimeError("moto server did not start in 60 s")

    def stop(self) -> None:
        stop_process(self.process, 10)

    def client(self) -> Any:
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=MOTO_ACCESS_KEY, aws_secret_access_key=MOTO_SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 2}))

    def create_bucket(self) -> str:
        name = f"bench-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def empty_bucket(self, bucket: str) -> None:
        client = self.client()
        for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])
        for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"],
                                          UploadId=upload["UploadId"])


@contextlib.contextmanager
def scratch(prefix: str = "backupmand-bench-", keep: bool = False) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("BENCH_TMPDIR", "/tmp")))
    base.chmod(0o755)
    try:
        yield base
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
