"""process.stream_output: a child's stdout read in blocks by a thread, whole and in order."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time

import pytest

from backupmand import process
from backupmand.errors import ProcessError

# Writes 40 MiB of numbered lines in small pieces, as pg_dump does.
WRITER = """
import sys
out = sys.stdout.buffer
for number in range(600_000):
    out.write(b"%09d some row text that compresses a little\\n" % number)
    if number % 100 == 0:
        out.flush()
"""


def expected_output() -> bytes:
    return b"".join(b"%09d some row text that compresses a little\n" % n for n in range(600_000))


async def test_output_arrives_whole_in_blocks_of_a_mebibyte():
    command = process.Command((sys.executable, "-c", WRITER))
    digest = hashlib.sha256()
    sizes = []
    async for chunk in process.stream_output(command, timeout=120):
        digest.update(chunk)
        sizes.append(len(chunk))
    assert digest.hexdigest() == hashlib.sha256(expected_output()).hexdigest()
    assert all(size <= process.BLOCK_SIZE for size in sizes)
    assert sum(size == process.BLOCK_SIZE for size in sizes) == len(sizes) - 1


async def test_a_failing_child_fails_after_its_output():
    command = process.Command((sys.executable, "-c",
                               "import sys; sys.stdout.write('x' * 100); sys.stderr.write('broken');"
                               " sys.exit(3)"))
    received = b""
    with pytest.raises(ProcessError, match="exited with status 3: broken"):
        async for chunk in process.stream_output(command, timeout=60):
            received += chunk
    assert received == b"x" * 100


async def test_a_silent_child_times_out_and_is_stopped():
    command = process.Command((sys.executable, "-c", "import time; time.sleep(60)"))
    started = time.monotonic()
    with pytest.raises(ProcessError, match=r"timed out after 0\.5 s"):
        async for _chunk in process.stream_output(command, timeout=0.5):
            pass
    assert time.monotonic() - started < 10


async def test_closing_the_stream_early_stops_the_child_and_frees_the_pipe():
    before = len(os.listdir("/proc/self/fd"))
    command = process.Command((sys.executable, "-c", "import sys\nwhile True: sys.stdout.write('y' * 65536)"))
    stream = process.stream_output(command, timeout=60)
    first = await anext(stream)
    assert first and set(first) == {ord("y")}
    await stream.aclose()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while len(os.listdir("/proc/self/fd")) > before and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # the reading thread closes the pipe once it has stopped
    assert len(os.listdir("/proc/self/fd")) <= before
