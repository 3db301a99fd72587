"""MySQL/MariaDB source against a real MariaDB 10.11: dumps, restores, failures, secrets."""

from __future__ import annotations

import asyncio
import contextlib
import re
import stat
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from backupmand.catalog import Catalog
from backupmand.config import MysqlSource, Settings
from backupmand.errors import DumpError, HealthError, RestoreError
from backupmand.restore import restore_backup
from backupmand.sources import build_source
from backupmand.sources.base import DumpFacts
from backupmand.sources.mysql import MysqlDatabase
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
from tests.servers._common import free_port
from tests.servers.mariadb import MariadbServer, quote_ident, quote_literal

SCHEMA = r"""
CREATE TABLE items (
    id       INT AUTO_INCREMENT PRIMARY KEY,
    name     VARCHAR(200) NOT NULL,
    note     TEXT,
    data     BLOB,
    price    DECIMAL(20, 6),
    doubled  DECIMAL(21, 6) AS (price * 2) STORED,
    name_len INT AS (CHAR_LENGTH(name)) VIRTUAL,
    created  DATETIME(6) DEFAULT '2025-01-01 00:00:00.000000',
    KEY by_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE audit (
    id      BIGINT AUTO_INCREMENT PRIMARY KEY,
    item_id INT NOT NULL,
    action  VARCHAR(20) NOT NULL,
    CONSTRAINT audit_item FOREIGN KEY (item_id) REFERENCES items (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE latin (id INT PRIMARY KEY, t VARCHAR(20)) DEFAULT CHARSET=latin1;
CREATE TRIGGER items_ai AFTER INSERT ON items FOR EACH ROW
    INSERT INTO audit (item_id, action) VALUES (NEW.id, 'insert');
DELIMITER //
CREATE PROCEDURE add_item(IN p_name VARCHAR(200))
BEGIN
    INSERT INTO items (name, note) VALUES (p_name, 'via procedure');
END //
CREATE FUNCTION shout(s VARCHAR(100)) RETURNS VARCHAR(110) DETERMINISTIC
    RETURN CONCAT(UPPER(s), '!') //
DELIMITER ;
CREATE EVENT purge_audit ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00'
    DO DELETE FROM audit WHERE id < 0;
CREATE VIEW item_view AS SELECT id, shout(name) AS loud, doubled FROM items;

INSERT INTO items (name, note, data, price) VALUES
    ('Zoë 🙂🎉 ünïcödé', 'back\\slash and \'single\' and "double" and tab\t and nl\n and \\n',
     X'00FF5C0D0A1A27225C30', 12345678901234.123456),
    ('empty', '', X'', -0.000001),
    ('nulls', NULL, NULL, NULL);
INSERT INTO items (name, data, price)
    SELECT CONCAT('bulk ', seq), UNHEX(SHA2(seq, 256)), seq / 3 FROM seq_1_to_400;
DELETE FROM items WHERE id % 7 = 0 AND id > 3;
INSERT INTO latin VALUES (1, 'café'), (2, 'naïve');
"""


def databases_starting(server: MariadbServer, prefix: str) -> list[str]:
    return [name for (name,) in server.query(None, "SELECT SCHEMA_NAME FROM "
                                                   "information_schema.SCHEMATA")
            if name.startswith(prefix)]


def normalise(value: str, db: str) -> str:
    return value.replace(quote_ident(db), "`DB`").replace(db, "DB")


