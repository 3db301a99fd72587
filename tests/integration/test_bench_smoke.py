"""The benchmark (bench/run.py) still works: a smoke run with tiny sizes, every figure reported.

No timing is asserted here: the numbers of a smoke run mean nothing. It needs what the
real benchmark needs (PostgreSQL, MariaDB, zstd, gzip, pigz, moto), all installed by
.ci/run. borgmatic and borg are optional: without them figures 7a and 7b say why they
were not measured (and the smoke run still passes); the previous release (6a-prev) is
measured only with ``--before``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, child_env

FIGURES = ("1a", "1b", "1c", "1d", "2a", "2b", "2c", "2d", "2e", "3", "4a", "4b", "4c", "4d",
           "5a", "5b", "6a", "6b", "6c", "7c", "8", "9a", "9b", "9c")
REFERENCES = ("1a*", "1d*", "6a*", "6c*")
#: Measured where the tools are there; otherwise "not measured: <why>".
PEERS = ("7a", "7b")


def _row(text: str, key: str) -> re.Match[str] | None:
    return re.search(rf"^\| {re.escape(key)} \| (?P<figure>.+?) \| (?P<measured>.+?) \| "
                     r"(?P<target>.+?) \| (?P<result>PASS|MISS|—) \|$", text, re.MULTILINE)


def test_a_smoke_run_reports_every_figure(tmp_path: Path):
    output = tmp_path / "RESULTS.md"
    scratch_before = set(Path("/tmp").glob("backupmand-bench-*"))
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--output", str(output)],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=420, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = output.read_text()
    assert "Smoke run" in text
    for key in FIGURES:
        row = _row(text, key)
        assert row is not None, f"no row for figure {key}:\n{text}"
        assert row["result"] in ("PASS", "MISS"), row.group(0)
        assert re.match(r"[\d.]+ / [\d.]+ / [\d.]+", row["measured"]), row.group(0)
    for key in REFERENCES:
        row = _row(text, key)
        assert row is not None and row["result"] == "—", f"no reference row {key}"
        assert re.match(r"[\d.]+ / [\d.]+ / [\d.]+", row["measured"]), row.group(0)
    borg_here = shutil.which("borgmatic") is not None and shutil.which("borg") is not None
    for key in PEERS:
        row = _row(text, key)
        assert row is not None, f"no row for figure {key}:\n{text}"
        if borg_here:
            assert re.match(r"[\d.]+ / [\d.]+ / [\d.]+", row["measured"]), row.group(0)
        else:
            assert row["measured"].startswith("not measured: borg"), row.group(0)
            assert row["result"] == "—", row.group(0)
    previous = _row(text, "6a-prev")
    assert previous is not None and previous["measured"].startswith("not measured: run with "
                                                                    "--before")
    for section in ("## Machine", "## Versions", "## Method",
                    "## 2d. Where the memory of a three-drive backup goes"):
        assert section in text
    assert set(Path("/tmp").glob("backupmand-bench-*")) == scratch_before, "scratch left behind"
