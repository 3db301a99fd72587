"""The PostgreSQL source's pure parts: counting plain dumps and custom archives, the
database properties, the globals script, derived names."""

from __future__ import annotations

import io
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backupmand.config import PostgresSource
from backupmand.sources.options import check_pg_dump_options
from backupmand.sources.pg_archive import ArchiveError, _BlockRows, count_archive
from backupmand.sources.pg_copy import PlainDumpCounter, copy_table
from backupmand.sources.pg_globals import render_script, setting_statement, split_list_setting
from backupmand.sources.pg_properties import (
    PropertiesError,
    epilogue,
    options_from_head,
    parse_create_output,
    prologue,
)
from backupmand.sources.postgres import NAME_BYTES, PostgresDatabase, before_name, derived_name

# --------------------------------------------------------------------------- plain dumps

PLAIN = b'''--
-- PostgreSQL database dump
--

CREATE FUNCTION public.f() RETURNS text LANGUAGE sql AS $$
COPY fake FROM stdin;
SELECT 'not data'
$$;

--
-- Name: f(); Type: FUNCTION; Schema: public; Owner: postgres
--

--
-- Name: t; Type: TABLE; Schema: public; Owner: postgres
--

--
-- Name: Odd; Type: TABLE; Schema: My "Schema"; Owner: postgres
--

--
-- Name: v; Type: VIEW; Schema: public; Owner: postgres
--

--
-- Name: 16401; Type: BLOB; Schema: -; Owner: postgres
--

--
-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: postgres
--

COPY public.t (x, y) FROM stdin;
1\tone
2\ttwo\\nlines
3\t\\\\.
\\.


--
-- Data for Name: Odd; Type: TABLE DATA; Schema: My "Schema"; Owner: postgres
--

COPY "My ""Schema""".odd (x) FROM stdin;
\\.


--
-- Data for Name: BLOBS; Type: BLOBS; Schema: -; Owner: -
--

BEGIN;
SELECT pg_catalog.lo_open('16401', 131072);
COMMIT;

--
-- PostgreSQL database dump complete
--
'''


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 64, 100_000])
def test_plain_counter_counts_rows_and_objects_in_any_pieces(piece: int) -> None:
    counter = PlainDumpCounter()
    for start in range(0, len(PLAIN), piece):
        counter.feed(PLAIN[start:start + piece])
    counter.finish()
    assert counter.tables == {"public.t": 3, 'My "Schema".odd': 0}
    assert counter.objects() == {"tables": 2, "views": 1, "sequences": 0, "routines": 1,
                                 "triggers": 0, "events": 0, "large_objects": 1}


def test_plain_counter_knows_a_stream_cut_inside_the_data() -> None:
    counter = PlainDumpCounter()
    counter.feed(PLAIN[:PLAIN.index(b"2\ttwo")])
    with pytest.raises(ValueError, match=r"inside the data of public\.t"):
        counter.finish()


def test_copy_table_reads_quoted_names() -> None:
    assert copy_table('COPY "a ""b""".Tbl (x) FROM stdin;') == 'a "b".tbl'
    assert copy_table('COPY app."Größe" FROM stdin;') == "app.Größe"
    with pytest.raises(ValueError):
        copy_table("COPY (SELECT 1) TO stdout;")


# --------------------------------------------------------------------------- custom archives

def _integer(value: int) -> bytes:
    return bytes([1 if value < 0 else 0]) + abs(value).to_bytes(4, "little")


def _string(value: str | None) -> bytes:
    if value is None:
        return _integer(-1)
    data = value.encode()
    return _integer(len(data)) + data


def _block(rows: list[bytes]) -> bytes:
    """A TABLE DATA block's chunks as pg_dump --compress=0 writes them (after its header)."""
    parts = [_integer(len(row)) + row for row in rows]
    return b"".join(parts) + _integer(5) + b"\\.\n\n\n" + _integer(0)