def snapshot(server: MariadbServer, db: str) -> dict[str, Any]:
    """Every row, AUTO_INCREMENT value and object of ``db`` (its own name left out)."""
    literal = quote_literal(db)
    tables = server.query(None, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE "
                                f"TABLE_SCHEMA = {literal} AND TABLE_TYPE = 'BASE TABLE' "
                                "ORDER BY 1")
    state: dict[str, Any] = {"tables": tables}
    for (table,) in tables:
        state[f"rows {table}"] = server.query(db, f"SELECT * FROM {quote_ident(table)} "
                                                  "ORDER BY 1")
        state[f"hex {table}"] = server.query(
            db, f"SELECT MD5(GROUP_CONCAT(HEX(t.data) ORDER BY id)) FROM "
                f"{quote_ident(table)} t") if table == "items" else None
    queries = {
        "auto_increment": "SELECT TABLE_NAME, AUTO_INCREMENT, TABLE_COLLATION FROM "
                          "information_schema.TABLES WHERE TABLE_SCHEMA = {db} ORDER BY 1",
        "columns": "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, "
                   "EXTRA, GENERATION_EXPRESSION, CHARACTER_SET_NAME FROM "
                   "information_schema.COLUMNS WHERE TABLE_SCHEMA = {db} ORDER BY 1, "
                   "ORDINAL_POSITION",
        "routines": "SELECT ROUTINE_NAME, ROUTINE_TYPE, ROUTINE_DEFINITION, DEFINER FROM "
                    "information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {db} ORDER BY 1",
        "triggers": "SELECT TRIGGER_NAME, EVENT_MANIPULATION, ACTION_TIMING, ACTION_STATEMENT "
                    "FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {db} ORDER BY 1",
        "events": "SELECT EVENT_NAME, EVENT_DEFINITION, INTERVAL_VALUE, INTERVAL_FIELD, STARTS, "
                  "STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {db} ORDER BY 1",
        "views": "SELECT TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS WHERE "
                 "TABLE_SCHEMA = {db} ORDER BY 1",
        "constraints": "SELECT CONSTRAINT_NAME, TABLE_NAME, REFERENCED_TABLE_NAME, DELETE_RULE "
                       "FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE "
                       "CONSTRAINT_SCHEMA = {db} ORDER BY 1",
    }
    for name, sql in queries.items():
        rows = server.query(None, sql.format(db=literal))
        state[name] = [tuple(normalise(field, db) for field in row) for row in rows]
    assert len(state["rows items"]) > 300
    return state


@pytest.fixture(scope="module")
def app_db(mariadb_server: MariadbServer) -> Iterator[str]:
    name = "app-db $x"  # needs quoting
    mariadb_server.create_database(name)
    mariadb_server.sql(SCHEMA, db=name)
    yield name
    mariadb_server.drop_database(name)


@pytest.fixture
async def catalog() -> AsyncIterator[Catalog]:
    async with Catalog.open("memory") as opened:
        yield opened


def settings_for(server: MariadbServer, db: str, tmp: Path, **overrides: Any) -> Settings:
    return make_settings(
        sources=[server.source(db, tmp / "tmp", label="my", **overrides)],
        drives=[{"provider": "local", "label": "Local", "folder": str(tmp / "drive")}],
    )


def my_source(server: MariadbServer, db: str, tmp: Path, **overrides: Any) -> MysqlDatabase:
    source = build_source(MysqlSource.model_validate(server.source(db, tmp / "tmp", **overrides)))
    assert isinstance(source, MysqlDatabase)
    return source


async def backup_of(catalog: Catalog, settings: Settings, tmp: Path,
                    compression: str = "zstd") -> tuple[str, bytes]:
    source = build_source(settings.source("my"))
    raw = await dump_bytes(source, tmp / "work")
    backup = await store_backup(
        catalog, settings, label="my", provider="mariadb", extension=source.extension,
        data=raw, drive_label="Local", staging=tmp / "staging", compression=compression,
    )
    return backup.id, raw


# --------------------------------------------------------------------------- round trips


async def test_round_trip(mariadb_server: MariadbServer, app_db: str, catalog: Catalog,
                          tmp_path: Path) -> None:
    settings = settings_for(mariadb_server, app_db, tmp_path)
    backup_id, raw = await backup_of(catalog, settings, tmp_path)
    assert b"-- Dump completed" in raw[-200:]
    assert b"CREATE DATABASE" not in raw and b"\nUSE " not in raw
    assert b"LOCK TABLES" not in raw
    assert b"ALTER DATABASE CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;" in raw
    assert not list((tmp_path / "work").iterdir())  # the option file is gone
    target = "restored `db`"
    try:
        description = await restore_backup(settings, catalog, backup_id, to_source="my",
                                           database=target)
        assert repr(target) in description
        assert snapshot(mariadb_server, target) == snapshot(mariadb_server, app_db)
        # The procedure, the trigger and AUTO_INCREMENT carry on where the source stopped.
        mariadb_server.sql("CALL add_item('after restore');", db=target)
        next_id = mariadb_server.scalar(
            None, "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
                  f"{quote_literal(app_db)} AND TABLE_NAME = 'items'")
        assert mariadb_server.query(
            target, "SELECT i.id, a.action FROM items i JOIN audit a ON a.item_id = i.id "
                    "WHERE i.name = 'after restore'") == [(next_id, "insert")]
        assert mariadb_server.scalar(target, "SELECT loud FROM item_view WHERE id = 2") == (
            "EMPTY!")
    finally:
        mariadb_server.drop_database(target)


