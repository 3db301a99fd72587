"""Validation of the extra dump-tool arguments a data source may give (``options``).

The arguments are passed to the dump tool as separate argv items — never through a
shell — after backupmand's own arguments. Some would break the promises of a backup
and are refused, at config validation and again before a dump:

- anything that sends the output elsewhere or changes its format (pg_dump ``-f``,
  ``-F``, ``-j``, and ``--compress`` for plain dumps; mysqldump ``--result-file``,
  ``--tab``, ``--xml``), since backupmand reads the dump from the tool's stdout and
  checks its trailer;
- anything that changes where the tool connects or which credentials it uses
  (host, port, user, password, database, option files): those come from the config;
- pg_dump's ``--inserts`` family: a dump's rows are counted in its COPY blocks (the
  dump facts of SPEC §6.2), and INSERT statements are also far slower to load;
- anything that ties the dump to its original database name (pg_dump ``-C``,
  mysqldump ``--databases`` / ``--all-databases``), which would make a restore into
  another database write into the original one;
- mysqldump ``--compact`` / ``--skip-comments``, which drop the end-of-dump trailer;
- mysqldump options that backupmand sets because the dump's consistency, completeness
  or loadability depends on them (``--single-transaction``, ``--skip-add-locks``,
  ``--dump-history``, ``--hex-blob``, ``--routines``/``--triggers``/``--events``,
  ``--quote-names``, ``--set-charset``, ``--tz-utc``, ``--create-options``, ``--opt``,
  ``--force``, the charset and packet size, ``--compatible``), in any spelling.

Rules: every item starts with ``-``. Long options are ``--name`` or ``--name=value``
(a value must be attached with ``=``; a separate item would be refused as not
starting with ``-``). Short options are single flags such as ``-O``; short options
that take a value must be written in their long form. Long names are also refused
when they abbreviate a refused option (getopt accepts unique prefixes), and for
MySQL ``_`` equals ``-`` and the ``--loose-``/``--skip-``/``--enable-``/``--disable-``/
``--maximum-`` prefixes are looked through.
"""

from __future__ import annotations

from collections.abc import Iterable

# pg_dump (PostgreSQL 15): short options that take a value, and what is refused.
_PG_SHORT_WITH_VALUE = frozenset("deEfFhjnNpStTUZ")
_PG_REFUSED_SHORT = frozenset("CdfFhjpUWVZ?")
_PG_REFUSED_LONG = (
    "file", "format", "jobs", "dbname", "host", "port", "username", "password", "create",
    "version", "help",
    # Data as INSERT statements: the rows of a dump are counted in its COPY blocks.
    "inserts", "column-inserts", "attribute-inserts", "rows-per-insert",
)

# mysqldump / mariadb-dump.
_MY_SHORT_WITH_VALUE = frozenset("#hPpSrTuwWDO")
_MY_REFUSED_SHORT = frozenset("#ABhPpSrTuXV?xlQHaREf")
_MY_REFUSED_LONG = (
    "result-file", "tab", "xml", "databases", "all-databases", "compact", "comments",
    "host", "port", "user", "password", "socket", "protocol", "defaults-file",
    "defaults-extra-file", "defaults-group-suffix", "no-defaults", "print-defaults",
    "login-path", "plugin-dir", "log-error", "debug", "debug-check", "debug-info",
    "version", "help", "dump-slave", "master-data",
    # What makes the dump consistent, complete and loadable under another name is
    # backupmand's to set (mysql_dump_stream reads the tool's own output format).
    "single-transaction", "lock-tables", "lock-all-tables", "add-locks", "quote-names",
    "dump-history", "as-of", "hex-blob", "default-character-set", "set-charset", "tz-utc",
    "create-options", "opt", "compatible", "routines", "triggers", "events", "force",
    "max-allowed-packet",
)
_MY_PREFIXES = ("loose-", "skip-", "enable-", "disable-", "maximum-")


def _check(
    options: Iterable[str], *, tool: str, short_with_value: frozenset[str],
    refused_short: frozenset[str], refused_long: tuple[str, ...], mysql: bool,
) -> tuple[str, ...]:
    checked: list[str] = []
    for index, option in enumerate(options):
        where = f"options[{index}]"
        if not isinstance(option, str) or not option.startswith("-") or option in ("-", "--"):
            raise ValueError(
                f"{where}: each option must be one {tool} argument starting with '-' "
                "(attach values with '=': --exclude-table=audit)"
            )
        if any(ch in option for ch in "\0\n\r"):
            raise ValueError(f"{where}: must not contain NUL or line breaks")
        if option.startswith("--"):
            name = option[2:].split("=", 1)[0].lower()
            if mysql:
                name = name.replace("_", "-")
                stripped = True
                while stripped:
                    stripped = False
                    for prefix in _MY_PREFIXES:
                        if name.startswith(prefix):
                            name = name[len(prefix):]
                            stripped = True
            if not name or any(refused.startswith(name) for refused in refused_long):
                raise ValueError(f"{where}: {option.split('=', 1)[0]} is not allowed: "
                                 "backupmand sets it itself or it would break the dump")
        else:
            letter = option[1]
            if len(option) != 2:
                raise ValueError(
                    f"{where}: give short options alone ('-O'); write options that take a "
                    "value in their long form (--schema=public)"
                )
            if letter in refused_short:
                raise ValueError(f"{where}: {option} is not allowed: backupmand sets it itself "
                                 "or it would break the dump")
            if letter in short_with_value:
                raise ValueError(f"{where}: {option} takes a value: write it in its long form "
                                 "with '=' (--name=value)")
        checked.append(option)
    return tuple(checked)


def check_pg_dump_options(options: Iterable[str], *, custom: bool = False) -> tuple[str, ...]:
    """Return ``options`` when pg_dump may get them; ValueError naming the first bad one.

    ``--compress`` is allowed for the custom format only (it would gzip a plain dump).
    """
    refused = _PG_REFUSED_LONG if custom else (*_PG_REFUSED_LONG, "compress")
    return _check(options, tool="pg_dump", short_with_value=_PG_SHORT_WITH_VALUE,
                  refused_short=_PG_REFUSED_SHORT, refused_long=refused, mysql=False)


def check_mysqldump_options(options: Iterable[str]) -> tuple[str, ...]:
    """Return ``options`` when mysqldump may get them; ValueError naming the first bad one."""
    return _check(options, tool="mysqldump", short_with_value=_MY_SHORT_WITH_VALUE,
                  refused_short=_MY_REFUSED_SHORT, refused_long=_MY_REFUSED_LONG, mysql=True)
