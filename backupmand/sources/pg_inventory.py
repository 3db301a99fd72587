"""What a restored PostgreSQL database holds, counted the way a dump's TOC counts it.

A dump's objects are pg_dump's table-of-contents entries (``pg_copy.OBJECT_TYPES``);
here the same things are counted in the catalogs of a database that was loaded from
such a dump: tables (ordinary and partitioned), views (materialized too), sequences
(identity ones too), routines (functions, procedures, aggregates), triggers (not the
internal ones of constraints, nor the clones a partition inherits), and large objects.
Objects of system schemas and members of extensions are left out, as pg_dump leaves
them out. Rows are counted per ordinary table with ``SELECT count(*) FROM ONLY``, like
``COPY`` dumps each table's own rows (never its children's).
"""

from __future__ import annotations

from .pg_sql import quote_ident, quote_literal

_USER_SCHEMA = (r"n.nspname NOT IN ('pg_catalog', 'information_schema')"
                r" AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'")
_NOT_DEPENDENT = ("NOT EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.classid = {catalog}"
                  " AND d.objid = {oid} AND d.deptype IN ({types}))")
_CLASS_MEMBER = _NOT_DEPENDENT.format(catalog="'pg_catalog.pg_class'::pg_catalog.regclass",
                                      oid="c.oid", types="'e'")
# A range type's constructor functions depend on it internally ('i'): pg_dump never
# writes them (CREATE TYPE makes them), so they are not counted either.
_PROC_MEMBER = _NOT_DEPENDENT.format(catalog="'pg_catalog.pg_proc'::pg_catalog.regclass",
                                     oid="p.oid", types="'e', 'i'")


def _relations(kinds: str) -> str:
    return (f"(SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
            f" ON n.oid = c.relnamespace WHERE c.relkind IN ({kinds}) AND {_USER_SCHEMA}"
            f" AND {_CLASS_MEMBER})")


#: One JSON document: the object counts and the ordinary tables (to count rows of).
INVENTORY_QUERY = f"""
SELECT pg_catalog.json_build_object(
  'tables', {_relations("'r', 'p'")},
  'views', {_relations("'v', 'm'")},
  'sequences', {_relations("'S'")},
  'routines', (SELECT count(*) FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n
                 ON n.oid = p.pronamespace WHERE {_USER_SCHEMA} AND {_PROC_MEMBER}),
  'triggers', (SELECT count(*) FROM pg_catalog.pg_trigger t
                 JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE NOT t.tgisinternal AND t.tgparentid = 0 AND {_USER_SCHEMA}
                  AND {_CLASS_MEMBER}),
  'events', 0,
  'large_objects', (SELECT count(*) FROM pg_catalog.pg_largeobject_metadata),
  'data_tables', (SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_array(n.nspname, c.relname)
                                   ORDER BY n.nspname, c.relname), '[]')
                    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n
                      ON n.oid = c.relnamespace
                   WHERE c.relkind = 'r' AND {_USER_SCHEMA} AND {_CLASS_MEMBER})
);
"""


def row_count_query(tables: list[tuple[str, str]]) -> str:
    """One statement answering ``{"schema.table": rows, ...}`` as JSON."""
    if not tables:
        return "SELECT '{}'::pg_catalog.json;"
    rows = ",\n  ".join(
        f"({quote_literal(schema + '.' + table)}, "
        f"(SELECT count(*) FROM ONLY {quote_ident(schema)}.{quote_ident(table)}))"
        for schema, table in tables)
    return ("SET row_security = off;\n"
            "SELECT pg_catalog.json_object_agg(name, total) FROM (VALUES\n  "
            f"{rows}) AS counted(name, total);")
