"""The pure parts of the MySQL/MariaDB source: grants, names, defaults, endpoints."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backupmand.config import MysqlSource
from backupmand.errors import DumpError
from backupmand.sources.mysql import MysqlDatabase, database_defaults, filtered, preamble
from backupmand.sources.mysql_client import check_name, hex_literal, quote_ident
from backupmand.sources.mysql_dump_stream import DumpStream, DumpStreamError
from backupmand.sources.mysql_globals import grant_scope, like_matches, split_definer
from backupmand.sources.mysql_inventory import DatabaseProperties, quote_literal


@pytest.mark.parametrize(("grant", "scope"), [
    ("GRANT SELECT, INSERT ON `orig`.* TO `app`@`%`", "database"),
    ("GRANT SELECT ON `orig`.`t_seq` TO `r1`", "database"),
    ("GRANT EXECUTE ON PROCEDURE `orig`.`p1` TO `app`@`%`", "database"),
    ("GRANT SELECT (`a`, `b`) ON `orig`.`t` TO `app`@`%`", "database"),
    ("GRANT SELECT ON `or%`.* TO `app`@`%`", "database"),
    ("GRANT SELECT ON `or\\_ig`.* TO `app`@`%`", None),
    ("GRANT SELECT ON `other`.* TO `app`@`%`", None),
    ("GRANT SELECT ON `a``b`.* TO `app`@`%`", None),
    ("GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*D8'", None),
    ("GRANT RELOAD, PROCESS ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*D8'", "global"),
    ("GRANT PROXY ON ''@'%' TO 'root'@'localhost' WITH GRANT OPTION", None),
    ("GRANT `r1` TO `app`@`%`", "role"),
    ("SET DEFAULT ROLE `r1` FOR `app`@`%`", None),
])
def test_grant_scope(grant: str, scope: str | None) -> None:
    assert grant_scope(grant, "orig") == scope


def test_like_matches_as_mysql_db_does() -> None:
    assert like_matches("app_db", "appxdb") and like_matches("app\\_db", "app_db")
    assert not like_matches("app\\_db", "appxdb")
    assert like_matches("a%", "abc") and not like_matches("a%", "ba")
    assert like_matches("a.b", "a.b") and not like_matches("a.b", "axb")


def test_split_definer() -> None:
    assert split_definer("app@%") == ("app", "%")
    assert split_definer("odd@name@localhost") == ("odd@name", "localhost")
    assert split_definer("role1") == ("role1", None)


def test_names_and_literals() -> None:
    assert quote_ident("a`b") == "`a``b`"
    assert hex_literal("é") == "_utf8mb4 X'C3A9'" and hex_literal("") == "''"
    assert quote_literal("it's a \\ \n") == "'it\\'s a \\\\ \\n'"
    with pytest.raises(ValueError, match="line breaks"):
        check_name("a\nb")
    with pytest.raises(ValueError, match="longer than 64"):
        check_name("x" * 65)


def test_database_defaults_round_trip() -> None:
    defaults = DatabaseProperties("latin1", "latin1_swedish_ci", "shop's data")
    text = preamble(defaults)
    assert b"ALTER DATABASE CHARACTER SET latin1 COLLATE latin1_swedish_ci COMMENT 'shop\\'s data';" in text
    assert database_defaults(b"-- header\n" + text) == DatabaseProperties("latin1", "latin1_swedish_ci")
    assert database_defaults(b"-- an older dump\n") is None
    with pytest.raises(ValueError, match="unexpected"):
        DatabaseProperties("utf8mb4; DROP", "x")
    assert DatabaseProperties("a", "b", None).clause(empty_comment=True) == "CHARACTER SET a COLLATE b"
    assert DatabaseProperties("a", "b", "").clause(empty_comment=True).endswith("COMMENT ''")


def test_verify_target_endpoint_defaults() -> None:
    def source(**target: object) -> MysqlDatabase:
        return MysqlDatabase(MysqlSource.model_validate({
            "provider": "mariadb", "label": "m", "db_name": "x", "host": "db1", "port": 3307,
            "user": "backup", "password": "pw", "verify_target": target or None}))

    assert source().drill_endpoint() == source().endpoint()
    same_user = source(host="scratch").drill_endpoint()
    assert (same_user.host, same_user.port, same_user.user, same_user.password) == (
        "scratch", 3307, "backup", "pw")
    other = source(host="scratch", port=3310, user="verifier").drill_endpoint()
    assert (other.port, other.user, other.password) == (3310, "verifier", None)
    given = source(host="scratch", user="verifier", password="vpw").drill_endpoint()
    assert given.password == "vpw"
    assert "vpw" in source(host="s", password="vpw").secrets()


async def _pieces(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_filtered_keeps_order_and_reports_the_filters_error() -> None:
    header = b"/*!40111 SET @OLD_SQL_NOTES=@@SQL_NOTES, SQL_NOTES=0 */;\n"
    rows = [b"INSERT INTO `t` VALUES\n(%d);\n" % number for number in range(50)]
    stream = DumpStream(database="d", packet_limit=1 << 20, preamble=b"-- p\n")
    out = b"".join([piece async for piece in filtered(stream, _pieces(header, *rows))])
    assert out == header + b"-- p\n" + b"".join(rows)
    assert stream.tables == {"t": 50}

    broken = DumpStream(database="d", packet_limit=1 << 20)
    with pytest.raises(DumpStreamError, match="unexpected INSERT"):
        async for _piece in filtered(broken, _pieces(header, b"INSERT INTO t VALUES (1);\n",
                                                     *rows)):
            pass

    early = filtered(DumpStream(database="d", packet_limit=1 << 20), _pieces(header, *rows))
    assert await anext(early)
    await early.aclose()  # closed early: nothing left running, nothing raised


async def test_globals_on_mysql_say_to_turn_them_off(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in client that answers like MySQL 8: no accounts file is pretended."""
    folder = tmp_path / "bin"
    folder.mkdir()
    client = folder / "mariadb"
    client.write_text("#!/bin/sh\ncat > /dev/null\nprintf '8.0.36\\n'\n")
    client.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    source = MysqlDatabase(MysqlSource(provider="mysql", label="m", db_name="x"))
    with pytest.raises(DumpError, match="MariaDB only; set globals: false for source 'm'"):
        await source.dump_globals(tmp_path)
    assert list(tmp_path.glob("*.cnf")) == []