async def test_restore_refuses_a_non_empty_database_unless_forced(
    mariadb_server: MariadbServer, app_db: str, catalog: Catalog, tmp_path: Path
) -> None:
    settings = settings_for(mariadb_server, app_db, tmp_path)
    backup_id, _ = await backup_of(catalog, settings, tmp_path, compression="gzip")
    target = "busy"
    mariadb_server.create_database(target)
    try:
        mariadb_server.sql("CREATE TABLE keep (x INT); INSERT INTO keep VALUES (42);", db=target)
        with pytest.raises(RestoreError, match=r"is not empty .*--force"):
            await restore_backup(settings, catalog, backup_id, to_source="my", database=target)
        assert mariadb_server.scalar(target, "SELECT x FROM keep") == "42"
        description = await restore_backup(settings, catalog, backup_id, to_source="my",
                                           database=target, force=True)
        assert snapshot(mariadb_server, target) == snapshot(mariadb_server, app_db)
        (kept,) = re.findall(r"kept as '(busy__before_\d{8}T\d{6}Z)'", description)
        assert mariadb_server.scalar(kept, "SELECT x FROM keep") == "42"
    finally:
        for name in databases_starting(mariadb_server, target):
            mariadb_server.drop_database(name)


async def test_failing_restore_raises_and_drops_what_it_created(
    mariadb_server: MariadbServer, app_db: str, catalog: Catalog, tmp_path: Path
) -> None:
    settings = settings_for(mariadb_server, app_db, tmp_path)
    raw = await dump_bytes(build_source(settings.source("my")), tmp_path / "work")
    cut = raw.index(b"CREATE TABLE `items`")
    corrupt = raw[:cut] + b"INSERT INTO no_such_table VALUES (1);\n" + raw[cut:]
    backup = await store_backup(catalog, settings, label="my", provider="mysql",
                                extension=".sql", data=corrupt, drive_label="Local",
                                staging=tmp_path / "staging")
    target = "never restored"
    with pytest.raises(RestoreError, match="no_such_table") as caught:
        await restore_backup(settings, catalog, backup.id, to_source="my", database=target)
    assert "dropped again" in str(caught.value)
    assert not mariadb_server.database_exists(target)

    # A pre-existing empty database is not dropped; the client stopped at the error.
    mariadb_server.create_database(target)
    try:
        with pytest.raises(RestoreError, match="no_such_table"):
            await restore_backup(settings, catalog, backup.id, to_source="my", database=target)
        assert mariadb_server.database_exists(target)
        assert mariadb_server.query(
            None, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
                  f"{quote_literal(target)} AND TABLE_NAME = 'items'") == []
    finally:
        mariadb_server.drop_database(target)


# --------------------------------------------------------------------------- credentials


@pytest.fixture(scope="module")
def awkward_user(mariadb_server: MariadbServer) -> str:
    name = "odd user"
    mariadb_server.create_user(name, AWKWARD_PASSWORD)
    return name


async def test_awkward_password_works_everywhere(
    mariadb_server: MariadbServer, app_db: str, awkward_user: str, catalog: Catalog,
    tmp_path: Path,
) -> None:
    settings = settings_for(mariadb_server, app_db, tmp_path, user=awkward_user,
                            password=AWKWARD_PASSWORD)
    await build_source(settings.source("my")).health()
    backup_id, _ = await backup_of(catalog, settings, tmp_path)
    target = "restored by odd user"
    try:
        await restore_backup(settings, catalog, backup_id, to_source="my", database=target)
        assert snapshot(mariadb_server, target) == snapshot(mariadb_server, app_db)
    finally:
        mariadb_server.drop_database(target)


@contextlib.asynccontextmanager
async def table_locked(server: MariadbServer, db: str, table: str) -> AsyncIterator[None]:
    """Hold LOCK TABLES ... WRITE on ``table`` in another session until exit."""
    locker = await asyncio.create_subprocess_exec(
        *server.client_argv(db), "--unbuffered",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    assert locker.stdin is not None and locker.stdout is not None
    locker.stdin.write(f"LOCK TABLES {quote_ident(table)} WRITE; SELECT 'locked';\n".encode())
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
    mariadb_server: MariadbServer, app_db: str, awkward_user: str, tmp_path: Path
) -> None:
    source = my_source(mariadb_server, app_db, tmp_path, user=awkward_user,
                       password=AWKWARD_PASSWORD, timeout=1.5)
    work = tmp_path / "work"
    async with table_locked(mariadb_server, app_db, "items"):
        task = asyncio.create_task(dump_bytes(source, work))
        await wait_for_pids("mariadb-dump", app_db.encode())
        for _pid, cmdline in proc_cmdlines():
            assert AWKWARD_PASSWORD.encode() not in cmdline
            assert b"with spaces" not in cmdline
        # The credentials are in a private option file, for the dump's lifetime only.
        option_files = list(work.glob("*.cnf"))
        assert len(option_files) == 1
        assert stat.S_IMODE(option_files[0].stat().st_mode) == 0o600
        with pytest.raises(DumpError, match=r"timed out after 1\.5 s"):
            await task
    assert pids_running("mariadb-dump", app_db.encode()) == []
    assert list(work.iterdir()) == []


