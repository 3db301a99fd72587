"""Property-based API testing: schemathesis, driven by our own OpenAPI document, against a
real daemon — no 5xx, and every response as documented (status, content type, headers,
body schema). Bounded examples and a fixed seed keep it quick and repeatable in CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import API_KEY, daemon


def test_schemathesis_finds_no_server_error_and_no_undocumented_response(make_config, tmp_path):
    config = make_config()
    tool = Path(sys.executable).parent / "schemathesis"
    assert tool.exists(), "schemathesis is a test dependency (pyproject [test])"
    with daemon(config) as server:
        _, body = server.request("POST", "/api/backups")  # something real to list and download
        server.wait_backup(body["BackupIds"][0])
        result = subprocess.run(
            [str(tool), "run", f"{server.url}/api/openapi.json", "--header", f"X-Api-Key: {API_KEY}",
             "--max-examples", "25", "--seed", "1", "--checks",
             "not_a_server_error,status_code_conformance,content_type_conformance,"
             "response_schema_conformance,response_headers_conformance"],
            capture_output=True, text=True, timeout=600, check=False,
        )
        log = server.log()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "api.crashed" not in log
