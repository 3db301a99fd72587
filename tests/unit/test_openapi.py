"""The OpenAPI document: valid 3.1, every SPEC route, and what the models emit fits it."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from openapi_spec_validator import validate

from backupmand.catalog import Catalog
from backupmand.models import Status
from backupmand.openapi import ResponseMismatch, load_document, validate_response
from tests.factories import make_backup

ROUTES = {
    ("get", "/api/backups"), ("post", "/api/backups"), ("get", "/api/backups/{id}"),
    ("post", "/api/backups/{id}/retry"), ("get", "/api/backups/{id}/generate-download-url"),
    ("get", "/api/backups/{id}/download"), ("get", "/health"), ("get", "/ping"),
    ("get", "/metrics"), ("get", "/api/openapi.json"),
    # The second round (SPEC §6).
    ("post", "/api/backups/{id}/verify"), ("post", "/api/backups/{id}/pin"),
    ("delete", "/api/backups/{id}/pin"), ("get", "/api/retention/preview"),
}

HEALTH = {
    "Version": "1.0.0", "CommitSHA": "a1b2c3d", "BuildDate": "2025-07-02T12:00:00Z",
    "Status": "UP",
    "Details": {
        "Database": {"Status": "UP", "Components": None},
        "Drives": {"Status": "UP", "Components": {"Local": {"Status": "UP", "Components": None}}},
        "DataSources": {"Status": "UP",
                        "Components": {"Main": {"Status": "UP", "Components": None}}},
        "Notifiers": {"Status": "DOWN",
                      "Components": {"mail": {"Status": "DOWN", "Components": None}}},
    },
}


def test_document_is_valid_openapi_3_1() -> None:
    document = load_document()
    assert document["openapi"].startswith("3.1.")
    validate(document)


def test_every_route_of_the_spec_is_documented() -> None:
    paths = load_document()["paths"]
    documented = {(method, path) for path, item in paths.items() for method in item
                  if method in {"get", "post", "put", "patch", "delete"}}
    assert documented == ROUTES


def test_every_route_the_app_serves_is_documented() -> None:
    from backupmand.api import PAGE_ROUTES, routes

    served = {(route.method.lower(), route.path) for route in routes  # type: ignore[attr-defined]
              if route.method in {"GET", "POST", "PUT", "PATCH", "DELETE"}}
    assert served - PAGE_ROUTES <= ROUTES, "every API route is in the OpenAPI document"
    assert PAGE_ROUTES <= served, "the status page's routes are served"


def test_routes_outside_api_need_no_key_and_api_routes_do() -> None:
    document = load_document()
    assert document["security"] == [{"ApiKey": []}]
    scheme = document["components"]["securitySchemes"]["ApiKey"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-Api-Key")
    for method, path in ROUTES:
        operation = document["paths"][path][method]
        if path.startswith("/api/"):
            assert operation.get("security") != [], path
        else:
            assert operation["security"] == [], path


def test_load_document_returns_a_copy() -> None:
    load_document()["paths"].clear()
    assert load_document()["paths"]


async def test_backups_from_the_catalog_validate() -> None:
    async with Catalog.open("memory") as catalog:
        backups = [
            await make_backup(catalog, status=Status.PENDING),
            await make_backup(catalog),
            await make_backup(catalog, status=Status.FAILED, failed_drive="S3 Drive"),
            await make_backup(catalog, label="Other", dump_error="pg_dump: boom"),
        ]
        listed = await catalog.list_backups()
    for backup in backups:
        validate_response("GET", "/api/backups/{id}", 200, backup.to_api())
    validate_response("GET", "/api/backups", 200,
                      {"Results": [backup.to_api() for backup in listed]})
    schema = load_document()["components"]["schemas"]
    assert set(schema["Backup"]["required"]) == set(backups[1].to_api())
    assert set(schema["DriveFile"]["required"]) == set(backups[1].drive_files[0].to_api())


async def test_wrong_backups_do_not_validate() -> None:
    async with Catalog.open("memory") as catalog:
        good = (await make_backup(catalog)).to_api()

    def broken(change: Any) -> dict[str, Any]:
        body = copy.deepcopy(good)
        change(body)
        return body

    cases = [
        broken(lambda b: b.pop("Label")),
        broken(lambda b: b.update(Status="done")),
        broken(lambda b: b.update(CreatedAt="2025-07-02T10:00:00+02:00")),
        broken(lambda b: b.update(UpdatedAt="yesterday")),
        broken(lambda b: b["DriveFiles"][0].update(Provider="ftp")),
        broken(lambda b: b["DriveFiles"][0].pop("BackupId")),
        broken(lambda b: b.update(Size="12")),
    ]
    for body in cases:
        with pytest.raises(ResponseMismatch):
            validate_response("GET", "/api/backups/{id}", 200, body)


def test_the_spec_examples_validate() -> None:
    spec_backup = {
        "Id": "b4c3f1a0-1b1e-4b0e-8b4a-0e1b0e1b0e1b", "Status": "finished",
        "Label": "my-database-backup",
        "DumpPath": "/var/lib/backupmand/tmp/main/main-20250702100000-b4c3f1a0.sql.zst",
        "CreatedAt": "2025-07-02T10:00:00Z", "UpdatedAt": "2025-07-02T10:05:00Z",
        "DriveFiles": [
            {"Id": "d1f1e1a0-1b1e-4b0e-8b4a-0e1b0e1b0e1c",
             "BackupId": "b4c3f1a0-1b1e-4b0e-8b4a-0e1b0e1b0e1b", "Provider": "google_drive",
             "Label": "main-20250702100000-b4c3f1a0.sql.zst",
             "Path": "backups/main-20250702100000-b4c3f1a0.sql.zst", "Status": "finished",
             "CreatedAt": "2025-07-02T10:01:00Z", "UpdatedAt": "2025-07-02T10:05:00Z"}],
    }
    # The SPEC's example shows only the fixed fields; the code always adds the extras.
    document = load_document()
    backup_schema = document["components"]["schemas"]["Backup"]
    fixed = {"Id", "Status", "Label", "DumpPath", "CreatedAt", "UpdatedAt", "DriveFiles"}
    assert fixed <= set(backup_schema["required"])
    assert set(spec_backup) == fixed

    validate_response("GET", "/health", 200, HEALTH)
    validate_response("GET", "/health", 503, HEALTH)
    validate_response("GET", "/ping", 200, {"message": "pong"})
    validate_response("POST", "/api/backups", 200,
                      {"Message": "Backup started",
                       "BackupIds": ["b4c3f1a0-1b1e-4b0e-8b4a-0e1b0e1b0e1b"]})
    validate_response("GET", "/api/backups/{id}/generate-download-url", 200,
                      {"Url": "http://localhost:8080/api/backups/x/download?expires=1&signature=a"})
    validate_response("GET", "/metrics", 200, "# HELP x\n")
    for status in (400, 401, 500):
        validate_response("GET", "/api/backups", status, {"Error": "no"})
    validate_response("POST", "/api/backups/{id}/retry", 409, {"Error": "not failed"})


def test_undocumented_answers_are_mismatches() -> None:
    with pytest.raises(ResponseMismatch, match="does not document status 418"):
        validate_response("GET", "/ping", 418, {})
    with pytest.raises(ResponseMismatch, match="not in the document"):
        validate_response("GET", "/nowhere", 200, {})
    with pytest.raises(ResponseMismatch):
        validate_response("GET", "/api/backups/{id}", 404, {"error": "lowercase"})
    with pytest.raises(ResponseMismatch):
        validate_response("GET", "/health", 200, {**HEALTH, "Status": "MAYBE"})
