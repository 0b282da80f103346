"""FastAPI dependencies: the context, a DB session, the caller, and ``require()``.

Sessions never commit on their own: a route commits explicitly before it answers, because the
exit code of a ``yield`` dependency may run after the response has gone out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import Session

from vault import audit
from vault.authz import Actor, Permission, ensure
from vault.context import Context
from vault.errors import AuthenticationError, PermissionDeniedError
from vault.identity import principals
from vault.tags import AuditAction, Outcome


def get_ctx(request: Request) -> Context:
    return request.app.state.ctx


CtxDep = Annotated[Context, Depends(get_ctx)]


def get_session(ctx: CtxDep) -> Iterator[Session]:
    with ctx.db.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_read_session(ctx: CtxDep) -> Iterator[Session]:
    """For read-only routes: on SQLite it never waits for, or holds, the write lock."""
    with ctx.db.read_session() as session:
        yield session


ReadSessionDep = Annotated[Session, Depends(get_read_session)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _denial_key(token: str | None) -> str:
    # The key's public lookup prefix at most: never the secret part.
    if token is None:
        return "missing"
    return token[:16] if token.startswith("cvk_") else "malformed"


def get_actor(request: Request, ctx: CtxDep) -> Actor:
    token = _bearer(request)
    now = ctx.now()
    try:
        with ctx.db.transaction() as session:
            return principals.authenticate(session, api_key=token, now=now)
    except AuthenticationError:
        audit.record_denial(
            ctx.db, request.app.state.denials, key=_denial_key(token), reason="invalid key",
            now=now,
        )  # fmt: skip
        raise


CurrentActor = Annotated[Actor, Depends(get_actor)]


def require(permission: Permission) -> Callable[..., Actor]:
    """``Depends(require(P.x))``: the one place role permissions are checked (and denials
    audited)."""

    def dependency(ctx: CtxDep, actor: CurrentActor) -> Actor:
        try:
            ensure(actor, permission)
        except PermissionDeniedError:
            with ctx.db.transaction() as session:
                audit.record(
                    session, action=AuditAction.permission_denied, actor=actor.audit_name,
                    outcome=Outcome.denied, now=ctx.now(),
                    details={"permission": str(permission), "role": str(actor.role)},
                )  # fmt: skip
            raise
        return actor

    return dependency
