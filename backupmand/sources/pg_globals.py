"""The cluster-wide objects a PostgreSQL database needs, as an idempotent psql script.

Roles are not part of a database: ``pg_dump`` names them (``OWNER TO``, ``GRANT``) but
never creates them, so a restore on another server fails or loses privileges without
them. ``GLOBALS_QUERY`` finds, from the source database, every role it needs — owners
and grantees of its objects and of the database itself (``pg_shdepend``), roles with
settings in it, the bootstrap superuser — closed over memberships in both directions,
and the tablespaces it uses. ``render_script`` turns that into a psql script that
creates only what is missing: each role, with its attributes, settings and comment,
when no role of that name exists (an existing role is never altered); each membership
when it is not granted; each tablespace when absent (its folder must exist on the
target server). Statements are chosen with ``\\gexec``, so the script needs psql and
runs with ``ON_ERROR_STOP``.
"""

from __future__ import annotations

import json
from typing import Any

from .pg_sql import quote_ident, quote_literal

#: Settings whose value is a list of names (pg_dump's variable_is_guc_list_quote).
_LIST_SETTINGS = frozenset({"local_preload_libraries", "search_path", "session_preload_libraries",
                            "shared_preload_libraries", "temp_tablespaces",
                            "unix_socket_directories"})

#: One JSON document: the roles (with password hashes when :passwords is true), the
#: memberships among them, the tablespaces. Runs in the source database.
GLOBALS_QUERY = r"""
WITH RECURSIVE
this AS (SELECT oid, datdba, dattablespace FROM pg_catalog.pg_database
          WHERE datname = pg_catalog.current_database()),
needed(oid) AS (
    SELECT d.refobjid FROM pg_catalog.pg_shdepend d, this
     WHERE d.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass
       AND (d.dbid = this.oid OR (d.dbid = 0 AND d.classid = 'pg_catalog.pg_database'::pg_catalog.regclass
                                 AND d.objid = this.oid))
    UNION SELECT datdba FROM this
    UNION SELECT s.setrole FROM pg_catalog.pg_db_role_setting s, this
           WHERE s.setdatabase = this.oid AND s.setrole <> 0
    UNION SELECT 10::pg_catalog.oid  -- the bootstrap superuser owns what pg_shdepend omits
),
closure(oid) AS (
    SELECT oid FROM needed
    UNION
    SELECT CASE WHEN m.member = c.oid THEN m.roleid ELSE m.member END
      FROM pg_catalog.pg_auth_members m JOIN closure c ON m.member = c.oid OR m.roleid = c.oid
)
SELECT pg_catalog.json_build_object(
  'roles', (SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
        'name', r.rolname, 'superuser', r.rolsuper, 'inherit', r.rolinherit,
        'createrole', r.rolcreaterole, 'createdb', r.rolcreatedb, 'login', r.rolcanlogin,
        'replication', r.rolreplication, 'bypassrls', r.rolbypassrls,
        'connection_limit', r.rolconnlimit, 'valid_until', r.rolvaliduntil::text,
        'password', CASE WHEN :'passwords' = 'on' THEN
            (SELECT a.rolpassword FROM pg_catalog.pg_authid a WHERE a.oid = r.oid) END,
        'comment', pg_catalog.shobj_description(r.oid, 'pg_authid'),
        'settings', (SELECT s.setconfig FROM pg_catalog.pg_db_role_setting s
                      WHERE s.setrole = r.oid AND s.setdatabase = 0))
        ORDER BY r.rolname)
      FROM pg_catalog.pg_roles r
     WHERE r.oid IN (SELECT oid FROM closure) AND r.rolname !~ '^pg_'),
  'memberships', (SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
        'role', g.rolname, 'member', u.rolname, 'admin', m.admin_option)
        ORDER BY g.rolname, u.rolname)
      FROM pg_catalog.pg_auth_members m
      JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
      JOIN pg_catalog.pg_roles u ON u.oid = m.member
     WHERE m.roleid IN (SELECT oid FROM closure) AND m.member IN (SELECT oid FROM closure)),
  'tablespaces', (SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
        'name', t.spcname, 'owner', pg_catalog.pg_get_userbyid(t.spcowner),
        'location', pg_catalog.pg_tablespace_location(t.oid), 'options', t.spcoptions)
        ORDER BY t.spcname)
      FROM pg_catalog.pg_tablespace t
     WHERE t.spcname NOT IN ('pg_default', 'pg_global')
       AND (t.oid = (SELECT dattablespace FROM this)
            OR t.oid IN (SELECT reltablespace FROM pg_catalog.pg_class)))
);
"""

#: Whether the connected role may read pg_authid (password hashes).
IS_SUPERUSER_QUERY = "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user;"


