"""One drive's upload of a whole local file, alone: the "upload alone" of the streaming figures.

    python bench/upload_alone.py -c CONFIG --drive LABEL --sha256 HEX FILE

Loads a backupmand config, builds that drive as backupmand does (``build_drive``), and
stores FILE under a fresh name with ``Drive.upload`` — the same code that uploads a kept
dump from the stage file, verification included (size and SHA-256 of what was read,
the provider's checksum of what was stored). Prints one JSON line: ``seconds`` (the
upload alone, from the first request to the verified copy), ``path``, ``size``, and for
S3 ``complete_seconds``: how long CompleteMultipartUpload took (timed around the drive's
own call; moto assembles the object in Python then, which real S3 does in its own time).

It runs as a process of its own, started by the bench like ``backupmand run``, so its
wall time (interpreter, imports, config, the drive's client) is comparable with a
backup's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # PYTHONPATH names the tree under test; else this one
    sys.path.append(str(ROOT))

from backupmand import logs  # noqa: E402
from backupmand.config import load_settings  # noqa: E402
from backupmand.drives import build_drive  # noqa: E402


async def upload(config: str, label: str, path: Path, sha256: str) -> dict[str, object]:
    logs.configure("info")  # backupmand's lines, to stderr (stdout carries the answer)
    settings = load_settings(config)
    logs.register_settings(settings)
    drive = build_drive(settings.drive(label), settings.host_name)
    name = f"upload-alone-{uuid.uuid4().hex[:12]}{''.join(path.suffixes)}"
    size = await asyncio.to_thread(lambda: path.stat().st_size)
    completing: list[float] = []
    complete = getattr(drive, "_complete", None)
    if complete is not None:  # S3: time CompleteMultipartUpload, change nothing
        async def timed_complete(*args: Any, **kwargs: Any) -> Any:
            begin = time.perf_counter()
            try:
                return await complete(*args, **kwargs)
            finally:
                completing.append(time.perf_counter() - begin)

        drive._complete = timed_complete  # type: ignore[attr-defined]
    try:
        started = time.perf_counter()
        stored = await drive.upload(path, name, size=size, sha256=sha256)
        seconds = time.perf_counter() - started
    finally:
        await drive.aclose()
    return {"seconds": seconds, "path": stored.path, "size": stored.size,
            "complete_seconds": sum(completing)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--drive", required=True, help="the drive's label")
    parser.add_argument("--sha256", required=True, help="the file's SHA-256 (hex)")
    parser.add_argument("file", type=Path)
    arguments = parser.parse_args()
    print(json.dumps(asyncio.run(upload(arguments.config, arguments.drive, arguments.file,
                                        arguments.sha256))), flush=True)


if __name__ == "__main__":
    main()
