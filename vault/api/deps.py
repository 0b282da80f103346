"""FastAPI dependencies: the runtime context, the request's unit of work, and the caller.

The unit of work (:data:`SessionDep`) is a ``yield`` dependency with ``scope="function"``: its
exit, which commits (or rolls back, and then writes the request's denials), runs after the route
function and *before* the response is sent, so no client sees a success that was not committed.
Read routes take :data:`ReadSessionDep`, which never takes SQLite's write lock. Routes never
commit and never check roles: the services call :func:`vault.authz.authorize`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from vault import audit
from vault.api.auth_cache import AuthCache
from vault.api.limits import AuthFailures, client_address
from vault.authz import Actor
from vault.context import Context
from vault.errors import AuthenticationError
from vault.identity import authentication


async def get_ctx(request: Request) -> Context:
    # async: no I/O, so no hop to the thread pool (FastAPI runs a sync dependency on a thread).
    return request.app.state.ctx


CtxDep = Annotated[Context, Depends(get_ctx)]


def get_session(ctx: CtxDep) -> Iterator[Session]:
    with ctx.db.transaction() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_read_session(ctx: CtxDep) -> Iterator[Session]:
    with ctx.db.reading() as session:
        yield session


ReadSessionDep = Annotated[Session, Depends(get_read_session, scope="function")]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def get_actor(request: Request, ctx: CtxDep) -> Actor:
    """The caller. A key verified within the last second (the per-process cache) answers on the
    event loop; a lookup, and a denial's audit, run on the thread pool (they do I/O)."""
    token = _bearer(request)
    now = ctx.now()
    failures: AuthFailures = request.app.state.auth_failures
    address = client_address(request, ctx.settings.trusted_proxies)
    failures.check(address, now)  # 429 while this address is over its limit
    cache: AuthCache = request.app.state.auth_cache
    cached = cache.get(token, now)
    if cached is not None:
        request.state.principal = str(cached.id)
        return cached
    return await run_in_threadpool(_authenticate, request, ctx, token, address, now)


def _authenticate(
    request: Request, ctx: Context, token: str | None, address: str, now: datetime
) -> Actor:
    failures: AuthFailures = request.app.state.auth_failures
    try:
        with ctx.db.reading() as session:
            actor = authentication.authenticate(session, api_key=token, now=now)
        request.state.principal = str(actor.id)  # for the access log: an opaque id
        request.app.state.auth_cache.put(token or "", actor, now)
        return actor
    except AuthenticationError:
        failures.failed(address, now)
        # Keyed by the key's public prefix at most: never the secret part.
        key = authentication.denial_key(token)
        audit.record_denial(ctx.db, ctx.denials, key=key, reason="invalid key", now=now)
        raise


CurrentActor = Annotated[Actor, Depends(get_actor)]
