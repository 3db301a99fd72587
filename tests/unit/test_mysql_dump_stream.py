# ruff: noqa: E501 -- the sample is the tool's own output, whose lines are long
"""The mariadb-dump stream filter: row and object counts, rewrites, view order, packets.

The sample is mariadb-dump 10.11 output (trimmed) of a database named `orig`; the
end-to-end tests in tests/e2e/test_mysql.py run the real tool against a real server.
"""

from __future__ import annotations

import itertools
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from backupmand.sources.mysql_dump_stream import (
    DumpStream,
    DumpStreamError,
    count_rows,
    escape_binary,
    reencode_hex,
    sort_views,
)

HEADER = b"/*M!999999\\- enable the sandbox mode */ \n" + b"""-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)
--
-- Host: 127.0.0.1    Database: orig
-- ------------------------------------------------------
-- Server version\t10.11.19-MariaDB-0+deb12u1

/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET NAMES utf8mb4 */;
/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;
/*!40111 SET @OLD_SQL_NOTES=@@SQL_NOTES, SQL_NOTES=0 */;
"""
SEQUENCE = b"""
--
-- Sequence structure for `seq1`
--

DROP SEQUENCE IF EXISTS `seq1`;
CREATE SEQUENCE `seq1` start with 100 minvalue 1 maxvalue 9223372036854775806 increment by 5 cache 1000 nocycle ENGINE=InnoDB;
DO SETVAL(`seq1`, 5100, 0);
"""
TABLES = b"""
--
-- Table structure for table `t_seq`
--

DROP TABLE IF EXISTS `t_seq`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `t_seq` (
  `id` int(11) NOT NULL DEFAULT nextval(`orig`.`seq1`),
  `v` varchar(50) DEFAULT NULL COMMENT 'see `orig`.`x`; not a reference',
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=latin1 COLLATE=latin1_swedish_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `t_seq`
--

/*!40000 ALTER TABLE `t_seq` DISABLE KEYS */;
INSERT INTO `t_seq` VALUES
(100,'a),(b'),
(105,'it\\'s ),\\n( not a row;'),
(110,NULL);
INSERT INTO `t_seq` VALUES
(115,'x;y');
/*!40000 ALTER TABLE `t_seq` ENABLE KEYS */;

--
-- Table structure for table `empty \xc3\xbc`
--

CREATE TABLE `empty \xc3\xbc` (
  `b` blob DEFAULT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

--
-- Dumping data for table `hist`
--

/*M!101100 SET @old_system_versioning_insert_history=@@session.system_versioning_insert_history, @@session.system_versioning_insert_history=1 */;
INSERT INTO `hist` (`id`, `v`, row_start, row_end) VALUES (1,1,'2026-12-01 20:29:00.937645','2026-12-01 20:29:00.938047'),
(1,10,'2026-12-01 20:29:00.938047','2038-01-19 03:14:07.999999');
/*M!101100 SET system_versioning_insert_history=@old_system_versioning_insert_history */;
INSERT INTO `one line` VALUES (1,'a),(b'),(2,'c\\'),(d'),(3,0x29282C);
DELIMITER ;;
/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER tr2 BEFORE INSERT ON t_seq FOR EACH ROW SET NEW.v = (SELECT MAX(v) FROM `orig`.`t_seq`)
*/;;
DELIMITER ;
"""
ROUTINES = b"""
--
-- Dumping events for database 'orig'
--
DELIMITER ;;
/*!50106 CREATE*/ /*!50117 DEFINER=`root`@`localhost`*/ /*!50106 EVENT `ev1` ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' ON COMPLETION NOT PRESERVE ENABLE DO DELETE FROM t_seq WHERE id<0
*/ ;;
DELIMITER ;

--
-- Dumping routines for database 'orig'
--
/*!50003 DROP PROCEDURE IF EXISTS `p1` */;
ALTER DATABASE `orig` CHARACTER SET latin1 COLLATE latin1_swedish_ci ;
DELIMITER ;;
CREATE DEFINER=`some one`@`%` PROCEDURE `p1`()
BEGIN
  -- a comment; with a semicolon
  SELECT 'line;
with a break';
END ;;
DELIMITER ;
ALTER DATABASE `orig` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci ;
"""
VIEWS = b"""
--
-- Final view structure for view `aview`
--

/*!50001 DROP VIEW IF EXISTS `aview`*/;
/*!50001 SET @saved_cs_client          = @@character_set_client */;
/*!50001 CREATE ALGORITHM=UNDEFINED */
/*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */
/*!50001 VIEW `aview` AS select `zview`.`id` AS `id` from `zview` where `zview`.`id` > 100 */
/*!50002 WITH CASCADED CHECK OPTION */;
/*!50001 SET character_set_client      = @saved_cs_client */;

--
-- Final view structure for view `vseq`
--

/*!50001 DROP VIEW IF EXISTS `vseq`*/;
/*!50001 CREATE ALGORITHM=UNDEFINED */
/*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */
/*!50001 VIEW `vseq` AS select nextval(`orig`.`seq1`) AS `n` */;

--
-- Final view structure for view `zview`
--

/*!50001 DROP VIEW IF EXISTS `zview`*/;
/*!50001 CREATE ALGORITHM=UNDEFINED */
/*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */
/*!50001 VIEW `zview` AS select `t_seq`.`id` AS `id` from `t_seq` where `t_seq`.`id` > 0 */;
"""
FOOTER = b"""/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;

/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;

-- Dump completed on 2026-12-01 20:29:00
"""
SAMPLE = HEADER + SEQUENCE + TABLES + ROUTINES + VIEWS + FOOTER
PREAMBLE = b"ALTER DATABASE CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;\n"
LIMIT = 16 * 1024 * 1024


