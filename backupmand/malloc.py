"""glibc's allocator, told to give large blocks back (Linux with glibc; elsewhere nothing).

glibc serves a block of at least its mmap threshold (128 KiB at start) from a mapping
of its own, returned to the system when freed; but each time such a block is freed it
raises the threshold to that block's size (up to 32 MiB), so that from then on blocks
of that size come from the malloc arenas, one per thread that allocates, and stay
there, freed but resident. A backup moves megabytes at a time through worker threads
(Google Drive's 8 MiB chunks, the reads of each drive, joined blocks): with three
drives the peak resident set of a 1 GiB backup was some 45 MB larger than what was in
use, and grew with the dump's size (bench/RESULTS.md, figures 2d and 2e).

``M_MMAP_THRESHOLD`` pinned at 4 MiB, at start before any thread exists, keeps the
large blocks in mappings of their own. It is pinned above the 1 MiB blocks every
backup reads, compresses and writes by the thousand: those keep coming from the
arenas, reused at once. (Pinned at 128 KiB, every one of them was a fresh mapping,
faulted in page by page and unmapped again: on this kind of virtual machine that made
a zstd backup of 1 GiB about a second slower, and the upload tail of three drives
twice as long, for no memory saved.)

An operator's own ``MALLOC_MMAP_THRESHOLD_`` (glibc reads it at start) wins.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 * 1024 * 1024
ENVIRONMENT = "MALLOC_MMAP_THRESHOLD_"


def tune() -> dict[str, int]:
    """Pin the threshold unless the environment sets it; return what was applied."""
    if not sys.platform.startswith("linux") or ENVIRONMENT in os.environ:
        return {}
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt worth calling)
        return {}
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        return {}
    return {ENVIRONMENT: MMAP_THRESHOLD}
