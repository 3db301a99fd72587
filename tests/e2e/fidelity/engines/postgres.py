"""PostgreSQL in the restore-fidelity suite: the awkward database and how to compare it.

The awkward database uses what real applications use and dumps get wrong: contrib
extensions (hstore, citext, pg_trgm), enums (with a value added out of order), domains,
composite and range types, arrays, ICU and libc collations (a nondeterministic one too),
a partitioned table with a default partition and a trigger that partitions inherit,
inheritance, identity, serial and generated columns, row-level security, views over
views, materialized views (one left unpopulated), odd sequences (negative increment,
cycling, OWNED BY, one only used in a default), deferred and circular foreign keys, an
exclusion constraint, functions, procedures, an aggregate, triggers (a deferred
constraint trigger among them), an event trigger, unlogged and column-less tables,
large objects (many small, one of 6 MB, with owners, grants and comments), mixed-case
and unicode names, objects owned by non-superuser roles, grants, default privileges,
comments — and the database's own properties: an ICU locale, its owner, ``ALTER
DATABASE … SET`` search_path (the application's tables live in schema ``app``, reached
through it), TimeZone and a custom variable, ``ALTER ROLE … IN DATABASE … SET``, a
comment, and grants with PUBLIC's CONNECT revoked.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Collection
from pathlib import Path
from typing import Any

from tests.servers.postgres import PostgresServer

from .base import Engine, run_shell

OWNER = "fid_owner"
READER = "fid reader"
WRITER = "Fid Writer ü"
ROLES = (OWNER, READER, WRITER)

#: The database-level part, run in the maintenance database (:"db" is the name).
DATABASE_SQL = r"""
CREATE DATABASE :"db" OWNER fid_owner TEMPLATE template0 ENCODING 'UTF8'
    LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' LOCALE 'C.UTF-8';
ALTER DATABASE :"db" SET search_path = app, public;
ALTER DATABASE :"db" SET "TimeZone" = 'Asia/Tokyo';
ALTER DATABASE :"db" SET fidelity.flag = 'on, with a comma';
ALTER DATABASE :"db" SET "DateStyle" = 'ISO, DMY';
ALTER DATABASE :"db" CONNECTION LIMIT 50;
ALTER ROLE "fid reader" IN DATABASE :"db" SET work_mem = '8MB';
ALTER ROLE "Fid Writer ü" IN DATABASE :"db" SET search_path = "Mixed Schema ü", app;
COMMENT ON DATABASE :"db" IS 'the awkward database: ''quotes'', ünïcödé, and a
second line';
REVOKE CONNECT, TEMPORARY ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO "fid reader";
GRANT CONNECT, CREATE ON DATABASE :"db" TO "Fid Writer ü" WITH GRANT OPTION;
"""

#: The database's contents, run in the database as the superuser.
CONTENTS_SQL = r"""
CREATE EXTENSION hstore;
CREATE EXTENSION citext;
CREATE EXTENSION pg_trgm;
CREATE SCHEMA app AUTHORIZATION fid_owner;
CREATE SCHEMA "Mixed Schema ü" AUTHORIZATION "Fid Writer ü";
GRANT USAGE ON SCHEMA app TO "fid reader";
ALTER DEFAULT PRIVILEGES FOR ROLE fid_owner IN SCHEMA app GRANT SELECT ON TABLES TO "fid reader";

CREATE FUNCTION public.stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.touched := NEW.touched + 1; RETURN NEW; END $$;
CREATE FUNCTION public.no_ddl_on_sundays() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN IF current_setting('fidelity.sunday', true) = 'yes' THEN
    RAISE EXCEPTION 'no DDL on Sundays'; END IF; END $$;
CREATE EVENT TRIGGER no_ddl_on_sundays ON ddl_command_start EXECUTE FUNCTION public.no_ddl_on_sundays();

SET ROLE fid_owner;
SET search_path = app, public;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
ALTER TYPE mood ADD VALUE 'meh' BEFORE 'ok';
CREATE DOMAIN positive AS numeric(20, 6) CHECK (VALUE > 0);
CREATE DOMAIN mood_not_sad AS mood CHECK (VALUE <> 'sad');
CREATE TYPE address AS (street text, zip text, tags text[]);
CREATE TYPE floatrange AS RANGE (subtype = float8, subtype_diff = float8mi);
CREATE COLLATION german_phonebook (provider = icu, locale = 'de-u-co-phonebk');
CREATE COLLATION case_blind (provider = icu, locale = 'und-u-ks-level2', deterministic = false);

