"""The accounts a MySQL/MariaDB database needs, as a script that creates only what is missing.

Which accounts: the DEFINERs of the database's views, routines, triggers and events;
every account or role with privileges on the database (``mysql.db`` — whose names are
patterns —, ``tables_priv``, ``columns_priv``, ``procs_priv``); and, recursively, the
roles granted to them.

What the script does, per account, on the server it is applied to:

- ``CREATE ROLE IF NOT EXISTS`` / ``CREATE USER IF NOT EXISTS`` as ``SHOW CREATE USER``
  gives it — with its authentication (the password *hash*, never a password), TLS
  requirements and resource limits — so an application logs in as before;
- the privileges on this database (database, table, column and routine level),
  always: they add only what is missing, and only on this database's name;
- its global privileges, role memberships and default role only when the script has
  just created the account: an account that already exists there is left as it is.

Grants name the database by its original name (they are the server's state, not the
database's); a restore under another name gets its grants from whoever restores it.
PROXY grants and the accounts' other databases are left out. A DEFINER that does
not exist on the source server is named in a comment.

MariaDB only: MySQL keeps roles and accounts in other tables and has no EXECUTE
IMMEDIATE; there the source says so (set ``globals: false``) rather than write a
script that would not do what it says.
"""

from __future__ import annotations

import re

from .mysql_client import Session, hex_equals, quote_ident, unhex

_GRANT_TARGET = re.compile(
    r"^GRANT (?P<what>.+?) ON (?:(?:PROCEDURE|FUNCTION|PACKAGE(?: BODY)?) )?"
    r"(?P<target>\*\.\*|\*|`(?P<db>(?:[^`]|``)+)`(?P<rest>\.(?:\*|`(?:[^`]|``)+`))?) TO ")
_ROLE_GRANT = re.compile(r"^GRANT `(?:[^`]|``)+` TO ")
_IDENTIFIED = re.compile(r" IDENTIFIED (?:BY PASSWORD '[^']*'|VIA .*?)(?= WITH |$)")


def account_sql(user: str, host: str | None) -> str:
    """```user`@`host``` (a role has no host)."""
    return quote_ident(user) if host is None else f"{quote_ident(user)}@{quote_ident(host)}"


def split_definer(definer: str) -> tuple[str, str | None]:
    """'user@host' -> (user, host); a role definer has no '@'."""
    if "@" not in definer:
        return definer, None
    user, host = definer.rsplit("@", 1)
    return user, host


def like_matches(pattern: str, value: str) -> bool:
    """SQL LIKE (``%``, ``_``, backslash escapes), as mysql.db matches database names."""
    regex = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            index += 1
            regex.append(re.escape(pattern[index]))
        elif char == "%":
            regex.append(".*")
        elif char == "_":
            regex.append(".")
        else:
            regex.append(re.escape(char))
        index += 1
    return re.fullmatch("".join(regex), value, re.DOTALL) is not None


def grant_scope(grant: str, database: str) -> str | None:
    """'database' (a grant on ``database``), 'global', 'role', or None (leave it out)."""
    if _ROLE_GRANT.match(grant):
        return "role"
    match = _GRANT_TARGET.match(grant)
    if match is None or match.group("what").startswith("PROXY"):
        return None
    target = match.group("target")
    if target == "*.*":
        return None if match.group("what") == "USAGE" else "global"
    if target == "*" or match.group("db") is None:
        return None
    name = match.group("db").replace("``", "`")
    if name == database or (match.group("rest") == ".*" and like_matches(name, database)):
        return "database"
    return None


