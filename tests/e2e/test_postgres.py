"""PostgreSQL source against a real PostgreSQL 15: dumps, restores, failures, secrets."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from backupmand.catalog import Catalog
from backupmand.config import PostgresSource, Settings
from backupmand.errors import DumpError, HealthError, RestoreError
from backupmand.restore import restore_backup
from backupmand.sources import build_source
from backupmand.sources.base import DumpFacts
from backupmand.sources.pg_properties import EPILOGUE_END
from backupmand.sources.postgres import PostgresDatabase
from tests.backup_helpers import (
    AWKWARD_PASSWORD,
    assert_killed_midway,
    assert_refused,
    dump_bytes,
    make_settings,
    pids_running,
    proc_cmdlines,
    store_backup,
)
from tests.e2e.fidelity.engines.postgres import build_awkward
from tests.e2e.fidelity.engines.postgres import snapshot as snapshot_of
from tests.servers._common import chown_tree, free_port, server_user
from tests.servers.postgres import PostgresServer, quote_ident

SCHEMA = r"""
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE SCHEMA billing;
CREATE TABLE customers (
    id       serial PRIMARY KEY,
    uid      uuid NOT NULL UNIQUE,
    name     text NOT NULL,
    mood     mood,
    balance  numeric(20, 6),
    ratio    double precision,
    tags     text[],
    matrix   int[][],
    photo    bytea,
    profile  jsonb,
    raw      json,
    created  timestamptz DEFAULT '2025-01-01 00:00:00+00'
);
CREATE TABLE billing.invoices (
    id            bigint GENERATED ALWAYS AS IDENTITY (START WITH 100) PRIMARY KEY,
    customer_id   int NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    amount        numeric(12, 2) NOT NULL CHECK (amount >= 0),
    note          text,
    updated_count int NOT NULL DEFAULT 0
);
CREATE SEQUENCE billing.ticket_seq START 1000 INCREMENT 7;
CREATE FUNCTION billing.touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_count := OLD.updated_count + 1;
    RETURN NEW;
END
$$;
CREATE TRIGGER invoices_touch BEFORE UPDATE ON billing.invoices
    FOR EACH ROW EXECUTE FUNCTION billing.touch();
CREATE FUNCTION customer_total(cid int) RETURNS numeric LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(amount), 0) FROM billing.invoices WHERE customer_id = cid
$$;
CREATE VIEW customer_totals AS
    SELECT c.id, c.name, customer_total(c.id) AS total FROM customers c;
COMMENT ON TABLE customers IS 'people who pay';

