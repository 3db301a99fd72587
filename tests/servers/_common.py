"""Shared bits of the real-server fixtures: free ports, scratch folders, ownership."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port nothing listens on right now (on the loopback interface)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def is_root() -> bool:
    return os.geteuid() == 0


def server_user(system_user: str) -> str:
    """Who runs the server: ``system_user`` under root (servers refuse root), else us."""
    if is_root():
        return system_user
    return pwd.getpwuid(os.geteuid()).pw_name


def scratch_folder(prefix: str, owner: str) -> Path:
    """A fresh folder under /tmp that ``owner`` owns and everybody may traverse.

    mkdtemp creates 0700 folders; a server running as another user (postgres, mysql)
    must reach its data and socket through it, hence 0755 and the chown.
    """
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    base.chmod(0o755)
    if is_root():
        entry = pwd.getpwnam(owner)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    return base


def chown_tree(path: Path, owner: str) -> None:
    if not is_root():
        return
    entry = pwd.getpwnam(owner)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def as_user(owner: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run as ``owner`` (through runuser when we are root)."""
    if is_root() and owner != "root":
        return ["runuser", "-u", owner, "--", *argv]
    return list(argv)


def run_or_fail(argv: Sequence[str], what: str, *, log: Path | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a setup step; a failure fails the test session (it is never a skip)."""
    try:
        result = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.fail(f"{what}: {error}", pytrace=False)
    if result.returncode != 0:
        extra = ""
        if log is not None and log.exists():
            extra = "\n--- log ---\n" + log.read_text(errors="replace")[-4000:]
        pytest.fail(
            f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}{extra}",
            pytrace=False,
        )
    return result


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
