"""The API's OpenAPI 3.1 document (package data) and a response checker for tests.

``load_document()`` returns the document served at GET /api/openapi.json (standard
library only: jsonschema, a test dependency, is imported by the checker alone). The
``Backup`` and ``DriveFile`` schemas are not written in the package's JSON file: they
are generated here from the field lists in ``models`` that also render the objects
(``to_api``, the catalog's SQL), so the three cannot drift apart.
``validate_response()`` checks one answer of the running API against it: the status
must be documented for that route, and a JSON body must match the response's schema
(JSON Schema draft 2020-12, OpenAPI 3.1's dialect; ``$ref``s resolve inside the
document; formats such as date-time and uuid are checked).
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError
    from referencing import Registry

DOCUMENT_URI = "urn:backupmand:openapi"

__all__ = ["ResponseMismatch", "load_document", "validate_response"]


class ResponseMismatch(AssertionError):
    """An answer that the OpenAPI document does not describe."""


@functools.cache
def _document_text() -> str:
    return resources.files("backupmand").joinpath("data/openapi.json").read_text("utf-8")


def load_document() -> dict[str, Any]:
    """A fresh copy of the OpenAPI document (callers may change it freely)."""
    return copy.deepcopy(_parsed())


@functools.cache
def _parsed() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(_document_text())
    from .models import BACKUP_FIELDS, DRIVE_FILE_FIELDS

    schemas = document["components"]["schemas"]
    schemas["DriveFile"] = _object_schema(
        DRIVE_FILE_FIELDS, "One copy of a backup's dump (with its companions) on one drive.")
    schemas["Backup"] = _object_schema(BACKUP_FIELDS, "One backup of one data source.", {
        "UpdatedAt": ("DriveFiles", {
            "type": ["array", "null"], "items": {"$ref": "#/components/schemas/DriveFile"},
            "description": "One entry per drive the dump goes to (empty while none)."}),
    })
    return document


_KIND_TYPES = {"text": "string", "integer": "integer", "boolean": "boolean"}


def _field_schema(field: Any) -> dict[str, Any]:
    if field.kind == "time":
        return {"$ref": "#/components/schemas/"
                + ("NullableTimestamp" if field.nullable else "Timestamp"),
                "description": field.description}
    if field.kind == "status":
        return {"$ref": "#/components/schemas/Status", "description": field.description}
    if field.kind == "json":
        kind: Any = ["object", "null"] if field.nullable else "object"
        return {"type": kind, "description": field.description}
    base = _KIND_TYPES[field.kind]
    schema: dict[str, Any] = {"type": [base, "null"] if field.nullable else base,
                              "description": field.description}
    schema.update(field.schema)
    return schema


def _object_schema(fields: Any, description: str,
                   extra: dict[str, tuple[str, dict[str, Any]]] | None = None) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for field in fields:
        properties[field.api] = _field_schema(field)
        if extra and field.api in extra:
            name, schema = extra[field.api]
            properties[name] = schema
    return {"type": "object", "description": description, "required": list(properties),
            "properties": properties}


@functools.cache
def _registry() -> Registry[Any]:
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    resource: Resource[Any] = Resource.from_contents(
        _parsed(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(DOCUMENT_URI, resource)
    return registry


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def response_spec(method: str, path_template: str, status: int) -> tuple[str, dict[str, Any]]:
    """The JSON pointer to, and the content of, a documented response."""
    document = _parsed()
    operation = document["paths"].get(path_template, {}).get(method.lower())
    if operation is None:
        raise ResponseMismatch(f"{method.upper()} {path_template} is not in the document")
    responses = operation["responses"]
    key = str(status) if str(status) in responses else "default"
    if key not in responses:
        raise ResponseMismatch(
            f"{method.upper()} {path_template} does not document status {status} "
            f"(documented: {', '.join(sorted(responses))})")
    response = responses[key]
    pointer = _pointer("paths", path_template, method.lower(), "responses", key)
    if "$ref" in response:  # a shared response: components/responses/...
        pointer = response["$ref"].removeprefix("#/")
        response = document
        for part in pointer.split("/"):
            response = response[part.replace("~1", "/").replace("~0", "~")]
    return pointer, copy.deepcopy(response)


def validate_response(method: str, path_template: str, status: int, body: Any) -> None:
    """Raise ResponseMismatch unless ``body`` is what the document promises.

    ``path_template`` is the route as documented (``/api/backups/{id}``); ``body`` is
    the decoded JSON (or str/bytes for a route that answers something else).
    """
    pointer, response = response_spec(method, path_template, status)
    content = response.get("content")
    if not content:
        return
    if "application/json" not in content:
        if not isinstance(body, (str, bytes)):
            raise ResponseMismatch(
                f"{method.upper()} {path_template} {status} answers "
                f"{', '.join(content)}, not JSON")
        return
    from jsonschema import Draft202012Validator, FormatChecker

    schema = {"$ref": f"{DOCUMENT_URI}#/{pointer}/content/application~1json/schema"}
    validator = Draft202012Validator(
        schema, registry=_registry(), format_checker=FormatChecker())
    errors = sorted(validator.iter_errors(body), key=lambda error: list(error.absolute_path))
    if errors:
        raise ResponseMismatch(
            f"{method.upper()} {path_template} {status}: "
            + "; ".join(_describe(error) for error in errors[:5]))


def _describe(error: ValidationError) -> str:
    where = "".join(f"[{part!r}]" for part in error.absolute_path) or "(body)"
    return f"{where}: {error.message}"