INSERT INTO customers (uid, name, mood, balance, ratio, tags, matrix, photo, profile, raw)
VALUES
  ('6f1c8a52-4b1e-4c1a-9d3e-2f5b7a9c0e11', 'Zoë 🙂 ünïcödé', 'happy', 12345678901234.123456,
   1e-300, ARRAY['a', 'b,c', '"q"', NULL, 'back\slash'], '{{1,2},{3,4}}',
   '\x00ff105c0d0a'::bytea, '{"a": [1, 2, {"b": null}], "é": "ü"}', '{"dup": 1, "dup": 2}'),
  (gen_random_uuid(), E'line1\nline2\ttab \\ backslash ''quote''', 'sad', -0.000001,
   'NaN', '{}', '{}', ''::bytea, 'null', '[ 1 ,2 ]'),
  (gen_random_uuid(), 'nulls', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO customers (uid, name, balance)
    SELECT gen_random_uuid(), 'bulk ' || g, g / 3.0 FROM generate_series(1, 400) g;
DELETE FROM customers WHERE id % 7 = 0 AND id > 3;
INSERT INTO billing.invoices (customer_id, amount, note)
    SELECT id, id * 1.5, 'n' FROM customers WHERE id <= 60;
UPDATE billing.invoices SET note = 'touched' WHERE id < 105;
SELECT nextval('billing.ticket_seq') FROM generate_series(1, 5);
"""

SYSTEM_SCHEMAS = "('pg_catalog', 'information_schema', 'pg_toast')"


def snapshot(server: PostgresServer, db: str) -> dict[str, Any]:
    """Everything a restore must bring back: every row, sequence value and object."""
    tables = server.query(db, f"""
        SELECT table_schema, table_name FROM information_schema.tables
         WHERE table_type = 'BASE TABLE' AND table_schema NOT IN {SYSTEM_SCHEMAS}
         ORDER BY 1, 2""")
    queries = {
        f"rows {schema}.{table}":
            f"SELECT t::text FROM {quote_ident(schema or '')}.{quote_ident(table or '')} t "
            "ORDER BY 1"
        for schema, table in tables
    }
    queries.update({
        "sequences": """
            SELECT schemaname, sequencename, last_value, start_value, increment_by
              FROM pg_sequences ORDER BY 1, 2""",
        "columns": f"""
            SELECT table_schema, table_name, column_name, data_type, numeric_precision,
                   numeric_scale, is_identity, identity_generation, column_default
              FROM information_schema.columns WHERE table_schema NOT IN {SYSTEM_SCHEMAS}
             ORDER BY 1, 2, ordinal_position""",
        "views": f"""
            SELECT table_schema, table_name, view_definition FROM information_schema.views
             WHERE table_schema NOT IN {SYSTEM_SCHEMAS} ORDER BY 1, 2""",
        "functions": f"""
            SELECT n.nspname, p.proname, pg_get_functiondef(p.oid) FROM pg_proc p
              JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname NOT IN {SYSTEM_SCHEMAS} ORDER BY 1, 2""",
        "triggers": """
            SELECT event_object_schema, event_object_table, trigger_name, action_timing,
                   event_manipulation, action_statement
              FROM information_schema.triggers ORDER BY 1, 2, 3, 5""",
        "constraints": f"""
            SELECT n.nspname, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c
              JOIN pg_namespace n ON n.oid = c.connamespace
             WHERE n.nspname NOT IN {SYSTEM_SCHEMAS} ORDER BY 1, 2""",
        "enum": "SELECT enumlabel FROM pg_enum ORDER BY enumsortorder",
        "comments": "SELECT obj_description('customers'::regclass, 'pg_class')",
    })
    state: dict[str, Any] = {"tables": tables, **server.query_many(db, queries)}
    assert len(state["rows public.customers"]) > 300
    return state


@pytest.fixture(scope="module")
def app_db(postgres_server: PostgresServer) -> Iterator[str]:
    name = "app-Ü 'quoted' \"db\""  # a name that needs quoting everywhere
    postgres_server.create_database(name)
    postgres_server.psql(SCHEMA, db=name)
    yield name
    postgres_server.drop_database(name)


@pytest.fixture
async def catalog() -> AsyncIterator[Catalog]:
    async with Catalog.open("memory") as opened:
        yield opened


def settings_for(server: PostgresServer, db: str, tmp: Path, **overrides: Any) -> Settings:
    return make_settings(
        sources=[server.source(db, tmp / "tmp", label="pg", **overrides)],
        drives=[{"provider": "local", "label": "Local", "folder": str(tmp / "drive")}],
    )


def pg_source(server: PostgresServer, db: str, tmp: Path, **overrides: Any) -> PostgresDatabase:
    config = PostgresSource.model_validate(server.source(db, tmp / "tmp", **overrides))
    source = build_source(config)
    assert isinstance(source, PostgresDatabase)
    return source


async def backup_of(server: PostgresServer, catalog: Catalog, settings: Settings, db: str,
                    tmp: Path, compression: str = "zstd") -> tuple[str, bytes]:
    source = build_source(settings.source("pg"))
    raw = await dump_bytes(source, tmp / "work")
    backup = await store_backup(
        catalog, settings, label="pg", provider=source.provider, extension=source.extension,
        data=raw, drive_label="Local", staging=tmp / "staging", compression=compression,
    )
    return backup.id, raw


def check_behaviour(server: PostgresServer, db: str) -> None:
    """Serial, identity, sequence and trigger all carry on where the source left off."""
    server.psql("INSERT INTO customers (uid, name) VALUES (gen_random_uuid(), 'new');", db=db)
    server.psql("INSERT INTO billing.invoices (customer_id, amount) VALUES (1, 1);", db=db)
    server.psql("UPDATE billing.invoices SET note = 'again' WHERE id = 100;", db=db)
    assert server.scalar(db, "SELECT updated_count FROM billing.invoices WHERE id = 100") == "2"
    assert server.scalar(db, "SELECT total FROM customer_totals WHERE id = 1") == "2.50"


# --------------------------------------------------------------------------- round trips


async def test_plain_round_trip(postgres_server: PostgresServer, app_db: str,
                                catalog: Catalog, tmp_path: Path) -> None:
    settings = settings_for(postgres_server, app_db, tmp_path)
    backup_id, raw = await backup_of(postgres_server, catalog, settings, app_db, tmp_path)
    assert b"-- PostgreSQL database dump complete" in raw
    assert raw.endswith(EPILOGUE_END)  # the database's properties come after pg_dump's trailer
    target = "restored plain"
    try:
        description = await restore_backup(settings, catalog, backup_id, to_source="pg",
                                           database=target)
        assert repr(target) in description
        assert snapshot(postgres_server, target) == snapshot(postgres_server, app_db)
        check_behaviour(postgres_server, target)
        assert not list((tmp_path / "tmp").glob(".backupmand-restore-*"))
    finally:
        postgres_server.drop_database(target)


async def test_custom_format_round_trip_and_to_file(postgres_server: PostgresServer, app_db: str,
                                                    catalog: Catalog, tmp_path: Path) -> None:
    settings = settings_for(postgres_server, app_db, tmp_path, format="custom",
                            options=["--no-owner", "--no-privileges"])
    source = build_source(settings.source("pg"))
    assert source.extension == ".dump"
    backup_id, raw = await backup_of(postgres_server, catalog, settings, app_db, tmp_path,
                                     compression="gzip")
    assert raw.startswith(b"PGDMP")
    assert not list((tmp_path / "work").iterdir())  # the archive left the work folder
    target = "restored-custom"
    try:
        await restore_backup(settings, catalog, backup_id, to_source="pg", database=target)
        assert snapshot(postgres_server, target) == snapshot(postgres_server, app_db)
        check_behaviour(postgres_server, target)
    finally:
        postgres_server.drop_database(target)
    out = tmp_path / "copy.dump"
    description = await restore_backup(settings, catalog, backup_id, to_file=out)
    assert "pg_restore" in description
    assert out.read_bytes() == raw


async def test_restore_refuses_a_non_empty_database_unless_forced(
    postgres_server: PostgresServer, app_db: str, catalog: Catalog, tmp_path: Path
) -> None:
    settings = settings_for(postgres_server, app_db, tmp_path)
    backup_id, _ = await backup_of(postgres_server, catalog, settings, app_db, tmp_path)
    target = "busy target"
    postgres_server.create_database(target)
    try:
        postgres_server.psql("CREATE TABLE keep (x int); INSERT INTO keep VALUES (42);",
                             db=target)
        with pytest.raises(RestoreError, match=r"is not empty: .*--force"):
            await restore_backup(settings, catalog, backup_id, to_source="pg", database=target)
        assert postgres_server.scalar(target, "SELECT x FROM keep") == "42"

        # An enum alone also counts as content.
        postgres_server.psql("DROP TABLE keep; CREATE TYPE lonely AS ENUM ('x');", db=target)
        with pytest.raises(RestoreError, match="not empty"):
            await restore_backup(settings, catalog, backup_id, to_source="pg", database=target)

        await restore_backup(settings, catalog, backup_id, to_source="pg", database=target,
                             force=True)
        assert snapshot(postgres_server, target) == snapshot(postgres_server, app_db)
    finally:
        postgres_server.drop_database(target)

    # An existing *empty* database is used as it is (not dropped).
    postgres_server.create_database(target)
    try:
        await restore_backup(settings, catalog, backup_id, to_source="pg", database=target)
        assert snapshot(postgres_server, target) == snapshot(postgres_server, app_db)
    finally:
        postgres_server.drop_database(target)


async def test_failing_restore_raises_and_leaves_nothing(
    postgres_server: PostgresServer, app_db: str, catalog: Catalog, tmp_path: Path
) -> None:
    settings = settings_for(postgres_server, app_db, tmp_path)
    raw = await dump_bytes(build_source(settings.source("pg")), tmp_path / "work")
    cut = raw.index(b"CREATE VIEW")
    corrupt = raw[:cut] + b"SELECT * FROM no_such_table;\n" + raw[cut:]
    backup = await store_backup(catalog, settings, label="pg", provider="postgres",
                                extension=".sql", data=corrupt, drive_label="Local",
                                staging=tmp_path / "staging")
    target = "never restored"
    with pytest.raises(RestoreError, match="no_such_table") as caught:
        await restore_backup(settings, catalog, backup.id, to_source="pg", database=target)
    assert "loading the dump into 'never restored'" in str(caught.value)
    assert not postgres_server.database_exists(target)  # created for the restore, dropped again

    # Into an existing empty database: the single transaction leaves it empty.
    postgres_server.create_database(target)
    try:
        with pytest.raises(RestoreError):
            await restore_backup(settings, catalog, backup.id, to_source="pg", database=target)
        assert postgres_server.scalar(
            target, "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        ) == "0"
    finally:
        postgres_server.drop_database(target)

    # A truncated custom archive fails in pg_restore, honestly.
    custom = make_settings(
        sources=[postgres_server.source(app_db, tmp_path / "tmp", label="pg", format="custom")],
        drives=[{"provider": "local", "label": "Local", "folder": str(tmp_path / "drive")}],
    )
    archive = await dump_bytes(build_source(custom.source("pg")), tmp_path / "work2")
    truncated = await store_backup(catalog, custom, label="pg", provider="postgres",
                                   extension=".dump", data=archive[: len(archive) // 2],
                                   drive_label="Local", staging=tmp_path / "staging")
    with pytest.raises(RestoreError, match="pg_restore"):
        await restore_backup(custom, catalog, truncated.id, to_source="pg", database=target)
    assert not postgres_server.database_exists(target)


# --------------------------------------------------------------------------- credentials


@pytest.fixture(scope="module")
def awkward_user(postgres_server: PostgresServer, app_db: str) -> str:
    name = "odd user"
    postgres_server.create_user(name, AWKWARD_PASSWORD, superuser=True)
    return name


async def test_awkward_password_works_everywhere(
    postgres_server: PostgresServer, app_db: str, awkward_user: str, catalog: Catalog,
    tmp_path: Path,
) -> None:
    settings = settings_for(postgres_server, app_db, tmp_path, user=awkward_user,
                            password=AWKWARD_PASSWORD)
    source = build_source(settings.source("pg"))
    await source.health()
    backup_id, _ = await backup_of(postgres_server, catalog, settings, app_db, tmp_path)
    target = "restored by odd user"
    try:
        await restore_backup(settings, catalog, backup_id, to_source="pg", database=target)
        assert snapshot(postgres_server, target) == snapshot(postgres_server, app_db)
    finally:
        postgres_server.drop_database(target)


@contextlib.asynccontextmanager
async def table_locked(server: PostgresServer, db: str, table: str) -> AsyncIterator[None]:
    """Hold an ACCESS EXCLUSIVE lock on ``table`` in another session until exit."""
    locker = await asyncio.create_subprocess_exec(
        "psql", "-X", "-q", "-A", "-t", "-h", str(server.socket_dir), "-p", str(server.port),
        "-U", server.superuser, "-d", db, "-v", "ON_ERROR_STOP=1",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    assert locker.stdin is not None and locker.stdout is not None
    locker.stdin.write(f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; "
                       "SELECT 'locked';\n".encode())
    await locker.stdin.drain()
    assert (await asyncio.wait_for(locker.stdout.readline(), 30)).strip() == b"locked"
    try:
        yield
    finally:
        locker.stdin.close()
        await locker.wait()


async def wait_for_pids(name: str, needle: bytes, deadline: float = 30.0) -> list[int]:
    """The process has no way to announce itself: look for it in /proc until it shows."""
    limit = time.monotonic() + deadline
    while not (pids := pids_running(name, needle)):
        assert time.monotonic() < limit, f"{name} never started"
        await asyncio.sleep(0.02)
    return pids


async def test_dump_timeout_and_no_password_in_argv(
    postgres_server: PostgresServer, app_db: str, awkward_user: str, tmp_path: Path
) -> None:
    source = pg_source(postgres_server, app_db, tmp_path, user=awkward_user,
                       password=AWKWARD_PASSWORD, timeout=1.5)
    async with table_locked(postgres_server, app_db, "billing.invoices"):
        task = asyncio.create_task(dump_bytes(source, tmp_path / "work"))
        await wait_for_pids("pg_dump", b"quoted")  # this test's database, no other pg_dump
        # pg_dump is now waiting for the lock: nothing anywhere shows the password.
        for _pid, cmdline in proc_cmdlines():
            assert AWKWARD_PASSWORD.encode() not in cmdline
            assert b"with spaces" not in cmdline
        with pytest.raises(DumpError, match=r"pg_dump timed out after 1\.5 s"):
            await task
    assert pids_running("pg_dump", b"quoted") == []  # the process group was stopped


async def test_dump_killed_midway_fails(postgres_server: PostgresServer, tmp_path: Path) -> None:
    db = "killed_midway"  # a name no other pg_dump on this machine has
    postgres_server.create_database(db)
    try:
        # ~24 MB of dump: more than the pipe and the reader's buffer hold together.
        postgres_server.psql("CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 32) AS pad"
                             " FROM generate_series(1, 24000) g;", db=db)
        await assert_killed_midway(
            pg_source(postgres_server, db, tmp_path), "pg_dump", b"dbname='killed_midway'",
            tmp_path, secret=postgres_server.password, most=24000 * 1024)
    finally:
        postgres_server.drop_database(db)


async def test_wrong_password(postgres_server: PostgresServer, app_db: str,
                              tmp_path: Path) -> None:
    wrong = "not-the-password-" + "x" * 8
    source = pg_source(postgres_server, app_db, tmp_path, password=wrong)
    await assert_refused(source, "password authentication failed", tmp_path / "work",
                         secret=wrong)


async def test_server_down(postgres_server: PostgresServer, tmp_path: Path) -> None:
    source = pg_source(postgres_server, "app", tmp_path, port=free_port())
    await assert_refused(source, "Connection refused", tmp_path / "work")
    with pytest.raises(RestoreError, match="Connection refused"):
        async def one() -> AsyncIterator[bytes]:
            yield b"SELECT 1;\n"
        await source.restore(one(), database=None, force=False, workdir=tmp_path)


def wait_for_setting(server: PostgresServer, name: str, value: str) -> None:
    """pg_reload_conf() only signals the postmaster: wait until new sessions see ``value``."""
    deadline = time.monotonic() + 30
    while server.scalar("postgres", f"SHOW {name}") != value:
        assert time.monotonic() < deadline, f"{name} never became {value}"
        time.sleep(0.02)


async def test_tls(postgres_server: PostgresServer, app_db: str, tmp_path: Path) -> None:
    required = pg_source(postgres_server, app_db, tmp_path, tls=True)
    with pytest.raises(DumpError, match="server does not support SSL"):
        await dump_bytes(required, tmp_path / "work")
    with pytest.raises(HealthError, match="server does not support SSL"):
        await required.health()

    # Turn TLS on (a reload is enough), with a certificate for 127.0.0.1 from a test CA.
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    folder = postgres_server.data_dir.parent
    cert_file, key_file = folder / "server.crt", folder / "server.key"
    certificate.cert_chain_pems[0].write_to_path(str(cert_file))
    certificate.private_key_pem.write_to_path(str(key_file))
    key_file.chmod(0o600)
    chown_tree(folder, server_user("postgres"))
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    postgres_server.psql(
        "ALTER SYSTEM SET ssl_cert_file = :'cert'; ALTER SYSTEM SET ssl_key_file = :'key';"
        "ALTER SYSTEM SET ssl = on; SELECT pg_reload_conf();",
        variables={"cert": str(cert_file), "key": str(key_file)},
    )
    try:
        wait_for_setting(postgres_server, "ssl", "on")
        verified = pg_source(postgres_server, app_db, tmp_path, tls=True, ca_file=str(ca_file),
                             ssl_mode="verify-full")
        await verified.health()
        raw = await dump_bytes(verified, tmp_path / "work")
        assert b"-- PostgreSQL database dump complete" in raw
        encrypted = await verified.admin_query(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();", database=app_db,
            variables={})
        assert encrypted == "t"
        await required.health()  # require: encrypted, certificate not checked

        other = tmp_path / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(other))
        wrong = pg_source(postgres_server, app_db, tmp_path, tls=True, ca_file=str(other))
        with pytest.raises(DumpError, match="certificate verify failed"):
            await dump_bytes(wrong, tmp_path / "work")
    finally:
        postgres_server.psql("ALTER SYSTEM RESET ssl; ALTER SYSTEM RESET ssl_cert_file;"
                             "ALTER SYSTEM RESET ssl_key_file; SELECT pg_reload_conf();")
        wait_for_setting(postgres_server, "ssl", "off")


async def test_tools_missing(postgres_server: PostgresServer, app_db: str, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    source = pg_source(postgres_server, app_db, tmp_path)
    with pytest.raises(DumpError, match="pg_dump not found on PATH"):
        await dump_bytes(source, tmp_path / "work")
    with pytest.raises(HealthError, match="psql not found on PATH"):
        await source.health()


async def test_health_ok(postgres_server: PostgresServer, app_db: str, tmp_path: Path) -> None:
    await pg_source(postgres_server, app_db, tmp_path).health()
    with pytest.raises(HealthError, match="does not exist"):
        await pg_source(postgres_server, "no such db", tmp_path).health()


# --------------------------------------------------------------------------- round two (SPEC §6)


async def _chunks(data: bytes, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


async def dump_with_facts(source: PostgresDatabase, workdir: Path) -> tuple[bytes, DumpFacts]:
    workdir.mkdir(parents=True, exist_ok=True)
    facts = DumpFacts()
    raw = b"".join([chunk async for chunk in source.dump(workdir, facts)])
    assert not list(workdir.iterdir())
    return raw, facts


@pytest.fixture(scope="module")
def awkward_db(postgres_server: PostgresServer) -> Iterator[str]:
    name = "awkward Ü 'db'"
    build_awkward(postgres_server, name)
    yield name
    postgres_server.drop_database(name)


@pytest.fixture(scope="module")
def many_large_objects(postgres_server: PostgresServer) -> Iterator[str]:
    name = "twenty_thousand_los"
    postgres_server.create_database(name)
    postgres_server.psql("SELECT count(lo_from_bytea(0, convert_to('lo ' || g, 'UTF8')))"
                         " FROM generate_series(1, 20000) g;", db=name)
    yield name
    postgres_server.drop_database(name)


@pytest.mark.parametrize("dump_format", ["plain", "custom"])
async def test_twenty_thousand_large_objects_restore_on_default_settings(
    postgres_server: PostgresServer, many_large_objects: str, tmp_path: Path, dump_format: str,
) -> None:
    assert postgres_server.scalar("postgres", "SHOW max_locks_per_transaction") == "64"
    source = pg_source(postgres_server, many_large_objects, tmp_path, format=dump_format)
    raw, facts = await dump_with_facts(source, tmp_path / "work")
    assert facts.objects["large_objects"] == 20000
    target = f"los restored {dump_format}"
    workdir = tmp_path / "restore"
    workdir.mkdir()
    try:
        await source.restore(_chunks(raw), database=target, force=False, workdir=workdir)
        assert postgres_server.scalar(target, "SELECT count(*) FROM pg_largeobject_metadata") == "20000"
        assert postgres_server.scalar(
            target, "SELECT convert_from(lo_get(max(oid)), 'UTF8') FROM pg_largeobject_metadata"
        ) == "lo 20000"
    finally:
        postgres_server.drop_database(target)


@contextlib.asynccontextmanager
async def exported_snapshot(server: PostgresServer, db: str) -> AsyncIterator[tuple[str, Any]]:
    """A session holding a REPEATABLE READ snapshot open: (its id, a query function)."""
    session = await asyncio.create_subprocess_exec(
        "psql", "-X", "-q", "-A", "-t", "-h", str(server.socket_dir), "-p", str(server.port),
        "-U", server.superuser, "-d", db, "-v", "ON_ERROR_STOP=1",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    assert session.stdin is not None and session.stdout is not None

    async def ask(sql: str) -> str:
        assert session.stdin is not None and session.stdout is not None
        session.stdin.write(sql.encode() + b"\n")
        await session.stdin.drain()
        return (await asyncio.wait_for(session.stdout.readline(), 60)).decode().strip()

    snapshot_id = await ask("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT pg_export_snapshot();")
    try:
        yield snapshot_id, ask
    finally:
        session.stdin.close()
        await session.wait()


@pytest.mark.parametrize("dump_format", ["plain", "custom"])
async def test_row_counts_are_the_dumps_own_while_a_writer_runs(
    postgres_server: PostgresServer, tmp_path: Path, dump_format: str,
) -> None:
    db = f"busy_{dump_format}"
    postgres_server.create_database(db)
    postgres_server.psql("""
        CREATE TABLE busy (id bigserial PRIMARY KEY, pad text);
        INSERT INTO busy (pad) SELECT repeat('x', 200) FROM generate_series(1, 50000);
        CREATE TABLE quiet AS SELECT g AS id FROM generate_series(1, 1234) g;
        CREATE PROCEDURE write_forever() LANGUAGE plpgsql AS $$
        BEGIN LOOP INSERT INTO busy (pad) VALUES ('written during the dump'); COMMIT; END LOOP; END $$;
    """, db=db)
    writer = await asyncio.create_subprocess_exec(
        "psql", "-X", "-q", "-h", str(postgres_server.socket_dir), "-p", str(postgres_server.port),
        "-U", postgres_server.superuser, "-d", db, "-c", "CALL write_forever()",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with exported_snapshot(postgres_server, db) as (snapshot_id, ask):
            at_snapshot = int(await ask("SELECT count(*) FROM busy;"))
            source = pg_source(postgres_server, db, tmp_path, format=dump_format,
                               options=[f"--snapshot={snapshot_id}"])
            _, facts = await dump_with_facts(source, tmp_path / "pinned")
        assert facts.tables == {"public.busy": at_snapshot, "public.quiet": 1234}
        # Without a snapshot of ours: the counts are the rows the dump itself holds.
        source = pg_source(postgres_server, db, tmp_path, format=dump_format)
        raw, facts = await dump_with_facts(source, tmp_path / "own")
        assert facts.tables["public.busy"] > at_snapshot  # the writer went on meanwhile
        inventory = await source.drill(_chunks(raw), scratch=f"backupmand_verify_{db}",
                                       workdir=tmp_path)
        assert inventory.tables == facts.tables and inventory.objects == facts.objects
    finally:
        writer.terminate()
        await writer.wait()
        postgres_server.drop_database(db)


def _role_attributes(server: PostgresServer) -> list[tuple[str | None, ...]]:
    return server.query("postgres", """
        SELECT r.rolname, r.rolcanlogin, r.rolcreatedb, r.rolconnlimit, r.rolvaliduntil,
               (SELECT s.setconfig::text FROM pg_db_role_setting s
                 WHERE s.setrole = r.oid AND s.setdatabase = 0),
               shobj_description(r.oid, 'pg_authid'),
               (SELECT string_agg(g.rolname, ',') FROM pg_auth_members m
                  JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid)
          FROM pg_roles r WHERE r.rolname IN ('fid_owner', 'fid reader', 'Fid Writer ü')
         ORDER BY 1""")


@pytest.mark.parametrize("dump_format", ["plain", "custom"])
async def test_a_new_server_gets_the_roles_from_the_globals_then_the_database(
    postgres_server: PostgresServer, second_postgres_server: PostgresServer, awkward_db: str,
    tmp_path: Path, dump_format: str,
) -> None:
    source = pg_source(postgres_server, awkward_db, tmp_path, format=dump_format)
    raw, _ = await dump_with_facts(source, tmp_path / "work")
    script = await source.dump_globals(tmp_path)
    assert script is not None and b"PASSWORD" not in script
    elsewhere = pg_source(second_postgres_server, "postgres", tmp_path, format=dump_format)
    target = f"moved {dump_format}"
    workdir = tmp_path / "restore"
    workdir.mkdir()
    try:
        if dump_format == "plain":  # the first run: without the roles the load fails
            with pytest.raises(RestoreError, match=r'role ".*" does not exist'):
                await elsewhere.restore(_chunks(raw), database=target, force=False, workdir=workdir)
            assert not second_postgres_server.database_exists(target)
        for _ in range(2):  # creates only what is missing: a second run changes nothing
            await elsewhere.restore_globals(_chunks(script), workdir=workdir)
            assert _role_attributes(second_postgres_server) == _role_attributes(postgres_server)
        await elsewhere.restore(_chunks(raw), database=target, force=False, workdir=workdir)
        assert snapshot_of(second_postgres_server, target) == snapshot_of(postgres_server, awkward_db)
    finally:
        second_postgres_server.drop_database(target)


async def test_role_passwords_need_a_superuser(postgres_server: PostgresServer, awkward_db: str,
                                               tmp_path: Path) -> None:
    postgres_server.psql("ALTER ROLE \"Fid Writer ü\" PASSWORD 'writer-secret';")
    source = pg_source(postgres_server, awkward_db, tmp_path, role_passwords=True)
    script = await source.dump_globals(tmp_path)
    assert script is not None and b"PASSWORD ''SCRAM-SHA-256$" in script
    assert b"writer-secret" not in script
    assert await pg_source(postgres_server, awkward_db, tmp_path, globals=False).dump_globals(
        tmp_path) is None

    name = "plain backup user"
    if not postgres_server.query("postgres", f"SELECT 1 FROM pg_roles WHERE rolname = '{name}'"):
        postgres_server.create_user(name, AWKWARD_PASSWORD, superuser=False)
    postgres_server.psql(f'GRANT CONNECT ON DATABASE {quote_ident(awkward_db)} TO "{name}";')
    weak = pg_source(postgres_server, awkward_db, tmp_path, user=name, password=AWKWARD_PASSWORD,
                     role_passwords=True)
    with pytest.raises(DumpError, match="role_passwords: true needs a superuser"):
        await weak.dump_globals(tmp_path)
    without = pg_source(postgres_server, awkward_db, tmp_path, user=name,
                        password=AWKWARD_PASSWORD)
    assert b"CREATE ROLE" in (await without.dump_globals(tmp_path) or b"")


async def test_custom_archives_restore_in_parallel_under_any_name_and_replace_safely(
    postgres_server: PostgresServer, awkward_db: str, tmp_path: Path,
) -> None:
    source = pg_source(postgres_server, awkward_db, tmp_path, format="custom", restore_jobs=3)
    raw, facts = await dump_with_facts(source, tmp_path / "work")
    assert facts.dump_format == "custom" and facts.tables["app.customers"] > 2000
    expected = snapshot_of(postgres_server, awkward_db)
    target = "custom copy"
    workdir = tmp_path / "restore"
    workdir.mkdir()
    try:
        await source.restore(_chunks(raw), database=target, force=False, workdir=workdir)
        assert snapshot_of(postgres_server, target) == expected
        postgres_server.psql("CREATE TABLE public.changed (x int);", db=target)
        await source.restore(_chunks(raw), database=target, force=True, workdir=workdir)
        assert snapshot_of(postgres_server, target) == expected
        (kept,) = [name for (name,) in postgres_server.query(
            "postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'custom copy\\_\\_before\\_%'")]
        assert postgres_server.scalar(kept or "", "SELECT count(*) FROM public.changed") == "0"
        assert list(workdir.iterdir()) == []  # the staged archive is gone
    finally:
        for (name,) in postgres_server.query(
                "postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'custom copy%'"):
            postgres_server.drop_database(name or "")


async def test_drills_on_a_verify_target_and_stale_scratch(
    postgres_server: PostgresServer, second_postgres_server: PostgresServer, app_db: str,
    tmp_path: Path,
) -> None:
    source = pg_source(postgres_server, app_db, tmp_path, options=["--no-owner"], verify_target={
        "host": second_postgres_server.host, "port": second_postgres_server.port,
        "password": second_postgres_server.password})
    raw, facts = await dump_with_facts(source, tmp_path / "work")
    before = {row[0] for row in postgres_server.query("postgres", "SELECT datname FROM pg_database")}
    inventory = await source.drill(_chunks(raw), scratch="backupmand_verify_remote",
                                   workdir=tmp_path)
    assert inventory.tables == facts.tables and inventory.objects == facts.objects
    assert not second_postgres_server.database_exists("backupmand_verify_remote")
    assert {row[0] for row in postgres_server.query("postgres", "SELECT datname FROM pg_database")
            } == before

    # A scratch name that exists is not the drill's: refused, and left alone.
    second_postgres_server.create_database("backupmand_verify_dead")
    second_postgres_server.create_database("keep backupmand_verify_")
    postgres_server.create_database("backupmand_verify_dead too")
    try:
        with pytest.raises(RestoreError, match="already exists"):
            await source.drill(_chunks(raw), scratch="backupmand_verify_dead", workdir=tmp_path)
        assert second_postgres_server.database_exists("backupmand_verify_dead")
        dropped = await source.drop_stale_scratch("backupmand_verify_")
        assert sorted(dropped) == ["backupmand_verify_dead", "backupmand_verify_dead too"]
        assert second_postgres_server.database_exists("keep backupmand_verify_")
        assert not postgres_server.database_exists("backupmand_verify_dead too")
    finally:
        for server, name in ((second_postgres_server, "backupmand_verify_dead"),
                             (second_postgres_server, "keep backupmand_verify_"),
                             (postgres_server, "backupmand_verify_dead too")):
            server.drop_database(name)

    unreachable = pg_source(postgres_server, app_db, tmp_path,
                            verify_target={"host": "127.0.0.1", "port": free_port()})
    with pytest.raises(RestoreError, match="reaching the scratch server"):
        await unreachable.drill(_chunks(raw), scratch="backupmand_verify_nowhere", workdir=tmp_path)


async def test_archives_pg_dump_compressed_itself_are_counted_too(
    postgres_server: PostgresServer, awkward_db: str, tmp_path: Path,
) -> None:
    plain = pg_source(postgres_server, awkward_db, tmp_path)
    _, expected = await dump_with_facts(plain, tmp_path / "plain")
    compressed = pg_source(postgres_server, awkward_db, tmp_path, format="custom",
                           options=["--compress=6"])
    raw, facts = await dump_with_facts(compressed, tmp_path / "compressed")
    assert facts.tables == expected.tables and facts.objects == expected.objects
    inventory = await compressed.drill(_chunks(raw), scratch="backupmand_verify_compressed",
                                       workdir=tmp_path)
    assert inventory.tables == facts.tables and inventory.objects == facts.objects


async def test_force_waits_for_a_complete_load_before_it_ends_the_targets_sessions(
    postgres_server: PostgresServer, app_db: str, tmp_path: Path,
) -> None:
    source = pg_source(postgres_server, app_db, tmp_path)
    raw, _ = await dump_with_facts(source, tmp_path / "work")
    target = "in use"
    postgres_server.create_database(target)
    postgres_server.psql("CREATE TABLE live (x int); INSERT INTO live VALUES (7);", db=target)
    workdir = tmp_path / "restore"
    workdir.mkdir()
    cut = raw.index(b"\n-- Data for Name: ")
    spoiled = raw[:cut] + b"\nSELECT no_such_function();\n" + raw[cut:]
    try:
        async with table_locked(postgres_server, target, "live"):
            # A load that fails never disturbs the target or the sessions on it.
            with pytest.raises(RestoreError, match="no_such_function"):
                await source.restore(_chunks(spoiled), database=target, force=True,
                                     workdir=workdir)
            assert postgres_server.scalar("postgres", "SELECT count(*) FROM pg_stat_activity"
                                          f" WHERE datname = '{target}'") == "1"
            # A complete one ends them (the lock holder too) and takes the target's place.
            await source.restore(_chunks(raw), database=target, force=True, workdir=workdir)
        assert snapshot(postgres_server, target) == snapshot(postgres_server, app_db)
        (kept,) = [name for (name,) in postgres_server.query(
            "postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'in use\\_\\_before\\_%'")]
        assert postgres_server.scalar(kept or "", "SELECT x FROM live") == "7"
    finally:
        for (name,) in postgres_server.query(
                "postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'in use%'"):
            postgres_server.drop_database(name or "")
