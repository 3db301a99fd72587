"""Every codec round-trips, and the files are readable by the stock tools."""

from __future__ import annotations

import gzip
import os
import subprocess

import pytest

from backupmand import compression


def payload() -> list[bytes]:
    rng = os.urandom
    blocks = [b"INSERT INTO t VALUES (1, 'text');\n" * 40000, rng(300_000), b"", b"x" * 5]
    return blocks * 3


@pytest.mark.parametrize("name", ["zstd", "gzip", "none"])
@pytest.mark.parametrize("threads", [1, 2])
def test_round_trip_and_stock_tools(name, threads, tmp_path):
    blocks = payload()
    compressor = compression.compressor(name, None, threads)
    out = b"".join(compressor.compress(block) for block in blocks) + compressor.flush()
    decompressor = compression.decompressor(name)
    # decompress in uneven pieces, as a download would arrive
    restored = b"".join(decompressor.decompress(out[i:i + 65_537]) for i in range(0, len(out), 65_537))
    restored += decompressor.flush()
    assert restored == b"".join(blocks)
    path = tmp_path / f"file{compression.EXTENSIONS[name]}"
    path.write_bytes(out)
    if name == "gzip":
        assert gzip.decompress(out) == restored
        subprocess.run(["gzip", "-t", str(path)], check=True)
    elif name == "zstd":
        result = subprocess.run(["zstd", "-d", "-c", str(path)], capture_output=True, check=True)
        assert result.stdout == restored


def test_parallel_gzip_writes_several_members_in_order():
    compressor = compression.compressor("gzip", 6, 2)
    assert type(compressor).__name__ == "_ParallelGzip"
    parts = [bytes([i]) * 100_000 for i in range(10)]
    out = b"".join(compressor.compress(p) for p in parts) + compressor.flush()
    assert out.count(b"\x1f\x8b\x08") >= 10
    assert gzip.decompress(out) == b"".join(parts)
