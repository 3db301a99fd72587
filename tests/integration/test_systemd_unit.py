"""The shipped systemd unit: systemd's own tools accept it, and it is well sandboxed.

systemd is not PID 1 on the test machines, but ``systemd-analyze verify`` and
``systemd-analyze security --offline=true`` work offline on a unit file. If
``systemd-analyze`` is missing, install the ``systemd`` package (``.ci/run`` does):
these tests fail rather than skip, on purpose.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "backupmand.service"
MAX_EXPOSURE = 2.0


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing: apt-get install systemd"
    return found


@pytest.fixture
def checkable_unit(tmp_path: Path) -> Path:
    """A copy of the unit whose ExecStart= binary exists on this machine.

    `systemd-analyze verify` fails when the ExecStart= program does not exist, and
    /usr/bin/backupmand exists only where the package is installed. The copy keeps
    the file name (verify derives the unit name and type from it) and every other
    line; only the program path changes, to a stub script in the temporary folder.
    """
    stub = tmp_path / "bin" / "backupmand"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text()
    rewritten, count = re.subn(
        r"^ExecStart=/usr/bin/backupmand\b", f"ExecStart={stub}", text, flags=re.MULTILINE
    )
    assert count == 1, "the unit must start /usr/bin/backupmand exactly once"
    copy = tmp_path / "unit" / UNIT.name
    copy.parent.mkdir()
    copy.write_text(rewritten)
    return copy


def test_verify_is_clean(checkable_unit: Path) -> None:
    # Fatal problems exit 1; unknown keys and unparsable values only warn on stderr
    # and still exit 0: a clean unit has both exit 0 and an empty stderr.
    result = subprocess.run(
        [_systemd_analyze(), "verify", str(checkable_unit)],
        capture_output=True, text=True, timeout=60, check=False, cwd=checkable_unit.parent,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def test_verify_really_checks_the_unit(checkable_unit: Path) -> None:
    # Guards the test above: a misspelt directive does make verify complain.
    broken = checkable_unit.read_text().replace("ProtectHome=yes", "ProtectHomme=yes")
    checkable_unit.write_text(broken)
    result = subprocess.run(
        [_systemd_analyze(), "verify", str(checkable_unit)],
        capture_output=True, text=True, timeout=60, check=False, cwd=checkable_unit.parent,
    )
    assert "ProtectHomme" in result.stderr


def test_security_exposure_is_low(checkable_unit: Path) -> None:
    result = subprocess.run(
        [_systemd_analyze(), "security", "--offline=true", "--no-pager", str(checkable_unit)],
        capture_output=True, text=True, timeout=60, check=False, cwd=checkable_unit.parent,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, result.stdout


def _directives(text: str) -> list[tuple[int, str, str]]:
    """(line number, section, directive) for every setting in the unit."""
    found = []
    section = ""
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#"):
            found.append((number, section, line.split("=", 1)[0]))
    return found


def test_every_directive_says_why() -> None:
    lines = UNIT.read_text().splitlines()
    uncommented = [
        f"line {number}: {name}"
        for number, _section, name in _directives("\n".join(lines))
        if not lines[number - 2].startswith("#")
    ]
    assert not uncommented, "directives without a comment right above them: " + ", ".join(
        uncommented
    )


def test_service_contract() -> None:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            name, _, value = line.partition("=")
            settings.setdefault(name, []).append(value)
    expected = {
        "Type": "notify", "NotifyAccess": "main", "Restart": "on-failure",
        "RestartPreventExitStatus": "78", "User": "backupmand", "Group": "backupmand",
        "StateDirectory": "backupmand", "ConfigurationDirectory": "backupmand",
        "KillMode": "mixed", "ExecStart": "/usr/bin/backupmand serve", "UMask": "0077",
    }
    for name, value in expected.items():
        assert settings.get(name) == [value], name
    assert "ExecReload" not in settings  # SIGHUP does not reload: no pretending
    assert "DynamicUser" not in settings
    assert float(settings["WatchdogSec"][0]) >= 10
    # The daemon's shutdown grace (10 s) plus a dump tool's SIGTERM grace (3 s) fit.
    assert int(settings["TimeoutStopSec"][0]) >= 15


def test_python_runs_without_writable_executable_memory() -> None:
    """MemoryDenyWriteExecute=yes is safe for the daemon's interpreter and libraries.

    The kernel's own W^X switch (prctl PR_SET_MDWE, Linux 6.3+) refuses the same
    mappings as systemd's seccomp filter: W+X memory and adding PROT_EXEC later.
    With it on, import everything the daemon loads and exercise the native code
    (zstd threads, SQLite, TLS, a ctypes callback through libffi).
    """
    program = textwrap.dedent(
        """
        import ctypes, mmap
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
        assert libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) == 0, (
            "prctl(PR_SET_MDWE) failed: errno %d (Linux 6.3 or later needed)"
            % ctypes.get_errno())
        try:
            mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        except OSError:
            pass
        else:
            raise AssertionError("W+X memory was not refused: the check checks nothing")
        import asyncio, hashlib, sqlite3, ssl
        import aiohttp, aiosqlite, apscheduler, pydantic, structlog, yaml, zstandard
        import aioboto3, aiogoogle, aiosmtplib, prometheus_client
        import backupmand.catalog, backupmand.config, backupmand.process
        import backupmand.journald, backupmand.systemd
        data = zstandard.ZstdCompressor(level=3, threads=2).compress(b"x" * 1_000_000)
        assert zstandard.ZstdDecompressor().decompress(data) == b"x" * 1_000_000
        sqlite3.connect(":memory:").execute("select 1").fetchall()
        ssl.create_default_context()
        callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
        assert callback(1) == 2
        asyncio.run(asyncio.sleep(0))
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120,
        check=False, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
