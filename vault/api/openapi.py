"""The OpenAPI document says what the API really does: the bearer scheme, the raw ingest body, and
the problem+json answers every operation can give (the error table's statuses)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from vault.api.problems import PROBLEM_JSON

__all__ = ["install"]

_PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}
_ERRORS = {
    "400": "Empty or cut-off body",
    "401": "Missing, invalid, expired or revoked API key",
    "403": "Not allowed (role, scope, four-eyes)",
    "404": "Not found, or outside the caller's scope",
    "405": "Method not allowed",
    "408": "The request body stopped arriving",
    "409": "Conflict with the current state",
    "410": "Disposed of",
    "413": "Body too large",
    "415": "Unsupported media type",
    "416": "Range not satisfiable",
    "422": "Invalid input",
    "429": "Rate limited",
    "500": "Internal or integrity error",
    "503": "A dependency is unavailable",
}
# No API key: health probes, the authority's download (its token is its credential), and the
# published list of sub-processors.
_PUBLIC = {"/healthz", "/readyz", "/downloads/disclosures/{export_id}", "/subprocessors",
           "/subprocessors.json"}  # fmt: skip
_MEDIA = ["video/*", "audio/*", "application/octet-stream"]
# Routes that read their raw body themselves (streamed): (path, method) -> (what, media types).
_RAW_BODIES = {
    ("/v1/recordings", "post"): ("The raw media stream (read in constant memory)", _MEDIA),
    ("/v1/handoffs/{handoff_id}/transcript", "post"): (
        "The transcript, stored encrypted as a derivative",
        ["application/octet-stream"],
    ),
}


def _document(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = doc.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = _PROBLEM
    components["securitySchemes"] = {
        "bearerAuth": {"type": "http", "scheme": "bearer", "description": "a callvault API key"}
    }
    problem = {"$ref": "#/components/schemas/Problem"}
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if path not in _PUBLIC:
                op["security"] = [{"bearerAuth": []}]
            responses = op.setdefault("responses", {})
            for status, text in _ERRORS.items():
                responses[status] = {
                    "description": text,
                    "content": {PROBLEM_JSON: {"schema": problem}},
                }
            if (path, method) in _RAW_BODIES:
                what, media = _RAW_BODIES[path, method]
                binary = {"schema": {"type": "string", "format": "binary"}}
                op["requestBody"] = {
                    "required": True, "description": what, "content": dict.fromkeys(media, binary),
                }  # fmt: skip
    return doc


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