CREATE TABLE customers (
    id          bigint GENERATED ALWAYS AS IDENTITY (START WITH 100 INCREMENT BY 5) PRIMARY KEY,
    name        text COLLATE german_phonebook NOT NULL,
    email       citext UNIQUE,
    nick        text COLLATE case_blind,
    plain_name  text COLLATE "C",
    mood        mood,
    happy_mood  mood_not_sad,
    balance     positive,
    address     address,
    attrs       hstore,
    tags        text[],
    matrix      int[][],
    valid       floatrange,
    addresses   address[],
    doc         jsonb,
    photo       bytea,
    name_upper  text GENERATED ALWAYS AS (upper(name)) STORED,
    touched     int NOT NULL DEFAULT 0,
    created     timestamptz NOT NULL DEFAULT '2025-01-01 00:00:00+00'
);
CREATE INDEX customers_name_trgm ON customers USING gin (name gin_trgm_ops);
CREATE INDEX customers_lower_email ON customers (lower(email::text)) WHERE email IS NOT NULL;
CREATE TRIGGER customers_stamp BEFORE UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION public.stamp();
COMMENT ON TABLE customers IS 'people who pay';
COMMENT ON COLUMN customers.nick IS 'compared without case';

CREATE TABLE events (id bigserial, at date NOT NULL, payload text, touched int NOT NULL DEFAULT 0)
    PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_other PARTITION OF events DEFAULT;
CREATE TRIGGER events_stamp BEFORE UPDATE ON events FOR EACH ROW EXECUTE FUNCTION public.stamp();

CREATE TABLE vehicles (id int PRIMARY KEY, wheels int NOT NULL);
CREATE TABLE cars (seats int NOT NULL) INHERITS (vehicles);

CREATE TABLE notes (id serial PRIMARY KEY, author text NOT NULL DEFAULT current_user, body text);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE notes FORCE ROW LEVEL SECURITY;
CREATE POLICY own_notes ON notes USING (author = current_user);
CREATE POLICY readers_read ON notes FOR SELECT TO "fid reader" USING (true);

CREATE SEQUENCE countdown INCREMENT BY -3 MINVALUE -1000 MAXVALUE 10 START 10 CYCLE;
CREATE SEQUENCE ticket_seq START 1000 INCREMENT 7;
CREATE TABLE tickets (id int NOT NULL DEFAULT nextval('ticket_seq') PRIMARY KEY, what text);
ALTER SEQUENCE ticket_seq OWNED BY tickets.id;
CREATE SEQUENCE only_in_a_default AS smallint START 5;
CREATE TABLE labels (code smallint DEFAULT nextval('only_in_a_default'), label text);

CREATE TABLE parents (id int PRIMARY KEY, first_child int);
CREATE TABLE children (
    id int PRIMARY KEY,
    parent_id int NOT NULL REFERENCES parents DEFERRABLE INITIALLY DEFERRED,
    during tstzrange,
    EXCLUDE USING gist (during WITH &&)
);
ALTER TABLE parents ADD CONSTRAINT parents_first_child_fkey FOREIGN KEY (first_child)
    REFERENCES children DEFERRABLE INITIALLY DEFERRED;
CREATE FUNCTION children_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER children_check AFTER INSERT ON children
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION children_check();

CREATE UNLOGGED TABLE scratchpad (k text PRIMARY KEY, v text);
CREATE TABLE nothing_at_all ();

CREATE VIEW customer_names AS SELECT id, name, nick FROM customers;
CREATE VIEW loud_customer_names AS SELECT id, upper(name) AS loud FROM customer_names;
CREATE VIEW happy_customers AS SELECT * FROM customers WHERE mood = 'happy' WITH CHECK OPTION;
CREATE MATERIALIZED VIEW mood_counts AS SELECT mood, count(*) AS n FROM customers GROUP BY mood;
CREATE UNIQUE INDEX mood_counts_mood ON mood_counts (mood);
CREATE MATERIALIZED VIEW not_yet AS SELECT 1 AS x WITH NO DATA;

