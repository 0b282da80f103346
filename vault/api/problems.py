"""The one map from errors to HTTP: every error answer is ``application/problem+json``.

Domain errors carry a stable ``code``; this module alone decides their status. It knows only the
domain's errors: the store, the key provider and the settings translate their own failures into
them at their boundary. Errors marked ``public_detail = False`` answer with their title only
(the detail is logged); anything unexpected becomes an opaque 500 that leaks nothing. Every
problem carries the same restrictive headers as media responses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from vault import errors as e

log = logging.getLogger("callvault.api")

PROBLEM_BASE = "https://callvault.dev/problems/"
PROBLEM_JSON = "application/problem+json"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}

STATUS: dict[type[e.VaultError], int] = {
    e.AuthenticationError: 401,
    e.PermissionDeniedError: 403,
    e.RateLimitedError: 429,
    e.NotFoundError: 404,
    e.UnknownPrincipalError: 404,
    e.UnknownTenantError: 422,
    e.UnknownPurposeError: 422,
    e.UnknownProfileError: 422,
    e.GoneError: 410,
    e.InvalidInputError: 422,
    e.ConflictError: 409,
    e.UnsupportedMediaTypeError: 415,
    e.EmptyBodyError: 400,
    e.IncompleteBodyError: 400,
    e.ChecksumMismatchError: 422,
    e.PayloadTooLargeError: 413,
    e.UploadTimeoutError: 408,
    e.TooManyUploadsError: 429,
    e.RangeNotSatisfiableError: 416,
    e.StorageError: 503,
    e.KeyProviderUnavailableError: 503,
    e.DatabaseUnavailableError: 503,
    e.AuditUnavailableError: 503,
    e.IntegrityError: 500,
    e.MisconfiguredError: 500,
}

_HTTP_CODES = {
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    411: "length-required",
    413: "payload-too-large",
    415: "unsupported-media-type",
}


ErrorPage = Callable[[Request, int, str, str, str | None], Response | None]
"""Renders an error for a human (the console's pages) from the same table, or declines (None)."""


def _answer(
    request: Request, status: int, code: str, title: str, detail: str | None = None, **extra: Any
) -> Response:
    page: ErrorPage | None = getattr(request.app.state, "error_page", None)
    if page is not None:
        rendered = page(request, status, code, title, detail)
        if rendered is not None:
            return rendered
    return problem(status, code, title, detail, **extra)


def problem(
    status: int, code: str, title: str, detail: str | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"type": PROBLEM_BASE + code, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update({k: v for k, v in extra.items() if k not in body})
    headers = dict(SECURITY_HEADERS)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="callvault"'
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def status_of(exc: e.VaultError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500


def _json_safe(extra: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, str | int | float | bool | None) else str(v) for k, v in extra.items()
    }


async def _vault_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, e.VaultError)
    extra = dict(exc.extra)
    headers = extra.pop("headers", None)
    status = status_of(exc)
    if exc.public_detail:
        resp = _answer(request, status, exc.code, exc.title, exc.detail, **_json_safe(extra))
    else:
        # Operator detail (object keys, provider messages, settings) stays in the log.
        log.warning("%s (%s): %s", exc.code, type(exc).__name__, exc.detail)
        resp = _answer(request, status, exc.code, exc.title)
    if isinstance(headers, dict):
        resp.headers.update(headers)
    return resp


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": ".".join(str(p) for p in err.get("loc", ())), "msg": str(err.get("msg", ""))}
        for err in exc.errors()
    ]
    first = errors[0] if errors else {"loc": "", "msg": "invalid request"}
    return _answer(
        request, 422, e.InvalidInputError.code, e.InvalidInputError.title,
        f"{first['loc']}: {first['msg']}", errors=errors,  # type: ignore[arg-type]
    )  # fmt: skip


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http-{exc.status_code}")
    return _answer(request, exc.status_code, code, str(exc.detail))


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return problem(500, "internal-error", "Internal error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(e.VaultError, _vault_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