def _archive(tables: dict[str, list[bytes]], large_objects: int = 0) -> bytes:
    entries = []
    blocks = []
    dump_id = 1
    for name, rows in tables.items():
        schema, table = name.split(".")
        entries.append((dump_id, "TABLE", table, schema, None))
        entries.append((dump_id + 1, "TABLE DATA", table, schema,
                        f"COPY {schema}.{table} (x) FROM stdin;\n"))
        blocks.append(bytes([1]) + _integer(dump_id + 1) + _block(rows))
        dump_id += 2
    for number in range(large_objects):
        entries.append((dump_id, "BLOB", str(16000 + number), None, None))
        dump_id += 1
    if large_objects:
        entries.append((dump_id, "BLOBS", "BLOBS", None, None))
        blob = bytes([3]) + _integer(dump_id)
        for number in range(large_objects):
            blob += _integer(16000 + number) + _integer(3) + b"\n\x00\n" + _integer(0)
        blocks.append(blob + _integer(0))
    head = b"PGDMP" + bytes([1, 14, 0, 4, 8, 1]) + _integer(0)
    head += b"".join(_integer(0) for _ in range(7))
    head += _string("db") + _string("15.18 (test)") + _string("15.18 (test)")
    head += _integer(len(entries))
    for dump_id, desc, tag, namespace, copy in entries:
        head += _integer(dump_id) + _integer(1 if copy else 0) + _string("0") + _string("0")
        head += _string(tag) + _string(desc) + _integer(2) + _string("") + _string("")
        head += _string(copy) + _string(namespace) + _string("") + _string("") + _string("o")
        head += _string("false") + _string(None) + bytes([3]) + bytes(8)
    return head + b"".join(blocks)


