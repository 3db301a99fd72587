"""Run by test_s3 in a process of its own: one S3 upload of a growing file, its memory.

    python s3_memory_probe.py ENDPOINT BUCKET SIZE FOLDER

A writer thread appends SIZE bytes to a stage file in FOLDER (1 MiB writes, ``grew``
after each) while the drive uploads it (4 parts of 16 MiB in flight); prints JSON with
the resident set size before the upload (clients created, connections open) and its
peak during the upload.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import threading
from pathlib import Path

from backupmand.config import S3Drive
from backupmand.drives.s3 import S3Bucket
from backupmand.growing import GrowingFile
from tests.servers.s3 import ACCESS_KEY, SECRET_KEY

MiB = 1024 * 1024


def status(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in bytes: VmRSS (now)
    or VmHWM (the peak). Not getrusage's ru_maxrss: it keeps the peak of the process
    this one was forked from (pytest's, holding the in-process moto server's objects)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def write(growing: GrowingFile, size: int) -> None:
    block = bytearray(os.urandom(MiB))
    digest = hashlib.sha256()
    written = 0
    with open(growing.path, "ab") as sink:
        while written < size:
            block[:8] = written.to_bytes(8, "big")  # every block different
            piece = bytes(block[:min(MiB, size - written)])
            sink.write(piece)
            sink.flush()
            digest.update(piece)
            written += len(piece)
            growing.grew(written)
    growing.finish(written, digest.hexdigest())


async def main(endpoint: str, bucket: str, size: int, folder: Path) -> None:
    config = S3Drive.model_validate({
        "provider": "s3", "label": "S3", "bucket": bucket, "endpoint": endpoint,
        "access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "force_path_style": True,
        "part_concurrency": 4, "part_size": 16 * MiB})
    drive = S3Bucket(config)
    try:
        # Warm up: both clients created, modules imported, a multipart upload made
        # (written 1 MiB at a time: the peak must not come from here).
        warm = GrowingFile(folder / "warm-up")
        warm.path.write_bytes(b"")
        write(warm, 17 * MiB)
        await drive.upload_stream(warm, "warm-up.sql.zst")
        stage = folder / "stage.sql.zst.partial"
        stage.write_bytes(b"")
        growing = GrowingFile(stage)
        Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from here
        before = status("VmRSS")
        writer = threading.Thread(target=write, args=(growing, size))
        writer.start()
        stored = await drive.upload_stream(growing, "big.sql.zst")
        writer.join()
        peak = status("VmHWM")
    finally:
        await drive.aclose()
    print(json.dumps({"before": before, "peak": peak, "size": stored.size, "path": stored.path,
                      "sha256": growing.expected()[1]}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])))