-- Relies on the database's search_path: only works where it was restored too.
CREATE FUNCTION customer_count() RETURNS bigint LANGUAGE sql STABLE AS 'SELECT count(*) FROM customers';
CREATE PROCEDURE bump_tickets(n int) LANGUAGE sql
    AS $$ SELECT setval('ticket_seq', nextval('ticket_seq') + n) $$;
CREATE AGGREGATE concat_all(text) (sfunc = textcat, stype = text, initcond = '');
RESET ROLE;

SET ROLE "Fid Writer ü";
CREATE TABLE "Mixed Schema ü"."Größe ""quoted"" Table" ("Ünïcode Col" text, "MixedCase" int, "select" int);
CREATE VIEW "Mixed Schema ü"."Vue über" AS
    SELECT "Ünïcode Col" FROM "Mixed Schema ü"."Größe ""quoted"" Table";
RESET ROLE;
CREATE TABLE public.kept_in_public (id int PRIMARY KEY, note text);
GRANT SELECT, INSERT ON app.customers TO "Fid Writer ü";
GRANT SELECT (id, name) ON app.customers TO "fid reader";
GRANT USAGE ON SEQUENCE app.ticket_seq TO "Fid Writer ü";
GRANT EXECUTE ON FUNCTION app.customer_count() TO "fid reader";
REVOKE EXECUTE ON FUNCTION app.customer_count() FROM PUBLIC;

SET search_path = app, public;
INSERT INTO customers (name, email, nick, plain_name, mood, happy_mood, balance, address, attrs,
                       tags, matrix, valid, addresses, doc, photo)
