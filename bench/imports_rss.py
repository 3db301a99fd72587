"""The resident set a three-drive backup needs before a byte of data moves, step by step.

    python bench/imports_rss.py

Imports, one after another, what ``backupmand run`` with a PostgreSQL source and a
local, an S3 and a Google Drive drive imports, then opens an S3 client (botocore loads
the S3 service model when the first client is made), and prints one JSON list of
``[step, resident MiB after it]``. Run in a fresh process: each step's growth is what
that import adds on top of the ones before it.
"""

from __future__ import annotations

import importlib
import json
import os
import re

STEPS = [
    ("asyncio", "asyncio"),
    ("pydantic", "pydantic"),
    ("backupmand.config (the config models)", "backupmand.config"),
    ("structlog (and rich, when installed)", "structlog"),
    ("backupmand.cli, logs", "backupmand.cli"),
    ("aiohttp", "aiohttp"),
    ("aiosqlite, zstandard, pyrage", "aiosqlite zstandard pyrage"),
    ("backupmand.runtime, pipeline, postgres source", "backupmand.runtime backupmand.pipeline "
     "backupmand.sources.postgres backupmand.drives.local"),
    ("aioboto3 (botocore, aiobotocore)", "aioboto3"),
    ("backupmand.drives.s3", "backupmand.drives.s3"),
    ("aiogoogle (and cryptography)", "aiogoogle"),
    ("backupmand.drives.google_drive", "backupmand.drives.google_drive"),
    ("backupmand.api, daemon", "backupmand.api backupmand.daemon"),
]


def resident_mib() -> float:
    with open("/proc/self/status") as handle:
        found = re.search(r"^VmRSS:\s+(\d+)", handle.read(), re.M)
    assert found is not None
    return int(found.group(1)) / 1024


async def s3_client() -> float:
    import aioboto3

    session = aioboto3.Session(aws_access_key_id="bench", aws_secret_access_key="bench",
                               region_name="us-east-1")
    async with session.client("s3", endpoint_url="http://127.0.0.1:9"):
        return resident_mib()


def main() -> None:
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    steps: list[tuple[str, float]] = [("the interpreter", resident_mib())]
    for label, modules in STEPS:
        for module in modules.split():
            importlib.import_module(module)
        steps.append((label, resident_mib()))
    asyncio = importlib.import_module("asyncio")  # measured as a step of its own, above
    steps.append(("an S3 client (botocore's S3 service model)", asyncio.run(s3_client())))
    print(json.dumps(steps))


if __name__ == "__main__":
    main()
