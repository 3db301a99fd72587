"""The tests' Google Drive v3 stand-in (tests/servers/fake_gdrive.py) as a process of its own.

    python bench/gdrive_server.py --folder DIR

Starts :class:`FakeGoogleDrive` on a loopback port, writes an OAuth client file and a
token file for it into DIR (``client-secret.json``, ``token.json``: what a
google_drive drive's config points at), and prints one line ``ready URL``. Then it
reads commands on stdin, one a line, and answers each on stdout:

- ``clear``: forget every file and upload session (the fake keeps files in RAM, and a
  benchmark uploads hundreds of MB per run); answers ``cleared N`` (files dropped);
- ``count``: answers ``files N`` (files that are not folders);
- ``origin URL``: hand out upload session URIs on URL (a proxy in front of the fake),
  so that the chunks take the same way as every other request; answers ``origin set``.

End of stdin stops the server. It runs in its own process so that its CPU (it reads
every chunk, and checksums every stored file) is not counted in the bench or in the
backupmand process, as a real Drive's is not.

One bench-only change to the fake, for speed, not behaviour: a file's MD5 and SHA-256
are computed once and remembered (the fake recomputes them for every metadata answer;
Google computes them once, on its side, on its own machines).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers.fake_gdrive import FOLDER_MIME, FakeFile, FakeGoogleDrive  # noqa: E402

_digests: dict[tuple[str, int], tuple[str, str]] = {}


def _cached_resource(self: FakeFile, fields: str | None) -> dict[str, Any]:
    """FakeFile.resource, the same answer, with the file's digests computed once."""
    full: dict[str, Any] = {
        "kind": "drive#file", "id": self.id, "name": self.name, "mimeType": self.mime_type,
        "parents": self.parents, "trashed": self.trashed, "appProperties": self.app_properties,
    }
    if self.mime_type != FOLDER_MIME:
        key = (self.id, len(self.data))
        if key not in _digests:
            _digests[key] = (hashlib.md5(self.data).hexdigest(),
                             hashlib.sha256(self.data).hexdigest())
        md5, sha256 = _digests[key]
        full["size"] = str(len(self.data))
        full["md5Checksum"] = self.md5_override or md5
        if not self.no_sha256:
            full["sha256Checksum"] = sha256
    if not fields:
        return {key: full[key] for key in ("kind", "id", "name", "mimeType") if key in full}
    wanted = {part.strip() for part in fields.split(",")}
    return {key: value for key, value in full.items() if key in wanted}


FakeFile.resource = _cached_resource  # type: ignore[method-assign]


async def serve(folder: Path) -> None:
    server = FakeGoogleDrive()
    await server.start()
    folder.mkdir(parents=True, exist_ok=True)
    server.write_client_secret(folder / "client-secret.json")
    server.write_token_file(folder / "token.json")
    print(f"ready {server.url}", flush=True)
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            command = line.strip()
            if command == "clear":
                dropped = sum(1 for item in server.files.values()
                              if item.mime_type != FOLDER_MIME)
                server.files = {key: item for key, item in server.files.items()
                                if item.mime_type == FOLDER_MIME}
                server.sessions.clear()
                _digests.clear()
                print(f"cleared {dropped}", flush=True)
            elif command.startswith("origin "):
                server.session_origin = command.split(" ", 1)[1]
                print("origin set", flush=True)
            elif command == "count":
                count = sum(1 for item in server.files.values() if item.mime_type != FOLDER_MIME)
                print(f"files {count}", flush=True)
            else:
                print(f"unknown {command}", flush=True)
    finally:
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, required=True)
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.folder))


if __name__ == "__main__":
    main()
