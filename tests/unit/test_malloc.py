"""backupmand.malloc: glibc told to return large blocks, unless the operator said otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from backupmand import malloc

PROBE = """
import json, sys
from backupmand import malloc
print(json.dumps(malloc.tune()))
"""


def tuned(**environment: str) -> dict[str, int]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    env.update(environment)
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout)


def test_the_threshold_is_pinned_on_glibc() -> None:
    assert tuned() == {"MALLOC_MMAP_THRESHOLD_": malloc.MMAP_THRESHOLD}
    # Above the 1 MiB blocks of every backup, below Google Drive's 8 MiB chunks.
    assert 1024 * 1024 < malloc.MMAP_THRESHOLD < 8 * 1024 * 1024


def test_the_operators_environment_wins() -> None:
    assert tuned(MALLOC_MMAP_THRESHOLD_="65536") == {}


def test_the_cli_applies_them_before_anything_else(tmp_path) -> None:
    """`backupmand version` (the shortest path through main) has tuned the allocator."""
    probe = ("import sys; from unittest import mock; from backupmand import cli, malloc\n"
             "with mock.patch.object(malloc, 'tune', wraps=malloc.tune) as spy:\n"
             "    cli.main(['version'])\n"
             "print(spy.call_count)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, cwd=tmp_path)
    assert done.stdout.strip().splitlines()[-1] == "1"
