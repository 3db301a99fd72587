"""The journald renderer: priority prefixes, logfmt quoting, timestamps once."""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Iterator

import pytest
import structlog

from backupmand import journald
from backupmand.journald import format_value, journald_renderer, render, under_journald

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)"


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """structlog configured as logs.py will: add_log_level, then the renderer."""
    stream = io.StringIO()
    yield stream
    structlog.reset_defaults()


def configure(stream: io.StringIO, *processors: structlog.types.Processor) -> None:
    structlog.configure(
        processors=[structlog.processors.add_log_level, *processors],
        logger_factory=structlog.PrintLoggerFactory(stream),
        wrapper_class=structlog.make_filtering_bound_logger(0),
        cache_logger_on_first_use=False,
    )


# --------------------------------------------------------------------------- priorities


@pytest.mark.parametrize(
    ("method", "prefix"),
    [("debug", "<7>"), ("info", "<6>"), ("warning", "<4>"), ("error", "<3>"),
     ("critical", "<2>"), ("exception", "<3>")],
)
def test_every_level_gets_its_priority(output: io.StringIO, method: str, prefix: str) -> None:
    configure(output, journald_renderer(include_timestamp=False))
    log = structlog.get_logger()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        getattr(log, method)("backup.failed", label="Main")
    line = output.getvalue()
    assert line.startswith(prefix + "backup.failed label=Main")
    assert line.count("\n") == 1  # one entry per event, even with a traceback


@pytest.mark.parametrize(
    ("level", "number"),
    [("debug", 7), ("info", 6), ("notice", 5), ("warning", 4), ("warn", 4), ("error", 3),
     ("exception", 3), ("critical", 2), ("fatal", 2), ("CRITICAL", 2), ("unheard-of", 6)],
)
def test_priority_table(level: str, number: int) -> None:
    assert journald.priority(level) == number


def test_level_key_wins_over_method_name() -> None:
    # add_log_level maps log.exception() to level "error"; without it the method counts.
    assert render({"event": "x", "level": "error"}, "exception", include_timestamp=False) == (
        "<3>x")
    assert render({"event": "x"}, "warning", include_timestamp=False) == "<4>x"


def test_the_prefix_can_be_left_out() -> None:
    assert render({"event": "x", "level": "info"}, include_timestamp=False,
                  prefix=False) == "x"


def test_exception_becomes_one_escaped_value(output: io.StringIO) -> None:
    configure(output, journald_renderer(include_timestamp=False))
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        structlog.get_logger().exception("upload.failed", drive="S3")
    line = output.getvalue().rstrip("\n")
    assert "\n" not in line
    assert line.startswith('<3>upload.failed drive=S3 exception="Traceback (most recent call')
    assert 'ValueError: bad\\nvalue"' in line


def test_a_formatted_exception_is_kept_as_is(output: io.StringIO) -> None:
    configure(output, structlog.processors.format_exc_info,
              journald_renderer(include_timestamp=False))
    try:
        raise KeyError("k")
    except KeyError:
        structlog.get_logger().error("x", exc_info=True)
    line = output.getvalue()
    assert line.count("exception=") == 1
    assert "KeyError" in line


# --------------------------------------------------------------------------- logfmt


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("plain", "plain"),
        ("with space", '"with space"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a=b", '"a=b"'),
        ("line1\nline2", '"line1\\nline2"'),
        ("cr\rtab\t", '"cr\\rtab\\t"'),
        ("back\\slash", '"back\\\\slash"'),
        ("bell\x07", '"bell\\u0007"'),
        ("", '""'),
        ("/var/lib/backupmand/tmp/main.sql.zst", "/var/lib/backupmand/tmp/main.sql.zst"),
        ("d\u00e9j\u00e0", "d\u00e9j\u00e0"),
        (None, "null"),
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (1.5, "1.5"),
        (["a", "b"], "\"['a', 'b']\""),
    ],
)
def test_value_quoting(value: object, rendered: str) -> None:
    assert format_value(value) == rendered


def test_line_layout_keeps_key_order() -> None:
    line = render(
        {"event": "backup finished", "level": "info", "backup_id": "b4c3", "label": "My DB",
         "size": 1024},
        include_timestamp=False,
    )
    assert line == '<6>backup finished backup_id=b4c3 label="My DB" size=1024'


def test_event_stays_on_one_line() -> None:
    line = render({"event": "two\nlines", "level": "info"}, include_timestamp=False)
    assert line == "<6>two\\nlines"


def test_keys_are_sanitised() -> None:
    line = render({"event": "e", "level": "info", "bad key=": 1}, include_timestamp=False)
    assert line == "<6>e bad_key_=1"


# --------------------------------------------------------------------------- timestamps


def test_no_timestamp_under_journald(output: io.StringIO) -> None:
    # journald stamps entries itself: a TimeStamper's key must not be printed again.
    configure(output, structlog.processors.TimeStamper(fmt="iso", utc=True),
              journald_renderer(include_timestamp=False))
    structlog.get_logger().info("started", port=8080)
    line = output.getvalue().rstrip("\n")
    assert line == "<6>started port=8080"
    assert not re.search(ISO, line)


def test_timestamp_elsewhere(output: io.StringIO) -> None:
    configure(output, journald_renderer(include_timestamp=True))
    structlog.get_logger().warning("disk low", free="1 GiB")
    line = output.getvalue().rstrip("\n")
    assert re.fullmatch(rf'<4>{ISO} disk low free="1 GiB"', line), line


def test_an_existing_timestamp_is_used_once(output: io.StringIO) -> None:
    configure(output, structlog.processors.TimeStamper(fmt="iso", utc=True),
              journald_renderer(include_timestamp=True))
    structlog.get_logger().info("tick")
    line = output.getvalue().rstrip("\n")
    assert len(re.findall(ISO, line)) == 1
    assert "timestamp=" not in line
    assert re.fullmatch(rf"<6>{ISO} tick", line), line


# --------------------------------------------------------------------------- detection


def test_under_journald_matches_device_and_inode() -> None:
    with tempfile.TemporaryFile() as stream:
        stat = os.fstat(stream.fileno())
        same = {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
        other = {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino + 1}"}
        assert under_journald(stream.fileno(), same) is True
        assert under_journald(stream.fileno(), other) is False
        assert under_journald(stream.fileno(), {}) is False
        assert under_journald(stream.fileno(), {"JOURNAL_STREAM": "garbage"}) is False
        assert under_journald(stream.fileno(), {"JOURNAL_STREAM": "1:x"}) is False


def test_under_journald_reads_stderr_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stat = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
    assert under_journald() is True
    monkeypatch.delenv("JOURNAL_STREAM")
    assert under_journald() is False


def test_a_closed_descriptor_is_not_journald() -> None:
    read_end, write_end = os.pipe()
    stat = os.fstat(write_end)
    os.close(read_end)
    os.close(write_end)
    assert under_journald(write_end, {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}) is False


def test_stderr_is_terminal_is_false_for_a_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert journald.stderr_is_terminal() is False