def _reader(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


#: Rows whose length bytes look like a row's end: a 10-byte row, 2,560-2,815 bytes, ...
_TRICKY_LENGTHS = st.sampled_from([1, 2, 9, 10, 11, 255, 266, 2559, 2560, 2600, 2815, 2816,
                                   65546, 3000])
_ROW_BYTES = st.binary(min_size=1, max_size=1).filter(lambda b: b not in (b"\n", b"\x00"))


@st.composite
def _rows(draw: st.DrawFn) -> list[bytes]:
    lengths = draw(st.lists(st.one_of(_TRICKY_LENGTHS, st.integers(1, 40)), max_size=40))
    filler = draw(_ROW_BYTES)
    return [filler * (length - 1) + b"\n" for length in lengths]


@settings(max_examples=150, deadline=None)
@given(rows=_rows(), pieces=st.lists(st.integers(1, 5000), min_size=1, max_size=30))
def test_block_rows_counts_every_row_however_the_block_is_cut(rows: list[bytes],
                                                                pieces: list[int]) -> None:
    block = _block(rows) + b"NEXT"
    counter = _BlockRows(4)
    rest = None
    position = 0
    sizes = iter(pieces * (len(block) // max(1, sum(pieces)) + 2))
    while rest is None:
        size = next(sizes)
        rest = counter.feed(block[position:position + size])
        position += size
    assert counter.rows == len(rows)
    assert rest + block[position:] == b"NEXT"


@pytest.mark.parametrize("lengths", [
    [655370, 10, 655370],  # length bytes 0A 00 0A 00: two false matches in one header
    [700000, 2600, 65546, 1, 10, 2815, 2560],
    [1] * 5000,  # a table without columns: every row is a lone newline
])
@pytest.mark.parametrize("piece", [3, 4096, 1 << 20])
def test_block_rows_with_long_rows(lengths: list[int], piece: int) -> None:
    rows = [b"r" * (length - 1) + b"\n" for length in lengths]
    block = _block(rows)
    counter = _BlockRows(4)
    rest = None
    for start in range(0, len(block), piece):
        assert rest is None
        rest = counter.feed(block[start:start + piece])
    assert rest == b"" and counter.rows == len(rows)


def test_count_archive_reads_rows_objects_and_versions() -> None:
    rows = [b"1\n", b"0123456789"[:9] + b"\n", b"x" * 2600 + b"\n", b"\n"]
    archive = count_archive(_reader(_archive({"public.t": rows, "app.empty": []},
                                             large_objects=3)).read)
    assert archive.tables == {"public.t": 4, "app.empty": 0}
    assert archive.objects()["tables"] == 2 and archive.objects()["large_objects"] == 3
    assert archive.large_objects == 3
    assert archive.server_version == "15.18 (test)" and archive.database == "db"


def test_count_archive_refuses_what_it_cannot_read() -> None:
    whole = _archive({"public.t": [b"1\n", b"2\n"]})
    with pytest.raises(ArchiveError, match=r"truncated|ends"):
        count_archive(_reader(whole[:-12]).read)
    with pytest.raises(ArchiveError, match="PGDMP"):
        count_archive(_reader(b"-- a plain dump").read)
    newer = whole[:5] + bytes([1, 16, 0]) + whole[8:]
    with pytest.raises(ArchiveError, match=r"1\.16"):
        count_archive(_reader(newer).read)


# --------------------------------------------------------------------------- database properties

CREATE_OUTPUT = """--
-- PostgreSQL database dump
--

\\restrict abc
SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: My DB 'x'; Type: DATABASE; Schema: -; Owner: app_owner
--

CREATE DATABASE "My DB 'x'" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = icu \
LOCALE = 'C.UTF-8' ICU_LOCALE = 'de-DE';


ALTER DATABASE "My DB 'x'" OWNER TO app_owner;

\\unrestrict abc
\\connect -reuse-previous=on "dbname='My DB \\'x\\''"
SET statement_timeout = 0;

--
-- Name: DATABASE "My DB 'x'"; Type: COMMENT; Schema: -; Owner: app_owner
--

COMMENT ON DATABASE "My DB 'x'" IS 'first line
--
-- Name: DATABASE "My DB ''x''"; Type: ACL; Schema: -; Owner: app_owner
--

GRANT ALL ON DATABASE "My DB ''x''" TO mallory;';


--
-- Name: hstore; Type: EXTENSION; Schema: -; Owner: -
--

CREATE EXTENSION IF NOT EXISTS hstore WITH SCHEMA public;

--
-- Name: My DB 'x'; Type: DATABASE PROPERTIES; Schema: -; Owner: app_owner
--

ALTER DATABASE "My DB 'x'" SET search_path TO 'app', 'public';
ALTER ROLE reader IN DATABASE "My DB 'x'" SET work_mem TO '8MB';

--
-- Name: DATABASE "My DB 'x'"; Type: ACL; Schema: -; Owner: app_owner
--

REVOKE CONNECT,TEMPORARY ON DATABASE "My DB 'x'" FROM PUBLIC;
GRANT CONNECT ON DATABASE "My DB 'x'" TO "DATABASE reader";

--
-- PostgreSQL database dump complete
--
"""


def test_database_properties_name_whatever_database_psql_is_in() -> None:
    properties = parse_create_output(CREATE_OUTPUT)
    assert properties.create_options == ("WITH TEMPLATE = template0 ENCODING = 'UTF8' "
                                         "LOCALE_PROVIDER = icu LOCALE = 'C.UTF-8' "
                                         "ICU_LOCALE = 'de-DE'")
    assert properties.statements == (
        'ALTER DATABASE :"DBNAME" OWNER TO app_owner;',
        # A comment that looks like more statements is one literal, not a GRANT.
        "COMMENT ON DATABASE :\"DBNAME\" IS 'first line\n--\n-- Name: DATABASE \"My DB ''x''\"; "
        "Type: ACL; Schema: -; Owner: app_owner\n--\n\nGRANT ALL ON DATABASE \"My DB ''x''\" "
        "TO mallory;';",
        "ALTER DATABASE :\"DBNAME\" SET search_path TO 'app', 'public';",
        "ALTER ROLE reader IN DATABASE :\"DBNAME\" SET work_mem TO '8MB';",
        'REVOKE CONNECT,TEMPORARY ON DATABASE :"DBNAME" FROM PUBLIC;',
        'GRANT CONNECT ON DATABASE :"DBNAME" TO "DATABASE reader";',
    )
    text = epilogue(properties).decode()
    assert all(statement in text for statement in properties.statements)
    assert options_from_head(prologue(properties, "x")) == properties.create_options


def test_create_database_options_are_checked() -> None:
    evil = CREATE_OUTPUT.replace("ICU_LOCALE = 'de-DE';", "ICU_LOCALE = 'de-DE'; DROP DATABASE x;")
    with pytest.raises(PropertiesError, match="unexpected statement"):
        parse_create_output(evil)
    renamed = CREATE_OUTPUT.replace("OWNER TO app_owner;", "RENAME TO elsewhere;")
    with pytest.raises(PropertiesError, match="unexpected statement"):
        parse_create_output(renamed)
    with pytest.raises(PropertiesError, match="malformed"):
        options_from_head(b"--\n-- backupmand-create-database: WITH X = 1; DROP DATABASE y\n")
    assert options_from_head(b"--\n-- PostgreSQL database dump\n--\nSET x = 1;\n") is None
    with pytest.raises(PropertiesError, match="no CREATE DATABASE"):
        parse_create_output("SET x = 1;\n")


def test_options_shape_the_database_statements() -> None:
    properties = parse_create_output(CREATE_OUTPUT)
    bare = PostgresDatabase(PostgresSource(
        provider="postgres", label="p", db_name="x",
        options=("--no-owner", "--no-privileges", "--no-comments")))._filtered(properties)
    assert bare.statements == (
        "ALTER DATABASE :\"DBNAME\" SET search_path TO 'app', 'public';",
        "ALTER ROLE reader IN DATABASE :\"DBNAME\" SET work_mem TO '8MB';",
    )


# --------------------------------------------------------------------------- globals


def test_list_settings_split_like_postgres() -> None:
    assert split_list_setting('"$user", public') == ["$user", "public"]
    assert split_list_setting('"a ""b"", c",d') == ['a "b", c', "d"]
    assert split_list_setting("") == []
    assert setting_statement("r", 'search_path="$user", app') == (
        "ALTER ROLE \"r\" SET \"search_path\" TO '$user', 'app'")
    assert setting_statement("r", "work_mem=8MB") == "ALTER ROLE \"r\" SET \"work_mem\" TO '8MB'"


def test_globals_script_creates_only_what_is_missing() -> None:
    document = {
        "roles": [{"name": "o'wner", "superuser": False, "inherit": True, "createrole": False,
                   "createdb": True, "login": True, "replication": False, "bypassrls": False,
                   "connection_limit": 3, "valid_until": None, "password": None,
                   "comment": "it's me", "settings": ["search_path=app, public"]}],
        "memberships": [{"role": "readers", "member": "o'wner", "admin": True}],
        "tablespaces": [{"name": "fast", "owner": "o'wner", "location": "/srv/fast",
                         "options": ["random_page_cost=1"]}],
    }
    script = render_script(document, "app")
    assert "\\gexec" in script and "PASSWORD" not in script
    assert ("WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'o''wner')"
            in script)
    assert "CREATE ROLE \"o''wner\" WITH NOSUPERUSER INHERIT NOCREATEROLE CREATEDB LOGIN" in script
    assert "GRANT \"readers\" TO \"o''wner\" WITH ADMIN OPTION" in script
    assert "LOCATION ''/srv/fast''" in script
    assert re.search(r"ALTER ROLE \"o''wner\" SET \"search_path\" TO ''app'', ''public''", script)


# --------------------------------------------------------------------------- names and options


def test_derived_names_fit_postgres_identifiers() -> None:
    long = "ü" * 40  # 80 bytes
    name = derived_name(long, "__restoring_abcd1234")
    assert len(name.encode()) <= NAME_BYTES and name.endswith("__restoring_abcd1234")
    assert name.encode().decode()  # never cut inside a character
    assert re.fullmatch(r"app__before_\d{8}T\d{6}Z", before_name("app"))


@pytest.mark.parametrize("option", ["--inserts", "--column-inserts", "--rows-per-insert=10",
                                    "--attribute-inserts"])
def test_insert_statements_are_refused(option: str) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        check_pg_dump_options([option])
