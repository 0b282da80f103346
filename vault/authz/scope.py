"""The one scope filter every list and get goes through (NetBox's ``restrict()`` is the model).

Each table registers how a row is scoped; :func:`visible` adds that condition for a principal
limited to some tenants, and an unregistered table shows nothing (deny by default).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault.authz.roles import Actor, Permission
from vault.authz.rules import audit_denial
from vault.errors import NotFoundError
from vault.models import (
    AccessRequest,
    AccessRequestRecording,
    AuditCheckpoint,
    AuditEvent,
    Disclosure,
    ErasureItem,
    ErasureRequest,
    Grant,
    GrantRecording,
    HoldMembership,
    LegalHold,
    Manifest,
    Recording,
    Redaction,
    Tenant,
)

__all__ = ["get_visible", "get_visible_many", "scope_params", "visible", "visible_prepared"]

# A hot single-row read builds its statement once (issue #12: building and caching a statement
# per request cost more than running it); the scope's tenants are then this parameter, whose
# value :func:`scope_params` gives.
_SCOPE_TENANTS = sa.bindparam("scope_tenant_ids", expanding=True)


@dataclass(frozen=True)
class _Prepared:
    """Stands in for a principal limited to some tenants while a statement is built once."""

    all_tenants: bool = False
    tenant_ids: Any = _SCOPE_TENANTS


def _in(column: Any, actor: Actor | _Prepared) -> Any:
    tenants = actor.tenant_ids
    if isinstance(tenants, sa.BindParameter):
        return col(column).in_(tenants)  # an empty list matches nothing, as below
    return col(column).in_(tenants) if tenants else sa.false()


def _all_recordings_in_scope(link: Any, key: Any, owner: Any, actor: Actor) -> Any:
    outside = (
        select(link.recording_id)
        .join(Recording, col(Recording.id) == col(link.recording_id))
        .where(key == owner, ~_in(Recording.tenant_id, actor))
    )
    return ~sa.exists(outside)


def _members_in_scope(link: Any, key: Any, owner: Any, actor: Actor) -> Any:
    some = select(link.recording_id).where(key == owner)
    return sa.and_(sa.exists(some), _all_recordings_in_scope(link, key, owner, actor))


_SCOPES: dict[Any, Callable[[Any], Any]] = {
    Recording: lambda a: _in(Recording.tenant_id, a),
    Tenant: lambda a: _in(Tenant.id, a),
    AccessRequest: lambda a: _members_in_scope(
        AccessRequestRecording, AccessRequestRecording.request_id, AccessRequest.id, a
    ),
    Grant: lambda a: _members_in_scope(GrantRecording, GrantRecording.grant_id, Grant.id, a),
    # A hold with a tenant is that tenant's; one without spans the tenants of its members,
    # and one whose selector catches future recordings spans every tenant.
    LegalHold: lambda a: sa.or_(
        _in(LegalHold.tenant_id, a),
        sa.and_(
            col(LegalHold.tenant_id).is_(None),
            col(LegalHold.selects_future).is_(False),
            _members_in_scope(HoldMembership, HoldMembership.hold_id, LegalHold.id, a),
        ),
    ),
    ErasureRequest: lambda a: sa.or_(
        _in(ErasureRequest.tenant_id, a),
        sa.and_(
            col(ErasureRequest.tenant_id).is_(None),
            _members_in_scope(ErasureItem, ErasureItem.request_id, ErasureRequest.id, a),
        ),
    ),
    Redaction: lambda a: _in(Redaction.tenant_id, a),
    Disclosure: lambda a: _in(Disclosure.tenant_id, a),  # one tenant per disclosure
    Manifest: lambda a: sa.exists(
        select(Recording.id).where(
            Recording.id == Manifest.recording_id, _in(Recording.tenant_id, a)
        )
    ),
    # Events without a tenant are for principals over all tenants only.
    AuditEvent: lambda a: _in(AuditEvent.tenant_id, a),
    AuditCheckpoint: lambda a: sa.false(),  # checkpoints sign every tenant's events
}

Q = TypeVar("Q")


def visible(statement: Q, actor: Actor) -> Q:
    """``statement`` restricted to what ``actor``'s scope may see (its first entity decides)."""
    if actor.all_tenants:
        return statement
    entity = statement.column_descriptions[0]["entity"]  # type: ignore[attr-defined]
    scope = _SCOPES.get(entity)
    if scope is None:  # deny by default: an unregistered table shows nothing
        return statement.where(sa.false())  # type: ignore[attr-defined,no-any-return]
    return statement.where(scope(actor))  # type: ignore[attr-defined,no-any-return]


def visible_prepared(statement: Q, *, all_tenants: bool) -> Q:
    """:func:`visible` for a statement built once per scope shape: run it with
    :func:`scope_params` of the actor whose ``all_tenants`` it was built for."""
    return statement if all_tenants else visible(statement, _Prepared())  # type: ignore[arg-type]


def scope_params(actor: Actor) -> dict[str, Any]:
    """The parameters of a :func:`visible_prepared` statement for ``actor``."""
    return {} if actor.all_tenants else {"scope_tenant_ids": list(actor.tenant_ids)}


M = TypeVar("M")


def get_visible(
    session: Session,
    actor: Actor,
    model: type[M],
    ident: Any,
    *,
    permission: Permission,
    now: datetime,
    what: str,
    lock: bool = False,
) -> M:
    """The object by id if ``actor`` may see it, else ``NotFoundError`` (the same answer for
    missing and for out of scope; the latter is audited as a denial)."""
    pk = sa.inspect(model).primary_key[0]  # type: ignore[union-attr]
    stmt = select(model).where(pk == ident)
    if lock:
        stmt = stmt.with_for_update()
    row = session.exec(visible(stmt, actor).execution_options(populate_existing=True)).first()
    if row is not None:
        return row  # type: ignore[no-any-return]
    hidden = session.get(model, ident)
    if hidden is not None:  # it exists, outside the actor's scope: a denial, answered as missing
        tenant_id = getattr(hidden, "tenant_id", None)
        audit_denial(
            session, actor, permission, "tenant-scope", now=now, target=str(ident),
            tenant_id=tenant_id if isinstance(tenant_id, uuid.UUID) else None,
        )  # fmt: skip
    raise NotFoundError(f"no {what} {ident}")


def get_visible_many(
    session: Session,
    actor: Actor,
    ids: Iterable[uuid.UUID],
    *,
    permission: Permission,
    now: datetime,
    lock: bool = False,
) -> list[Recording]:
    """Recordings by id, in order; any missing or out of scope is ``NotFoundError`` (audited
    as a denial when it exists)."""
    wanted = list(ids)
    stmt = select(Recording).where(col(Recording.id).in_(wanted)).order_by(col(Recording.id))
    if lock:
        stmt = stmt.with_for_update()
    rows = {r.id: r for r in session.exec(visible(stmt, actor))}
    for rid in wanted:
        if rid not in rows:
            get_visible(
                session, actor, Recording, rid, permission=permission, now=now, what="recording"
            )
    return [rows[rid] for rid in wanted]