async def needed_accounts(session: Session, database: str) -> list[tuple[str, str | None]]:
    """Definers and privilege holders of ``database``, then their roles, in a stable order."""
    definers = await session.rows(
        f"SELECT HEX(DEFINER) FROM information_schema.VIEWS WHERE "
        f"{hex_equals('TABLE_SCHEMA', database)} UNION "
        f"SELECT HEX(DEFINER) FROM information_schema.ROUTINES WHERE "
        f"{hex_equals('ROUTINE_SCHEMA', database)} UNION "
        f"SELECT HEX(DEFINER) FROM information_schema.TRIGGERS WHERE "
        f"{hex_equals('TRIGGER_SCHEMA', database)} UNION "
        f"SELECT HEX(DEFINER) FROM information_schema.EVENTS WHERE "
        f"{hex_equals('EVENT_SCHEMA', database)}"
    )
    found: dict[tuple[str, str | None], None] = {}
    for (definer,) in definers:
        found[split_definer(unhex(definer))] = None
    holders = await session.rows(
        "SELECT HEX(User), HEX(Host), HEX(Db) FROM mysql.db UNION "
        "SELECT HEX(User), HEX(Host), HEX(Db) FROM mysql.tables_priv UNION "
        "SELECT HEX(User), HEX(Host), HEX(Db) FROM mysql.columns_priv UNION "
        "SELECT HEX(User), HEX(Host), HEX(Db) FROM mysql.procs_priv"
    )
    roles = {unhex(user) for user, host, is_role in await session.rows(
        "SELECT HEX(User), HEX(Host), is_role FROM mysql.user") if is_role == "Y" and not host}
    for user_hex, host_hex, db_hex in holders:
        if like_matches(unhex(db_hex), database):
            user, host = unhex(user_hex), unhex(host_hex)
            found[(user, None if not host and user in roles else host)] = None
    mapping = await session.rows("SELECT HEX(User), HEX(Host), HEX(Role) FROM mysql.roles_mapping")
    granted: dict[tuple[str, str | None], list[str]] = {}
    for user_hex, host_hex, role_hex in mapping:
        user, host = unhex(user_hex), unhex(host_hex)
        key = (user, None if not host and user in roles else host)
        granted.setdefault(key, []).append(unhex(role_hex))
    queue = list(found)
    while queue:
        for role in sorted(granted.get(queue.pop(0), [])):
            if (role, None) not in found:
                found[(role, None)] = None
                queue.append((role, None))
    return list(found)


class UnsupportedServer(Exception):
    """Raised for a server whose account tables this module does not know (MySQL)."""


async def globals_script(session: Session, database: str) -> bytes:
    """The script (see the module's docstring); ProcessError when the server refuses,
    UnsupportedServer on MySQL (its roles, account tables and EXECUTE differ)."""
    version = (await session.rows("SELECT VERSION()"))[0][0]
    if "mariadb" not in version.lower():
        raise UnsupportedServer(f"the server is {version}: the accounts file is written for "
                                "MariaDB only")
    accounts = await needed_accounts(session, database)
    existing = {(unhex(user), unhex(host), is_role) for user, host, is_role in await session.rows(
        "SELECT HEX(User), HEX(Host), is_role FROM mysql.user")}
    roles = {user for user, host, is_role in existing if is_role == "Y" and not host}
    users = {(user, host) for user, host, is_role in existing if is_role != "Y"}
    lines = [
        f"-- backupmand: the accounts database {database!r} needs; applying this creates",
        "-- only what is missing on the server it is applied to.",
    ]
    creations: list[str] = []
    later: list[str] = []
    for number, (user, host) in enumerate(accounts):
        account = account_sql(user, host)
        flag = f"@backupmand_new_{number}"
        if host is None and user in roles:
            creations += [
                f"SET {flag} = (SELECT COUNT(*) = 0 FROM mysql.user WHERE "
                f"{hex_equals('User', user)} AND Host = '' AND is_role = 'Y');",
                f"CREATE ROLE IF NOT EXISTS {account};",
            ]
        elif host is not None and (user, host) in users:
            create = (await session.rows(f"SHOW CREATE USER {account}"))[0][0]
            create = re.sub(r"^CREATE USER ", "CREATE USER IF NOT EXISTS ", create)
            creations += [
                f"SET {flag} = (SELECT COUNT(*) = 0 FROM mysql.user WHERE "
                f"{hex_equals('User', user)} AND {hex_equals('Host', host)});",
                _unescape_batch(create) + ";",
            ]
        else:
            lines.append(f"-- {account} (a DEFINER) does not exist on the source server")
            continue
        for (grant,) in await session.rows(f"SHOW GRANTS FOR {account}"):
            grant = _unescape_batch(grant)
            scope = grant_scope(grant, database)
            if scope == "database":
                later.append(grant + ";")
            elif scope in ("global", "role"):
                later.append(_when_new(flag, _IDENTIFIED.sub("", grant)))
            elif grant.startswith("SET DEFAULT ROLE "):
                later.append(_when_new(flag, grant))
    return ("\n".join([*lines, *creations, *later]) + "\n").encode("utf-8")


def _when_new(flag: str, statement: str) -> str:
    """``statement``, run only when the script created the account (hex: no escaping)."""
    text = statement.encode("utf-8").hex().upper()
    return f"EXECUTE IMMEDIATE IF({flag}, _utf8mb4 X'{text}', 'DO 0');"


def _unescape_batch(value: str) -> str:
    """A value as the client's batch mode prints it (\\t, \\n, \\\\ escaped), unescaped."""
    return re.sub(r"\\(.)", lambda match: {"t": "\t", "n": "\n", "0": "\0"}.get(
        match.group(1), match.group(1)), value)