VALUES
  ('Zoë 🙂 Müller', 'Zoe@Example.com', 'ZOE', 'Zoë', 'happy', 'happy', 12345678901234.123456,
   ROW('Hauptstraße 1', '10115', ARRAY['a', NULL]), 'a=>1, "b c"=>NULL',
   ARRAY['a', 'b,c', '"q"', NULL, 'back\slash'],
   '{{1,2},{3,4}}', '[1.5,2.5)', ARRAY[ROW('x', 'y', NULL)::address], '{"é": [1, {"n": null}]}',
   '\x00ff105c0d0a'::bytea),
  (E'line1\nline2\ttab \\ back ''quote''', 'second@example.com', 'two', E'tab\there', 'meh', NULL,
   0.000001, NULL, '', '{}', '{}', 'empty', '{}', 'null', ''::bytea),
  ('Ärger', NULL, NULL, 'Ärger', 'sad', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  ('Aerger', NULL, NULL, 'Aerger', 'ok', 'ok', 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO customers (name, email, balance, doc, photo)
    SELECT 'bulk ' || g, 'bulk' || g || '@example.com', g / 3.0, jsonb_build_object('g', g),
           decode(repeat(md5(g::text), 4), 'hex')
      FROM generate_series(1, 3000) g;
UPDATE customers SET tags = ARRAY[repeat('long text ', 200000)] WHERE name = 'bulk 7';  -- TOASTed
DELETE FROM customers WHERE name LIKE 'bulk %' AND substr(name, 6)::int % 9 = 0;
UPDATE customers SET nick = 'touched' WHERE name = 'Ärger';
INSERT INTO events (at, payload) SELECT DATE '2024-01-01' + g, 'event ' || g FROM generate_series(0, 900) g;
INSERT INTO vehicles VALUES (1, 2), (2, 3);
INSERT INTO cars VALUES (10, 4, 5), (11, 4, 2);
INSERT INTO notes (author, body) VALUES ('fid_owner', 'mine'), ('someone', 'theirs');
SELECT nextval('countdown') FROM generate_series(1, 400);
INSERT INTO tickets (what) SELECT 'ticket ' || g FROM generate_series(1, 50) g;
INSERT INTO labels (label) VALUES ('first'), ('second');
INSERT INTO parents VALUES (1, NULL), (2, NULL);
BEGIN;
INSERT INTO children VALUES (10, 1, '[2025-01-01,2025-02-01)'), (20, 2, '[2025-02-01,2025-03-01)');
UPDATE parents SET first_child = id * 10;
COMMIT;
INSERT INTO scratchpad VALUES ('k', 'v');
INSERT INTO nothing_at_all DEFAULT VALUES;
INSERT INTO nothing_at_all DEFAULT VALUES;
INSERT INTO "Mixed Schema ü"."Größe ""quoted"" Table" VALUES ('ü', 1, 2), (NULL, NULL, NULL);
INSERT INTO public.kept_in_public VALUES (1, 'kept');
REFRESH MATERIALIZED VIEW mood_counts;

-- Large objects: many small ones, one of 6 MB, with owners, grants and comments.
SELECT lo_from_bytea(900000 + g, convert_to('large object ' || g, 'UTF8')) FROM generate_series(1, 300) g;
SELECT lo_from_bytea(999999, decode(repeat(md5('big'), 187500), 'hex'));
ALTER LARGE OBJECT 999999 OWNER TO fid_owner;
GRANT SELECT ON LARGE OBJECT 999999 TO "fid reader";
COMMENT ON LARGE OBJECT 900001 IS 'the first one';
"""

#: What must survive beyond the schema dump: per-database properties and behaviour.
PROPERTIES_SQL = r"""
SELECT json_build_object(
  'owner', pg_get_userbyid(d.datdba), 'encoding', pg_encoding_to_char(d.encoding),
  'provider', d.datlocprovider, 'collate', d.datcollate, 'ctype', d.datctype,
  'icu', d.daticulocale, 'acl', d.datacl::text, 'connection_limit', d.datconnlimit,
  'comment', shobj_description(d.oid, 'pg_database'),
  'settings', (SELECT json_agg(json_build_array(coalesce(r.rolname, '-'), s.setconfig)
                               ORDER BY coalesce(r.rolname, '-'))
                 FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole
                WHERE s.setdatabase = d.oid),
  'public_connect', has_database_privilege('public', d.oid, 'CONNECT'),
  'session', json_build_array(current_setting('search_path'), current_setting('TimeZone'),
                              current_setting('fidelity.flag', true)),
  'default_sort', (SELECT json_agg(x ORDER BY x) FROM (VALUES ('a'), ('B'), ('ä'), ('Z'), ('z')) v(x)),
  'phonebook_sort', (SELECT json_agg(name ORDER BY name) FROM app.customers WHERE name NOT LIKE 'bulk %'),
  'c_sort', (SELECT json_agg(plain_name ORDER BY plain_name) FROM app.customers WHERE plain_name IS NOT NULL),
  'case_blind', (SELECT count(*) FROM app.customers WHERE nick = 'zoe'),
  'customer_count', app.customer_count(),
  'populated', (SELECT json_agg(json_build_array(matviewname, ispopulated) ORDER BY matviewname)
                  FROM pg_matviews),
  'sequences', (SELECT json_agg(json_build_array(schemaname, sequencename, last_value, cycle)
                                ORDER BY schemaname, sequencename) FROM pg_sequences),
  'large_objects', (SELECT json_agg(json_build_array(oid, pg_get_userbyid(lomowner), lomacl::text,
                                                     md5(lo_get(oid))) ORDER BY oid)
                      FROM pg_largeobject_metadata),
  'enum_order', (SELECT json_agg(enumlabel ORDER BY enumsortorder) FROM pg_enum
                  WHERE enumtypid = 'app.mood'::regtype)
) FROM pg_database d WHERE d.datname = current_database();
"""

#: Every table's rows as one checksum (ordered by their text), and a count.
TABLES_SQL = r"""
SELECT json_object_agg(n.nspname || '.' || c.relname, (xpath('/row/h/text()', query_to_xml(format(
         'SELECT count(*) || '' '' || md5(coalesce(string_agg(t::text, E''\n''
                 ORDER BY t::text COLLATE "C"), '''')) AS h FROM ONLY %I.%I t',
         n.nspname, c.relname), false, true, '')))[1]::text)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE (c.relkind = 'r' OR (c.relkind = 'm' AND c.relispopulated))
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast';
"""

ROW_COUNTS_SQL = r"""
SELECT coalesce(json_object_agg(n.nspname || '.' || c.relname,
         (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM ONLY %I.%I',
                                                     n.nspname, c.relname), false, true, '')))[1]
         ::text::bigint), '{}')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname !~ '^pg_toast'
   AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                   AND d.objid = c.oid AND d.deptype = 'e');
"""

#: A digest of everything in a database a stray restore could change (contents too).
FINGERPRINT_SQL = r"""
SELECT md5(string_agg(item, E'\n' ORDER BY item)) FROM (
  SELECT 'class ' || n.nspname || '.' || c.relname || ' ' || c.relkind::text || ' '
         || coalesce(c.relacl::text, '') || ' '
         || CASE WHEN c.relkind IN ('r', 'S') OR (c.relkind = 'm' AND c.relispopulated)
            THEN (xpath('/row/h/text()', query_to_xml(format(
              'SELECT md5(coalesce(string_agg(t::text, '','' ORDER BY t::text COLLATE "C"), ''''))
                 AS h FROM ONLY %I.%I t',
              n.nspname, c.relname), false, true, '')))[1]::text ELSE '' END AS item
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'
  UNION ALL SELECT 'proc ' || p.oid::regprocedure::text || ' ' || md5(pg_get_functiondef(p.oid))
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND p.prokind <> 'a'
  UNION ALL SELECT 'type ' || t.oid::regtype::text
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
  UNION ALL SELECT 'extension ' || extname || ' ' || extversion FROM pg_extension
  UNION ALL SELECT 'lo ' || oid || ' ' || md5(lo_get(oid)) FROM pg_largeobject_metadata
  UNION ALL SELECT 'nsp ' || nspname || ' ' || coalesce(nspacl::text, '') FROM pg_namespace
  UNION ALL SELECT 'trigger ' || tgname || ' ' || tgrelid::regclass::text FROM pg_trigger
  UNION ALL SELECT 'event trigger ' || evtname FROM pg_event_trigger
  UNION ALL SELECT 'policy ' || polname FROM pg_policy
) AS everything;
"""

DATABASE_ROW_SQL = r"""
SELECT json_object_agg(d.datname, json_build_array(pg_get_userbyid(d.datdba), d.datacl::text,
         d.encoding, d.datcollate, d.datlocprovider, d.daticulocale, d.datallowconn, d.datconnlimit,
         shobj_description(d.oid, 'pg_database'),
         (SELECT json_agg(json_build_array(s.setrole, s.setconfig) ORDER BY s.setrole)
            FROM pg_db_role_setting s WHERE s.setdatabase = d.oid)))
  FROM pg_database d;
"""


class PostgresEngine(Engine):
    name = "postgres"
    server_fixture = "postgres_server"

    def __init__(self, server: Any, folder: Path) -> None:
        super().__init__(server, folder)
        assert isinstance(server, PostgresServer)
        self.pg: PostgresServer = server
        ensure_roles(self.pg)

    # ------------------------------------------------------------------ names and config

    def database_name(self, stem: str) -> str:
        return f"{stem} Ü 'q'"

    def data_source(self, database: str, *, label: str, tmp_folder: Path) -> dict[str, Any]:
        return self.pg.source(database, tmp_folder, label=label)

    # ------------------------------------------------------------------ the awkward database

    def build(self, database: str) -> None:
        build_awkward(self.pg, database)

    def snapshot(self, database: str) -> dict[str, Any]:
        return snapshot(self.pg, database)

    def row_counts(self, database: str) -> dict[str, int]:
        answer = self.pg.scalar(database, ROW_COUNTS_SQL)
        assert answer is not None
        return {key: int(value) for key, value in sorted(json.loads(answer).items())}

    def scribble(self, database: str) -> None:
        self.pg.psql("INSERT INTO app.tickets (what) VALUES ('scribbled');"
                     "CREATE TABLE public.scribbled (x int);", db=database)

    # ------------------------------------------------------------------ the server around it

    def databases(self) -> set[str]:
        return {row[0] or "" for row in self.pg.query("postgres", "SELECT datname FROM pg_database")}

    def fingerprint_others(self, ours: Collection[str]) -> dict[str, str]:
        return fingerprint_others(self.pg, ours)

    def drop(self, database: str) -> None:
        self.pg.drop_database(database)

    # ------------------------------------------------------------------ by hand

    def restore_by_hand(self, stored: Path, database: str, *, globals_file: Path | None,
                        workdir: Path) -> None:
        by_hand(self.pg, stored, database, globals_file=globals_file)

    def spoil(self, raw: bytes) -> bytes:
        return spoil_plain(raw)


# --------------------------------------------------------------------------- shared helpers


def ensure_roles(server: PostgresServer) -> None:
    """The cluster-wide roles the awkward database needs (created once per server)."""
    server.psql(r"""
SELECT format('CREATE ROLE %I LOGIN', 'fid_owner')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fid_owner') \gexec
SELECT format('CREATE ROLE %I NOLOGIN CONNECTION LIMIT 7', 'fid reader')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fid reader') \gexec
SELECT format('CREATE ROLE %I LOGIN CREATEDB VALID UNTIL %L', 'Fid Writer ü', '2099-01-01 00:00:00+00')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'Fid Writer ü') \gexec
SELECT format('GRANT %I TO %I', 'fid reader', 'Fid Writer ü')
 WHERE NOT pg_has_role('Fid Writer ü', 'fid reader', 'MEMBER') \gexec
