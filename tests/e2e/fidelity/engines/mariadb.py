"""MariaDB in the restore-fidelity suite: databases on the session's MariaDB 10.11 server.

The awkward database holds what issue 13 found broken on real databases, and what real
schemas use: a database default character set and collation that are not the server's
(and routines, triggers and an event created before it was changed), utf8mb4 text with
NUL bytes and emoji, blobs (one of 9 MiB: 18 MiB as a hex literal, over the default
16 MiB max_allowed_packet), zero dates (allowed by the sql_mode they were written
with), generated columns, ordered triggers (FOLLOWS/PRECEDES), procedures, functions,
events, DEFINER views (and a CHECK OPTION view over a view that sorts after it),
partitions, a sequence and a ``DEFAULT NEXTVAL(seq)`` column, a system-versioned table
with history, foreign keys, CHECK constraints, mixed-case and non-ASCII names.

The snapshot reads information_schema and ``SHOW CREATE`` (the database's own name
replaced by ``{database}``, so a copy that still names its original differs) and
checksums every row — every row version of a versioned table — in the server (MD5 per
value, so that a 9 MiB blob never leaves it).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

from tests.servers.mariadb import MariadbServer, quote_ident, quote_literal

from .base import Engine, digest, run_shell

#: Databases the server itself changes or that hold accounts, not data: never compared.
SYSTEM_DATABASES = frozenset({"mysql", "information_schema", "performance_schema", "sys"})
DEFINER = "'fidelity definer'@'localhost'"

BEFORE_CHARSET_CHANGE = r"""
SET NAMES utf8mb4;
SET SESSION sql_mode = '';
CREATE TABLE `Mixed Case Ünï` (
    id     INT AUTO_INCREMENT PRIMARY KEY,
    txt    TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci,
    name   VARCHAR(100) CHARACTER SET utf8mb4 NOT NULL,
    latin  VARCHAR(50),
    price  DECIMAL(20, 6),
    ratio  DOUBLE,
    doc    JSON,
    flags  SET('a', 'b', 'c'),
    kind   ENUM('x', 'y', 'z') DEFAULT 'y',
    bits   BIT(10),
    KEY by_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci AUTO_INCREMENT=1000
  COMMENT 'mixed ''case''';
INSERT INTO `Mixed Case Ünï` (txt, name, latin, price, ratio, doc, flags, kind, bits) VALUES
    (CONCAT('nul', CHAR(0), 'inside 🙂🎉'), 'Zoë 🙂', 'Grüße', 12345678901234.123456, 1e-300,
     '{"a": [1, "two", null]}', 'a,c', 'z', b'1010101010'),
    ('back\\slash \'single\' "double" tab\t nl\n cr\r ),( ;\n', 'quotes', 'café', -0.000001,
     -0.0, NULL, '', 'x', b'0'),
    (NULL, 'nulls', NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO `Mixed Case Ünï` (txt, name, price, ratio)
    SELECT REPEAT(CONCAT('row ', seq, ' ü 🙂 '), 1 + seq % 7), CONCAT('bulk ', seq), seq / 7,
           seq * 1.5 FROM seq_1_to_3000;
DELETE FROM `Mixed Case Ünï` WHERE id % 11 = 0 AND name LIKE 'bulk%';

CREATE TABLE blobs (
    id      INT PRIMARY KEY,
    payload LONGBLOB,
    tiny    TINYBLOB,
    vb      VARBINARY(32),
    fixed   BINARY(4)
) ENGINE=InnoDB;
INSERT INTO blobs VALUES
    (1, REPEAT(UNHEX(SHA2('fidelity', 512)), 147456), X'00', X'00FF', X'01020304'),
    (2, '', '', '', X'00000000'),
    (3, NULL, NULL, NULL, NULL),
    (4, X'00FF5C27220D0A1A29282C3B', X'5C', X'27', X'5C272200');

CREATE TABLE zero_dates (
    id INT PRIMARY KEY, d DATE, dt DATETIME(3), ts TIMESTAMP NULL DEFAULT NULL, y YEAR, t TIME(2)
);
INSERT INTO zero_dates VALUES
    (1, '0000-00-00', '0000-00-00 00:00:00.000', '0000-00-00 00:00:00', 0, '-838:59:59'),
    (2, '2024-02-29', '2024-02-29 23:59:59.999', '2038-01-19 03:14:07', 2155, '12:00:00.25'),
    (3, '2024-00-10', '2024-01-00 10:00:00', NULL, NULL, NULL);

CREATE TABLE generated (
    id      INT PRIMARY KEY,
    price   DECIMAL(10, 2) NOT NULL,
    qty     INT NOT NULL,
    total   DECIMAL(12, 2) AS (price * qty) STORED,
    doubled DECIMAL(13, 2) AS (total * 2) VIRTUAL,
    label   VARCHAR(20) AS (CONCAT('#', id)) VIRTUAL,
    KEY by_total (total)
);
INSERT INTO generated (id, price, qty) SELECT seq, seq / 4, seq FROM seq_1_to_300;

CREATE SEQUENCE `order seq` START WITH 100 INCREMENT BY 5 CACHE 10;
CREATE TABLE orders (
    id       BIGINT NOT NULL DEFAULT NEXTVAL(`order seq`) PRIMARY KEY,
    customer VARCHAR(50),
    placed   DATETIME DEFAULT '2025-01-01 00:00:00'
);
INSERT INTO orders (customer) SELECT CONCAT('customer ', seq) FROM seq_1_to_40;

CREATE TABLE parents (id INT PRIMARY KEY, name VARCHAR(50) UNIQUE) ENGINE=InnoDB;
CREATE TABLE children (
    id        INT PRIMARY KEY,
    parent_id INT NOT NULL,
    name      VARCHAR(50),
    CONSTRAINT child_parent FOREIGN KEY (parent_id) REFERENCES parents (id) ON DELETE CASCADE,
    CONSTRAINT name_short CHECK (CHAR_LENGTH(name) < 100)
) ENGINE=InnoDB;
CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(100), n INT);

CREATE TABLE parted (id INT NOT NULL PRIMARY KEY, region VARCHAR(10), amount INT)
    PARTITION BY RANGE (id) (
        PARTITION p_low VALUES LESS THAN (1000),
        PARTITION p_mid VALUES LESS THAN (5000),
        PARTITION p_max VALUES LESS THAN MAXVALUE);
INSERT INTO parted SELECT seq, ELT(1 + seq % 3, 'north', 'south', 'east'), seq % 97
    FROM seq_1_to_6000;

CREATE TABLE history (id INT PRIMARY KEY, price INT) WITH SYSTEM VERSIONING;
INSERT INTO history VALUES (1, 10), (2, 20), (3, 30);
UPDATE history SET price = price + 1 WHERE id < 3;
UPDATE history SET price = price * 2 WHERE id = 1;
DELETE FROM history WHERE id = 3;

CREATE TRIGGER children_ai AFTER INSERT ON children FOR EACH ROW
    INSERT INTO audit (what, n) VALUES (CONCAT('child ', NEW.name), 1);
CREATE TRIGGER children_ai_first AFTER INSERT ON children FOR EACH ROW PRECEDES children_ai
    INSERT INTO audit (what, n) VALUES ('first', 0);
CREATE TRIGGER children_ai_last AFTER INSERT ON children FOR EACH ROW FOLLOWS children_ai
    INSERT INTO audit (what, n) VALUES ('last', 2);
DELIMITER //
CREATE PROCEDURE add_child(IN p_id INT, IN p_name VARCHAR(50))
BEGIN
    INSERT INTO children (id, parent_id, name) VALUES (p_id, 1, p_name);
END //
CREATE FUNCTION greeting(who VARCHAR(20)) RETURNS VARCHAR(40) DETERMINISTIC
    RETURN CONCAT('Grüß ', who) //
DELIMITER ;
CREATE EVENT purge_audit ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00'
    DO DELETE FROM audit WHERE n < 0;
"""

AFTER_CHARSET_CHANGE = r"""
SET NAMES utf8mb4;
DELIMITER //
CREATE DEFINER = 'fidelity definer'@'localhost' FUNCTION shout(s VARCHAR(100)) RETURNS VARCHAR(110)
    DETERMINISTIC SQL SECURITY INVOKER RETURN CONCAT(UPPER(s), '!') //
CREATE PROCEDURE `Ünicode proc`(OUT total INT) COMMENT 'counts ''children'''
BEGIN
    SELECT COUNT(*) INTO total FROM children;
END //
DELIMITER ;
CREATE EVENT `monthly rollup` ON SCHEDULE EVERY 1 MONTH STARTS '2031-06-01 03:00:00'
    ENDS '2037-01-01 00:00:00' ON COMPLETION PRESERVE DISABLE COMMENT 'disabled on purpose'
    DO INSERT INTO audit (what, n) VALUES ('rollup', 3);
CREATE DEFINER = 'fidelity definer'@'localhost' SQL SECURITY DEFINER VIEW z_children AS
    SELECT id, parent_id, name FROM children WHERE parent_id > 0;
CREATE VIEW a_checked AS SELECT id, parent_id, name FROM z_children WHERE parent_id < 40
    WITH CASCADED CHECK OPTION;
CREATE VIEW loud_names AS SELECT id, shout(name) AS loud FROM `Mixed Case Ünï`;
CREATE VIEW next_order AS SELECT NEXTVAL(`order seq`) AS n;
INSERT INTO parents SELECT seq, CONCAT('parent ', seq) FROM seq_1_to_50;
INSERT INTO children SELECT seq, 1 + seq % 40, CONCAT('child ', seq) FROM seq_1_to_400;
CALL add_child(1000, 'through the procedure');
"""

#: (name, query) pairs of the snapshot; {db} is the database's name as a literal.
DEFINITIONS = {
    "database": "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME, SCHEMA_COMMENT "
                "FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {db}",
    # A sequence has no text column: its table collation (the database default when it
    # was created, which mariadb-dump does not write) has no effect, and is left out.
    "tables": "SELECT TABLE_NAME, TABLE_TYPE, ENGINE, ROW_FORMAT, AUTO_INCREMENT, "
              "IF(TABLE_TYPE = 'SEQUENCE', '-', TABLE_COLLATION), CREATE_OPTIONS, "
              "TABLE_COMMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = {db} "
              "ORDER BY 1",
    "columns": "SELECT TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, COLUMN_DEFAULT, IS_NULLABLE, "
               "COLUMN_TYPE, CHARACTER_SET_NAME, COLLATION_NAME, EXTRA, IS_GENERATED, "
               "GENERATION_EXPRESSION, COLUMN_COMMENT FROM information_schema.COLUMNS WHERE "
               "TABLE_SCHEMA = {db} ORDER BY 1, 3",
    "indexes": "SELECT TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME, NON_UNIQUE, INDEX_TYPE "
               "FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = {db} ORDER BY 1, 2, 3",
    "constraints": "SELECT c.CONSTRAINT_NAME, c.TABLE_NAME, c.CONSTRAINT_TYPE, "
                   "r.REFERENCED_TABLE_NAME, r.UPDATE_RULE, r.DELETE_RULE FROM "
                   "information_schema.TABLE_CONSTRAINTS c LEFT JOIN "
                   "information_schema.REFERENTIAL_CONSTRAINTS r ON r.CONSTRAINT_SCHEMA = "
                   "c.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = c.CONSTRAINT_NAME WHERE "
                   "c.CONSTRAINT_SCHEMA = {db} ORDER BY 1, 2",
    "checks": "SELECT TABLE_NAME, CONSTRAINT_NAME, CHECK_CLAUSE FROM "
              "information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = {db} ORDER BY 1, 2",
    "partitions": "SELECT TABLE_NAME, PARTITION_NAME, PARTITION_ORDINAL_POSITION, "
                  "PARTITION_METHOD, PARTITION_EXPRESSION, PARTITION_DESCRIPTION FROM "
                  "information_schema.PARTITIONS WHERE TABLE_SCHEMA = {db} AND PARTITION_NAME "
                  "IS NOT NULL ORDER BY 1, 3",
    "routines": "SELECT ROUTINE_NAME, ROUTINE_TYPE, DTD_IDENTIFIER, ROUTINE_DEFINITION, "
                "IS_DETERMINISTIC, SQL_DATA_ACCESS, SECURITY_TYPE, SQL_MODE, ROUTINE_COMMENT, "
                "DEFINER, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION FROM "
                "information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {db} ORDER BY 1",
    "parameters": "SELECT SPECIFIC_NAME, ORDINAL_POSITION, PARAMETER_MODE, PARAMETER_NAME, "
                  "DTD_IDENTIFIER, CHARACTER_SET_NAME, COLLATION_NAME FROM "
                  "information_schema.PARAMETERS WHERE SPECIFIC_SCHEMA = {db} ORDER BY 1, 2",
    "triggers": "SELECT TRIGGER_NAME, EVENT_MANIPULATION, EVENT_OBJECT_TABLE, ACTION_ORDER, "
                "ACTION_STATEMENT, ACTION_TIMING, SQL_MODE, DEFINER, CHARACTER_SET_CLIENT, "
                "COLLATION_CONNECTION, DATABASE_COLLATION FROM information_schema.TRIGGERS "
                "WHERE TRIGGER_SCHEMA = {db} ORDER BY 3, 6, 2, 4",
    "events": "SELECT EVENT_NAME, DEFINER, TIME_ZONE, EVENT_DEFINITION, EVENT_TYPE, EXECUTE_AT, "
              "INTERVAL_VALUE, INTERVAL_FIELD, SQL_MODE, STARTS, ENDS, STATUS, ON_COMPLETION, "
              "EVENT_COMMENT, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION "
              "FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {db} ORDER BY 1",
    "views": "SELECT TABLE_NAME, VIEW_DEFINITION, CHECK_OPTION, IS_UPDATABLE, DEFINER, "
             "SECURITY_TYPE, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, ALGORITHM FROM "
             "information_schema.VIEWS WHERE TABLE_SCHEMA = {db} ORDER BY 1",
}


class MariadbEngine(Engine):
    name = "mariadb"
    server_fixture = "mariadb_server"

    def __init__(self, server: Any, folder: Path) -> None:
        super().__init__(server, folder)
        self.server: MariadbServer = server
        self.server.sql(f"CREATE USER IF NOT EXISTS {DEFINER};\n"
                        f"GRANT SELECT, INSERT, EXECUTE ON *.* TO {DEFINER};")
        # Another database beside the ones under test, with a sequence of the same name:
        # its fingerprint proves nothing read or changed it.
        self.neighbour = "fidelity neighbour"
        self.drop(self.neighbour)
        self.server.sql(
            f"CREATE DATABASE {quote_ident(self.neighbour)} CHARACTER SET utf8mb4;\n"
            f"USE {quote_ident(self.neighbour)};\n"
            "CREATE SEQUENCE `order seq` START WITH 1;\n"
            "CREATE TABLE kept (id INT PRIMARY KEY, value VARCHAR(20));\n"
            "INSERT INTO kept SELECT seq, CONCAT('value ', seq) FROM seq_1_to_100;")

    # ------------------------------------------------------------------ names and config

    def database_name(self, stem: str) -> str:
        return f"{stem} Ü`q"

    def data_source(self, database: str, *, label: str, tmp_folder: Path) -> dict[str, Any]:
        return self.server.source(database, tmp_folder, label=label)

    # ------------------------------------------------------------------ the awkward database

    def build(self, database: str) -> None:
        assert database not in self.databases(), database
        self.server.sql(f"CREATE DATABASE {quote_ident(database)} CHARACTER SET latin1 "
                        "COLLATE latin1_german1_ci COMMENT 'fidelity''s awkward database';")
        self.server.sql(BEFORE_CHARSET_CHANGE, db=database)
        self.server.sql("ALTER DATABASE CHARACTER SET utf8mb4 COLLATE utf8mb4_swedish_ci;",
                        db=database)
        self.server.sql(AFTER_CHARSET_CHANGE, db=database)

    def snapshot(self, database: str) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for key, sql in DEFINITIONS.items():
            rows = self.server.query(None, sql.format(db=quote_literal(database)))
            state[key] = [tuple(_normalise(field, database) for field in row) for row in rows]
        assert state["database"], f"no database {database!r}"
        for table, kind in self._tables(database):
            create = self.server.query(database, f"SHOW CREATE TABLE {quote_ident(table)}")
            state[f"create {table}"] = _normalise(create[0][1], database)
            if kind == "SEQUENCE":
                state[f"sequence {table}"] = self.server.query(
                    database, f"SELECT * FROM {quote_ident(table)}")
            elif kind != "VIEW":
                state[f"rows {table}"] = self._rows(database, table, kind)
        return state

    def _tables(self, database: str) -> list[tuple[str, str]]:
        rows = self.server.query(None, "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema."
                                       f"TABLES WHERE TABLE_SCHEMA = {quote_literal(database)} "
                                       "ORDER BY 1")
        return [(table, kind) for table, kind in rows]

    def _rows(self, database: str, table: str, kind: str) -> tuple[int, str]:
        """Row count and a digest over every row (MD5 of each value, computed in the server)."""
        columns = [row[0] for row in self.server.query(
            None, "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "
                  f"{quote_literal(database)} AND TABLE_NAME = {quote_literal(table)} "
                  "ORDER BY ORDINAL_POSITION")]
        values = [f"IFNULL(MD5({quote_ident(column)}), 'NULL')" for column in columns]
        history = ""
        if kind == "SYSTEM VERSIONED":
            values += ["ROW_START", "ROW_END"]
            history = " FOR SYSTEM_TIME ALL"
        rows = self.server.query(database, f"SELECT CONCAT_WS(',', {', '.join(values)}) FROM "
                                           f"{quote_ident(table)}{history}")
        return len(rows), digest(sorted(row[0] for row in rows))

    def row_counts(self, database: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for table, kind in self._tables(database):
            if kind in ("BASE TABLE", "SYSTEM VERSIONED"):
                history = " FOR SYSTEM_TIME ALL" if kind == "SYSTEM VERSIONED" else ""
                counts[table] = int(self.server.scalar(
                    database, f"SELECT COUNT(*) FROM {quote_ident(table)}{history}"))
        return counts

    def scribble(self, database: str) -> None:
        self.server.sql("INSERT INTO audit (what, n) VALUES ('scribbled', 9);\n"
                        "UPDATE history SET price = 0 WHERE id = 2;\n"
                        "CREATE TABLE scribbled (x INT);\n"
                        "ALTER DATABASE COMMENT 'scribbled';", db=database)

    # ------------------------------------------------------------------ the server around it

    def databases(self) -> set[str]:
        return {row[0] for row in self.server.query(
            None, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")}

    def fingerprint_others(self, ours: Collection[str]) -> dict[str, str]:
        return {database: digest([self.snapshot(database)])
                for database in sorted(self.databases())
                if database not in SYSTEM_DATABASES
                and not any(database.startswith(name) for name in ours)}

    def drop(self, database: str) -> None:
        self.server.drop_database(database)

    # ------------------------------------------------------------------ by hand

    def restore_by_hand(self, stored: Path, database: str, *, globals_file: Path | None,
                        workdir: Path) -> None:
        """As docs/sources-and-restore.md tells an operator: create the database, then
        feed the decompressed dump to the client in binary mode (it stops at the first
        error); the dump sets the database's own defaults itself."""
        client = " ".join(self.server.client_argv())
        script = ""
        if globals_file is not None:
            script += f'zstd -q -dc "$3" | {client}\n'
        script += (f'{client} -e "CREATE DATABASE $1"\n'
                   f'zstd -q -dc "$2" | {client} --binary-mode --database="$4"\n')
        run_shell(script, quote_ident(database), str(stored), str(globals_file or ""), database,
                  what="zstd -dc FILE | mariadb --binary-mode --database=NAME")

    def spoil(self, raw: bytes) -> bytes:
        # A statement that fails, half-way: after some tables are loaded, before others.
        marker = b"\n--\n-- Table structure for table "
        cut = raw.index(marker, len(raw) // 2 if marker in raw[len(raw) // 2:] else 0)
        return raw[:cut] + b"\nINSERT INTO `no such table` VALUES (1);\n" + raw[cut:]


def _normalise(value: str, database: str) -> str:
    quoted = quote_ident(database)
    return re.sub(re.escape(quoted), "`{database}`", value).replace(database, "{database}")
