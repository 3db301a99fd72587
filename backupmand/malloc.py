"""glibc's allocator, told to give memory back (Linux with glibc; elsewhere nothing).

A backup moves megabytes at a time through worker threads: blocks read from the stage
file for each drive (``asyncio.to_thread``), Google Drive's chunks, compression's
buffers. glibc gives every thread that allocates an arena of its own (up to eight per
core), and raises its mmap threshold each time a large block is freed, so that later
blocks of that size come from the arenas and stay there, freed but resident. With
three drives that made the peak resident set of a 1 GiB backup some 60 MB larger than
what was in use (bench/RESULTS.md, figure 2d), and growing with the dump's size.

Two settings, applied at start before any thread exists:

- ``M_MMAP_THRESHOLD`` pinned at 128 KiB (its default, which pinning keeps from moving):
  a block that large is its own mapping, returned to the system when freed;
- ``M_ARENA_MAX`` 2: the threads share two arenas instead of one each.

An operator's own ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_ARENA_MAX`` (glibc reads them
at start) wins: the setting it names is left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024
ARENA_MAX = 2


def tune() -> dict[str, int]:
    """Apply the settings the environment does not set; return those applied."""
    if not sys.platform.startswith("linux"):
        return {}
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt worth calling)
        return {}
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = {}
    for variable, option, value in (("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                                    ("MALLOC_ARENA_MAX", M_ARENA_MAX, ARENA_MAX)):
        if variable not in os.environ and mallopt(option, value) == 1:
            applied[variable] = value
    return applied
