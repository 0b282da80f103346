"""Interactive API docs at ``/docs``: Swagger UI 5 from ``openapi-ui-bundles``, never a CDN.

The page is ours and carries no inline script: it loads the bundle and ``/docs/init.js`` (package
data) from this origin, under a CSP that allows nothing else. Only an allow-list of the bundle's
files is served, looked up by exact name, so no path from the request ever reaches the filesystem.
The routes stay out of the OpenAPI document. Files are read once and kept in memory (~1.6 MB).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse, Response
from openapi_ui_bundles import swagger_ui

from vault.errors import NotFoundError

__all__ = ["CSP", "install"]

# Swagger UI 5 needs no inline script, no eval and no 'unsafe-inline' style (checked in Chromium:
# no violation while rendering, authorizing and trying an operation): React sets styles through
# the CSSOM, which style-src does not govern. img-src data: the stylesheet's icons are data: URLs.
# connect-src 'self': it fetches /openapi.json and, for "Try it out", the API itself.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# A day, not `immutable`: the URLs carry no version, and an upgrade of the bundle must show.
_ASSET_CACHE = "public, max-age=86400"
ASSETS: dict[str, str] = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>callvault API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="/docs/assets/favicon-16x16.png" sizes="16x16">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""

router = APIRouter(include_in_schema=False)


@cache
def _asset(name: str) -> bytes:
    return (swagger_ui.static_path / name).read_bytes()


@cache
def _init_script() -> bytes:
    return files("vault.api").joinpath("static/docs-init.js").read_bytes()


@router.get("/docs")
def page() -> HTMLResponse:
    return HTMLResponse(_PAGE, headers=_PAGE_HEADERS)


@router.get("/docs/init.js")
def init_script() -> Response:
    return Response(
        _init_script(),
        media_type="text/javascript; charset=utf-8",
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )


@router.get("/docs/assets/{name}")
def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:  # only names from the allow-list ever reach the filesystem
        raise NotFoundError("no such docs asset")
    return Response(
        _asset(name),
        media_type=media_type,
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": _ASSET_CACHE},
    )


def install(app: FastAPI) -> None:
    app.include_router(router)