def run(data: bytes, cuts: list[int] | None = None, **options: object) -> tuple[bytes, DumpStream]:
    stream = DumpStream(database=str(options.pop("database", "orig")),
                        packet_limit=int(options.pop("packet_limit", LIMIT)),  # type: ignore[call-overload]
                        preamble=bytes(options.pop("preamble", PREAMBLE)))  # type: ignore[call-overload]
    pieces: list[bytes] = []
    positions = [0, *sorted(cuts or []), len(data)]
    for start, end in itertools.pairwise(positions):
        pieces += stream.feed(data[start:end])
    pieces += stream.finish()
    return b"".join(pieces), stream


def test_rows_and_objects_are_counted() -> None:
    _, stream = run(SAMPLE)
    assert stream.tables == {"t_seq": 4, "empty \u00fc": 0, "hist": 2, "one line": 3}
    assert dict(stream.objects) == {"tables": 2, "views": 3, "sequences": 1, "routines": 1,
                                    "triggers": 1, "events": 1}


def test_the_own_database_name_is_gone_from_definitions() -> None:
    out, _ = run(SAMPLE)
    assert b"nextval(`seq1`)" in out and b"nextval(`orig`" not in out
    assert b"ALTER DATABASE CHARACTER SET latin1 COLLATE latin1_swedish_ci ;" in out
    assert b"ALTER DATABASE `orig`" not in out
    assert b"FROM `t_seq`)" in out  # in the trigger
    # Data and comments keep every byte: only definitions change.
    assert b"(105,'it\\'s ),\\n( not a row;')" in out
    assert b"-- Host: 127.0.0.1    Database: orig" in out


def test_the_preamble_follows_the_header() -> None:
    out, _ = run(SAMPLE)
    header_end = out.index(b"SQL_NOTES=0 */;\n") + len(b"SQL_NOTES=0 */;\n")
    assert out[header_end:].startswith(PREAMBLE)
    assert out.count(PREAMBLE) == 1


def test_views_come_after_the_views_they_use() -> None:
    out, _ = run(SAMPLE)
    order = re.findall(rb"/\*!50001 VIEW `(\w+)`", out)
    assert order == [b"vseq", b"zview", b"aview"]
    assert out.endswith(FOOTER)
    # Each view keeps its own statements (the DROP and SETs travel with it).
    aview = out[out.index(b"-- Final view structure for view `aview`"):]
    assert aview.index(b"DROP VIEW IF EXISTS `aview`") < aview.index(b"VIEW `aview` AS")