SELECT format('ALTER ROLE %I SET statement_timeout = %L', 'fid_owner', '5min') \gexec
SELECT format('COMMENT ON ROLE %I IS %L', 'fid_owner', 'owns the awkward database') \gexec
""")


def build_awkward(server: PostgresServer, database: str) -> None:
    """Create the awkward database ``database`` (and the roles it needs) on ``server``."""
    ensure_roles(server)
    server.psql(DATABASE_SQL, variables={"db": database})
    server.psql(CONTENTS_SQL, db=database)


def _without_noise(schema_dump: str, database: str) -> str:
    kept = [line for line in schema_dump.splitlines()
            if not line.startswith(("\\restrict", "\\unrestrict", "-- Dumped "))]
    return "\n".join(kept).replace(database, "{database}")


def snapshot(server: PostgresServer, database: str) -> dict[str, Any]:
    """The schema (pg_dump --schema-only), every table's checksum, the properties."""
    schema = subprocess.run(
        ["pg_dump", "--schema-only", "-h", str(server.socket_dir), "-p", str(server.port),
         "-U", server.superuser, f"--dbname=dbname='{_libpq_quote(database)}'"],
        capture_output=True, text=True, timeout=300, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
    )
    assert schema.returncode == 0, schema.stderr
    tables = server.scalar(database, TABLES_SQL)
    properties = server.scalar(database, PROPERTIES_SQL)
    assert tables is not None and properties is not None
    return {"schema": _without_noise(schema.stdout, database), "tables": json.loads(tables),
            "properties": json.loads(properties)}


