"""The read side of access: request shapes and the listings of requests and grants.

Requesters see their own requests; reviewers (access:review) also see every request wholly inside
their scope. Grants: the caller's own; security (grant:read:all) sees every grant in its scope.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault import authz
from vault.access import grants
from vault.access.rules import (
    approving_owners,
    effective_status,
    request_recording_ids,
)
from vault.authz import Actor, Permission
from vault.errors import InvalidInputError, NotFoundError
from vault.models import (
    AccessRequest,
    AccessRequestPublic,
    AccessRequestStatus,
    Grant,
    GrantPublic,
)

S = AccessRequestStatus
P = Permission


def to_public_request(
    session: Session, request: AccessRequest, now: datetime
) -> AccessRequestPublic:
    return AccessRequestPublic(
        id=request.id, purpose=request.purpose, reason=request.reason, ticket=request.ticket,
        duration_minutes=request.duration_minutes, requester_id=request.requester_id,
        status=effective_status(request, now),
        recording_ids=request_recording_ids(session, request.id),
        approvals_required=request.approvals_required,
        approvals=approving_owners(session, request.id), created_at=request.created_at,
        expires_at=request.expires_at, decided_at=request.decided_at, grant_id=request.grant_id,
    )  # fmt: skip


def list_requests(
    session: Session,
    *,
    actor: Actor,
    status: S | str | None,
    now: datetime,
    limit: int = 500,
    mine: bool = False,
) -> list[AccessRequestPublic]:
    """Requesters see their own; reviewers also see every request wholly inside their scope
    (``mine``: only the caller's own, whatever the role)."""
    authz.authorize(session, actor, P.access_request_read, now=now)
    q = select(AccessRequest)
    if mine or not actor.can(P.access_review):
        q = q.where(AccessRequest.requester_id == actor.id)
    if status is not None:
        try:
            wanted = S(status)
        except ValueError:
            raise InvalidInputError(f"unknown status {status!r}; one of {', '.join(S)}") from None
        lapsed = AccessRequest.lapsed_at(now)
        if wanted == S.pending:
            q = q.where(AccessRequest.status == S.pending, ~lapsed)
        elif wanted == S.expired:
            q = q.where(sa.or_(AccessRequest.status == S.expired, lapsed))
        else:
            q = q.where(AccessRequest.status == wanted)
    q = q.order_by(col(AccessRequest.created_at).desc(), col(AccessRequest.id)).limit(limit)
    return [to_public_request(session, r, now) for r in session.exec(authz.visible(q, actor))]


def list_grants(
    session: Session,
    *,
    actor: Actor,
    active: bool | None,
    needs_review: bool | None,
    now: datetime,
    limit: int = 500,
    mine: bool = False,
) -> list[GrantPublic]:
    """The caller's own grants; security (grant:read:all) sees every grant in its scope
    (``mine``: only the caller's own)."""
    authz.authorize(session, actor, P.grant_read, now=now)
    q = _readable_grants(actor, mine=mine)
    if active is not None:
        q = q.where(Grant.active_at(now) if active else ~Grant.active_at(now))
    if needs_review is not None:
        q = q.where(Grant.review_open() if needs_review else ~Grant.review_open())
    q = q.order_by(col(Grant.created_at).desc(), col(Grant.id)).limit(limit)
    return [grants.to_public(session, g, now=now) for g in session.exec(authz.visible(q, actor))]


def get_grant(
    session: Session, *, actor: Actor, grant_id: uuid.UUID, now: datetime
) -> GrantPublic:
    """One grant under the same rule as the listing (a grant the caller may not read is 404)."""
    authz.authorize(session, actor, P.grant_read, now=now)
    q = authz.visible(_readable_grants(actor).where(Grant.id == grant_id), actor)
    grant = session.exec(q).first()
    if grant is None:
        raise NotFoundError("no such grant")
    return grants.to_public(session, grant, now=now)


def _readable_grants(actor: Actor, *, mine: bool = False) -> Any:
    q = select(Grant)
    if mine or not actor.can(P.grant_read_all):
        q = q.where(Grant.principal_id == actor.id)
    return q
