"""The one map from errors to HTTP: every error answer is ``application/problem+json``.

Domain errors carry a stable ``code``; this module alone decides their status. Errors from lower
layers that escape a service (store or key provider down) are mapped here too, and anything
unexpected becomes an opaque 500 that leaks nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from crypto.errors import KeyProviderError
from vault import errors as e
from vault.config import ConfigError
from vault.storage import StorageError, StorageUnavailableError

log = logging.getLogger("callvault.api")

PROBLEM_BASE = "https://callvault.dev/problems/"
PROBLEM_JSON = "application/problem+json"

STATUS: dict[type[e.VaultError], int] = {
    e.AuthenticationError: 401,
    e.PermissionDeniedError: 403,
    e.RateLimitedError: 429,
    e.NotFoundError: 404,
    e.UnknownPrincipalError: 404,
    e.UnknownTenantError: 422,
    e.UnknownPurposeError: 422,
    e.GoneError: 410,
    e.InvalidInputError: 422,
    e.ConflictError: 409,
    e.UnsupportedMediaTypeError: 415,
    e.EmptyBodyError: 400,
    e.IncompleteBodyError: 400,
    e.ChecksumMismatchError: 422,
    e.RangeNotSatisfiableError: 416,
    e.StoreUnavailableError: 503,
    e.KeyProviderUnavailableError: 503,
    e.AuditUnavailableError: 503,
    e.IntegrityError: 500,
}

_HTTP_CODES = {
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    411: "length-required",
    413: "payload-too-large",
    415: "unsupported-media-type",
}


def problem(
    status: int, code: str, title: str, detail: str | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"type": PROBLEM_BASE + code, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update({k: v for k, v in extra.items() if k not in body})
    headers = {"WWW-Authenticate": 'Bearer realm="callvault"'} if status == 401 else None
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


async def _vault_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.VaultError)
    extra = dict(exc.extra)
    headers = extra.pop("headers", None)
    extra = _json_safe(extra)
    resp = problem(status_of(exc), exc.code, exc.title, exc.detail, **extra)
    if isinstance(headers, dict):
        resp.headers.update(headers)
    return resp


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": ".".join(str(p) for p in err.get("loc", ())), "msg": str(err.get("msg", ""))}
        for err in exc.errors()
    ]
    first = errors[0] if errors else {"loc": "", "msg": "invalid request"}
    return problem(
        422, e.InvalidInputError.code, e.InvalidInputError.title,
        f"{first['loc']}: {first['msg']}", errors=errors,  # type: ignore[arg-type]
    )  # fmt: skip


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http-{exc.status_code}")
    return problem(exc.status_code, code, str(exc.detail))


async def _store_down(_: Request, exc: Exception) -> JSONResponse:
    err = e.StoreUnavailableError()
    return problem(503, err.code, err.title)


async def _keys_down(_: Request, exc: Exception) -> JSONResponse:
    err = e.KeyProviderUnavailableError()
    return problem(503, err.code, err.title)


async def _misconfigured(_: Request, exc: Exception) -> JSONResponse:
    # The operator's mistake, not the client's: say so without echoing the setting.
    log.error("configuration error: %s", exc)
    return problem(500, "misconfigured", "The vault is misconfigured; see its log")


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return problem(500, "internal-error", "Internal error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(e.VaultError, _vault_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(StorageUnavailableError, _store_down)
    app.add_exception_handler(StorageError, _store_down)
    app.add_exception_handler(KeyProviderError, _keys_down)
    app.add_exception_handler(ConfigError, _misconfigured)
    app.add_exception_handler(Exception, _unexpected)
