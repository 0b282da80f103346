"""Liveness, readiness (DB, store and key provider, each with a timeout) and metrics."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from vault import authz
from vault.api.deps import CtxDep, CurrentActor
from vault.authz import Permission

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _probe(check: Callable[[], None], timeout: float, pool: concurrent.futures.Executor) -> str:
    future = pool.submit(check)
    try:
        future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        return "timeout"
    except Exception as exc:  # a probe reports, it never raises
        return f"error: {type(exc).__name__}"
    return "ok"


@router.get("/readyz")
def readyz(ctx: CtxDep) -> JSONResponse:
    timeout = ctx.settings.readiness_timeout_seconds
    # Not a context manager: a hung probe must not hold the answer past its timeout.
    others = ctx.regions()[1:]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=3 + 2 * len(others))
    checks = {
        "database": _probe(ctx.db.check, timeout, pool),
        "store": _probe(ctx.store.check, timeout, pool),
        "key_provider": _probe(ctx.keys.check, timeout, pool),
    }
    for region in others:  # every region's store and keys: media of any tenant must be servable
        checks[f"store:{region}"] = _probe(ctx.store_for(region).check, timeout, pool)
        checks[f"key_provider:{region}"] = _probe(ctx.keys_for(region).check, timeout, pool)
    pool.shutdown(wait=False)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks},
                        status_code=200 if ok else 503)  # fmt: skip


@router.get("/metrics")
def metrics(request: Request, ctx: CtxDep, actor: CurrentActor) -> Response:
    """Prometheus text, for a key with ``metrics:read`` (the ``monitor`` role, or admin).

    The domain families query the database as they are collected (:mod:`vault.ops.metrics`),
    each group in a session of its own: the authorising session is closed first, so a scrape
    holds one connection at a time."""
    with ctx.db.reading() as session:
        authz.authorize(session, actor, Permission.metrics_read, now=ctx.now())
    return Response(generate_latest(request.app.state.metrics.registry),
                    media_type=CONTENT_TYPE_LATEST)  # fmt: skip
