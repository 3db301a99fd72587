"""Log lines: priorities for journald, bound context, and no secret ever printed."""

from __future__ import annotations

import io

import structlog

from backupmand import logs


def test_secrets_are_redacted_and_priorities_prefixed():
    stream = io.StringIO()
    logs.register_secrets(["hunter2-password"])
    logs.configure("info", stream=stream, force_console=False)
    log = structlog.get_logger("test")
    with structlog.contextvars.bound_contextvars(backup_id="b-1", label="Main"):
        log.error("dump.failed", error="FATAL: password hunter2-password rejected")
        log.info("upload.finished", drive="disk")
    log.debug("not shown")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("<3>") and "dump.failed" in lines[0]
    assert "hunter2-password" not in stream.getvalue() and "********" in lines[0]
    assert "backup_id=b-1" in lines[0] and "label=Main" in lines[0]
    assert lines[1].startswith("<6>") and "drive=disk" in lines[1]