async def test_dump_killed_midway_fails(mariadb_server: MariadbServer, tmp_path: Path) -> None:
    db = "killed_midway"  # a name no other dump on this machine has
    mariadb_server.create_database(db)
    try:
        mariadb_server.sql("CREATE TABLE big (id INT PRIMARY KEY, pad TEXT) "
                           "SELECT seq AS id, REPEAT(MD5(seq), 32) AS pad FROM seq_1_to_24000;",
                           db=db)
        await assert_killed_midway(
            my_source(mariadb_server, db, tmp_path), "mariadb-dump", b"--\0killed_midway",
            tmp_path, secret=mariadb_server.password, most=24000 * 1024)
    finally:
        mariadb_server.drop_database(db)


async def test_wrong_password(mariadb_server: MariadbServer, app_db: str,
                              tmp_path: Path) -> None:
    wrong = "not-the-password-" + "x" * 8
    source = my_source(mariadb_server, app_db, tmp_path, password=wrong)
    await assert_refused(source, "Access denied", tmp_path / "work", secret=wrong)


async def test_server_down(mariadb_server: MariadbServer, tmp_path: Path) -> None:
    source = my_source(mariadb_server, "app", tmp_path, port=free_port())
    await assert_refused(source, "Can't connect", tmp_path / "work")