def split_list_setting(value: str) -> list[str]:
    """A list setting's elements, as PostgreSQL's SplitGUCList reads them."""
    elements: list[str] = []
    position = 0
    while position <= len(value):
        while position < len(value) and value[position].isspace():
            position += 1
        if position < len(value) and value[position] == '"':
            end = position + 1
            element = []
            while end < len(value):
                if value[end] == '"':
                    if value.startswith('""', end):
                        element.append('"')
                        end += 2
                        continue
                    break
                element.append(value[end])
                end += 1
            elements.append("".join(element))
            position = end + 1
        else:
            end = value.find(",", position)
            end = len(value) if end < 0 else end
            elements.append(value[position:end].strip())
            position = end
        while position < len(value) and value[position].isspace():
            position += 1
        if position < len(value) and value[position] == ",":
            position += 1
            continue
        break
    return [element for element in elements if element or len(elements) > 1]


def setting_statement(role: str, entry: str) -> str:
    """``ALTER ROLE ... SET`` for one ``name=value`` entry of pg_db_role_setting."""
    name, _, value = entry.partition("=")
    if name.lower() in _LIST_SETTINGS:
        rendered = ", ".join(quote_literal(element) for element in split_list_setting(value))
    else:
        rendered = quote_literal(value)
    return f"ALTER ROLE {quote_ident(role)} SET {quote_ident(name)} TO {rendered or quote_literal('')}"


def _role_statements(role: dict[str, Any]) -> list[str]:
    name = role["name"]
    flags = [
        "SUPERUSER" if role["superuser"] else "NOSUPERUSER",
        "INHERIT" if role["inherit"] else "NOINHERIT",
        "CREATEROLE" if role["createrole"] else "NOCREATEROLE",
        "CREATEDB" if role["createdb"] else "NOCREATEDB",
        "LOGIN" if role["login"] else "NOLOGIN",
        "REPLICATION" if role["replication"] else "NOREPLICATION",
        "BYPASSRLS" if role["bypassrls"] else "NOBYPASSRLS",
        f"CONNECTION LIMIT {int(role['connection_limit'])}",
    ]
    if role.get("valid_until"):
        flags.append(f"VALID UNTIL {quote_literal(role['valid_until'])}")
    if role.get("password"):
        flags.append(f"PASSWORD {quote_literal(role['password'])}")
    statements = [f"CREATE ROLE {quote_ident(name)} WITH {' '.join(flags)}"]
    statements += [setting_statement(name, entry) for entry in role.get("settings") or ()]
    if role.get("comment"):
        statements.append(f"COMMENT ON ROLE {quote_ident(name)} IS {quote_literal(role['comment'])}")
    return statements


def _when_missing(statements: list[str], condition: str) -> str:
    """A ``\\gexec`` query that runs ``statements`` in order when ``condition`` holds."""
    rows = ",\n       ".join(f"({step}, {quote_literal(statement)})"
                            for step, statement in enumerate(statements, start=1))
    return (f"SELECT statement FROM (VALUES {rows}) AS missing(step, statement)\n"
            f" WHERE {condition} ORDER BY step\n\\gexec\n")


def render_script(document: dict[str, Any], database: str) -> str:
    """The globals script for ``document`` (what GLOBALS_QUERY returned)."""
    parts = [
        f"-- backupmand: the roles, memberships and tablespaces database {database!r} needs.",
        "-- It creates only what is missing and never alters an existing role; apply it",
        "-- before the dump, with psql: psql -X -v ON_ERROR_STOP=1 -d postgres -f FILE",
        "SET client_min_messages = warning;",
        "SET standard_conforming_strings = on;",
        "",
    ]
    for role in document.get("roles") or ():
        parts.append(f"-- role {role['name']}")
        parts.append(_when_missing(
            _role_statements(role),
            "NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = "
            f"{quote_literal(role['name'])})"))
    for membership in document.get("memberships") or ():
        role, member = membership["role"], membership["member"]
        grant = f"GRANT {quote_ident(role)} TO {quote_ident(member)}"
        if membership["admin"]:
            grant += " WITH ADMIN OPTION"
        parts.append(_when_missing([grant], (
            "NOT EXISTS (SELECT FROM pg_catalog.pg_auth_members m"
            " JOIN pg_catalog.pg_roles g ON g.oid = m.roleid"
            " JOIN pg_catalog.pg_roles u ON u.oid = m.member"
            f" WHERE g.rolname = {quote_literal(role)} AND u.rolname = {quote_literal(member)})")))
    for tablespace in document.get("tablespaces") or ():
        name = tablespace["name"]
        statements = [f"CREATE TABLESPACE {quote_ident(name)} OWNER {quote_ident(tablespace['owner'])}"
                      f" LOCATION {quote_literal(tablespace['location'])}"]
        if tablespace.get("options"):
            options = ", ".join(tablespace["options"])
            statements.append(f"ALTER TABLESPACE {quote_ident(name)} SET ({options})")
        parts.append(f"-- tablespace {name}")
        parts.append(_when_missing(statements, (
            "NOT EXISTS (SELECT FROM pg_catalog.pg_tablespace WHERE spcname = "
            f"{quote_literal(name)})")))
    parts.append("-- backupmand: end of the globals")
    return "\n".join(parts) + "\n"


def parse_document(text: str) -> dict[str, Any]:
    document = json.loads(text)
    if not isinstance(document, dict):
        raise ValueError("the globals query did not return an object")
    return document
