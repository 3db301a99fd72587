"""The growing stage file on its own: one writer thread, readers on the event loop."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from pathlib import Path

import pytest

from backupmand.errors import VerificationError
from backupmand.growing import GrowingFile, WriterFailedError

MiB = 1024 * 1024


def stage_file(tmp_path: Path) -> GrowingFile:
    path = tmp_path / "stage.partial"
    path.write_bytes(b"")
    return GrowingFile(path)


def append(growing: GrowingFile, data: bytes) -> None:
    with open(growing.path, "ab") as sink:
        sink.write(data)
    growing.grew(growing.size + len(data))


async def test_a_reader_ahead_of_the_writer_is_woken_by_the_writer_thread(tmp_path: Path) -> None:
    growing = stage_file(tmp_path)
    waiting = asyncio.create_task(growing.available(10))
    await asyncio.sleep(0)  # parked: nothing is there yet
    assert not waiting.done()
    await asyncio.to_thread(append, growing, b"x" * 10)  # not more than 10: still waiting
    await asyncio.sleep(0)
    assert not waiting.done()
    await asyncio.to_thread(append, growing, b"y")
    assert await asyncio.wait_for(waiting, 10) == 11
    assert await growing.available(3) == 11  # already there: at once


async def test_every_reader_gets_every_byte_as_it_arrives(tmp_path: Path) -> None:
    growing = stage_file(tmp_path)
    data = os.urandom(5 * MiB + 17)
    first_block = threading.Event()

    def write() -> None:
        with open(growing.path, "ab") as sink:
            for start in range(0, len(data), 300 * 1024):
                sink.write(data[start:start + 300 * 1024])
                sink.flush()
                growing.grew(min(len(data), start + 300 * 1024))
                if start == 0:
                    first_block.wait(30)  # until a reader has seen the first block
        growing.finish(len(data), hashlib.sha256(data).hexdigest())

    async def read(start: int) -> bytes:
        pieces = []
        async for block in growing.follow(start):
            pieces.append(block)
            first_block.set()
        return b"".join(pieces)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        results = await asyncio.gather(read(0), read(0), read(MiB + 3))
    finally:
        first_block.set()
        await asyncio.to_thread(writer.join, 30)
    assert results == [data, data, data[MiB + 3:]]
    assert growing.complete and growing.expected() == (len(data), hashlib.sha256(data).hexdigest())
    ranged = b"".join([block async for block in growing.blocks(7, 2 * MiB, block_size=4096)])
    assert ranged == data[7:2 * MiB]


async def test_the_first_of_finish_and_fail_settles_the_file(tmp_path: Path) -> None:
    growing = stage_file(tmp_path)
    await asyncio.to_thread(append, growing, b"abc")
    with pytest.raises(RuntimeError, match="not complete"):
        growing.expected()
    with pytest.raises(ValueError, match="shrink"):
        growing.grew(2)
    assert growing.finish(3, hashlib.sha256(b"abc").hexdigest())
    assert not growing.fail(OSError("too late"))
    assert not growing.finish(3, "other")
    assert growing.failed is None and growing.expected()[0] == 3
    with pytest.raises(RuntimeError, match="settled"):
        growing.grew(4)
    assert await growing.completed() == (3, hashlib.sha256(b"abc").hexdigest())


async def test_a_failed_writer_is_raised_to_every_reader(tmp_path: Path) -> None:
    growing = stage_file(tmp_path)
    await asyncio.to_thread(append, growing, b"partial")
    waiting = asyncio.create_task(growing.completed())
    following = asyncio.create_task(_collect(growing))
    await asyncio.sleep(0)
    error = OSError(28, "No space left on device")
    assert await asyncio.to_thread(growing.fail, error)
    for reader in (waiting, following):
        with pytest.raises(WriterFailedError, match="No space left") as raised:
            await asyncio.wait_for(reader, 10)
        assert raised.value.cause is error and not raised.value.retryable
    assert not growing.finish(7, "x")


async def test_a_file_shorter_than_its_writer_says_is_a_verification_error(
    tmp_path: Path
) -> None:
    path = tmp_path / "short"
    path.write_bytes(b"12345")
    growing = GrowingFile.complete_file(path, 8, hashlib.sha256(b"12345678").hexdigest())
    with pytest.raises(VerificationError, match="holds only 5 bytes"):
        await _collect(growing)


async def test_renaming_does_not_break_readers(tmp_path: Path) -> None:
    growing = stage_file(tmp_path)
    await asyncio.to_thread(append, growing, b"before ")
    early = growing.follow()
    first = await anext(early)  # opened under the old name
    final = tmp_path / "stage"
    await asyncio.to_thread(growing.rename, final)
    assert growing.path == final and not (tmp_path / "stage.partial").exists()
    await asyncio.to_thread(append, growing, b"after")
    growing.finish(12, hashlib.sha256(b"before after").hexdigest())
    rest = b"".join([block async for block in early])
    assert first + rest == b"before after"
    assert await _collect(growing) == b"before after"  # opened under the new name


async def test_a_cancelled_wait_leaves_the_file_usable(tmp_path: Path) -> None:
    growing = stage_file(tmp_path)
    waiting = asyncio.create_task(growing.available(0))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.to_thread(append, growing, b"z")
    assert await growing.available(0) == 1


async def _collect(growing: GrowingFile) -> bytes:
    return b"".join([block async for block in growing.follow()])
