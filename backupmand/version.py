"""Version, commit and build date, as `backupmand version` and /health report them."""

from __future__ import annotations

import os
import subprocess
from functools import cache
from pathlib import Path

from . import __version__

VERSION = __version__


@cache
def build_info() -> dict[str, str]:
    """Commit and build date: from the package's _build.py (written by packaging), the
    environment, or the git checkout it runs from."""
    try:
        from ._build import BUILD_DATE, COMMIT_SHA  # type: ignore[import-not-found]

        return {"Version": VERSION, "CommitSHA": COMMIT_SHA, "BuildDate": BUILD_DATE}
    except ImportError:
        pass
    commit = os.environ.get("BACKUPMAND_COMMIT", "")
    date = os.environ.get("BACKUPMAND_BUILD_DATE", "")
    root = Path(__file__).resolve().parent.parent
    if not commit and (root / ".git").exists():
        try:
            out = subprocess.run(
                ["git", "-C", str(root), "log", "-1", "--format=%h %cI"],  # noqa: S607
                capture_output=True, text=True, timeout=2, check=False,
            ).stdout.split()
            if len(out) == 2:
                commit, date = out
        except (OSError, subprocess.SubprocessError):
            pass
    return {"Version": VERSION, "CommitSHA": commit or "unknown", "BuildDate": date or "unknown"}