async def test_tls(mariadb_server: MariadbServer, app_db: str, tmp_path: Path) -> None:
    # Verified against the server's CA: the dump works, the session is encrypted.
    verified = my_source(mariadb_server, app_db, tmp_path, tls=True,
                         ca_file=str(mariadb_server.ca_file))
    await verified.health()
    assert b"-- Dump completed" in (await dump_bytes(verified, tmp_path / "work"))[-200:]
    async with verified.session(tmp_path) as opened:
        rows = await opened.rows("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
    assert rows[0][1]

    # Encrypted without a CA to check against (like sslmode=require).
    unverified = my_source(mariadb_server, app_db, tmp_path, tls=True)
    await unverified.health()

    # A certificate from another CA is refused.
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    wrong = my_source(mariadb_server, app_db, tmp_path, tls=True, ca_file=str(other))
    with pytest.raises(DumpError, match=r"(?i)certificate|TLS/SSL error"):
        await dump_bytes(wrong, tmp_path / "work")
    with pytest.raises(HealthError, match=r"(?i)certificate|TLS/SSL error"):
        await wrong.health()


async def test_tools_missing(mariadb_server: MariadbServer, app_db: str, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    source = my_source(mariadb_server, app_db, tmp_path)
    with pytest.raises(DumpError, match="mariadb-dump or mysqldump not found on PATH"):
        await dump_bytes(source, tmp_path / "work")
    with pytest.raises(HealthError, match="mariadb or mysql not found on PATH"):
        await source.health()


async def test_health_ok(mariadb_server: MariadbServer, app_db: str, tmp_path: Path) -> None:
    await my_source(mariadb_server, app_db, tmp_path).health()


# --------------------------------------------------------------------------- dump facts


async def dump_with_facts(source: MysqlDatabase, workdir: Path) -> tuple[bytes, DumpFacts]:
    workdir.mkdir(parents=True, exist_ok=True)
    facts = DumpFacts()
    raw = b"".join([chunk async for chunk in source.dump(workdir, facts)])
    return raw, facts


async def test_dump_facts(mariadb_server: MariadbServer, app_db: str, tmp_path: Path) -> None:
    _, facts = await dump_with_facts(my_source(mariadb_server, app_db, tmp_path), tmp_path / "w")
    assert facts.database == app_db and facts.dump_format == "plain"
    assert facts.tool == "mariadb-dump" and facts.tool_version.startswith("10.11.")
    assert facts.server_version == mariadb_server.scalar(None, "SELECT VERSION()")
    counts = {table: int(mariadb_server.scalar(app_db, f"SELECT COUNT(*) FROM {quote_ident(table)}"))
              for table in ("items", "audit", "latin")}
    assert facts.tables == counts
    assert facts.objects == {"tables": 3, "views": 1, "sequences": 0, "routines": 2,
                             "triggers": 1, "events": 1, "large_objects": 0}


WRITER = """
CREATE TABLE ledger (id INT AUTO_INCREMENT PRIMARY KEY, pad VARCHAR(200));
CREATE TABLE mirror (id INT PRIMARY KEY);
CREATE TABLE stop_flag (x INT);
INSERT INTO ledger (pad) SELECT REPEAT(CONCAT('it''s ),( ', seq), 8) FROM seq_1_to_200000;
INSERT INTO mirror SELECT id FROM ledger;
DELIMITER //
CREATE PROCEDURE writer()
BEGIN
    WHILE (SELECT COUNT(*) FROM stop_flag) = 0 DO
        START TRANSACTION;
        INSERT INTO ledger (pad) VALUES (REPEAT('written during the dump ),( ', 4));
        INSERT INTO mirror VALUES (LAST_INSERT_ID());
        DELETE FROM ledger ORDER BY id LIMIT 1;
        DELETE FROM mirror ORDER BY id LIMIT 1;
        INSERT INTO ledger (pad) VALUES ('and one more');
        INSERT INTO mirror VALUES (LAST_INSERT_ID());
        COMMIT;
    END WHILE;
END //
DELIMITER ;
"""


async def test_row_counts_are_the_dumps_own_while_a_writer_runs(
    mariadb_server: MariadbServer, tmp_path: Path
) -> None:
    db = "counted while written"
    scratch = "backupmand_verify_counted"
    mariadb_server.create_database(db)
    writer: asyncio.subprocess.Process | None = None
    try:
        mariadb_server.sql(WRITER, db=db)
        start = int(mariadb_server.scalar(db, "SELECT MAX(id) FROM mirror"))
        writer = await asyncio.create_subprocess_exec(
            *mariadb_server.client_argv(db), "-e", "CALL writer()",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        # The writer announces nothing: its rows show it is running.
        while int(mariadb_server.scalar(db, "SELECT MAX(id) FROM mirror")) < start + 100:
            await asyncio.sleep(0.01)
        before = int(mariadb_server.scalar(db, "SELECT MAX(id) FROM mirror"))
        source = my_source(mariadb_server, db, tmp_path)
        raw, facts = await dump_with_facts(source, tmp_path / "work")
        after = int(mariadb_server.scalar(db, "SELECT MAX(id) FROM mirror"))
        assert after > before + 100, "the writer did not run during the dump"
        # Every writer transaction keeps the two tables equal: so does any snapshot.
        assert facts.tables["ledger"] == facts.tables["mirror"] > 200000
        # The counts are those of the rows in the dump: loaded back, the same.
        inventory = await source.drill(_chunks(raw), scratch=scratch, workdir=tmp_path / "work")
        assert inventory.tables == facts.tables
        assert inventory.objects == facts.objects
    finally:
        mariadb_server.sql("INSERT INTO stop_flag VALUES (1);", db=db)
        if writer is not None:
            await writer.wait()
        mariadb_server.drop_database(db)
    assert not mariadb_server.database_exists(scratch)


async def _chunks(data: bytes, size: int = 1 << 20) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


# --------------------------------------------------------------------------- dumps that would not load


@pytest.fixture
def scratch_db(mariadb_server: MariadbServer) -> Iterator[str]:
    name = "dump refused"
    mariadb_server.create_database(name)
    yield name
    mariadb_server.drop_database(name)


async def test_a_row_over_the_packet_limit_is_written_so_that_it_loads(
    mariadb_server: MariadbServer, scratch_db: str, tmp_path: Path
) -> None:
    packet = int(mariadb_server.scalar(None, "SELECT @@GLOBAL.max_allowed_packet"))
    assert packet == 16 * 1024 * 1024  # the server's default
    mariadb_server.sql("CREATE TABLE b (id INT PRIMARY KEY, data LONGBLOB);\n"
                       "INSERT INTO b VALUES (1, REPEAT(UNHEX(SHA2('x', 512)), 147456)), (2, 'x');",
                       db=scratch_db)
    source = my_source(mariadb_server, scratch_db, tmp_path)
    raw, facts = await dump_with_facts(source, tmp_path / "work")
    assert facts.tables == {"b": 2}
    assert max(len(line) for line in raw.split(b";\n")) < packet  # as hex it would be 18 MiB
    inventory = await source.drill(_chunks(raw), scratch="backupmand_verify_packet",
                                   workdir=tmp_path / "work")
    assert inventory.tables == {"b": 2}


async def test_a_row_that_cannot_fit_fails_the_dump_naming_its_table(
    mariadb_server: MariadbServer, scratch_db: str, tmp_path: Path
) -> None:
    # 9 MiB of NUL bytes: 18 MiB as hex, and 18 MiB as an escaped string too.
    mariadb_server.sql("CREATE TABLE `zeros ü` (id INT PRIMARY KEY, data LONGBLOB);\n"
                       "INSERT INTO `zeros ü` VALUES (1, REPEAT(X'00', 9437184));", db=scratch_db)
    with pytest.raises(DumpError, match=r"table 'zeros ü'.*max_allowed_packet \(16\.0 MiB\)"):
        await dump_bytes(my_source(mariadb_server, scratch_db, tmp_path), tmp_path / "work")
    assert pids_running("mariadb-dump", scratch_db.encode()) == []


async def test_history_that_cannot_be_dumped_fails_the_dump(
    mariadb_server: MariadbServer, scratch_db: str, tmp_path: Path
) -> None:
    mariadb_server.sql(
        "CREATE TABLE precise (id INT PRIMARY KEY, v INT, "
        "s BIGINT UNSIGNED GENERATED ALWAYS AS ROW START, "
        "e BIGINT UNSIGNED GENERATED ALWAYS AS ROW END, PERIOD FOR SYSTEM_TIME (s, e)) "
        "ENGINE=InnoDB WITH SYSTEM VERSIONING;\n"
        "INSERT INTO precise (id, v) VALUES (1, 1); UPDATE precise SET v = 2;", db=scratch_db)
    with pytest.raises(DumpError, match="transaction-precise history"):
        await dump_bytes(my_source(mariadb_server, scratch_db, tmp_path), tmp_path / "work")


# --------------------------------------------------------------------------- forced restores


@contextlib.asynccontextmanager
async def reading(server: MariadbServer, db: str, table: str) -> AsyncIterator[None]:
    """An open transaction that has read ``table``: its metadata lock blocks a RENAME."""
    holder = await asyncio.create_subprocess_exec(
        *server.client_argv(db), "--unbuffered",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.write(f"START TRANSACTION; SELECT COUNT(*) > -1 FROM {quote_ident(table)};\n"
                       .encode())
    await holder.stdin.drain()
    assert (await asyncio.wait_for(holder.stdout.readline(), 30)).strip() == b"1"
    try:
        yield
    finally:
        holder.stdin.close()
        await holder.wait()


async def test_a_swap_that_fails_puts_the_target_back(
    mariadb_server: MariadbServer, app_db: str, tmp_path: Path
) -> None:
    target = "swapped back"
    source = my_source(mariadb_server, app_db, tmp_path)
    raw = await dump_bytes(source, tmp_path / "work")
    try:
        await source.restore(_chunks(raw), database=target, force=False, workdir=tmp_path)
        mariadb_server.sql("INSERT INTO latin VALUES (3, 'changed');", db=target)
        before = snapshot(mariadb_server, target)
        databases = set(databases_starting(mariadb_server, ""))
        mariadb_server.sql("SET GLOBAL lock_wait_timeout = 2;")
        try:
            async with reading(mariadb_server, target, "latin"):
                with pytest.raises(RestoreError, match=r"(?s)put back as it was.*Lock wait timeout"):
                    await source.restore(_chunks(raw), database=target, force=True,
                                         workdir=tmp_path)
        finally:
            mariadb_server.sql("SET GLOBAL lock_wait_timeout = DEFAULT;")
        assert snapshot(mariadb_server, target) == before
        assert set(databases_starting(mariadb_server, "")) == databases  # no side, no copy
    finally:
        for name in databases_starting(mariadb_server, target):
            mariadb_server.drop_database(name)


# --------------------------------------------------------------------------- globals


GLOBALS_SQL = """
CREATE USER 'app user'@'%' IDENTIFIED BY 'app-password';
CREATE USER 'owner'@'localhost' IDENTIFIED BY 'owner-password';
CREATE USER 'bystander'@'%' IDENTIFIED BY 'x';
CREATE ROLE `reader role`;
CREATE ROLE `nested role`;
GRANT SELECT, INSERT ON `with accounts`.* TO 'app user'@'%';
GRANT SELECT ON `with accounts`.`t` TO `reader role`;
GRANT EXECUTE ON *.* TO `nested role`;
GRANT `nested role` TO `reader role`;
GRANT `reader role` TO 'app user'@'%';
SET DEFAULT ROLE `reader role` FOR 'app user'@'%';
GRANT PROCESS ON *.* TO 'owner'@'localhost';
GRANT SELECT ON `elsewhere`.* TO 'bystander'@'%';
"""
ACCOUNTS = ("'app user'@'%'", "'owner'@'localhost'", "`reader role`", "`nested role`")


def account_state(server: MariadbServer) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for account in ACCOUNTS:
        if not account.startswith("`"):
            state[f"create {account}"] = server.query(None, f"SHOW CREATE USER {account}")
        state[f"grants {account}"] = sorted(server.query(None, f"SHOW GRANTS FOR {account}"))
    return state


async def test_globals_bring_back_the_accounts_the_database_needs(
    mariadb_server: MariadbServer, tmp_path: Path
) -> None:
    db = "with accounts"
    mariadb_server.create_database(db)
    try:
        mariadb_server.sql("CREATE TABLE t (x INT);", db=db)
        mariadb_server.sql(GLOBALS_SQL)
        mariadb_server.sql("CREATE DEFINER = 'owner'@'localhost' VIEW v AS SELECT x FROM t;\n"
                           "CREATE DEFINER = 'gone'@'%' VIEW orphan AS SELECT x FROM t;", db=db)
        source = my_source(mariadb_server, db, tmp_path)
        work = tmp_path / "work"
        work.mkdir()
        script = await source.dump_globals(work)
        assert script is not None
        assert b"bystander" not in script and b"app-password" not in script
        assert b"'gone'@'%'" not in script and b"`gone`@`%` (a DEFINER) does not exist" in script
        expected = account_state(mariadb_server)

        # Gone from the server: the script creates them as they were, hashes included.
        mariadb_server.sql("DROP USER 'app user'@'%', 'owner'@'localhost'; "
                           "DROP ROLE `reader role`; DROP ROLE `nested role`;")
        description = await source.restore_globals(_chunks(script), workdir=work)
        assert repr(db) in description
        assert account_state(mariadb_server) == expected
        await source.restore_globals(_chunks(script), workdir=work)  # twice: nothing changes
        assert account_state(mariadb_server) == expected

        # An account that exists keeps its password and global privileges; it only gains
        # its privileges on this database.
        mariadb_server.sql("DROP USER 'owner'@'localhost'; "
                           "CREATE USER 'owner'@'localhost' IDENTIFIED BY 'another';")
        mine = mariadb_server.query(None, "SHOW CREATE USER 'owner'@'localhost'")
        await source.restore_globals(_chunks(script), workdir=work)
        assert mariadb_server.query(None, "SHOW CREATE USER 'owner'@'localhost'") == mine
        assert "PROCESS" not in str(mariadb_server.query(None, "SHOW GRANTS FOR 'owner'@'localhost'"))
        assert list(work.iterdir()) == []

        # A script that fails stops at its first error, and says so.
        with pytest.raises(RestoreError, match="accounts and grants"):
            await source.restore_globals(_chunks(b"GRANT NOPE ON *.* TO nobody;\n" + script),
                                         workdir=work)
    finally:
        mariadb_server.sql("DROP USER IF EXISTS 'app user'@'%', 'owner'@'localhost', "
                           "'bystander'@'%'; DROP ROLE IF EXISTS `reader role`; "
                           "DROP ROLE IF EXISTS `nested role`;")
        mariadb_server.drop_database(db)


async def test_globals_can_be_turned_off(mariadb_server: MariadbServer, app_db: str,
                                         tmp_path: Path) -> None:
    source = my_source(mariadb_server, app_db, tmp_path, globals=False)
    assert await source.dump_globals(tmp_path) is None


# --------------------------------------------------------------------------- drills


async def test_drill_on_a_verify_target_and_stale_scratch(
    mariadb_server: MariadbServer, app_db: str, awkward_user: str, tmp_path: Path
) -> None:
    # The scratch server here is the same one, reached as another user with its password.
    source = my_source(mariadb_server, app_db, tmp_path, verify_target={
        "host": "127.0.0.1", "user": awkward_user, "password": AWKWARD_PASSWORD})
    raw, facts = await dump_with_facts(source, tmp_path / "work")
    inventory = await source.drill(_chunks(raw), scratch="backupmand_verify_target",
                                   workdir=tmp_path / "work")
    assert (inventory.tables, inventory.objects) == (facts.tables, facts.objects)
    assert not mariadb_server.database_exists("backupmand_verify_target")

    for name in ("backupmand_verify_stale1", "backupmand_verify_stale 2", "not_backupmand_verify_x"):
        mariadb_server.create_database(name)
    try:
        dropped = await source.drop_stale_scratch("backupmand_verify_")
        assert sorted(dropped) == ["backupmand_verify_stale 2", "backupmand_verify_stale1"]
        assert databases_starting(mariadb_server, "backupmand_verify_") == []
        assert mariadb_server.database_exists("not_backupmand_verify_x")
    finally:
        mariadb_server.drop_database("not_backupmand_verify_x")

    unreachable = my_source(mariadb_server, app_db, tmp_path,
                            verify_target={"host": "127.0.0.1", "port": free_port()})
    with pytest.raises(RestoreError, match="Can't connect"):
        await unreachable.drill(_chunks(raw), scratch="backupmand_verify_down",
                                workdir=tmp_path / "work")


def plain_state(server: MariadbServer, db: str) -> dict[str, Any]:
    """Tables with their rows and definitions, views, routines and triggers of ``db``."""
    literal = quote_literal(db)
    state: dict[str, Any] = {"database": server.query(
        None, "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM "
              f"information_schema.SCHEMATA WHERE SCHEMA_NAME = {literal}")}
    for (table, kind) in server.query(None, "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema."
                                            f"TABLES WHERE TABLE_SCHEMA = {literal} ORDER BY 1"):
        state[f"create {table}"] = server.query(db, f"SHOW CREATE TABLE {quote_ident(table)}")
        if kind == "BASE TABLE":
            state[f"rows {table}"] = server.query(db, f"SELECT * FROM {quote_ident(table)} ORDER BY 1")
    for name, sql in {
        "routines": "SELECT ROUTINE_NAME, ROUTINE_DEFINITION, DEFINER FROM information_schema."
                    "ROUTINES WHERE ROUTINE_SCHEMA = {db}",
        "triggers": "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {db}",
        "events": "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {db}",
    }.items():
        state[name] = server.query(None, sql.format(db=literal))
    return state


async def test_a_swap_that_fails_at_its_last_step_is_undone_step_by_step(
    mariadb_server: MariadbServer, app_db: str, tmp_path: Path
) -> None:
    """The restoring account may do everything but create triggers in the target: the
    dump loads into the side database, the target's contents move aside, the new ones
    move in — and their trigger is refused. Every step is undone."""
    target = "swapdenied"
    raw = await dump_bytes(my_source(mariadb_server, app_db, tmp_path), tmp_path / "work")
    mariadb_server.create_database(target)
    account = "'restorer'@'%'"
    try:
        mariadb_server.sql("CREATE TABLE old_table (x INT PRIMARY KEY); INSERT INTO old_table "
                           "VALUES (1), (2); CREATE VIEW old_view AS SELECT x FROM old_table; "
                           "CREATE PROCEDURE old_proc() SELECT 1;", db=target)
        mariadb_server.sql(
            f"CREATE USER {account} IDENTIFIED BY 'restorer-pw';\n"
            "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, CREATE VIEW, "
            "SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, EXECUTE, EVENT, REFERENCES "
            f"ON `swapdenied`.* TO {account};\n"
            f"GRANT ALL ON `swapdenied\\_\\_before\\_%`.* TO {account};\n"
            f"GRANT ALL ON `backupmand\\_restore\\_%`.* TO {account};\n"
            f"GRANT SET USER ON *.* TO {account};\n"
            f"GRANT SELECT ON mysql.proc TO {account};")
        before = plain_state(mariadb_server, target)
        databases = set(databases_starting(mariadb_server, ""))
        source = my_source(mariadb_server, app_db, tmp_path, user="restorer",
                           password="restorer-pw")
        # The failing statement is the new contents' trigger, created in the target last.
        with pytest.raises(RestoreError, match=r"(?s)put back as it was.*TRIGGER items_ai .*"
                                               r"TRIGGER command denied .* `swapdenied`.`items`"):
            await source.restore(_chunks(raw), database=target, force=True, workdir=tmp_path)
        assert plain_state(mariadb_server, target) == before
        assert set(databases_starting(mariadb_server, "")) == databases
    finally:
        mariadb_server.sql(f"DROP USER IF EXISTS {account};")
        for name in databases_starting(mariadb_server, target):
            mariadb_server.drop_database(name)
