"""Streaming compression and decompression: zstd (default), gzip, none.

Compressors are incremental objects whose ``compress`` and ``flush`` release the GIL
(zstandard and zlib both do), so the pipeline runs them in a worker thread while
the event loop keeps reading the dump tool's pipe.
"""

from __future__ import annotations

import os
import zlib
from typing import Protocol

EXTENSIONS = {"zstd": ".zst", "gzip": ".gz", "none": ""}
DEFAULT_LEVELS = {"zstd": 3, "gzip": 6, "none": 0}
#: The size of a multi-threaded zstd job at levels whose window is at most 2 MiB.
ZSTD_JOB_SIZE = 1024 * 1024


class Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class Decompressor(Protocol):
    def decompress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Identity:
    def compress(self, data: bytes) -> bytes:
        return data

    def decompress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


class _Zstd:
    def __init__(self, level: int, threads: int) -> None:
        import zstandard

        options: dict[str, int] = {}
        if threads and zstandard.ZstdCompressionParameters.from_level(level).window_log <= 21:
            # zstd's default job is four windows (8 MiB at level 3), and each worker
            # holds a few jobs' input and output: ~75 MB for two workers. 1 MiB jobs
            # take ~25 MB, compress as well, and used less CPU in the benchmark.
            options["job_size"] = ZSTD_JOB_SIZE
        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads=threads, write_checksum=True, **options)
        self._object = zstandard.ZstdCompressor(compression_params=params).compressobj()

    def compress(self, data: bytes) -> bytes:
        return self._object.compress(data)

    def flush(self) -> bytes:
        return self._object.flush()


class _ZstdReader:
    def __init__(self) -> None:
        import zstandard

        # read_across_frames: a file of several frames (a resumed write) decodes whole.
        self._object = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True)

    def decompress(self, data: bytes) -> bytes:
        return self._object.decompress(data)

    def flush(self) -> bytes:
        return b""


class _GzipReader:
    """Decodes a gzip file of one or more members (pigz-style parallel output included)."""

    def __init__(self) -> None:
        self._object = zlib.decompressobj(wbits=31)

    def decompress(self, data: bytes) -> bytes:
        out = bytearray()
        while data:
            out += self._object.decompress(data)
            if not self._object.eof:
                break
            data = self._object.unused_data
            self._object = zlib.decompressobj(wbits=31)
        return bytes(out)

    def flush(self) -> bytes:
        return self._object.flush()


class _ParallelGzip:
    """gzip members compressed side by side (as pigz does), written in order.

    Each block becomes one complete gzip member; a file of concatenated members is a
    valid gzip file (RFC 1952) that gzip, zcat and Python all read whole. zlib drops
    the GIL while it works, so the threads use every core. At most ``2 * threads``
    blocks are in flight, so memory stays bounded.
    """

    def __init__(self, level: int, threads: int) -> None:
        from concurrent.futures import Future, ThreadPoolExecutor

        self._level = level
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gzip")
        self._pending: list[Future[bytes]] = []
        self._limit = 2 * threads

    def _member(self, data: bytes) -> bytes:
        compressor = zlib.compressobj(self._level, zlib.DEFLATED, 31)
        return compressor.compress(data) + compressor.flush()

    def compress(self, data: bytes) -> bytes:
        if data:
            self._pending.append(self._pool.submit(self._member, data))
        out = bytearray()
        while self._pending and (self._pending[0].done() or len(self._pending) > self._limit):
            out += self._pending.pop(0).result()
        return bytes(out)

    def flush(self) -> bytes:
        out = bytearray()
        while self._pending:
            out += self._pending.pop(0).result()
        self._pool.shutdown(wait=False)
        return bytes(out)


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def compressor(name: str, level: int | None = None, threads: int = 0) -> Compressor:
    """A streaming compressor; ``threads`` 0 means one per available core."""
    chosen = DEFAULT_LEVELS[name] if level is None else level
    if name == "zstd":
        workers = default_threads() if threads == 0 else threads
        return _Zstd(chosen, workers if workers > 1 else 0)
    if name == "gzip":
        workers = default_threads() if threads == 0 else threads
        if workers > 1:
            return _ParallelGzip(chosen, workers)
        return zlib.compressobj(chosen, zlib.DEFLATED, 31)
    if name == "none":
        return _Identity()
    raise ValueError(f"unknown compression {name!r}")


def decompressor(name: str) -> Decompressor:
    if name == "zstd":
        return _ZstdReader()
    if name == "gzip":
        return _GzipReader()
    if name == "none":
        return _Identity()
    raise ValueError(f"unknown compression {name!r}")
