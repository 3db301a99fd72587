"""Version, commit and build date, as `backupmand version` and /health report them."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from . import __version__

VERSION = __version__


def _git_commit(root: Path) -> str:
    """The checked-out commit, read from .git without starting git (start-up stays fast)."""
    git = root / ".git"
    try:
        if git.is_file():  # a worktree: "gitdir: <path>"
            git = Path(git.read_text().split(":", 1)[1].strip())
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:7]
        ref = head[5:]
        common = git
        if (git / "commondir").exists():
            common = (git / (git / "commondir").read_text().strip()).resolve()
        for base in (git, common):
            if (base / ref).exists():
                return (base / ref).read_text().strip()[:7]
            packed = base / "packed-refs"
            if packed.exists():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line[:7]
    except (OSError, IndexError):
        pass
    return ""


@cache
def build_info() -> dict[str, str]:
    """From the package's _build.py (written by packaging/), else the environment, else
    the git checkout it runs from."""
    try:
        from ._build import BUILD_DATE, COMMIT_SHA  # type: ignore[import-not-found]

        return {"Version": VERSION, "CommitSHA": COMMIT_SHA, "BuildDate": BUILD_DATE}
    except ImportError:
        pass
    commit = os.environ.get("BACKUPMAND_COMMIT") or _git_commit(Path(__file__).resolve().parent.parent)
    date = os.environ.get("BACKUPMAND_BUILD_DATE", "")
    return {"Version": VERSION, "CommitSHA": commit or "unknown", "BuildDate": date or "unknown"}