def test_without_edits_the_chunks_pass_as_they_are() -> None:
    rows = b",\n".join(b"(%d,'row %d')" % (number, number) for number in range(20000))
    insert = b"INSERT INTO `t` VALUES\n" + rows + b";\n"
    data = HEADER + PREAMBLE + insert * 4 + FOOTER
    stream = DumpStream(database="orig", packet_limit=LIMIT)  # no preamble to insert
    size = 100_000
    chunks = [data[start:start + size] for start in range(0, len(data), size)]
    pieces = [piece for chunk in chunks for piece in stream.feed(chunk)] + stream.finish()
    assert b"".join(pieces) == data
    assert stream.tables == {"t": 80000}
    untouched = sum(1 for piece in pieces if any(piece is chunk for chunk in chunks))
    assert untouched == len(pieces) == len(chunks)  # the very objects: nothing copied


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(SAMPLE)), max_size=30))
def test_any_chunking_gives_the_same_result(cuts: list[int]) -> None:
    whole, reference = run(SAMPLE)
    out, stream = run(SAMPLE, cuts)
    assert out == whole
    assert stream.tables == reference.tables and stream.objects == reference.objects


def test_one_byte_at_a_time() -> None:
    out, stream = run(SAMPLE, list(range(len(SAMPLE))))
    assert out == run(SAMPLE)[0]
    assert stream.tables["t_seq"] == 4


def test_count_rows() -> None:
    assert count_rows(b"INSERT INTO `t` VALUES\n(1),\n(2),\n(3);\n") == 3
    assert count_rows(b"INSERT INTO `t` VALUES\n(1,'),(');\n") == 1
    assert count_rows(b"INSERT INTO `t` (`a`) VALUES (1),\n(2);\n") == 2
    assert count_rows(b"INSERT INTO `t` VALUES (1,'a),(b'),(2,'\\'),('),(3,'\\\\');\n") == 3
    assert count_rows(b"INSERT INTO `t` (`it's`, `b`) VALUES (1,'),('),(2,'x');\n") == 2
    assert count_rows(b"INSERT INTO `t` VALUES (1,'x');\n") == 1


def test_an_oversized_statement_is_written_with_binary_strings() -> None:
    blob = bytes(range(256)) * 40  # every byte value, NUL, quotes and backslashes included
    data = (HEADER + b"INSERT INTO `b` VALUES\n(1,0x" + blob.hex().upper().encode()
            + b",'0x41 stays text'),\n(2,0x);\n" + FOOTER)
    out, stream = run(data, packet_limit=len(blob) * 2)
    assert stream.tables == {"b": 2}
    assert b"(1,_binary'" + escape_binary(blob) + b"','0x41 stays text')" in out
    assert b"(2,0x)" in out  # an empty literal has nothing to shrink
    assert len(out) < len(data)


def test_a_statement_that_cannot_fit_fails_naming_its_table() -> None:
    blob = b"\0" * 5000  # every byte needs an escape: as big as a string as in hex
    data = HEADER + b"INSERT INTO `big one` VALUES\n(1,0x" + blob.hex().encode() + b");\n"
    try:
        run(data, packet_limit=8000)
    except DumpStreamError as error:
        assert "table 'big one'" in str(error) and "max_allowed_packet" in str(error)
    else:
        raise AssertionError("no error")


def test_reencode_leaves_strings_alone() -> None:
    assert reencode_hex(b"(1,0x00FF,'0xAB',`0x1`)") == b"(1,_binary'\\0\xff','0xAB',`0x1`)"


def test_sort_views_is_stable_and_survives_cycles() -> None:
    blocks = [("a", {"b"}, b"A"), ("b", set(), b"B"), ("c", {"a", "x"}, b"C"),
              ("d", {"e"}, b"D"), ("e", {"d"}, b"E")]
    assert sort_views(blocks) == [b"B", b"A", b"C", b"D", b"E"]


def test_unexpected_format_is_an_error() -> None:
    for bad in (b"CREATE TABLE t (x int);\n", b"INSERT INTO t VALUES (1);\n"):
        try:
            run(HEADER + bad)
        except DumpStreamError as error:
            assert "unexpected" in str(error)
        else:
            raise AssertionError(bad)