def _libpq_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def fingerprint_others(server: PostgresServer, ours: Collection[str]) -> dict[str, str]:
    rows = server.scalar("postgres", DATABASE_ROW_SQL)
    assert rows is not None
    found: dict[str, str] = {}
    for name, row in json.loads(rows).items():
        if any(name.startswith(prefix) for prefix in ours):
            continue
        digest = hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()
        if row[6]:  # datallowconn: its contents too
            digest += " " + (server.scalar(name, FINGERPRINT_SQL) or "")
        found[name] = digest
    return found


def by_hand(server: PostgresServer, stored: Path, database: str, *,
            globals_file: Path | None) -> None:
    """The docs' by-hand restore: globals, CREATE DATABASE with the options the dump's
    head names, then the dump through psql stopping at the first error."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGHOST=str(server.socket_dir), PGPORT=str(server.port), PGUSER=server.superuser)
    script = ""
    if globals_file is not None:
        script += 'zstd -q -dc "$3" | psql -X -q -v ON_ERROR_STOP=1 -d postgres\n'
    script += (
        # The head is enough: zstd is stopped by the closed pipe once sed has it.
        'options=$( (zstd -q -dc "$1" || true) | sed -n "s/^-- backupmand-create-database: //p;40q")\n'
        'test -n "$options"\n'
        'psql -X -q -v ON_ERROR_STOP=1 -d postgres -v name="$2" <<EOF\n'
        'CREATE DATABASE :"name" $options;\n'
        'EOF\n'
        'zstd -q -dc "$1" | psql -X -q -v ON_ERROR_STOP=1 -d "$2" > /dev/null\n'
    )
    run_shell(script, str(stored), database, str(globals_file or ""),
              what="zstd -dc | psql -v ON_ERROR_STOP=1", env=env)


def spoil_plain(raw: bytes) -> bytes:
    """A plain dump that loads its first tables' data, then stops at an error."""
    headers = []
    position = raw.find(b"\n-- Data for Name: ")
    while position >= 0:
        headers.append(position)
        position = raw.find(b"\n-- Data for Name: ", position + 1)
    assert len(headers) > 4, "the dump has too few tables to fail half-way"
    middle = headers[len(headers) // 2]
    return raw[:middle] + b"\nSELECT backupmand_spoiled_on_purpose();\n" + raw[middle:]

