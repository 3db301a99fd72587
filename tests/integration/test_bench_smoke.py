"""The benchmark (bench/run.py) still works: a smoke run with tiny sizes, every figure reported.

No timing is asserted here: the numbers of a smoke run mean nothing. It needs what the
real benchmark needs (PostgreSQL, zstd, gzip, pigz, moto), all installed by .ci/run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, child_env

FIGURES = ("1a", "1b", "1c", "1d", "2a", "2b", "2c", "3", "4a", "4b", "4c", "5a", "5b")


def test_a_smoke_run_reports_every_figure(tmp_path: Path):
    output = tmp_path / "RESULTS.md"
    scratch_before = set(Path("/tmp").glob("backupmand-bench-*"))
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--output", str(output)],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=240, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = output.read_text()
    assert "Smoke run" in text
    for key in FIGURES:
        row = re.search(rf"^\| {re.escape(key)} \| (?P<figure>.+?) \| (?P<measured>.+?) \| "
                        r"(?P<target>.+?) \| (?P<result>PASS|MISS) \|$", text, re.MULTILINE)
        assert row is not None, f"no row for figure {key}:\n{text}"
        assert re.match(r"[\d.]+ / [\d.]+ / [\d.]+", row["measured"]), row.group(0)
    for section in ("## Machine", "## Versions", "## Method"):
        assert section in text
    assert set(Path("/tmp").glob("backupmand-bench-*")) == scratch_before, "scratch left behind"
